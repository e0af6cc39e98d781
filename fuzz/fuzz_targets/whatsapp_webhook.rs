//! A WhatsApp Cloud API notification body, as a stranger could post it (the signature is
//! checked before parsing, but the parser must hold on anything): never panics, and parsing
//! is a function of the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_connectors::whatsapp;

fuzz_target!(|data: &[u8]| {
    let first = whatsapp::parse(data);
    let again = whatsapp::parse(data);
    match (&first, &again) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.messages.len(), b.messages.len());
            assert_eq!(a.statuses.len(), b.statuses.len());
        }
        (Err(_), Err(_)) => {}
        _ => panic!("parsing the same bytes twice gave different outcomes"),
    }
    // The signature check takes any header value without panicking and refuses a wrong one.
    if let Ok(h) = std::str::from_utf8(data) {
        assert!(
            !whatsapp::signature_valid(b"fuzz-secret", data, Some(h)) || h.starts_with("sha256=")
        );
    }
});
