//! The classifier's lexicon: words and phrases customers use for the same thing, read as one
//! word before features are taken ("purchase" as "order", "paisay wapis" as "refund"), and
//! English stemming ("cancelled", "cancelling" → "cancel"), so a message that says it in words
//! no example used still lands near the examples that meant it.
//!
//! The built-in lexicon covers how customers of online stores write in English and Roman Urdu;
//! a pack adds its own under `settings.classifier.synonyms`. Both the pack's examples and every
//! message go through the same lexicon, so a synonym never makes an example unreachable.

use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};

use crate::classify::normalize;

/// Built-in synonyms: the word they stand for, then what customers write for it.
const BUILT_IN: &[(&str, &[&str])] = &[
    (
        "order",
        &[
            "purchase",
            "purchased",
            "booking",
            "ordered",
            "ordr",
            "oredr",
            "ordar",
            "ordor",
            "oder",
        ],
    ),
    (
        "parcel",
        &[
            "package",
            "packet",
            "shipment",
            "consignment",
            "saman",
            "samaan",
            "samaan",
            "stuff",
            "items",
            "things",
            "pkg",
        ],
    ),
    (
        "cancel",
        &[
            "call off", "calloff", "revoke", "abort", "cancle", "cancell", "cansel", "kancel",
            "cancl", "cncl", "radd", "mansookh", "cansal", "cancal", "kansal", "kensal", "cencel",
        ],
    ),
    (
        "refund",
        &[
            "money back",
            "paisay wapis",
            "paise wapis",
            "paisa wapis",
            "paise wapas",
            "paisay wapas",
            "pesay wapis",
            "pese wapis",
            "raqam wapis",
            "reimburse",
            "reimbursement",
            "refnd",
            "rifund",
        ],
    ),
    (
        "return",
        &[
            "send back",
            "send it back",
            "give back",
            "wapis bhej",
            "wapis bhejna",
            "wapas bhejna",
            "wapis kar",
            "wapis karna",
            "wapas karna",
            "retrun",
            "retun",
        ],
    ),
    (
        "exchange",
        &[
            "swap",
            "replace",
            "replacement",
            "replaced",
            "badalna",
            "badalwana",
            "badal",
            "badli",
            "exchang",
            "exhange",
        ],
    ),
    (
        "agent",
        &[
            "human",
            "person",
            "representative",
            "rep",
            "operator",
            "staff",
            "someone",
            "somebody",
            "insaan",
            "insan",
            "banda",
            "bande",
            "real person",
            "live agent",
            "customer care",
            "customer service",
            "customer support",
            "support team",
            "your team",
            "team member",
            "manager",
            "supervisor",
            "call center",
            "helpline",
            "numainda",
            "namainda",
        ],
    ),
    (
        "damaged",
        &[
            "broken",
            "cracked",
            "smashed",
            "shattered",
            "torn",
            "ripped",
            "dented",
            "toota",
            "tuta",
            "tooti",
            "tuti",
            "toti",
            "phata",
            "phati",
            "phatta",
            "tut",
            "damage",
            "damged",
            "demaged",
        ],
    ),
    (
        "rude",
        &[
            "badtameez",
            "badtameezi",
            "bad tameez",
            "bad tameezi",
            "batameez",
            "batameezi",
            "misbehaved",
            "misbehave",
            "misbehaving",
            "impolite",
            "abusive",
            "shouted",
            "bura rawaiya",
            "bad behaviour",
            "bad behavior",
            "ghalat rawaiya",
        ],
    ),
    (
        "missing",
        &[
            "gayab",
            "ghayab",
            "not included",
            "not in the box",
            "left out",
        ],
    ),
    (
        "wrong",
        &["incorrect", "galat", "ghalat", "glt", "mismatched", "wrng"],
    ),
    (
        "defective",
        &[
            "faulty",
            "not working",
            "doesnt work",
            "doesn t work",
            "kaam nahi karta",
            "chal nahi raha",
            "kharab",
            "khrab",
            "kharaab",
        ],
    ),
    (
        "courier",
        &[
            "rider",
            "delivery boy",
            "delivery guy",
            "delivery man",
            "deliveryman",
            "courier wala",
            "tcs",
            "leopards",
            "postex",
            "trax",
            "callcourier",
            "mnp",
        ],
    ),
    (
        "payment",
        &[
            "paid",
            "transaction",
            "transfer",
            "bank transfer",
            "jazzcash",
            "jazz cash",
            "easypaisa",
            "easy paisa",
            "sadapay",
            "nayapay",
            "raast",
            "paymnt",
            "pymnt",
            "payement",
        ],
    ),
    (
        "deducted",
        &[
            "kat gaye",
            "kat gaya",
            "kat gae",
            "katay",
            "kaat liye",
            "cut from",
            "charged",
            "debited",
            "taken from",
        ],
    ),
    (
        "address",
        &[
            "adres",
            "location",
            "ghar ka pata",
            "house number",
            "delivery address",
            "shipping address",
        ],
    ),
    (
        "hello",
        &["hey", "hlo", "helo", "hallo", "hii", "heya", "hiya"],
    ),
    (
        "salam",
        &[
            "assalam o alaikum",
            "assalamu alaikum",
            "asalam o alaikum",
            "assalamualaikum",
            "asalamualaikum",
            "salam alaikum",
            "aslam o alaikum",
            "assalam alaikum",
            "asalam alaikum",
            "salam o alaikum",
            "slm",
        ],
    ),
    (
        "thanks",
        &[
            "shukriya",
            "shukria",
            "jazakallah",
            "jazak allah",
            "thank you",
            "ty",
        ],
    ),
    (
        "confirm",
        &[
            "confirmed",
            "confirming",
            "confrm",
            "cnfrm",
            "konfirm",
            "conform",
        ],
    ),
    (
        "yes",
        &[
            "haan",
            "han",
            "ha",
            "jee",
            "ji haan",
            "ji han",
            "yep",
            "yeah",
            "yup",
            "sure",
            "bilkul",
            "absolutely",
        ],
    ),
    (
        "when",
        &[
            "kab",
            "by when",
            "how long",
            "how many days",
            "kitne din",
            "kitnay din",
        ],
    ),
    ("where", &["kahan", "whereabouts"]),
    ("late", &["delayed", "delay", "der", "late ho", "overdue"]),
];

/// Phrases read as a word, and the English stemmer. Built once per pack load.
pub struct Lexicon {
    /// First word → `(the rest of the phrase, the word it stands for)`, longest first.
    phrases: HashMap<String, Vec<(Vec<String>, String)>>,
    stemmer: Stemmer,
}

impl std::fmt::Debug for Lexicon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lexicon")
            .field(
                "phrases",
                &self.phrases.values().map(Vec::len).sum::<usize>(),
            )
            .finish()
    }
}

impl Clone for Lexicon {
    fn clone(&self) -> Self {
        Lexicon {
            phrases: self.phrases.clone(),
            stemmer: Stemmer::create(Algorithm::English),
        }
    }
}

impl Default for Lexicon {
    fn default() -> Self {
        Lexicon::new(&[])
    }
}

impl Lexicon {
    /// The built-in lexicon with the pack's synonyms (`word → what customers write for it`)
    /// added; the pack's win where both name the same phrase.
    pub fn new(pack: &[(String, Vec<String>)]) -> Lexicon {
        let mut phrases: HashMap<String, Vec<(Vec<String>, String)>> = HashMap::new();
        let mut add = |canonical: &str, variant: &str| {
            let canon = normalize(canonical);
            let words: Vec<String> = normalize(variant)
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect();
            let Some((first, rest)) = words.split_first() else {
                return;
            };
            if canon.is_empty() || words.join(" ") == canon {
                return;
            }
            let list = phrases.entry(first.clone()).or_default();
            list.retain(|(r, _)| r != rest);
            list.push((rest.to_vec(), canon));
        };
        for (canonical, variants) in BUILT_IN {
            for v in *variants {
                add(canonical, v);
            }
        }
        for (canonical, variants) in pack {
            for v in variants {
                add(canonical, v);
            }
        }
        for list in phrases.values_mut() {
            // Longest phrase first; then by text, so the order never depends on the map.
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        Lexicon {
            phrases,
            stemmer: Stemmer::create(Algorithm::English),
        }
    }

    /// A normalised text ([`normalize`]) with phrases replaced and English words stemmed.
    pub fn canon(&self, norm: &str) -> String {
        let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
        let mut out = String::with_capacity(norm.len());
        let mut i = 0;
        while i < words.len() {
            let mut taken = 1;
            let mut word: &str = words[i];
            if let Some(list) = self.phrases.get(words[i]) {
                for (rest, canon) in list {
                    if words.len() - i > rest.len()
                        && rest.iter().zip(&words[i + 1..]).all(|(a, b)| a == b)
                    {
                        taken = 1 + rest.len();
                        word = canon;
                        break;
                    }
                }
            }
            if !out.is_empty() {
                out.push(' ');
            }
            // A canonical word may be several ("thank you" for a pack): each is stemmed.
            for (k, w) in word.split(' ').enumerate() {
                if k > 0 {
                    out.push(' ');
                }
                out.push_str(&self.stem(w));
            }
            i += taken;
        }
        out
    }

    /// The English stem of a Latin-letter word of four letters or more; other words as they are.
    fn stem<'w>(&self, w: &'w str) -> std::borrow::Cow<'w, str> {
        if w.len() >= 4 && w.bytes().all(|b| b.is_ascii_lowercase()) {
            self.stemmer.stem(w)
        } else {
            std::borrow::Cow::Borrowed(w)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synonyms_and_stems_meet() {
        let l = Lexicon::default();
        let c = |s: &str| l.canon(&normalize(s));
        assert_eq!(c("I want my money back"), c("i want my refund"));
        assert_eq!(c("paisay wapis kar dein"), c("refund kar dein"));
        assert_eq!(c("my purchase was cancelled"), c("my order was cancel"));
        assert_eq!(c("can I talk to a human"), c("can i talk to a agent"));
        assert_eq!(
            c("the package arrived broken"),
            c("the parcel arrived damaged")
        );
        // Roman Urdu words pass through untouched, short words too.
        assert_eq!(c("mera order kab aye ga"), "mera order when aye ga");
        // A pack's synonym is added.
        let l = Lexicon::new(&[("order".into(), vec!["parchi".into()])]);
        assert_eq!(l.canon("meri parchi"), "meri order");
    }
}
