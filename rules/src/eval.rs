//! How well a pack's classifier labels messages whose intent is known: accuracy, precision and
//! recall per intent, and which intents are taken for which (`switchyard classify --eval`).
//! Reading the labelled file is the caller's; this module only classifies and counts.

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

/// The classifier's answers on labelled messages.
#[derive(Debug, Clone)]
pub struct Eval {
    /// `(text, expected, got)`, in the file's order.
    pub rows: Vec<(String, String, String)>,
    /// Expected labels that are no intent of the pack (those rows can only be wrong).
    pub unknown_labels: BTreeSet<String>,
}

/// Classifies each `(text, label)` with the pack.
pub fn evaluate(pack: &Pack, labelled: impl IntoIterator<Item = (String, String)>) -> Eval {
    let known: BTreeSet<&str> = pack.classifier.intent_names().collect();
    let mut unknown_labels = BTreeSet::new();
    let rows = labelled
        .into_iter()
        .map(|(text, want)| {
            let want = label(&want);
            if want != UNKNOWN && !known.contains(want.as_str()) {
                unknown_labels.insert(want.clone());
            }
            let got = pack.classifier.classify(&text).intent;
            (text, want, got)
        })
        .collect();
    Eval {
        rows,
        unknown_labels,
    }
}

impl Eval {
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
