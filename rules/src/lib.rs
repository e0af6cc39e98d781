//! The Switchyard rule-pack format (see `ARCHITECTURE.md` and `docs/pack-format.md`).
//!
//! A pack is a directory of YAML files. [`load_dir`] reads it, validates it in phases —
//! YAML and types ([`load`]), then names, references, limits, scripts and flows ([`check`]) —
//! reporting every problem with `file:line:col`, and compiles it into a [`Pack`].
//!
//! This crate does no I/O beyond reading the pack's files: no tokio, no SQL, no HTTP.

pub mod calendar;
pub mod channel;
pub mod check;
pub mod classify;
pub mod config;
pub mod diag;
pub mod entities;
pub mod eval;
pub mod lang;
pub mod lexicon;
pub mod load;
pub mod pack;
pub mod reply;
pub mod script;
pub mod span;
pub mod template;

use std::path::Path;

pub use channel::{ChannelCaps, Channels};
pub use classify::{Classification, UNKNOWN};
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use load::{LoadError, SourceFile};
pub use pack::Pack;

/// A pack and everything validation said about it. `pack` is `None` when there are errors.
#[derive(Debug)]
pub struct Loaded {
    pub pack: Option<Pack>,
    pub diagnostics: Diagnostics,
}

impl Loaded {
    /// The pack, unless there were errors (or warnings, with `deny_warnings`).
    pub fn accepted(&self, deny_warnings: bool) -> Option<&Pack> {
        if deny_warnings && self.diagnostics.warnings().next().is_some() {
            return None;
        }
        self.pack.as_ref()
    }
}

/// Reads, validates and compiles the pack in `dir` for every channel this build serves.
pub fn load_dir(dir: &Path) -> Result<Loaded, LoadError> {
    load_dir_for(dir, &Channels::standard())
}

/// [`load_dir`] for the given channels: messages are checked against the strictest.
pub fn load_dir_for(dir: &Path, channels: &Channels) -> Result<Loaded, LoadError> {
    Ok(load_files_for(
        load::read_dir(dir)?,
        &dir.display().to_string(),
        channels,
    ))
}

/// Validates and compiles a pack given as files (e.g. uploaded). `shown` names the pack in
/// the diagnostic for an empty pack.
pub fn load_files(files: Vec<SourceFile>, shown: &str) -> Loaded {
    load_files_for(files, shown, &Channels::standard())
}

/// [`load_files`] for the given channels.
pub fn load_files_for(files: Vec<SourceFile>, shown: &str, channels: &Channels) -> Loaded {
    let mut diagnostics = Diagnostics::default();
    if files.is_empty() {
        diagnostics
            .error(shown, span::Pos::UNKNOWN, "no rule-pack files here")
            .hint("a pack is a directory of `*.yaml` files");
        return Loaded {
            pack: None,
            diagnostics,
        };
    }
    let raw = load::parse(files, &mut diagnostics);
    let mut pack = check::build(&raw, &mut diagnostics, channels);
    if let Some(p) = pack.as_mut() {
        p.tests = raw.tests.iter().map(|(_, t)| t.value.clone()).collect();
    }
    diagnostics.sort();
    Loaded { pack, diagnostics }
}

/// The JSON Schema of a pack file, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(config::PackFile)).unwrap_or_default()
}
