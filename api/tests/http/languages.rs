//! #17 over HTTP: customers answered in their own way of writing, never left in silence, and
//! understood in the context of the bot's question — WhatsApp webhooks in, the sandbox
//! channel's sends out, the example pack. The server runs on the wall clock, so the pack's
//! store hours are made always open (or closed all of these days) in a copy of it: what the
//! customer is told must not depend on when the test runs.

use super::*;

pub(crate) struct Desk {
    pub(crate) base: String,
    pub(crate) channel: Arc<SandboxChannel>,
    /// The copy of the example pack serving.
    pub(crate) pack_dir: std::path::PathBuf,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) _dir: tempfile::TempDir,
}

/// The example pack with its store open all week round the clock (`open`), or closed on every
/// date from yesterday to the day after tomorrow; its store holds `orders`.
pub(crate) async fn desk(open: bool, orders: Vec<Value>) -> Desk {
    let dir = tempfile::tempdir().unwrap();
    let pack_dir = dir.path().join("pack");
    std::fs::create_dir(&pack_dir).unwrap();
    let example = std::path::Path::new("../examples/pk-ecommerce");
    for e in std::fs::read_dir(example).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, pack_dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let yaml = std::fs::read_to_string(pack_dir.join("pack.yaml")).unwrap();
    let hours = "  store_hours:\n    days: [mon, tue, wed, thu, fri, sat]\n    open: \"10:00\"\n    close: \"22:00\"\n    holidays: [\"2026-12-25\", \"2027-03-23\"]\n";
    assert!(yaml.contains(hours), "the example pack's store hours moved");
    let karachi = chrono::Utc::now() + chrono::Duration::hours(5);
    let replaced = if open {
        "  store_hours:\n    days: [mon, tue, wed, thu, fri, sat, sun]\n    open: \"00:00\"\n    close: \"24:00\"\n".to_string()
    } else {
        let days: Vec<String> = (-1..=2)
            .map(|d| {
                format!(
                    "\"{}\"",
                    (karachi + chrono::Duration::days(d)).format("%Y-%m-%d")
                )
            })
            .collect();
        format!("  store_hours:\n    days: [mon, tue, wed, thu, fri, sat, sun]\n    open: \"10:00\"\n    close: \"22:00\"\n    holidays: [{}]\n", days.join(", "))
    };
    std::fs::write(pack_dir.join("pack.yaml"), yaml.replace(hours, &replaced)).unwrap();
    let loaded = switchyard_rules::load_dir(&pack_dir).unwrap();
    let pack = loaded
        .pack
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap(),
    );
    let orders = orders
        .into_iter()
        .map(|o| o.as_object().unwrap().clone())
        .collect();
    let lookup = Arc::new(switchyard_connectors::demo::DemoStore::new(orders));
    let engine = Arc::new(Engine::new(store, Arc::new(pack), lookup));
    let channel = Arc::new(SandboxChannel::new());
    let cfg = WorkerConfig {
        poll: Duration::from_millis(20),
        backoff: Duration::from_millis(20),
        ..Default::default()
    };
    let runtime = Arc::new(
        Runtime::start(
            engine,
            channel.clone(),
            Arc::new(SandboxNotifier::default()),
            cfg,
        )
        .await
        .unwrap(),
    );
    let state = Arc::new(AppState {
        unsigned_webhooks: true,
        admin_token: Some(super::ADMIN.into()),
        ..AppState::new(runtime.clone())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(launch(listener, state, std::future::pending()));
    Desk {
        base,
        channel,
        pack_dir,
        runtime,
        _dir: dir,
    }
}

/// A customer's text message through the webhook; 200 means committed.
pub(crate) async fn says(d: &Desk, from: &str, id: &str, text: &str) {
    let body = json!({ "object": "whatsapp_business_account", "entry": [ { "id": "1", "changes": [ { "field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": { "display_phone_number": "15550000000", "phone_number_id": "111" },
        "contacts": [ { "profile": { "name": "Customer" }, "wa_id": from } ],
        "messages": [ { "from": from, "id": id, "timestamp": "1700000000", "type": "text", "text": { "body": text } } ] } } ] } ] });
    let r = client()
        .post(format!("{}/webhooks/whatsapp", d.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// What `to` has been sent, once `n` messages have gone to them.
pub(crate) async fn told(d: &Desk, to: &str, n: usize) -> Vec<String> {
    let of = || -> Vec<String> {
        d.channel
            .sent()
            .into_iter()
            .filter(|(_, m)| m.to == to)
            .map(|(_, m)| m.text)
            .collect()
    };
    for _ in 0..300 {
        if of().len() >= n {
            return of();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected {n} messages to {to}, got {:?}", of());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_customer_is_answered_in_the_way_they_write() {
    let d = desk(true, vec![]).await;
    says(&d, "923001110001", "wamid.l1", "السلام علیکم").await;
    says(&d, "923001110002", "wamid.l2", "assalam o alaikum bhai").await;
    says(&d, "923001110003", "wamid.l3", "Hello there").await;
    assert!(told(&d, "923001110001", 1).await[0].contains("خوش آمدید"));
    assert!(told(&d, "923001110002", 1).await[0].contains("khush aamdeed"));
    assert!(told(&d, "923001110003", 1).await[0].starts_with("Welcome to Zari"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hand_off_is_acknowledged_with_its_reason() {
    let d = desk(
        true,
        vec![json!({ "name": "#10234", "phone": "+923009999999", "status": "dispatched" })],
    )
    .await;
    // Nothing in the pack handles it.
    says(
        &d,
        "923002220001",
        "wamid.h1",
        "do you have this in maroon colour",
    )
    .await;
    // A lookup that finds nothing.
    says(&d, "923002220002", "wamid.h2", "order #99999 kahan hai").await;
    // The customer asks for a person.
    says(&d, "923002220003", "wamid.h3", "talk to a human please").await;
    // A flow's retries run out: the lookup flow asks for the number (nothing for this phone),
    // then twice again, then hands off.
    says(&d, "923002220004", "wamid.h4", "where is my order").await;
    assert!(told(&d, "923002220004", 1).await[0].contains("send your order number"));
    for (i, t) in ["no idea", "hmm", "???"].iter().enumerate() {
        says(&d, "923002220004", &format!("wamid.h4{i}"), t).await;
    }
    assert_eq!(
        told(&d, "923002220001", 1).await,
        ["Thanks for your message! A member of our team will reply here shortly."]
    );
    assert!(told(&d, "923002220002", 1).await[0].starts_with("Yeh order nahi mila"));
    assert!(told(&d, "923002220003", 1).await[0].starts_with("Connecting you to our team"));
    let flow = told(&d, "923002220004", 6).await;
    assert!(
        flow[1].starts_with("Sorry, I did not get that"),
        "asked again in other words first: {flow:?}"
    );
    assert!(flow[5].contains("passed this to a colleague"), "{flow:?}");
    // Told once: a follow-up while the conversation waits in its queue is not answered again.
    says(&d, "923002220001", "wamid.h5", "hello?").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(told(&d, "923002220001", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_store_hours_the_customer_is_told_when_we_are_back() {
    let d = desk(false, vec![]).await;
    says(
        &d,
        "923003330001",
        "wamid.c1",
        "kisi insaan se baat karwa dein",
    )
    .await;
    let t = told(&d, "923003330001", 1).await;
    assert!(t[0].contains("baje se jawab denge"), "{t:?}");
    // The day after the holidays, at opening time.
    let back = (chrono::Utc::now() + chrono::Duration::hours(5) + chrono::Duration::days(3))
        .format("%A")
        .to_string();
    assert!(t[0].contains(&format!("hum {back} 10:00")), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_understands_answers_in_the_context_of_its_question() {
    let d = desk(true, vec![json!({ "name": "#10251", "phone": "+923004440001", "status": "packed", "tracking_url": "https://t.example/10251" })]).await;
    // A bare number at the order-number prompt is the order number.
    says(&d, "923004440002", "wamid.x1", "where is my parcel").await;
    told(&d, "923004440002", 1).await;
    says(&d, "923004440002", "wamid.x2", "10251").await;
    let t = told(&d, "923004440002", 2).await;
    assert!(
        t[1].starts_with("For your privacy"),
        "looked up, and not this phone's: {t:?}"
    );
    // A complaint typed at the prompt is acted on, not used up as a retry.
    says(&d, "923004440003", "wamid.x3", "where is my parcel").await;
    told(&d, "923004440003", 1).await;
    says(&d, "923004440003", "wamid.x4", "parcel toota hua aya hai").await;
    let t = told(&d, "923004440003", 2).await;
    assert!(t[1].starts_with("Maazrat! Ticket"), "{t:?}");
    // A button's title typed instead of tapped is the button.
    says(&d, "923004440004", "wamid.x5", "where is my parcel").await;
    told(&d, "923004440004", 1).await;
    says(&d, "923004440004", "wamid.x6", "Talk to a person").await;
    let t = told(&d, "923004440004", 2).await;
    assert!(t[1].starts_with("Connecting you"), "{t:?}");
}
