//! How well a pack's classifier labels messages whose intent is known: accuracy, precision and
//! recall per intent, which intents are taken for which, the *confident-wrong* rate (a wrong
//! intent given at or above the pack's action threshold: what the bot would act on), and,
//! when the file labels languages, how often the language is detected right
//! (`switchyard classify --eval`). Reading the labelled file is the caller's; this module only
//! classifies and counts.

use std::collections::{BTreeMap, BTreeSet};

use crate::classify::UNKNOWN;
use crate::Pack;

/// The label a labelled file means by `s`: `other`, `none` and empty mean no intent.
pub fn label(s: &str) -> String {
    match s.trim() {
        "other" | "none" | "" => UNKNOWN.to_string(),
        x => x.to_string(),
    }
}

/// One intent's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentScore {
    pub intent: String,
    pub precision: f64,
    pub recall: f64,
    /// How many messages carry this label.
    pub support: usize,
}

/// One labelled message: what it is, and what the pack made of it.
#[derive(Debug, Clone, Default)]
pub struct Labelled {
    pub text: String,
    /// The intent it means ([`label`]).
    pub intent: String,
    /// The language it is written in (`en`, `roman_ur`, `ur`; `none` for a message that shows
    /// none, "10234", "👍"), when the file says.
    pub language: Option<String>,
}

/// The language label a labelled file means by `s`: `none`, `other` and empty mean no
/// language (what [`crate::lang::detect`] answers for a message without evidence).
fn language_label(s: &str) -> &str {
    match s.trim() {
        "none" | "other" | "" => "none",
        x => x,
    }
}

/// The classifier's answers on labelled messages.
#[derive(Debug, Clone)]
pub struct Eval {
    /// `(text, expected, got)`, in the file's order.
    pub rows: Vec<(String, String, String)>,
    /// The confidence of each row's answer (of `got`, or of the best intent below the
    /// threshold).
    pub confidence: Vec<f32>,
    /// The pack's action threshold (`settings.intent_threshold`).
    pub threshold: f32,
    /// `(text, expected, detected)` for rows whose file labels the language.
    pub languages: Vec<(String, String, String)>,
    /// Expected labels that are no intent of the pack (those rows can only be wrong).
    pub unknown_labels: BTreeSet<String>,
}

/// Classifies each labelled message with the pack, as the bot would: the entity-only
/// reading and the classifier both ([`Pack::classify`]).
pub fn evaluate(pack: &Pack, labelled: impl IntoIterator<Item = Labelled>) -> Eval {
    let known: BTreeSet<&str> = pack.classifier.intent_names().collect();
    let mut unknown_labels = BTreeSet::new();
    let mut rows = Vec::new();
    let mut confidence = Vec::new();
    let mut languages = Vec::new();
    for l in labelled {
        let want = label(&l.intent);
        if want != UNKNOWN && !known.contains(want.as_str()) {
            unknown_labels.insert(want.clone());
        }
        let (c, _) = pack.classify(&l.text);
        if let Some(lang) = &l.language {
            let got = crate::lang::detect(&l.text).unwrap_or("none");
            languages.push((
                l.text.clone(),
                language_label(lang).to_string(),
                got.to_string(),
            ));
        }
        confidence.push(c.confidence);
        rows.push((l.text, want, c.intent));
    }
    Eval {
        rows,
        confidence,
        threshold: pack.settings.intent_threshold,
        languages,
        unknown_labels,
    }
}

impl Eval {
    /// Rows given a wrong intent at or above the threshold — what the bot would have acted
    /// on: `(text, expected, got, confidence)`.
    pub fn confident_wrong(&self) -> Vec<(&str, &str, &str, f32)> {
        self.rows
            .iter()
            .zip(&self.confidence)
            .filter(|((_, w, g), c)| w != g && g != UNKNOWN && **c >= self.threshold)
            .map(|((t, w, g), c)| (t.as_str(), w.as_str(), g.as_str(), *c))
            .collect()
    }

    /// The share of rows in [`Eval::confident_wrong`].
    pub fn confident_wrong_rate(&self) -> f64 {
        if self.rows.is_empty() {
            return 0.0;
        }
        self.confident_wrong().len() as f64 / self.rows.len() as f64
    }

    /// The share of language-labelled rows detected right, or `None` when no row says.
    pub fn language_accuracy(&self) -> Option<f64> {
        if self.languages.is_empty() {
            return None;
        }
        let right = self.languages.iter().filter(|(_, w, g)| w == g).count();
        Some(right as f64 / self.languages.len() as f64)
    }

    pub fn correct(&self) -> usize {
        self.rows.iter().filter(|(_, w, g)| w == g).count()
    }

    pub fn accuracy(&self) -> f64 {
        if self.rows.is_empty() {
            return 0.0;
        }
        self.correct() as f64 / self.rows.len() as f64
    }

    /// Every label expected or given, in name order.
    pub fn per_intent(&self) -> Vec<IntentScore> {
        let labels: BTreeSet<&str> = self
            .rows
            .iter()
            .flat_map(|(_, w, g)| [w.as_str(), g.as_str()])
            .collect();
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        labels
            .into_iter()
            .map(|l| {
                let tp = self
                    .rows
                    .iter()
                    .filter(|(_, w, g)| w == l && g == l)
                    .count();
                let predicted = self.rows.iter().filter(|(_, _, g)| g == l).count();
                let support = self.rows.iter().filter(|(_, w, _)| w == l).count();
                IntentScore {
                    intent: l.to_string(),
                    precision: ratio(tp, predicted),
                    recall: ratio(tp, support),
                    support,
                }
            })
            .collect()
    }

    /// `((expected, got), messages)` for every confusion, the most frequent first.
    pub fn confusions(&self) -> Vec<((String, String), Vec<&str>)> {
        let mut by: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
        for (t, w, g) in &self.rows {
            if w != g {
                by.entry((w.clone(), g.clone())).or_default().push(t);
            }
        }
        let mut list: Vec<_> = by.into_iter().collect();
        list.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        list
    }
}
