//! Stories of a bot that does not act on a guess: an unsure message asked about (the question
//! kept with the conversation across engines), and an irreversible store action withheld
//! unless the customer chose it with a button.

use super::*;

const CAREFUL_PACK: &str = r##"
version: 1
settings:
  default_queue: support
  intent_threshold: 0.45
templates:
  which: { text: "Is it {{clarify.first}} or {{clarify.second}}?" }
  done: { text: "cancelled" }
queues: { support: { assignment: manual } }
connectors: { store: { type: demo } }
intents:
  cancel_order:
    label: { en: "Cancel my order" }
    examples: [cancel my order, cancel it please, I want to cancel, cancel the order, do not send it]
  complaint:
    label: { en: "Report a problem" }
    examples: [the parcel is damaged, it arrived broken, wrong item sent, the shirt is torn, bad quality]
flows:
  cancel:
    start: ask
    steps:
      ask:
        send: { buttons: { body: "Cancel {{conversation.attributes.order_no}}?", buttons: [ { id: yes_cancel, title: "Yes, cancel it" }, { id: no_keep, title: "No, keep it" } ] } }
        on:
          yes_cancel: { do: [ { lookup: { connector: store, action: cancel_order, by: "\"10234\"" } }, { reply: { template: done } } ], end: true }
          no_keep: { end: true }
rules:
  - name: guessing cancels at once
    when: message.received
    if: message.text == "cancel right now"
    then: [ { lookup: { connector: store, action: cancel_order, by: "\"10234\"" } }, { reply: { template: done } } ]
    stop: true
  - name: cancellations ask first
    when: message.received
    if: intent == "cancel_order"
    then: [ { set: { key: order_no, value: "\"#10234\"" } }, { start_flow: cancel } ]
    stop: true
  - name: complaints
    when: message.received
    if: intent == "complaint"
    then: [ { tag: complaint } ]
    stop: true
"##;

/// Every store call, answered as done.
#[derive(Default)]
struct StoreCalls(Mutex<Vec<(LookupAction, Value)>>);

#[async_trait]
impl Lookup for StoreCalls {
    async fn call(
        &self,
        _: &str,
        action: LookupAction,
        key: &Value,
        _: Option<&str>,
    ) -> Result<Option<Value>, LookupError> {
        self.0.lock().unwrap().push((action, key.clone()));
        Ok(Some(
            serde_json::json!({ "name": "#10234", "status": "cancelled" }),
        ))
    }
}

fn tap(from: &str, id: &str, choice: &str, title: &str) -> Inbound {
    Inbound::Message {
        channel: "webchat".into(),
        from: from.into(),
        name: None,
        phone: None,
        provider_id: id.into(),
        kind: "interactive".into(),
        text: title.into(),
        choice: Some(choice.into()),
        payload: Value::Null,
    }
}

/// An unsure message is asked about with buttons; the question is stored with the
/// conversation (a new engine on the same store — a restart — still knows it) and the tapped
/// intent runs the original message. An unclear answer goes to a person with a note.
pub(crate) async fn an_unsure_message_is_asked_about_and_the_answer_runs_it(store: Arc<dyn Store>) {
    // Unsure of everything: it always asks.
    let unsure = CAREFUL_PACK.replace(
        "intent_threshold: 0.45",
        "intent_threshold: 0.99\n  clarify: { floor: 0.2, margin: 1.0, template: which, other: { text: \"Something else\" } }",
    );
    let calls = Arc::new(StoreCalls::default());
    let engine = Engine::new(store.clone(), pack(&unsure), calls.clone());
    step(
        &engine,
        vec![msg("c1", "1", "cancel it, the parcel is damaged")],
        1,
    )
    .await;
    let (_, c, _) = store
        .open_conversation("webchat", "c1", None, None, 0)
        .await
        .unwrap();
    let c = store.conversation(c.id).await.unwrap().unwrap();
    let asking = c.asking.clone().expect("the bot asks instead of guessing");
    assert_eq!(asking.text, "cancel it, the parcel is damaged");
    let mut offered = asking.intents.clone();
    offered.sort();
    assert_eq!(offered, ["cancel_order", "complaint"]);
    let out = store.messages(c.id).await.unwrap();
    let question = out.last().unwrap();
    assert!(question.body.starts_with("Is it "), "{question:?}");
    assert!(
        c.tags.is_empty() && c.flow.is_none(),
        "nothing done on a guess: {c:?}"
    );

    // Another engine on the same store: the question is still pending; the tap decides.
    let engine = Engine::new(store.clone(), pack(&unsure), calls.clone());
    step(
        &engine,
        vec![tap("c1", "2", "clarify:complaint", "Report a problem")],
        2,
    )
    .await;
    let c = store.conversation(c.id).await.unwrap().unwrap();
    assert!(c.asking.is_none());
    assert_eq!(
        c.tags,
        ["complaint"],
        "the original message ran as a complaint"
    );
    assert!(calls.0.lock().unwrap().is_empty(), "and cancelled nothing");

    // "Something else": a person, told what was asked.
    step(
        &engine,
        vec![msg("c2", "3", "cancel it, the parcel is damaged")],
        3,
    )
    .await;
    step(
        &engine,
        vec![tap("c2", "4", "clarify:other", "Something else")],
        4,
    )
    .await;
    let (_, c2, _) = store
        .open_conversation("webchat", "c2", None, None, 0)
        .await
        .unwrap();
    let c2 = store.conversation(c2.id).await.unwrap().unwrap();
    assert_eq!(c2.queue.as_deref(), Some("support"));
    assert!(c2.asking.is_none());
    let notes = store.notes(c2.id).await.unwrap();
    assert!(
        notes.iter().any(|n| n.text.contains("was unsure")),
        "{notes:?}"
    );
}

/// A cancellation runs only in the branch of the button that confirms it; a rule that would
/// cancel on a message is withheld, audited in the trace, and a person is asked to check.
pub(crate) async fn an_irreversible_action_waits_for_the_customers_tap(store: Arc<dyn Store>) {
    let calls = Arc::new(StoreCalls::default());
    let engine = Engine::new(store.clone(), pack(CAREFUL_PACK), calls.clone());
    step(&engine, vec![msg("i1", "1", "cancel right now")], 1).await;
    assert!(
        calls.0.lock().unwrap().is_empty(),
        "withheld: no store call"
    );
    let (_, c, _) = store
        .open_conversation("webchat", "i1", None, None, 0)
        .await
        .unwrap();
    let c = store.conversation(c.id).await.unwrap().unwrap();
    assert_eq!(c.queue.as_deref(), Some("support"));
    let notes = store.notes(c.id).await.unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.text.contains("had not confirmed it")),
        "{notes:?}"
    );
    let out = store.messages(c.id).await.unwrap();
    assert!(!out.iter().any(|m| m.body == "cancelled"), "{out:?}");

    step(
        &engine,
        vec![msg("i2", "2", "I want to cancel my order")],
        2,
    )
    .await;
    assert!(calls.0.lock().unwrap().is_empty(), "asked first");
    step(
        &engine,
        vec![tap("i2", "3", "yes_cancel", "Yes, cancel it")],
        3,
    )
    .await;
    let done = calls.0.lock().unwrap().clone();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].0, LookupAction::CancelOrder);
}
