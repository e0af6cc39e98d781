//! Shopify's GraphQL Admin API and outbound webhooks against fake servers on loopback
//! (`wiremock`), with the payload shapes of `tests/fixtures/shopify/` (copies of the shared
//! fixtures).

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_connectors::shopify::{
    order_from_rest, webhook_signature_valid, Shopify, ShopifyConfig,
};
use switchyard_connectors::webhooks::{signature, Endpoint, Target, Webhooks, BREAK_AFTER};
use switchyard_engine::ports::{Lookup, LookupError, Notifier};
use switchyard_rules::pack::LookupAction;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn fixture(name: &str) -> Value {
    let p = format!(
        "{}/tests/fixtures/shopify/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

const GQL: &str = "/admin/api/2025-07/graphql.json";

fn client(server: &MockServer) -> Shopify {
    switchyard_connectors::cloud_api::install_tls();
    let mut cfg = ShopifyConfig::new(&server.uri(), "shpat_test");
    cfg.timeout = Duration::from_millis(400);
    Shopify::new(cfg).unwrap()
}

/// The fixture's order node, made a Pakistani COD order.
fn cod_node(name: &str, phone: &str, created: &str) -> Value {
    let mut n = fixture("shopify_graphql_order_node.json");
    n["name"] = json!(name);
    n["id"] = json!(format!("gid://shopify/Order/{}", &name[1..]));
    n["phone"] = Value::Null;
    n["shippingAddress"] = json!({ "phone": phone });
    n["customer"] =
        json!({ "id": "gid://shopify/Customer/5", "displayName": "Ayesha", "phone": phone });
    n["paymentGatewayNames"] = json!(["Cash on Delivery (COD)"]);
    n["createdAt"] = json!(created);
    n["tags"] = json!([]);
    n
}

fn orders(nodes: Vec<Value>) -> Value {
    json!({ "data": { "orders": { "nodes": nodes } }, "extensions": { "cost": { "requestedQueryCost": 12, "actualQueryCost": 12 } } })
}

#[tokio::test]
async fn an_order_by_name_has_status_courier_tracking_and_payment() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GQL))
        .and(header("X-Shopify-Access-Token", "shpat_test"))
        .and(body_string_contains("name:#1001"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(orders(vec![fixture("shopify_graphql_order_node.json")])),
        )
        .expect(1)
        .mount(&server)
        .await;
    let s = client(&server);
    let o = s
        .call("store", LookupAction::FindOrder, &json!("1001"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o["name"], "#1001");
    assert_eq!(o["status"], "fulfilled");
    assert_eq!(o["financial_status"], "paid");
    assert_eq!(o["courier"], "DHL");
    assert_eq!(o["tracking_url"], "https://example.org/t");
    assert_eq!(o["total"], 120.0);
    // The second lookup comes from the cache (`expect(1)` above).
    let again = s.find(&json!("#1001")).await.unwrap().unwrap();
    assert_eq!(again["name"], "#1001");
    // Nothing found is not an error.
    let none = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(orders(vec![])))
        .mount(&none)
        .await;
    assert_eq!(client(&none).find(&json!("#9")).await.unwrap(), None);
}

#[tokio::test]
async fn by_phone_the_newest_of_the_customers_orders() {
    let server = MockServer::start().await;
    let answer = json!({ "data": { "customers": { "nodes": [ { "id": "gid://shopify/Customer/5", "orders": { "nodes": [
        cod_node("#10230", "+923001234567", "2026-11-01T10:00:00Z"),
        cod_node("#10234", "0300-1234567", "2026-11-20T10:00:00Z"),
        cod_node("#10299", "+923339999999", "2026-11-21T10:00:00Z"),
    ] } } ] } } });
    Mock::given(method("POST"))
        .and(path(GQL))
        .and(body_string_contains("phone:+923001234567"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&server)
        .await;
    let s = client(&server);
    let all = s.orders_by_phone("0300 1234567").await.unwrap();
    let names: Vec<&str> = all.iter().map(|o| o["name"].as_str().unwrap()).collect();
    // Newest first; the order with another phone is not theirs.
    assert_eq!(names, ["#10234", "#10230"]);
    assert_eq!(all[0]["payment"], "cod");
    assert_eq!(all[0]["phone"], "+923001234567", "normalised to E.164");
    let o = s.find(&json!("+923001234567")).await.unwrap().unwrap();
    assert_eq!(o["name"], "#10234");
}

#[tokio::test]
async fn throttled_waits_then_succeeds() {
    let server = MockServer::start().await;
    let mut throttled = fixture("shopify_graphql_throttled.json");
    // 752 requested, 740 available, 50/s restored: a 0.24 s wait.
    throttled["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] = json!(740);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(throttled))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0.1"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(orders(vec![fixture("shopify_graphql_order_node.json")])),
        )
        .with_priority(3)
        .mount(&server)
        .await;
    let t = std::time::Instant::now();
    let o = client(&server).find(&json!("#1001")).await.unwrap();
    assert_eq!(o.unwrap()["name"], "#1001");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "it waited: {:?}",
        t.elapsed()
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_slow_shop_times_out_and_bad_tokens_say_so() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(orders(vec![]))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let Err(LookupError::Failed(m)) = client(&server).find(&json!("#1")).await else {
        panic!("a timeout is a failed lookup");
    };
    assert!(m.contains("did not answer"), "{m}");
    let denied = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&denied)
        .await;
    let Err(LookupError::Failed(m)) = client(&denied).find(&json!("#1")).await else {
        panic!("401 is a failed lookup");
    };
    assert!(m.contains("SHOPIFY_ACCESS_TOKEN"), "{m}");
}

#[tokio::test]
async fn confirming_tags_and_notes_the_order_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("orders(first"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(orders(vec![cod_node(
                "#20001",
                "+923001234567",
                "2026-11-23T07:00:00Z",
            )])),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("tagsAdd"))
        .and(body_string_contains("cod_confirmed"))
        .and(body_string_contains("gid://shopify/Order/20001"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "data": { "tagsAdd": { "userErrors": [] } } })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("orderUpdate"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "data": { "orderUpdate": { "userErrors": [] } } })),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("orderCancel"))
        .and(body_string_contains("CUSTOMER"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "data": { "orderCancel": { "orderCancelUserErrors": [ { "field": ["orderId"], "message": "Order is already fulfilled" } ] } } }),
        ))
        .mount(&server)
        .await;
    let s = client(&server);
    let o = s
        .call("store", LookupAction::ConfirmOrder, &json!("#20001"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o["tags"], json!(["cod_confirmed"]));
    // Shopify's refusal is a failed lookup with its reason (a person takes over).
    let Err(LookupError::Failed(m)) = s
        .call(
            "store",
            LookupAction::CancelOrder,
            &json!("#20001"),
            Some("changed my mind"),
        )
        .await
    else {
        panic!("a refused cancellation fails");
    };
    assert!(m.contains("already fulfilled"), "{m}");
}

#[test]
fn order_webhooks_read_like_lookups_and_signatures_are_checked() {
    let rest = fixture("shopify_order.json")["order"].clone();
    let o = order_from_rest(&rest);
    assert_eq!(o["name"], "#1001");
    assert_eq!(o["payment"], "prepaid");
    assert_eq!(o["total"], 409.94);
    let mut cod = rest.clone();
    cod["payment_gateway_names"] = json!(["Cash on Delivery (COD)"]);
    cod["shipping_address"]["phone"] = json!("0300 1234567");
    cod["phone"] = Value::Null;
    let o = order_from_rest(&cod);
    assert_eq!(
        (o["payment"].as_str(), o["phone"].as_str()),
        (Some("cod"), Some("+923001234567"))
    );
    // Shopify's documented known answer: base64(HMAC-SHA256("secret", "test")).
    let good = "Aymga2LNFrM+tnkr6MYLFY2Jou46h2/Omogeu0iMCRQ=";
    assert!(webhook_signature_valid(b"secret", b"test", Some(good)));
    assert!(!webhook_signature_valid(b"secret", b"test!", Some(good)));
    assert!(!webhook_signature_valid(b"other", b"test", Some(good)));
    assert!(!webhook_signature_valid(b"secret", b"test", None));
    assert!(!webhook_signature_valid(
        b"secret",
        b"test",
        Some("not base64!")
    ));
}

#[tokio::test]
async fn outbound_webhooks_are_signed_and_a_failing_endpoint_trips_its_breaker() {
    switchyard_connectors::cloud_api::install_tls();
    let ok = MockServer::start().await;
    let body = json!({ "text": "3 COD orders unconfirmed" });
    let sig = signature("s3cret", &serde_json::to_vec(&body).unwrap());
    Mock::given(method("POST"))
        .and(header("X-Switchyard-Signature", sig.as_str()))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&ok)
        .await;
    let down = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&down)
        .await;
    let eps = [
        (
            "ops",
            Target::Http(Endpoint {
                url: ok.uri(),
                secret: Some("s3cret".into()),
            }),
        ),
        (
            "crm",
            Target::Http(Endpoint {
                url: down.uri(),
                secret: None,
            }),
        ),
        (
            "nowhere",
            Target::Missing("the webhook `nowhere` has no URL: set NOWHERE_URL".into()),
        ),
        ("printed", Target::Print),
        (
            "slack",
            Target::Http(Endpoint {
                // Nothing listens on port 9; for Slack the URL's path is the credential.
                url: "http://127.0.0.1:9/services/T000/B000/XSECRETX".into(),
                secret: None,
            }),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let w = Webhooks::new(eps, Duration::from_secs(2)).unwrap();
    w.notify("ops", &body).await.unwrap();
    for _ in 0..BREAK_AFTER + 3 {
        assert!(w.notify("crm", &body).await.is_err());
    }
    assert_eq!(
        down.received_requests().await.unwrap().len() as u32,
        BREAK_AFTER,
        "after {BREAK_AFTER} failures in a row the endpoint is not called"
    );
    let Err(LookupError::Failed(m)) = w.notify("nowhere", &body).await else {
        panic!("an endpoint without a URL fails");
    };
    assert!(m.contains("NOWHERE_URL"));
    w.notify("printed", &body).await.unwrap();
    // What a failure says (audited, logged) never holds the endpoint's URL.
    let Err(LookupError::Failed(m)) = w.notify("slack", &body).await else {
        panic!("an unreachable endpoint fails");
    };
    assert!(
        m.contains("`slack` is unreachable") && !m.contains("XSECRETX") && !m.contains("services"),
        "{m}"
    );
}

// ---- the generic HTTP lookup against a fake courier API ---------------------------------------

fn courier(
    server: &MockServer,
    cache: Option<Duration>,
) -> switchyard_connectors::http_lookup::HttpLookup {
    switchyard_connectors::cloud_api::install_tls();
    let rt = switchyard_rules::pack::HttpLookupRt {
        method: "GET".into(),
        url: format!("{}/track-order/{{{{key}}}}", server.uri()),
        headers: [("token".to_string(), "POSTEX_TOKEN".to_string())].into(),
        body: None,
        map: [
            ("status".to_string(), "/dist/transactionStatus".to_string()),
            ("eta".to_string(), "/dist/eta".to_string()),
        ]
        .into(),
        timeout: Duration::from_millis(500),
        retries: 1,
        cache,
        irreversible: false,
    };
    let env = |v: &str| (v == "POSTEX_TOKEN").then(|| "tok-123".to_string());
    switchyard_connectors::http_lookup::HttpLookup::new("postex", rt, env).unwrap()
}

#[tokio::test]
async fn an_http_lookup_maps_the_answer_retries_a_5xx_and_caches() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/track-order/CN%2012"))
        .and(header("token", "tok-123"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/track-order/CN%2012"))
        .and(header("token", "tok-123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "statusCode": "200", "dist": { "transactionStatus": "Out for delivery", "eta": "today" } }),
        ))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/track-order/UNKNOWN"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let c = courier(&server, Some(Duration::from_secs(60)));
    let got = c
        .call("postex", LookupAction::Fetch, &json!("CN 12"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, json!({ "status": "Out for delivery", "eta": "today" }));
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "one retry after the 503"
    );
    c.call("postex", LookupAction::Fetch, &json!("CN 12"), None)
        .await
        .unwrap();
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "the second answer is cached"
    );
    assert_eq!(
        c.call("postex", LookupAction::Fetch, &json!("UNKNOWN"), None)
            .await
            .unwrap(),
        None
    );
    assert!(c
        .call("postex", LookupAction::FindOrder, &json!("x"), None)
        .await
        .is_err());
    // A header variable missing from the environment is said at start.
    let rt = switchyard_rules::pack::HttpLookupRt {
        method: "GET".into(),
        url: server.uri(),
        headers: [("token".to_string(), "POSTEX_TOKEN".to_string())].into(),
        body: None,
        map: [("s".to_string(), "/s".to_string())].into(),
        timeout: Duration::from_secs(1),
        retries: 0,
        cache: None,
        irreversible: false,
    };
    let Err(e) = switchyard_connectors::http_lookup::HttpLookup::new("postex", rt, |_| None) else {
        panic!("a missing header variable is an error");
    };
    assert!(e.contains("POSTEX_TOKEN"), "{e}");
}

/// What a customer types cannot steer the lookup: `..` does not climb the courier's paths, a
/// redirect to another host does not get the pack's secret header, an endless answer is cut.
#[tokio::test]
async fn an_http_lookup_cannot_be_steered_by_the_key() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/track-order/moved"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/steal", elsewhere.uri()).as_str()),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/track-order/big"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!(
            "{{\"dist\": {{\"eta\": \"{}\"}}}}",
            "x".repeat(2 << 20)
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "dist": { "eta": "?" } })))
        .with_priority(10)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "dist": { "eta": "stolen" } })),
        )
        .mount(&elsewhere)
        .await;
    let c = courier(&server, None);
    for key in ["..", ".", "%2e%2e", "../../api/v1/status"] {
        // Whatever it answers, every request stays under the courier's path (checked below).
        let _ = c
            .call("postex", LookupAction::Fetch, &json!(key), None)
            .await;
    }
    for r in server.received_requests().await.unwrap() {
        assert!(
            r.url.path().starts_with("/track-order/"),
            "{} was requested",
            r.url
        );
    }
    let moved = c
        .call("postex", LookupAction::Fetch, &json!("moved"), None)
        .await;
    assert!(moved.is_err(), "{moved:?}");
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "nothing, and no secret header, went to another host"
    );
    let Err(LookupError::Failed(m)) = c
        .call("postex", LookupAction::Fetch, &json!("big"), None)
        .await
    else {
        panic!("an answer over the cap fails");
    };
    assert!(m.contains("more than"), "{m}");
}

#[tokio::test]
async fn an_http_lookup_that_times_out_fails() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let Err(LookupError::Failed(m)) = courier(&server, None)
        .call("postex", LookupAction::Fetch, &json!("CN1"), None)
        .await
    else {
        panic!("a timeout fails the lookup");
    };
    assert!(m.contains("did not answer"), "{m}");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "retried once"
    );
}
