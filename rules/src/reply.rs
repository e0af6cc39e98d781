//! How a reply to the bot's question reads, whatever the intents say: a plain yes or no
//! ("haan ji", "nahi", "no thanks", "👍"), a question of the customer's own ("if I confirm
//! now, when will it come?"), and which of a step's choices a yes or a no stands for
//! ("Confirm" and "Yes, cancel it" are yeses; "Cancel" and "No, keep it" are noes).
//! In English, Roman Urdu and Urdu script; on normalised text ([`crate::classify::normalize`]).

use std::sync::LazyLock;

use crate::classify::normalize;

/// The word lists below as [`normalize`] writes their words ("theek" is "thek" once
/// stretched letters fold, "jazakallah" "jazakalah"), so lists and messages compare alike.
macro_rules! folded {
    ($($name:ident = $list:ident;)*) => {
        $(static $name: LazyLock<Vec<String>> =
            LazyLock::new(|| $list.iter().map(|w| normalize(w)).collect());)*
    };
}

folded! {
    YES_F = YES;
    NO_F = NO;
    FILLER_F = FILLER;
    CLOSING_F = CLOSING;
    NEGATION_F = NEGATION;
    CLOSING_WITH_F = CLOSING_WITH;
    CONDITIONAL_F = CONDITIONAL;
    QUESTION_F = QUESTION;
    STRICT_YES_F = STRICT_YES;
    STRICT_NO_F = STRICT_NO;
    CHOICE_YES_F = CHOICE_YES;
    CHOICE_NO_F = CHOICE_NO;
}

/// Whether a normalised word is in a folded list.
fn has(list: &LazyLock<Vec<String>>, word: &&str) -> bool {
    list.iter().any(|w| w == word)
}

/// Words that say yes on their own. Not "confirm": typed to "Cancel order #1?" it is more
/// likely the order's confirmation (an earlier button) than a yes to cancelling.
const YES: &[&str] = &[
    "yes",
    "yeah",
    "yea",
    "yep",
    "yup",
    "ya",
    "haan",
    "han",
    "haa",
    "ha",
    "hanji",
    "hn",
    "ok",
    "sure",
    "bilkul",
    "theek",
    "thik",
    "done",
    "correct",
    "right",
    "zaroor",
    "zarur",
    "sahi",
    "proceed",
    "ہاں",
    "ٹھیک",
    "بالکل",
    "ضرور",
    "اوکے",
    "👍",
    "✅",
    "👌",
];

/// Words that say no on their own. Not "cancel": typed to "Cancel order #1?" it means yes.
const NO: &[&str] = &[
    "no", "nope", "nah", "nahi", "na", "mat", "never", "نہیں", "نہ", "مت", "❌", "👎",
];

/// What a choice's first word says besides plain yes and no: `confirm` is a yes, `cancel` a
/// no (the answers of a "confirm or cancel?" question).
const CHOICE_YES: &[&str] = &["confirm", "confirmed", "کنفرم"];
const CHOICE_NO: &[&str] = &["cancel", "کینسل", "منسوخ"];

/// Words that go with a yes or a no without changing it ("ji haan", "no thanks", "nahi
/// chahiye", "yes please go ahead").
const FILLER: &[&str] = &[
    "ji",
    "jee",
    "g",
    "please",
    "sir",
    "madam",
    "bhai",
    "baji",
    "hai",
    "thanks",
    "you",
    "it",
    "is",
    "do",
    "dein",
    "den",
    "karo",
    "kar",
    "kardo",
    "kardein",
    "go",
    "ahead",
    "chahiye",
    "abhi",
    "that",
    "s",
    "its",
    "fine",
    "hoga",
    "then",
    "phir",
    "to",
    "جی",
    "ہے",
    "شکریہ",
    "چاہیے",
    "کریں",
    "کر",
    "دیں",
    "پھر",
    "تو",
];

/// Words that thank or acknowledge, and close a conversation when nothing else is said.
const CLOSING: &[&str] = &[
    "thanks",
    "shukriya",
    "shukria",
    "shukrya",
    "jazakallah",
    "jazak",
    "allah",
    "khair",
    "ok",
    "great",
    "perfect",
    "acha",
    "achha",
    "accha",
    "theek",
    "thik",
    "got",
    "noted",
    "cool",
    "welcome",
    "nice",
    "good",
    "awesome",
    "alright",
    "done",
    "شکریہ",
    "جزاک",
    "اللہ",
    "ٹھیک",
    "اچھا",
    "اوکے",
    "👍",
    "🙏",
    "❤",
    "👌",
    "🙂",
    "😊",
];

/// Words that go with a thank-you: what arrived and that it was liked ("shukriya, parcel
/// mil gaya 👍", "JazakAllah, order mil gaya, bohat acha kapra hai"). A negation is none of
/// them: "parcel nahi mila" is no thank-you.
const CLOSING_WITH: &[&str] = &[
    "so",
    "much",
    "very",
    "bohat",
    "bahut",
    "bohot",
    "aap",
    "ka",
    "ki",
    "bro",
    "parcel",
    "order",
    "mil",
    "gaya",
    "gayi",
    "mila",
    "mili",
    "aa",
    "received",
    "got",
    "arrived",
    "love",
    "loved",
    "liked",
    "pasand",
    "aya",
    "aaya",
    "kapra",
    "quality",
    "product",
    "suit",
    "dress",
    "service",
    "excellent",
    "amazing",
    "beautiful",
    "zabardast",
    "khoobsurat",
    "i",
    "we",
    "the",
    "and",
    "aur",
    "my",
    "mera",
    "meri",
    "hai",
    "tha",
    "thi",
    "all",
    "for",
    "your",
    "help",
    "بہت",
    "آپ",
    "کا",
    "کی",
    "آرڈر",
    "پارسل",
    "مل",
    "گیا",
    "گئی",
    "کپڑا",
    "پسند",
    "آیا",
    "اور",
    "ہے",
    "تھا",
    "مہربانی",
];

/// Whether the message only thanks or acknowledges ("thank u", "ok shukriya", "👍",
/// "JazakAllah, parcel mil gaya"): after the bot answered, it closes the conversation; it asks
/// nothing and reports nothing wrong.
pub fn is_closing(text: &str) -> bool {
    let norm = normalize(text);
    let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    !words.is_empty()
        && words.len() <= 12
        && words.iter().any(|w| has(&CLOSING_F, w))
        && !is_question(text)
        && words
            .iter()
            .all(|w| has(&CLOSING_F, w) || has(&FILLER_F, w) || has(&CLOSING_WITH_F, w))
}

/// Words that negate: "don't cancel", "cancel mat karo", "not now", "نہیں".
const NEGATION: &[&str] = &[
    "not", "t", "dont", "don", "didn", "never", "no", "nahi", "na", "mat", "without", "نہیں", "نہ",
    "مت",
];

/// Whether the message negates something ("don't cancel it", "cancel mat karo", "yes keep
/// it"): then it is no plain choice of a button that does not say so itself.
pub fn negated(text: &str) -> bool {
    let norm = normalize(text);
    norm.split(' ').any(|w| has(&NEGATION_F, &w))
}

/// Words that make a message conditional: it asks about a decision, it does not take one.
const CONDITIONAL: &[&str] = &["if", "agar", "agr", "اگر", "suppose", "incase"];

/// Question words: a message led by one asks something.
const QUESTION: &[&str] = &[
    "when", "what", "how", "why", "where", "which", "kab", "kitne", "kitna", "kitni", "kaise",
    "kesay", "kaisay", "kyun", "kyon", "kiyon", "kahan", "kon", "kaun", "کب", "کیسے", "کیوں",
    "کہاں", "کتنے", "کتنا", "کتنی", "کون",
];

/// `Some(true)` for a plain yes, `Some(false)` for a plain no, `None` for anything else
/// (a sentence, both, neither). At most five words, each a yes, a no or a filler.
pub fn polarity(text: &str) -> Option<bool> {
    let norm = normalize(text);
    let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    if words.is_empty() || words.len() > 5 {
        return None;
    }
    let (mut yes, mut no) = (false, false);
    for w in &words {
        if has(&YES_F, w) {
            yes = true;
        } else if has(&NO_F, w) {
            no = true;
        } else if !has(&FILLER_F, w) {
            return None;
        }
    }
    match (yes, no) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// A sentence that opens with a plain yes or no and says nothing against it ("yes cancel
/// it, I didn't order anything", "haan g cancel hi karna hai"): `Some(true)` or `Some(false)`.
/// Weaker than [`polarity`]: for when nothing else in the reply was understood.
pub fn leading_polarity(text: &str) -> Option<bool> {
    let norm = normalize(text);
    let mut words = norm
        .split(' ')
        .filter(|w| (!w.is_empty() && !has(&FILLER_F, w)) || has(&STRICT_YES_F, w));
    let first = words.next()?;
    let yes = if has(&STRICT_YES_F, &first) {
        true
    } else if has(&STRICT_NO_F, &first) {
        false
    } else {
        return None;
    };
    let against = |w: &&str| {
        if yes {
            has(&NO_F, w)
        } else {
            has(&YES_F, w)
        }
    };
    (!words.any(|w| against(&w))).then_some(yes)
}

/// Whether a reply read as choosing `chosen` (a button's title) says otherwise: it uses the
/// words of another choice ("yes keep it" against "No, keep it"), or negates a word of the
/// chosen one ("yes please don't cancel it" against "Yes, cancel it"). A negation elsewhere
/// ("yes cancel it, I didn't order anything") is the customer's reason, not a contradiction.
pub fn contradicts(reply: &str, chosen: &str, others: &[&str]) -> bool {
    let content = |t: &str| -> Vec<String> {
        normalize(t)
            .split(' ')
            .filter(|w| {
                !w.is_empty()
                    && !has(&FILLER_F, w)
                    && !has(&YES_F, w)
                    && !has(&NO_F, w)
                    && !has(&CHOICE_YES_F, w)
            })
            .map(String::from)
            .collect()
    };
    let norm = normalize(reply);
    let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    let mine = content(chosen);
    if others
        .iter()
        .flat_map(|o| content(o))
        .any(|w| !mine.contains(&w) && words.contains(&w.as_str()))
    {
        return true;
    }
    words.iter().enumerate().any(|(i, w)| {
        mine.iter().any(|m| m == w)
            && words[i.saturating_sub(2)..(i + 3).min(words.len())]
                .iter()
                .any(|n| has(&NEGATION_F, n))
    })
}

/// What a choice (its title, else its id) stands for as an answer to a yes/no question: its
/// first word decides ("Yes, cancel it" is a yes, "No, keep it" a no, `confirm` a yes,
/// `cancel` a no).
pub fn choice_polarity(title_or_id: &str) -> Option<bool> {
    let norm = normalize(&title_or_id.replace('_', " "));
    let first = norm.split(' ').find(|w| !w.is_empty())?;
    if has(&YES_F, &first) || has(&CHOICE_YES_F, &first) {
        Some(true)
    } else if has(&NO_F, &first) || has(&CHOICE_NO_F, &first) {
        Some(false)
    } else {
        None
    }
}

/// Plain yes and no words, without "confirm", "cancel", "ok": what a button title starting
/// with one asks ("Yes, cancel it", "No, keep it").
const STRICT_YES: &[&str] = &["yes", "yeah", "yep", "haan", "han", "ji", "ہاں", "جی"];
const STRICT_NO: &[&str] = &["no", "nope", "nahi", "na", "نہیں", "نہ"];

/// `Some(true)` when a button title starts with a plain yes, `Some(false)` with a plain no.
pub fn yes_no_title(title: &str) -> Option<bool> {
    let norm = normalize(title);
    let first = norm.split(' ').find(|w| !w.is_empty())?;
    if has(&STRICT_YES_F, &first) {
        Some(true)
    } else if has(&STRICT_NO_F, &first) {
        Some(false)
    } else {
        None
    }
}

/// Whether a word only goes with what is said ("please", "ji", "kar dein").
pub fn is_filler(word: &str) -> bool {
    has(&FILLER_F, &word)
}

/// Whether the message asks something rather than answers: conditional ("if I confirm…",
/// "agar abhi confirm karun to…"), led by a question word ("when will it come", "kab tak
/// aayega"), or a question mark after one anywhere.
pub fn is_question(text: &str) -> bool {
    let norm = normalize(text);
    let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    if words.iter().any(|w| has(&CONDITIONAL_F, w)) {
        return true;
    }
    if words.iter().take(3).any(|w| has(&QUESTION_F, w)) {
        return true;
    }
    let asks = text.trim_end().ends_with(['?', '؟']);
    asks && words.iter().any(|w| has(&QUESTION_F, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_and_no_in_three_languages() {
        for yes in [
            "yes",
            "Haan ji",
            "ji haan",
            "ok",
            "👍",
            "yes please",
            "bilkul",
            "جی ہاں",
        ] {
            assert_eq!(polarity(yes), Some(true), "{yes}");
        }
        for no in [
            "no",
            "Nahi",
            "nahi chahiye",
            "no thanks",
            "نہیں",
            "nope",
            "na ji",
        ] {
            assert_eq!(polarity(no), Some(false), "{no}");
        }
        for neither in [
            "maine order nahi kiya tha aur mujhe nahi chahiye ye",
            "confirm",
            "cancel",
            "yes no",
            "where is my order",
            "",
            "10234",
        ] {
            assert_eq!(polarity(neither), None, "{neither}");
        }
    }

    #[test]
    fn thanks_closes() {
        for t in [
            "thank u",
            "Thanks!",
            "ok shukriya",
            "👍",
            "JazakAllah khair",
            "bohat shukriya bhai",
            "شکریہ",
            "acha theek hai",
            "ٹھیک ہے",
            "shukriya bhai parcel mil gaya 👍",
            "جزاک اللہ، آرڈر مل گیا بہت اچھا کپڑا ہے",
        ] {
            assert!(is_closing(t), "{t}");
        }
        for t in [
            "thanks, but where is my order",
            "no",
            "ok cancel it",
            "10234",
            "shukriya, parcel nahi mila",
            "thanks for nothing, the parcel arrived broken",
        ] {
            assert!(!is_closing(t), "{t}");
        }
    }

    #[test]
    fn sentences_that_open_with_yes_or_no() {
        assert_eq!(
            leading_polarity("yes cancel it, I didn't order anything"),
            Some(true)
        );
        assert_eq!(leading_polarity("haan g cancel hi krna hai"), Some(true));
        assert_eq!(leading_polarity("جی کینسل کر دیں"), Some(true));
        assert_eq!(leading_polarity("no, keep it please"), Some(false));
        assert_eq!(leading_polarity("yes no maybe"), None);
        assert_eq!(leading_polarity("cancel it"), None);
        let (chosen, others) = ("Yes, cancel it", ["No, keep it"]);
        assert!(contradicts("yes please don't cancel it", chosen, &others));
        assert!(contradicts("yes keep it", chosen, &others));
        assert!(contradicts("haan cancel mat karo", chosen, &others));
        assert!(!contradicts(
            "yes cancel it, I didn't order anything",
            chosen,
            &others
        ));
        assert!(!contradicts("haan g cancel hi krna hai", chosen, &others));
        assert!(negated("cancel mat karo") && negated("don't cancel order"));
        assert!(!negated("yes cancel it"));
    }

    #[test]
    fn choices_read_by_their_first_word() {
        assert_eq!(choice_polarity("Yes, cancel it"), Some(true));
        assert_eq!(choice_polarity("No, keep it"), Some(false));
        assert_eq!(choice_polarity("confirm"), Some(true));
        assert_eq!(choice_polarity("cancel"), Some(false));
        assert_eq!(choice_polarity("change"), None);
    }

    #[test]
    fn questions_are_not_answers() {
        for q in [
            "if I confirm now, when will it arrive?",
            "agar abhi confirm karun to kab tak aayega",
            "when will it come",
            "kab tak milega?",
            "اگر میں کنفرم کروں تو کب پہنچے گا؟",
            "ok but how much is delivery?",
        ] {
            assert!(is_question(q), "{q}");
        }
        for a in [
            "yes confirm",
            "confirm kar dein?",
            "cancel it",
            "haan bhej do",
        ] {
            assert!(!is_question(a), "{a}");
        }
    }
}
