//! A web chat post and a visitor session token, as a stranger could send them: the post is
//! either refused with a reason or bounded by the documented limits, and no made-up token
//! verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_connectors::webchat::{self, Posted, MAX_ID, MAX_TEXT};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<Posted>(data) {
        if let Ok((_kind, text, choice)) = webchat::message(&p) {
            assert!(text.chars().count() <= MAX_TEXT);
            assert!(choice.is_none_or(|c| c.chars().count() <= MAX_ID));
        }
    }
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(
            webchat::verify(b"a-key-the-fuzzer-does-not-know-32b", token, 0).is_err(),
            "a token the server never issued verified: {token:?}"
        );
    }
});
