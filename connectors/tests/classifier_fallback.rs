//! The classifier's language-model fallback against a fake OpenAI-compatible server
//! (`wiremock`): what it sends, what it accepts, its cache, budget and timeout.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_connectors::llm::LlmFallback;
use switchyard_rules::pack::{FallbackRt, IntentInfo};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn intents() -> Vec<IntentInfo> {
    vec![
        IntentInfo {
            name: "cancel_order".into(),
            description: Some("The customer wants an order cancelled.".into()),
            examples: vec!["cancel my order".into()],
            label: vec![],
        },
        IntentInfo {
            name: "order_status".into(),
            description: None,
            examples: vec!["where is my parcel".into()],
            label: vec![],
        },
    ]
}

fn rt(per_minute: u32, timeout: Duration) -> FallbackRt {
    FallbackRt {
        url_env: "LLM_URL".into(),
        key_env: Some("LLM_KEY".into()),
        model: "small-model".into(),
        timeout,
        per_minute,
        min_confidence: 0.6,
    }
}

/// A chat-completions answer whose message content is `content`.
fn answer(content: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "x", "object": "chat.completion",
        "choices": [ { "index": 0, "message": { "role": "assistant", "content": content.to_string() }, "finish_reason": "stop" } ]
    }))
}

#[tokio::test]
async fn asks_with_the_intents_and_the_text_only_and_caches_the_answer() {
    switchyard_connectors::cloud_api::install_tls();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_string_contains(
            "\"enum\":[\"cancel_order\",\"order_status\",\"unknown\"]",
        ))
        .respond_with(answer(
            json!({ "intent": "cancel_order", "confidence": 0.9 }),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let f = LlmFallback::new(
        &rt(10, Duration::from_secs(3)),
        &format!("{}/v1", server.uri()),
        Some("sk-test".into()),
        &intents(),
    )
    .unwrap();
    let u = f
        .understand("please scrap what I bought")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((u.intent.as_str(), u.cached), ("cancel_order", false));
    // The same text again (any case): from the cache, no second request (`expect(1)`).
    let u = f
        .understand("Please scrap what I bought ")
        .await
        .unwrap()
        .unwrap();
    assert!(u.cached);
    // What was sent: the intents with their descriptions, the message; no key in the body.
    let reqs: Vec<Request> = server.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(body["model"], "small-model");
    assert_eq!(body["temperature"], 0);
    let system = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("- cancel_order: The customer wants an order cancelled."),
        "{system}"
    );
    assert_eq!(body["messages"][1]["content"], "please scrap what I bought");
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
    assert!(!String::from_utf8_lossy(&reqs[0].body).contains("sk-test"));
    assert!(
        !format!("{f:?}").contains("sk-test"),
        "the key is never printed"
    );
}

#[tokio::test]
async fn refuses_what_the_pack_does_not_have_or_is_unsure_of() {
    switchyard_connectors::cloud_api::install_tls();
    let server = MockServer::start().await;
    Mock::given(body_string_contains("invented"))
        .respond_with(answer(
            json!({ "intent": "refund_please", "confidence": 0.99 }),
        ))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("unsure"))
        .respond_with(answer(
            json!({ "intent": "order_status", "confidence": 0.3 }),
        ))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("prose"))
        .respond_with(answer(json!("I think it is order_status")))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("broken"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let f = LlmFallback::new(
        &rt(10, Duration::from_secs(3)),
        &server.uri(),
        None,
        &intents(),
    )
    .unwrap();
    assert_eq!(f.understand("an invented intent").await.unwrap(), None);
    assert_eq!(f.understand("unsure answer").await.unwrap(), None);
    let e = f.understand("prose instead of json").await.unwrap_err();
    assert!(e.to_string().contains("not the JSON asked for"), "{e}");
    let e = f.understand("broken server").await.unwrap_err();
    assert!(e.to_string().contains("HTTP 500"), "{e}");
}

#[tokio::test]
async fn keeps_to_its_budget_and_its_timeout() {
    switchyard_connectors::cloud_api::install_tls();
    let server = MockServer::start().await;
    Mock::given(body_string_contains("slow"))
        .respond_with(
            answer(json!({ "intent": "order_status", "confidence": 0.9 }))
                .set_delay(Duration::from_secs(10)),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(answer(
            json!({ "intent": "order_status", "confidence": 0.9 }),
        ))
        .mount(&server)
        .await;
    // Two questions a minute: the third distinct text is not asked.
    let f = LlmFallback::new(
        &rt(2, Duration::from_secs(3)),
        &server.uri(),
        None,
        &intents(),
    )
    .unwrap();
    assert!(f.understand("first").await.unwrap().is_some());
    assert!(f.understand("second").await.unwrap().is_some());
    assert_eq!(f.understand("third").await.unwrap(), None);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    // A server slower than the timeout: an error after the timeout, not after its answer.
    let f = LlmFallback::new(
        &rt(10, Duration::from_millis(300)),
        &server.uri(),
        None,
        &intents(),
    )
    .unwrap();
    let t = Instant::now();
    assert!(f.understand("slow answer").await.is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
