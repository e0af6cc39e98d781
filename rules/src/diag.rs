//! Diagnostics: every problem of a pack with its `file:line:col`, a message and a hint.

use std::fmt;

use crate::span::Pos;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as the user named it (the pack directory joined with the file's relative path).
    pub file: String,
    pub pos: Pos,
    pub message: String,
    /// What to do about it, when we can tell.
    pub hint: Option<String>,
    /// A YAML syntax error: its file could not be read at all. Listed before every other
    /// error, since what the file defines is missing from the checks that follow.
    pub syntax: bool,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.pos == Pos::UNKNOWN {
            write!(f, "{}: {}: {}", self.file, sev, self.message)?;
        } else {
            write!(f, "{}:{}: {}: {}", self.file, self.pos, sev, self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file at a time.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(&mut self, file: &str, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Error, file, pos, message)
    }

    pub fn warning(&mut self, file: &str, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Warning, file, pos, message)
    }

    fn push(
        &mut self,
        severity: Severity,
        file: &str,
        pos: Pos,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.items.push(Diagnostic {
            severity,
            file: file.to_string(),
            pos,
            message: message.into(),
            hint: None,
            syntax: false,
        });
        self.items.last_mut().expect("just pushed")
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Errors before warnings, YAML syntax errors first of all (what they cause comes after
    /// them), then by file and position; duplicates removed, so output is stable.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| {
            (a.severity, !a.syntax, &a.file, a.pos, &a.message)
                .cmp(&(b.severity, !b.syntax, &b.file, b.pos, &b.message))
        });
        self.items.dedup();
    }
}

impl Diagnostic {
    pub fn hint(&mut self, hint: impl Into<String>) -> &mut Self {
        self.hint = Some(hint.into());
        self
    }
}

/// "did you mean `x`?" for a misspelt name, by edit distance.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        let close = strsim::levenshtein(name, c) <= (name.len().max(c.len()) / 3).max(2);
        if (score >= 0.8 || close) && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

/// The hint for a name that is not one of a known set.
pub fn name_hint<'a>(name: &str, kind: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let mut all: Vec<&str> = known.into_iter().collect();
    if let Some(d) = did_you_mean(name, all.iter().copied()) {
        return d;
    }
    all.sort_unstable();
    if all.is_empty() {
        format!("the pack defines no {kind}")
    } else {
        format!("defined {kind}: {}", all.join(", "))
    }
}
