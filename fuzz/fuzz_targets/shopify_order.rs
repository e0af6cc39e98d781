//! A Shopify order webhook body and a GraphQL order node: the mapping to the pack's order shape
//! never panics and always gives an object whose phone, when present, is a string.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_connectors::shopify;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for order in [
        shopify::order_from_rest(&raw),
        shopify::order_from_graphql(&raw),
    ] {
        assert!(order.is_object(), "an order is always an object: {order}");
        assert!(order["phone"].is_null() || order["phone"].is_string());
    }
    if let Some(topic) = raw.as_str() {
        let _ = shopify::event_of_topic(topic);
    }
});
