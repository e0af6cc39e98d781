//! The language a customer writes in: English (`en`), Urdu in its own script (`ur`) or Urdu
//! written in Latin letters (`roman_ur`), the three ways Pakistani customers write — often
//! mixed in one message ("order kab aaye ga, it's been a week").
//!
//! Script decides first: a message mostly in Arabic-script letters is `ur`. A Latin message is
//! scored with two small word lists — Roman Urdu's function words and common verbs, English's
//! — and whichever has more evidence wins; words both use (order, parcel, COD, ok) count for
//! neither. A message with no evidence ("10251", "👍") has no language: the contact keeps the
//! one it had. Deterministic, no I/O, a few hundred nanoseconds per message.

/// English.
pub const EN: &str = "en";
/// Urdu in Urdu script.
pub const UR: &str = "ur";
/// Urdu in Latin letters ("Roman Urdu").
pub const ROMAN_UR: &str = "roman_ur";

/// What [`detect`] answers.
pub const DETECTED: [&str; 3] = [EN, UR, ROMAN_UR];

/// The fallbacks of a language when a template has no text for it and the pack declares
/// none (`settings.language_fallbacks`): Roman Urdu readers read Urdu script and the other
/// way round, before the pack's default language.
pub fn default_fallbacks(lang: &str) -> &'static [&'static str] {
    match lang {
        ROMAN_UR => &[UR],
        UR => &[ROMAN_UR],
        _ => &[],
    }
}

/// Words that mark Roman Urdu (after lower-casing). Short and frequent first; spelling
/// variants included because customers spell as they speak.
const ROMAN_UR_WORDS: &[&str] = &[
    "aap",
    "ap",
    "apka",
    "apna",
    "apni",
    "abhi",
    "abi",
    "aya",
    "aaya",
    "ayi",
    "aayi",
    "aye",
    "aaye",
    "bhai",
    "bhi",
    "bhej",
    "bhejo",
    "bhejein",
    "bhejen",
    "bhijwa",
    "baat",
    "batao",
    "bata",
    "bataein",
    "bilkul",
    "chahiye",
    "chahie",
    "chaiye",
    "dein",
    "dain",
    "den",
    "do",
    "diya",
    "dia",
    "gaya",
    "gya",
    "gayi",
    "hai",
    "hain",
    "hy",
    "hay",
    "hoga",
    "hogi",
    "ho",
    "hua",
    "huwa",
    "hui",
    "haan",
    "han",
    "hum",
    "humein",
    "ji",
    "jee",
    "jaldi",
    "ka",
    "ki",
    "ke",
    "ko",
    "kab",
    "kahan",
    "kidhar",
    "kya",
    "kia",
    "kyun",
    "kyu",
    "kaise",
    "kese",
    "kaun",
    "kon",
    "karna",
    "krna",
    "karo",
    "kro",
    "kar",
    "kr",
    "kardo",
    "krdo",
    "karein",
    "karen",
    "kijiye",
    "mera",
    "meri",
    "mere",
    "mra",
    "mjhe",
    "mujhe",
    "muje",
    "mein",
    "main",
    "mai",
    "nahi",
    "nahin",
    "nhi",
    "ni",
    "nai",
    "na",
    "pe",
    "par",
    "paisay",
    "paise",
    "pese",
    "raha",
    "rahi",
    "rha",
    "rhi",
    "se",
    "sahi",
    "salam",
    "assalam",
    "alaikum",
    "walaikum",
    "shukriya",
    "theek",
    "thik",
    "tha",
    "thi",
    "tak",
    "tk",
    "wala",
    "wali",
    "wapis",
    "wapas",
    "yeh",
    "ye",
    "woh",
    "wo",
    "yahan",
    "wahan",
    "jazakallah",
    "kuch",
    "koi",
    "kitna",
    "kitne",
    "kal",
    "aaj",
    "lekin",
    "magar",
    "aur",
    "agar",
    "phir",
    "hoa",
    "milega",
    "mila",
    "mili",
    "milay",
    "gaye",
    "jaye",
    "jayega",
    "sakta",
    "sakte",
    "sakti",
    "chal",
    "pata",
    "kharab",
    "galat",
    "ghalat",
    "acha",
    "achha",
    "accha",
    "bohat",
    "bahut",
    "bht",
    "toota",
    "tuta",
    "g",
];

/// Words that mark English. Function words and the verbs customers use most — not the
/// English words Roman Urdu borrows ("cancel", "return", "refund", "please", "thanks", "yes",
/// "wrong", "change"…): "order cancel karna hai please" is Roman Urdu.
const EN_WORDS: &[&str] = &[
    "the",
    "is",
    "are",
    "was",
    "were",
    "am",
    "i",
    "i'm",
    "im",
    "my",
    "me",
    "you",
    "your",
    "we",
    "our",
    "it",
    "it's",
    "its",
    "this",
    "that",
    "these",
    "what",
    "where",
    "when",
    "why",
    "how",
    "who",
    "which",
    "will",
    "would",
    "can",
    "could",
    "should",
    "not",
    "don't",
    "dont",
    "didn't",
    "didnt",
    "haven't",
    "hasn't",
    "have",
    "has",
    "had",
    "do",
    "does",
    "did",
    "to",
    "of",
    "for",
    "with",
    "from",
    "and",
    "but",
    "or",
    "on",
    "in",
    "at",
    "an",
    "a",
    "yet",
    "still",
    "want",
    "need",
    "get",
    "got",
    "sent",
    "received",
    "arrive",
    "arrived",
    "there",
    "here",
    "some",
    "any",
    "one",
    "be",
    "been",
    "being",
    "just",
    "also",
    "very",
    "too",
    "money",
    "back",
    "talk",
    "speak",
    "person",
    "someone",
    "good",
    "morning",
    "evening",
    "they",
    "them",
    "she",
    "his",
    "her",
    "if",
    "then",
    "than",
    "only",
    "already",
    "again",
    "yesterday",
    "today",
    "tomorrow",
    "week",
    "days",
    "ago",
    "since",
    "because",
    "after",
    "before",
    "by",
    "ordered",
    "haven't",
    "isn't",
    "wasn't",
    "doesn't",
    "won't",
    "can't",
    "cant",
    "wont",
    "let",
    "know",
];

/// English words Roman Urdu borrows: half the evidence of an English word, so that "cancel"
/// alone is English but "order cancel karna hai please" Roman Urdu.
const EN_LOANS: &[&str] = &[
    "please",
    "pls",
    "plz",
    "cancel",
    "cancelled",
    "confirm",
    "confirmed",
    "confirming",
    "refund",
    "return",
    "exchange",
    "hello",
    "hi",
    "hey",
    "sup",
    "status",
    "price",
    "eta",
    "agent",
    "damaged",
    "broken",
    "wrong",
    "thanks",
    "thank",
    "yes",
    "no",
    "change",
    "update",
    "tracking",
    "delivery",
    "received",
    "cash",
    "size",
    "sorry",
];

/// More Roman Urdu: greetings, address, and what complaints and questions say.
const ROMAN_UR_MORE: &[&str] = &[
    "aoa",
    "asalam",
    "assalam",
    "salam",
    "alekum",
    "alaikum",
    "walaikum",
    "beta",
    "inshallah",
    "mashallah",
    "aa",
    "jo",
    "lag",
    "rahe",
    "raha",
    "rahi",
    "purana",
    "purane",
    "lagta",
    "h",
    "ji",
    "kiya",
    "kia",
    "krna",
    "karna",
    "karo",
    "krdo",
    "kardo",
    "chahie",
    "hogya",
    "hogaya",
    "tha",
    "thay",
    "hy",
    "nai",
    "nhi",
    "ni",
    "mujhe",
    "mjhe",
    "mera",
    "meri",
    "mere",
    "apka",
    "ka",
    "ki",
    "ke",
    "ko",
    "se",
    "pe",
    "par",
    "mein",
    "tou",
    "to",
    "bhi",
    "kb",
    "kab",
    "kaha",
    "kahan",
];

/// The language of a message, or `None` when it shows none (numbers, emoji, one shared word).
pub fn detect(text: &str) -> Option<&'static str> {
    let mut arabic = 0usize;
    let mut latin = 0usize;
    for c in text.chars() {
        if ('\u{0600}'..='\u{06FF}').contains(&c)
            || ('\u{0750}'..='\u{077F}').contains(&c)
            || ('\u{FB50}'..='\u{FDFF}').contains(&c)
            || ('\u{FE70}'..='\u{FEFF}').contains(&c)
        {
            // Urdu digits say nothing about the language.
            if !('\u{06F0}'..='\u{06F9}').contains(&c) && !('\u{0660}'..='\u{0669}').contains(&c) {
                arabic += 1;
            }
        } else if c.is_ascii_alphabetic() {
            latin += 1;
        }
    }
    if arabic > 0 && arabic >= latin {
        return Some(UR);
    }
    if latin == 0 {
        return None;
    }
    // In half points: a borrowed English word counts one, any other word two.
    let (mut ur, mut en) = (0u32, 0u32);
    let lower = text.to_lowercase();
    for w in lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
    {
        let in_ur = ROMAN_UR_WORDS.contains(&w)
            || ROMAN_UR_MORE.contains(&w)
            || is_stretched_of(w, ROMAN_UR_WORDS)
            || is_stretched_of(w, ROMAN_UR_MORE);
        let in_en = EN_WORDS.contains(&w) || is_stretched_of(w, EN_WORDS);
        let loan = EN_LOANS.contains(&w) || is_stretched_of(w, EN_LOANS);
        match (in_ur, in_en, loan) {
            (true, false, _) => ur += 2,
            (false, true, _) => en += 2,
            (false, false, true) => en += 1,
            // "do", "main", "me"… both use: no evidence either way.
            _ => {}
        }
    }
    // Urdu script with English words in it ("size exchange کرنا ہے", "order confirm ہے"):
    // each Urdu-script word counts as much as an English one.
    let urdu_words = text
        .split(|c: char| c.is_whitespace() || c.is_ascii_punctuation() || c == '،' || c == '؟')
        .filter(|w| {
            w.chars().any(|c| {
                ('\u{0600}'..='\u{06FF}').contains(&c) && !('\u{06F0}'..='\u{06F9}').contains(&c)
            })
        })
        .count() as u32;
    if arabic > 0 && ur + 2 * urdu_words >= en {
        return Some(UR);
    }
    match ur.cmp(&en) {
        std::cmp::Ordering::Greater => Some(ROMAN_UR),
        std::cmp::Ordering::Less => Some(EN),
        std::cmp::Ordering::Equal => None,
    }
}

/// "nahiii", "haaan": a word with letters repeated that folds to one of `words`.
fn is_stretched_of(w: &str, words: &[&str]) -> bool {
    let mut folded = String::with_capacity(w.len());
    let mut last = None;
    let mut changed = false;
    for c in w.chars() {
        if Some(c) == last {
            changed = true;
            continue;
        }
        folded.push(c);
        last = Some(c);
    }
    // "aa" is not a stretched "a": one letter is no word to recognise.
    changed && folded.chars().count() > 1 && words.contains(&folded.as_str())
}

/// Whether `code` is a language code a template or `set_language` may use: `en`, `ur`,
/// `roman_ur`, or any two- or three-letter code with an optional region or script
/// (`pt_BR`, `ur-Latn`).
pub fn is_code(s: &str) -> bool {
    if s == ROMAN_UR {
        return true;
    }
    let mut parts = s.splitn(2, ['_', '-']);
    let base = parts.next().unwrap_or("");
    let region_ok = parts
        .next()
        .is_none_or(|r| (2..=4).contains(&r.len()) && r.chars().all(|c| c.is_ascii_alphanumeric()));
    (2..=3).contains(&base.len()) && base.chars().all(|c| c.is_ascii_lowercase()) && region_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_ways_of_writing() {
        let cases = [
            ("where is my order", Some(EN)),
            ("I want to cancel this order please", Some(EN)),
            ("mera order kahan hai", Some(ROMAN_UR)),
            ("assalam o alaikum", Some(ROMAN_UR)),
            ("COD confirm karna hai", Some(ROMAN_UR)),
            ("order #99999 kahan hai", Some(ROMAN_UR)),
            ("parcel toota hua aya", Some(ROMAN_UR)),
            ("nahiii chahiye", Some(ROMAN_UR)),
            ("میرا آرڈر کہاں ہے", Some(UR)),
            ("میرا order کہاں ہے", Some(UR)),
            ("السلام علیکم", Some(UR)),
            // Mixed, as customers write: the side with more evidence.
            (
                "order kab aaye ga? it has been a week and I am still waiting",
                Some(EN),
            ),
            (
                "bhai mera parcel abhi tak nahi aya, please check",
                Some(ROMAN_UR),
            ),
            // English words Roman Urdu borrows are no evidence either way.
            ("order cancel karna hai please", Some(ROMAN_UR)),
            ("wrong size aa gaya hai", Some(ROMAN_UR)),
            ("please cancel my order", Some(EN)),
            // No evidence: the contact keeps its language.
            ("10251", None),
            ("#10251", None),
            // A borrowed word alone is English; among Roman Urdu it is Roman Urdu's.
            ("cancel", Some(EN)),
            ("heyyy 👋", Some(EN)),
            ("aoa", Some(ROMAN_UR)),
            ("jo joote aye wo purane he", Some(ROMAN_UR)),
            ("👍", None),
            ("ok", None),
            ("۱۰۲۵۱", None),
        ];
        for (text, want) in cases {
            assert_eq!(detect(text), want, "{text}");
        }
    }

    #[test]
    fn codes() {
        for ok in ["en", "ur", "roman_ur", "pt_BR", "ur-Latn", "zh_Hant"] {
            assert!(is_code(ok), "{ok}");
        }
        for bad in ["english", "EN", "r", "en_", "roman_xx"] {
            assert!(!is_code(bad), "{bad}");
        }
    }
}
