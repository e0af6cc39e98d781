//! Entity extraction: regex entities with a capture group, and built-ins for Pakistani phone
//! numbers, order numbers, amounts and e-mail.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::config::Builtin;

/// One compiled extractor.
#[derive(Debug, Clone)]
pub enum Extractor {
    /// The first capture group of the first match is the value.
    Pattern(Regex),
    Builtin(Builtin),
}

static PHONE_PK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^\d+])((?:\+|00)?92[\s-]?|0)?(3\d{2})[\s-]?(\d{3})[\s-]?(\d{4})(?:\D|$)")
        .expect("valid regex")
});
/// An order number after `#`, or after the words for "order (number)" in English, Roman Urdu
/// ("order nambar", "ord-5531") or Urdu ("آرڈر نمبر ۱۰۲۳۴"), with a filler word or two in
/// between ("order number is 10234", "order number hai 10234").
static ORDER_NO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
        (?:
            \#\s?
          | \b(?:order|ordr|oder|ord)\s*[-\#]?\s*
            (?:no\.?|number|numbr|nmbr|nambar|num|id|\#)?\s*[:\#-]?\s*
            (?:(?:is|hai|he|hy|ye|yeh|ka|=)\s*[:\#-]?\s*){0,2}
          | (?:آرڈر|ارڈر)\s*(?:نمبر)?\s*[:\#-]?\s*(?:(?:ہے|یہ)\s*[:\#-]?\s*){0,2}
          | نمبر\s*[:\#-]?\s*
        )
        (\d{3,10})\b",
    )
    .expect("valid regex")
});
/// An order number before the word for it ("31118 wala order", "10234 order kahan hai").
static ORDER_NO_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:^|[^\d+#])(\d{4,10})\s*(?:wala|wali|waala|walay|wale|number)?\s+(?:order|ordr|parcel|آرڈر|والا)\b")
        .expect("valid regex")
});
static AMOUNT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:\b(?:rs\.?|pkr|rupees?)\s*(\d[\d,]*(?:\.\d+)?))|(?:\b(\d[\d,]*(?:\.\d+)?)\s*(?:/-|rs\b\.?|pkr\b|rupees?\b))",
    )
    .expect("valid regex")
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b").expect("valid regex")
});

/// An Urdu (Extended Arabic-Indic) or Arabic-Indic digit as its ASCII digit.
pub fn ascii_digit(c: char) -> Option<char> {
    match c {
        '\u{0660}'..='\u{0669}' => Some(char::from(b'0' + (c as u32 - 0x0660) as u8)),
        '\u{06F0}'..='\u{06F9}' => Some(char::from(b'0' + (c as u32 - 0x06F0) as u8)),
        _ => None,
    }
}

/// Urdu and Arabic-Indic digits to ASCII, so that "۰۳۰۰" is a phone number too.
pub fn ascii_digits(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| ascii_digit(c).is_some()) {
        return text.into();
    }
    text.chars()
        .map(|c| ascii_digit(c).unwrap_or(c))
        .collect::<String>()
        .into()
}

impl Extractor {
    /// The value found in `text` (digits already ASCII), if any.
    pub fn extract(&self, text: &str) -> Option<Value> {
        match self {
            Extractor::Pattern(re) => re
                .captures(text)
                .and_then(|c| c.get(1))
                .map(|m| Value::String(m.as_str().to_string())),
            Extractor::Builtin(b) => builtin(*b, text),
        }
    }
}

static BARE_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|[^\d+])(\d{3,10})(?:\D|$)").expect("valid regex"));
static BARE_AMOUNT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|[^\d])(\d[\d,]*(?:\.\d+)?)(?:\D|$)").expect("valid regex"));

impl Extractor {
    /// The value in `text` when a flow step waits for this entity: besides what
    /// [`Extractor::extract`] finds, its bare form — an order number without `#` or "order"
    /// ("10251", "it's 10251"), an amount without "Rs". A phone number is never an order number.
    pub fn extract_bare(&self, text: &str) -> Option<Value> {
        if let Some(v) = self.extract(text) {
            return Some(v);
        }
        match self {
            Extractor::Builtin(Builtin::OrderNo) => BARE_NUMBER.captures_iter(text).find_map(|c| {
                let d = c.get(1)?.as_str();
                (!(d.len() >= 10 && d.starts_with('0'))).then(|| Value::String(d.to_string()))
            }),
            Extractor::Builtin(Builtin::Amount) => {
                let raw = BARE_AMOUNT
                    .captures(text)?
                    .get(1)?
                    .as_str()
                    .replace(',', "");
                raw.parse::<i64>().ok().map(Value::from)
            }
            _ => None,
        }
    }
}

/// Words that say nothing besides naming the entity next to them: "order no 10234",
/// "mera number hai 0300…", "it's #10234", "آرڈر نمبر ۱۰۲۳۴".
const ENTITY_FILLER: &[&str] = &[
    "order", "ordr", "oder", "ord", "no", "number", "numbr", "nmbr", "nambar", "num", "id", "is",
    "it", "its", "s", "my", "mera", "meri", "ka", "ki", "hai", "he", "hy", "ye", "yeh", "here",
    "this", "the", "phone", "mobile", "contact", "email", "mail", "tracking", "cn", "آرڈر", "ارڈر",
    "نمبر", "ہے", "میرا", "یہ", "فون",
];

/// Whether `text` (digits ASCII) is only an entity — an order number, a phone number, an
/// e-mail — with at most the words that name it: what a customer sends when asked for one,
/// or to follow up. Such a message means nothing its digits happen to resemble.
pub fn entity_only(text: &str) -> bool {
    let without = EMAIL.replace_all(text, " 1234 ");
    let mut digits = false;
    for word in without
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if word.chars().all(|c| c.is_ascii_digit()) {
            digits |= word.len() >= 3;
            continue;
        }
        let lower = word.to_lowercase();
        // A store's prefix glued to the number ("ORD5531") or a letter on its own.
        let letters = lower.trim_end_matches(|c: char| c.is_ascii_digit());
        if letters.len() < lower.len() && letters.len() <= 4 {
            digits = true;
            continue;
        }
        if lower.chars().count() == 1 || ENTITY_FILLER.contains(&lower.as_str()) {
            continue;
        }
        return false;
    }
    digits
}

/// A Pakistani mobile number in E.164 (`+923001234567`).
pub fn phone_pk(text: &str) -> Option<String> {
    let c = PHONE_PK.captures(text)?;
    Some(format!("+92{}{}{}", &c[2], &c[3], &c[4]))
}

fn builtin(b: Builtin, text: &str) -> Option<Value> {
    match b {
        Builtin::PhonePk => phone_pk(text).map(Value::String),
        Builtin::OrderNo => {
            // A phone number is not an order number.
            ORDER_NO
                .captures_iter(text)
                .chain(ORDER_NO_BEFORE.captures_iter(text))
                .find_map(|c| {
                    let m = c.get(1)?;
                    let digits = m.as_str();
                    (!(digits.len() >= 10 && digits.starts_with('0')))
                        .then(|| Value::String(digits.to_string()))
                })
        }
        Builtin::Amount => {
            let c = AMOUNT.captures(text)?;
            let raw = c.get(1).or_else(|| c.get(2))?.as_str().replace(',', "");
            if let Ok(i) = raw.parse::<i64>() {
                Some(Value::from(i))
            } else {
                raw.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            }
        }
        Builtin::Email => EMAIL
            .find(text)
            .map(|m| Value::String(m.as_str().to_lowercase())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(kind: Builtin, text: &str) -> Option<Value> {
        Extractor::Builtin(kind).extract(&ascii_digits(text))
    }

    #[test]
    fn a_waiting_step_takes_the_bare_form() {
        let o = Extractor::Builtin(Builtin::OrderNo);
        assert_eq!(o.extract("10251"), None);
        assert_eq!(o.extract_bare("10251"), Some(Value::from("10251")));
        assert_eq!(
            o.extract_bare("it's 10251 bhai"),
            Some(Value::from("10251"))
        );
        assert_eq!(
            o.extract_bare(
                "۱۰۲۵۱"
                    .chars()
                    .filter_map(ascii_digit)
                    .collect::<String>()
                    .as_str()
            ),
            Some(Value::from("10251"))
        );
        assert_eq!(o.extract_bare("#10251"), Some(Value::from("10251")));
        // A phone number is not an order number; two digits are not one either.
        assert_eq!(o.extract_bare("03001234567"), None);
        assert_eq!(o.extract_bare("+923001234567"), None);
        assert_eq!(o.extract_bare("12"), None);
        assert_eq!(o.extract_bare("no idea"), None);
        let a = Extractor::Builtin(Builtin::Amount);
        assert_eq!(a.extract_bare("2,500"), Some(Value::from(2500)));
    }

    #[test]
    fn pakistani_phone_numbers_become_e164() {
        for t in [
            "call me on 0300-1234567",
            "+92 300 1234567",
            "my number 03001234567",
            "923001234567",
            "0092-300-123-4567",
            "۰۳۰۰۱۲۳۴۵۶۷",
        ] {
            assert_eq!(
                b(Builtin::PhonePk, t),
                Some(Value::from("+923001234567")),
                "{t}"
            );
        }
        assert_eq!(b(Builtin::PhonePk, "order 10234"), None);
        assert_eq!(b(Builtin::PhonePk, "0423-1234567"), None); // a landline
    }

    #[test]
    fn order_numbers() {
        assert_eq!(
            b(Builtin::OrderNo, "mera order kahan hai #10234"),
            Some(Value::from("10234"))
        );
        assert_eq!(
            b(Builtin::OrderNo, "order 10234 kab aye ga"),
            Some(Value::from("10234"))
        );
        assert_eq!(
            b(Builtin::OrderNo, "Order No. 88231"),
            Some(Value::from("88231"))
        );
        assert_eq!(
            b(Builtin::OrderNo, "order number: 5512"),
            Some(Value::from("5512"))
        );
        assert_eq!(b(Builtin::OrderNo, "where is my order"), None);
        // After the words for "order number" in Roman Urdu and Urdu, and in store formats.
        for (text, want) in [
            ("mera order number hai 10234", "10234"),
            ("order nambar 10234 hai", "10234"),
            ("my order number is 10234", "10234"),
            ("ORD-5531", "5531"),
            ("میرا آرڈر نمبر ۱۰۲۳۴ ہے", "10234"),
            ("آرڈر نمبر: 10234", "10234"),
            ("ارڈر 10234 کہاں ہے", "10234"),
            ("31118 wala order kahan hai", "31118"),
            ("10234 order kab aye ga", "10234"),
        ] {
            let text = ascii_digits(text);
            assert_eq!(
                b(Builtin::OrderNo, &text),
                Some(Value::from(want)),
                "{text}"
            );
        }
    }

    #[test]
    fn entity_only_messages() {
        for yes in [
            "10234",
            "#10234",
            "ORD-5531",
            "order no 10234",
            "it's 10234",
            "0300-1234567",
            "ali@example.com",
            "آرڈر نمبر 10234",
        ] {
            assert!(entity_only(yes), "{yes}");
        }
        for no in [
            "10234 kahan hai",
            "my order 10234 arrived broken",
            "hello",
            "order",
            "👍",
            "12",
        ] {
            assert!(!entity_only(no), "{no}");
        }
    }

    #[test]
    fn bare_follow_ups() {
        let ex = Extractor::Builtin(Builtin::OrderNo);
        assert_eq!(ex.extract_bare("it's 10234"), Some(Value::from("10234")));
        assert_eq!(ex.extract_bare("10234"), Some(Value::from("10234")));
        assert_eq!(ex.extract_bare("03001234567"), None);
    }

    #[test]
    fn amounts_and_email() {
        assert_eq!(
            b(Builtin::Amount, "I paid Rs 2,499 already"),
            Some(Value::from(2499))
        );
        assert_eq!(
            b(Builtin::Amount, "total 2499/- tha"),
            Some(Value::from(2499))
        );
        assert_eq!(
            b(Builtin::Amount, "PKR 1500.50"),
            Some(serde_json::json!(1500.5))
        );
        assert_eq!(b(Builtin::Amount, "order 10234"), None);
        assert_eq!(
            b(Builtin::Email, "mail me at Ayesha.K@Example.com pls"),
            Some(Value::from("ayesha.k@example.com"))
        );
    }

    #[test]
    fn pattern_entities_take_the_first_group() {
        let e = Extractor::Pattern(Regex::new(r"(?i)cn[:\s]*([A-Z0-9]{8,})").unwrap());
        assert_eq!(
            e.extract("tracking CN: LEO12345678"),
            Some(Value::from("LEO12345678"))
        );
    }
}
