//! The web chat channel: visitor sessions and message payloads. No HTTP here: the routes are
//! `POST /webchat/sessions` and `POST /webhooks/webchat` (api crate); the channel's limits are
//! `switchyard_rules::channel::WEBCHAT`.
//!
//! A visitor gets a session from the server — a random customer id and an expiry, signed with
//! the server's key (HMAC-SHA256) — and every message carries it. The customer a message is
//! from is the session's, never a field of the message: nobody can write as another visitor.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Longest text a visitor may send, in characters (WhatsApp's own limit for a text message).
pub const MAX_TEXT: usize = 4096;
/// Longest display name and message id, in characters.
pub const MAX_NAME: usize = 128;
pub const MAX_ID: usize = 128;

/// A visitor's session, as the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The customer id messages of this session are from (`v_` and 32 hex digits).
    pub customer: String,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("not a web chat session token")]
    Malformed,
    #[error("the session token's signature is wrong")]
    BadSignature,
    #[error("the session has expired: start a new one")]
    Expired,
}

fn mac(key: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(b"switchyard-webchat-session\0");
    m.update(payload.as_bytes());
    m
}

/// A new session for a new visitor, valid until `expires_at`: `(token, session)`.
pub fn issue(key: &[u8], expires_at: i64) -> Result<(String, Session), getrandom::Error> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)?;
    let session = Session {
        customer: format!("v_{}", hex::encode(id)),
        expires_at,
    };
    let payload = format!("{}.{}", session.customer, session.expires_at);
    let sig = hex::encode(mac(key, &payload).finalize().into_bytes());
    Ok((format!("{payload}.{sig}"), session))
}

/// The session a token stands for, if the signature holds (compared in constant time) and it
/// has not expired at `now`.
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Session, SessionError> {
    let (payload, sig) = token.rsplit_once('.').ok_or(SessionError::Malformed)?;
    let (customer, expires) = payload.split_once('.').ok_or(SessionError::Malformed)?;
    let sig = hex::decode(sig).map_err(|_| SessionError::Malformed)?;
    let expires_at: i64 = expires.parse().map_err(|_| SessionError::Malformed)?;
    if !customer.starts_with("v_") || customer.len() > MAX_ID {
        return Err(SessionError::Malformed);
    }
    mac(key, payload)
        .verify_slice(&sig)
        .map_err(|_| SessionError::BadSignature)?;
    if now >= expires_at {
        return Err(SessionError::Expired);
    }
    Ok(Session {
        customer: customer.to_string(),
        expires_at,
    })
}

/// A message a visitor posts: `{"id", "name"?, "text"}` or `{"id", "button"}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Posted {
    /// The message's id, unique within the session (a resend with the same id is a duplicate).
    pub id: String,
    /// The visitor's name, if they gave one.
    pub name: Option<String>,
    /// Exactly one of `text` and `button`.
    pub text: Option<String>,
    pub button: Option<String>,
}

/// What a posted message is: `(kind, text, choice)`, or what is wrong with it.
pub fn message(p: &Posted) -> Result<(&'static str, String, Option<String>), String> {
    if p.id.trim().is_empty() {
        return Err("`id` must not be empty".into());
    }
    let too_long = |what: &str, s: &str, max: usize| {
        (s.chars().count() > max).then(|| format!("`{what}` is longer than {max} characters"))
    };
    if let Some(e) = too_long("id", &p.id, MAX_ID)
        .or_else(|| {
            p.name
                .as_deref()
                .and_then(|n| too_long("name", n, MAX_NAME))
        })
        .or_else(|| {
            p.text
                .as_deref()
                .and_then(|t| too_long("text", t, MAX_TEXT))
        })
        .or_else(|| {
            p.button
                .as_deref()
                .and_then(|b| too_long("button", b, MAX_ID))
        })
    {
        return Err(e);
    }
    match (&p.text, &p.button) {
        (Some(t), None) => Ok(("text", t.clone(), None)),
        (None, Some(b)) => Ok(("button", b.clone(), Some(b.clone()))),
        _ => Err("send exactly one of `text` or `button`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_the_servers_word_and_ends() {
        let key = b"a key of the server, 32 bytes or more";
        let (token, s) = issue(key, 1_000).unwrap();
        assert_eq!(verify(key, &token, 999), Ok(s.clone()));
        assert_eq!(verify(key, &token, 1_000), Err(SessionError::Expired));
        assert_eq!(
            verify(b"another key", &token, 0),
            Err(SessionError::BadSignature)
        );
        // Another customer or a later expiry with the same signature: refused.
        let (payload, sig) = token.rsplit_once('.').unwrap();
        let forged = format!("v_00000000000000000000000000000000.{}.{sig}", s.expires_at);
        assert_eq!(verify(key, &forged, 0), Err(SessionError::BadSignature));
        let longer = format!("{}.99999999999.{sig}", s.customer);
        assert_eq!(verify(key, &longer, 0), Err(SessionError::BadSignature));
        assert_eq!(verify(key, payload, 0), Err(SessionError::Malformed));
        assert_eq!(verify(key, "", 0), Err(SessionError::Malformed));
        let (other, s2) = issue(key, 1_000).unwrap();
        assert_ne!(s.customer, s2.customer, "every visitor is someone else");
        assert_ne!(token, other);
    }

    #[test]
    fn posted_messages_are_bounded() {
        let p = |text: &str| Posted {
            id: "m1".into(),
            name: None,
            text: Some(text.into()),
            button: None,
        };
        assert!(message(&p("hello")).is_ok());
        assert!(message(&p(&"x".repeat(MAX_TEXT))).is_ok());
        assert_eq!(
            message(&p(&"x".repeat(MAX_TEXT + 1))).unwrap_err(),
            "`text` is longer than 4096 characters"
        );
        let both = Posted {
            button: Some("yes".into()),
            ..p("hi")
        };
        assert!(message(&both).is_err());
    }
}
