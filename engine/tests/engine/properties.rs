//! Property tests: random event sequences — customers' messages (with redeliveries), button
//! taps, COD orders, and agents' claims, replies, notes, hand-offs and resolutions — through the
//! example pack on a fresh SQLite file, then the pipeline's invariants:
//!
//! - one owner at most: a claim of a conversation someone else owns is refused with its owner;
//! - no reply twice: a redelivered event is processed once, each outbound message has exactly
//!   one outbox row;
//! - notes never reach the outbox;
//! - every customer message is answered, in a flow, or in a queue.

use super::*;
use proptest::prelude::*;
use switchyard_engine::access::Actor;
use switchyard_engine::pipeline::{ActError, AgentAction};

const TEXTS: &[&str] = &[
    "where is my parcel",
    "order kahan hai mera",
    "status of order #10234",
    "I want to cancel my order",
    "mujhe insaan se baat karni hai",
    "talk to a human",
    "the shirt arrived torn, this is unacceptable",
    "refund kab milega",
    "change my address to house 12 street 4 lahore",
    "payment deduct ho gaya lekin order confirm nahi hua",
    "hello",
    "ok",
    "🙏",
    "10234",
    "asdf qwer",
];
const BUTTONS: &[&str] = &["confirm", "cancel", "change", "agent", "unknown_button"];
const CUSTOMERS: usize = 4;
const AGENTS: &[&str] = &["ali", "sana"];

#[derive(Debug, Clone)]
enum Ev {
    Text {
        who: usize,
        text: usize,
    },
    Button {
        who: usize,
        id: usize,
    },
    /// The channel delivers one of the earlier events again.
    Redeliver {
        nth: usize,
    },
    CodOrder {
        who: usize,
        n: u32,
    },
    Claim {
        who: usize,
        agent: usize,
    },
    Reply {
        who: usize,
        agent: usize,
    },
    Note {
        who: usize,
        agent: usize,
    },
    Handoff {
        who: usize,
        agent: usize,
    },
    Resolve {
        who: usize,
        agent: usize,
    },
}

fn ev() -> impl Strategy<Value = Ev> {
    let who = 0..CUSTOMERS;
    let agent = 0..AGENTS.len();
    prop_oneof![
        4 => (who.clone(), 0..TEXTS.len()).prop_map(|(who, text)| Ev::Text { who, text }),
        2 => (who.clone(), 0..BUTTONS.len()).prop_map(|(who, id)| Ev::Button { who, id }),
        1 => (0..64usize).prop_map(|nth| Ev::Redeliver { nth }),
        1 => (who.clone(), 1000..1010u32).prop_map(|(who, n)| Ev::CodOrder { who, n }),
        2 => (who.clone(), agent.clone()).prop_map(|(who, agent)| Ev::Claim { who, agent }),
        2 => (who.clone(), agent.clone()).prop_map(|(who, agent)| Ev::Reply { who, agent }),
        1 => (who.clone(), agent.clone()).prop_map(|(who, agent)| Ev::Note { who, agent }),
        1 => (who.clone(), agent.clone()).prop_map(|(who, agent)| Ev::Handoff { who, agent }),
        1 => (who, agent).prop_map(|(who, agent)| Ev::Resolve { who, agent }),
    ]
}

fn example_pack() -> Arc<Pack> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pk-ecommerce");
    let loaded = switchyard_rules::load_dir(&dir).unwrap();
    Arc::new(loaded.pack.expect("the example pack loads"))
}

fn customer(who: usize) -> String {
    format!("9230000000{who}")
}

fn inbound(who: usize, id: &str, text: &str, choice: Option<&str>) -> Inbound {
    Inbound::Message {
        channel: "whatsapp".into(),
        from: customer(who),
        name: Some(format!("Customer {who}")),
        phone: Some(format!("+{}", customer(who))),
        provider_id: id.into(),
        kind: if choice.is_some() { "button" } else { "text" }.into(),
        text: text.into(),
        choice: choice.map(String::from),
        payload: Value::Null,
    }
}

async fn run(events: Vec<Ev>) -> Result<(), TestCaseError> {
    let d = tmp();
    let store = sqlite(d.path()).await;
    let engine = Engine::new(store.clone(), example_pack(), Arc::new(NoLookup));
    for a in AGENTS {
        store
            .upsert_agent(
                &agent(a, &["support", "complaints", "payments"], 3, "online"),
                "system",
                0,
            )
            .await
            .unwrap();
    }
    let mut sent: Vec<Inbound> = Vec::new();
    // Per customer: whether the last thing that happened was their message.
    let mut waiting = [false; CUSTOMERS];
    let mut t: Millis = 1_700_000_000_000;
    for (i, e) in events.into_iter().enumerate() {
        t += 60_000;
        let conv = |who: usize| {
            let store = store.clone();
            async move {
                store
                    .open_conversation("whatsapp", &customer(who), None, None, 0)
                    .await
                    .unwrap()
                    .1
                    .id
            }
        };
        let by = |a: usize| Actor {
            id: AGENTS[a].into(),
            agent: Some(AGENTS[a].into()),
            role: Role::Agent,
        };
        match e {
            Ev::Text { who, text } => {
                let m = inbound(who, &format!("wamid.{i}"), TEXTS[text], None);
                sent.push(m.clone());
                step(&engine, vec![m], t).await;
                waiting[who] = true;
            }
            Ev::Button { who, id } => {
                let m = inbound(who, &format!("wamid.{i}"), BUTTONS[id], Some(BUTTONS[id]));
                sent.push(m.clone());
                step(&engine, vec![m], t).await;
                waiting[who] = true;
            }
            Ev::Redeliver { nth } => {
                if !sent.is_empty() {
                    let again = sent[nth % sent.len()].clone();
                    let r = engine.ingest(vec![again], t).await.unwrap();
                    prop_assert_eq!(r, vec![Ingested::Duplicate], "a redelivery is a duplicate");
                    step(&engine, vec![], t).await;
                }
            }
            Ev::CodOrder { who, n } => {
                let o = Inbound::Order {
                    channel: "whatsapp".into(),
                    to: customer(who),
                    name: Some(format!("Customer {who}")),
                    phone: Some(format!("+{}", customer(who))),
                    provider_id: format!("order-{i}"),
                    event: "order.created".into(),
                    order: serde_json::json!({
                        "name": format!("#{n}"), "total": 2499, "payment": "cod",
                        "financial_status": "pending", "phone": format!("+{}", customer(who)),
                    }),
                };
                step(&engine, vec![o], t).await;
            }
            Ev::Claim { who, agent } => {
                let id = conv(who).await;
                let before = store.conversation(id).await.unwrap().unwrap().assignee;
                let r = engine.act(id, AgentAction::Claim, &by(agent), t).await;
                match (&before, r) {
                    (Some(o), Err(ActError::Taken { owner, .. })) => {
                        prop_assert_ne!(o.as_str(), AGENTS[agent]);
                        prop_assert_eq!(&owner, o, "the refusal names the owner");
                    }
                    (Some(o), Ok(_)) => {
                        prop_assert_eq!(o.as_str(), AGENTS[agent], "one owner at most")
                    }
                    (None, Ok(_)) => {}
                    (_, Err(ActError::Invalid { .. } | ActError::Conflict(_))) => {}
                    (b, Err(e)) => prop_assert!(false, "claim with owner {b:?} failed: {e}"),
                }
                let after = store.conversation(id).await.unwrap().unwrap().assignee;
                prop_assert!(
                    after == before || before.is_none(),
                    "a claim never takes from another owner"
                );
            }
            Ev::Reply { who, agent } => {
                let id = conv(who).await;
                let r = engine
                    .act(
                        id,
                        AgentAction::Reply {
                            text: Some(format!("reply {i}")),
                            template: None,
                        },
                        &by(agent),
                        t,
                    )
                    .await;
                if r.is_ok() {
                    waiting[who] = false;
                }
            }
            Ev::Note { who, agent } => {
                let id = conv(who).await;
                let _ = engine
                    .act(
                        id,
                        AgentAction::Note(format!("NOTE-SECRET-{i}")),
                        &by(agent),
                        t,
                    )
                    .await;
            }
            Ev::Handoff { who, agent } => {
                let id = conv(who).await;
                let _ = engine
                    .act(
                        id,
                        AgentAction::Handoff {
                            queue: Some("complaints".into()),
                            agent: None,
                            note: Some(format!("NOTE-SECRET-h{i}")),
                        },
                        &by(agent),
                        t,
                    )
                    .await;
            }
            Ev::Resolve { who, agent } => {
                let id = conv(who).await;
                if engine
                    .act(id, AgentAction::Status(Status::Resolved), &by(agent), t)
                    .await
                    .is_ok()
                {
                    waiting[who] = false;
                }
            }
        }
    }

    // No reply twice: each event processed once; each outbound message has one outbox row.
    let msgs = all_messages(&store).await;
    let inbound_ids: Vec<&str> = msgs
        .iter()
        .filter(|m| m.direction == Direction::In)
        .filter_map(|m| m.provider_id.as_deref())
        .collect();
    let distinct: HashSet<&str> = inbound_ids.iter().copied().collect();
    prop_assert_eq!(
        distinct.len(),
        inbound_ids.len(),
        "an inbound message stored twice"
    );
    let out = store.outbox_payloads().await.unwrap();
    let outbound = msgs
        .iter()
        .filter(|m| m.direction == Direction::Out)
        .count();
    let queued_messages = out.iter().filter(|(_, p)| p["type"] == "message").count();
    prop_assert_eq!(
        queued_messages,
        outbound,
        "one outbox row per outbound message"
    );
    // Notes never leave.
    for (_, p) in &out {
        prop_assert!(
            !p.to_string().contains("NOTE-SECRET"),
            "a note reached the outbox: {}",
            p
        );
    }
    // Every customer whose message was the last thing to happen is answered, in a flow, in a
    // queue, or with the person who owns the conversation.
    for (who, w) in waiting.iter().enumerate() {
        if !w {
            continue;
        }
        let (_, c, _) = store
            .open_conversation("whatsapp", &customer(who), None, None, 0)
            .await
            .unwrap();
        let c = store.conversation(c.id).await.unwrap().unwrap();
        let ms = store.messages(c.id).await.unwrap();
        let last_in = ms.iter().rposition(|m| m.direction == Direction::In);
        let answered =
            last_in.is_some_and(|i| ms[i + 1..].iter().any(|m| m.direction == Direction::Out));
        prop_assert!(
            answered || c.flow.is_some() || c.queue.is_some() || c.assignee.is_some(),
            "customer {} left alone: status {:?}, messages {:?}",
            who,
            c.status,
            ms.iter()
                .map(|m| (&m.direction, &m.body))
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("CI").is_some() { 48 } else { 24 },
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_pipeline_keeps_its_invariants_over_random_event_sequences(
        events in prop::collection::vec(ev(), 1..40)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(events))?;
    }
}
