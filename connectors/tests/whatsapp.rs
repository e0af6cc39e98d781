//! WhatsApp payloads against real notification shapes (`tests/fixtures/whatsapp/`, copied from
//! `../shared/fixtures/whatsapp/`).

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use switchyard_connectors::whatsapp::{
    handshake, parse, send_request, signature_valid, ParseError,
};
use switchyard_engine::model::{Inbound, Outbound, OutboundList, OutboundTemplate};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("tests/fixtures/whatsapp/{name}")).unwrap()
}

fn only_message(name: &str) -> (String, String, Option<String>, Value) {
    let n = parse(&fixture(name)).unwrap();
    assert_eq!(n.messages.len(), 1, "{name}");
    match n.messages.into_iter().next().unwrap() {
        Inbound::Message {
            kind,
            text,
            choice,
            payload,
            channel,
            ..
        } => {
            assert_eq!(channel, "whatsapp");
            (kind, text, choice, payload)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_message_type_is_normalised() {
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("wa_text.json", "text", "Body Text", None),
        (
            "wa_meta_text.json",
            "text",
            "Does it come in another color?",
            None,
        ),
        ("wa_text_reply_context.json", "text", "replied text", None),
        (
            "wa_button_reply.json",
            "button",
            "title",
            Some("callback_data"),
        ),
        (
            "wa_meta_button_reply.json",
            "button",
            "Change",
            Some("change-button"),
        ),
        ("wa_list_reply.json", "list", "title", Some("callback_data")),
        (
            "wa_meta_list_reply.json",
            "list",
            "Priority Mail Express",
            Some("priority_express"),
        ),
        (
            "wa_template_quick_reply_button.json",
            "button",
            "title",
            Some("callback_data"),
        ),
        ("wa_image.json", "media", "", None),
        ("wa_document.json", "media", "caption", None),
        ("wa_audio_voice.json", "media", "", None),
        (
            "wa_location.json",
            "location",
            "Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025",
            None,
        ),
        (
            "wa_contacts.json",
            "contacts",
            "Chandler Bing, Monica, Rachel Green",
            None,
        ),
        ("wa_reaction.json", "reaction", "😮", None),
        ("wa_order.json", "order", "", None),
        ("wa_unsupported.json", "unsupported", "", None),
    ];
    for (file, kind, text, choice) in cases {
        let (k, t, c, payload) = only_message(file);
        assert_eq!(
            (k.as_str(), t.as_str(), c.as_deref()),
            (*kind, *text, *choice),
            "{file}"
        );
        // The whole original message is kept: nothing the vendor sent is lost.
        assert!(payload["message"]["id"].is_string(), "{file}");
    }
}

#[test]
fn sender_name_phone_and_number_come_from_the_envelope() {
    let n = parse(&fixture("wa_text.json")).unwrap();
    let Inbound::Message {
        from,
        name,
        phone,
        provider_id,
        payload,
        ..
    } = &n.messages[0]
    else {
        panic!()
    };
    assert_eq!(from, "972987654321");
    assert_eq!(name.as_deref(), Some("Test Name"));
    assert_eq!(phone.as_deref(), Some("+972987654321"));
    assert_eq!(provider_id, "wamid.xyzxyz");
    assert_eq!(payload["phone_number_id"], "1122334455667");
}

#[test]
fn statuses_carry_their_error_codes() {
    for (file, status, code) in [
        ("wa_status_sent.json", "sent", None),
        ("wa_status_delivered.json", "delivered", None),
        ("wa_status_read.json", "read", None),
        ("wa_status_failed_130472.json", "failed", Some(130472)),
        ("wa_meta_status_failed_131049.json", "failed", Some(131049)),
        ("wa_meta_status_sent.json", "sent", None),
    ] {
        let n = parse(&fixture(file)).unwrap();
        assert!(n.messages.is_empty(), "{file}");
        assert_eq!(n.statuses.len(), 1, "{file}");
        assert_eq!(n.statuses[0].status, status, "{file}");
        assert_eq!(n.statuses[0].error.as_ref().map(|e| e.0), code, "{file}");
    }
}

#[test]
fn bad_bodies_are_errors_not_panics() {
    assert!(matches!(parse(b"{not json"), Err(ParseError::Json(_))));
    assert_eq!(
        parse(br#"{"object":"page","entry":[]}"#),
        Err(ParseError::NotWhatsApp(Some("page".into())))
    );
    // Other change fields and messages without an id are skipped, not fatal.
    let odd = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"account_update","value":{}},{"field":"messages","value":{"messages":[{"from":"1"}]}}]}]}"#;
    assert_eq!(parse(odd).unwrap().messages.len(), 0);
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn signatures_are_checked_on_the_raw_body() {
    let body = fixture("wa_text.json");
    let good = sign(b"app-secret", &body);
    assert!(signature_valid(b"app-secret", &body, Some(&good)));
    assert!(!signature_valid(b"other-secret", &body, Some(&good)));
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert!(!signature_valid(b"app-secret", &tampered, Some(&good)));
    assert!(!signature_valid(b"app-secret", &body, None));
    assert!(!signature_valid(b"app-secret", &body, Some("sha256=zz")));
    assert!(!signature_valid(
        b"app-secret",
        &body,
        Some(&good.replace("sha256=", "sha1="))
    ));
}

#[test]
fn the_handshake_echoes_the_challenge_only_for_the_right_token() {
    assert_eq!(
        handshake(Some("subscribe"), Some("tok"), Some("1158201444"), "tok").as_deref(),
        Some("1158201444")
    );
    assert_eq!(
        handshake(Some("subscribe"), Some("bad"), Some("1"), "tok"),
        None
    );
    assert_eq!(
        handshake(Some("unsubscribe"), Some("tok"), Some("1"), "tok"),
        None
    );
    assert_eq!(handshake(Some("subscribe"), None, Some("1"), "tok"), None);
    assert_eq!(
        handshake(Some("subscribe"), Some(""), Some("1"), ""),
        None,
        "an empty configured token verifies nothing"
    );
}

fn out() -> Outbound {
    Outbound {
        channel: "whatsapp".into(),
        to: "923001234567".into(),
        text: "Hello".into(),
        buttons: vec![],
        list: None,
        template: None,
    }
}

#[test]
fn send_requests_have_the_cloud_api_shapes() {
    let text = send_request(&out());
    assert_eq!(text["to"], "+923001234567");
    assert_eq!(
        (text["type"].as_str(), text["text"]["body"].as_str()),
        (Some("text"), Some("Hello"))
    );

    let buttons = send_request(&Outbound {
        buttons: vec![("confirm".into(), "Confirm".into())],
        ..out()
    });
    let want: Value = serde_json::from_slice(&fixture("wa_send_buttons_request.json")).unwrap();
    assert_eq!(buttons["interactive"]["type"], want["interactive"]["type"]);
    assert_eq!(
        buttons["interactive"]["action"]["buttons"][0]["type"],
        want["interactive"]["action"]["buttons"][0]["type"]
    );
    assert_eq!(
        buttons["interactive"]["action"]["buttons"][0]["reply"]["id"],
        "confirm"
    );

    let list = send_request(&Outbound {
        list: Some(OutboundList {
            button: "Sizes".into(),
            rows: vec![("m".into(), "M".into())],
        }),
        ..out()
    });
    assert_eq!(list["interactive"]["type"], "list");
    assert_eq!(
        list["interactive"]["action"]["sections"][0]["rows"][0]["id"],
        "m"
    );

    let tpl = send_request(&Outbound {
        template: Some(OutboundTemplate {
            name: "cod_confirmation_v2".into(),
            language: "en".into(),
            params: vec!["#10234".into(), "2499".into()],
            buttons: vec!["confirm".into(), "cancel".into()],
        }),
        ..out()
    });
    let want: Value = serde_json::from_slice(&fixture("wa_send_template_request.json")).unwrap();
    assert_eq!(tpl["type"], "template");
    assert_eq!(
        tpl["template"]["language"]["policy"],
        want["template"]["language"]["policy"]
    );
    assert_eq!(
        tpl["template"]["components"][0]["parameters"][1]["text"],
        "2499"
    );
    assert_eq!(tpl["template"]["components"][2]["sub_type"], "quick_reply");
    assert_eq!(tpl["template"]["components"][2]["index"], "1");
    assert_eq!(
        tpl["template"]["components"][2]["parameters"][0]["payload"],
        "cancel"
    );
}
