//! Phase 1: read a pack directory and parse its files, keeping every error.
//!
//! A file is first parsed whole. When that fails, it is parsed again item by item (each
//! intent, rule, flow, …) so that every broken item is reported, not only the first, and the
//! items that are fine still take part in the later phases.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use crate::config::*;
use crate::diag::{did_you_mean, Diagnostics};
use crate::span::{Entries, Pos, Sp};

/// One file of the pack.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the pack directory, with `/` separators.
    pub rel: String,
    /// What diagnostics print: the pack directory as given, joined with `rel`.
    pub display: String,
    pub text: String,
}

/// A named item and the file it came from.
#[derive(Debug)]
pub struct Item<T> {
    pub file: usize,
    pub name: Sp<String>,
    pub value: T,
}

/// Every file's sections, merged, before any semantic check.
#[derive(Debug, Default)]
pub struct RawPack {
    pub files: Vec<SourceFile>,
    pub version: Vec<(usize, Sp<u32>)>,
    pub settings: Vec<(usize, Sp<Settings>)>,
    pub calendars: Vec<Item<Sp<Calendar>>>,
    pub intents: Vec<Item<Sp<Intent>>>,
    pub entities: Vec<Item<Sp<Entity>>>,
    pub templates: Vec<Item<Sp<TemplateDef>>>,
    pub snippets: Vec<Item<Sp<Snippet>>>,
    pub queues: Vec<Item<Sp<Queue>>>,
    pub connectors: Vec<Item<Sp<Connector>>>,
    pub flows: Vec<Item<Sp<Flow>>>,
    pub rules: Vec<(usize, Sp<Rule>)>,
    pub schedules: Vec<(usize, Sp<Schedule>)>,
    pub tests: Vec<(usize, Sp<TestCase>)>,
    /// Names that exist but failed to parse, by section: references to them are not reported
    /// again as undefined.
    pub broken: BTreeMap<&'static str, BTreeSet<String>>,
}

/// Why a pack could not even be read (as opposed to being invalid).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a directory")]
    NotADirectory(String),
}

/// Lists `*.yaml` and `*.yml` below `dir`, recursively, sorted by relative path.
pub fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, LoadError> {
    let meta = std::fs::metadata(dir).map_err(|source| LoadError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(LoadError::NotADirectory(dir.display().to_string()));
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| LoadError::Io {
            path: d.display().to_string(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| LoadError::Io {
                path: d.display().to_string(),
                source,
            })?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().to_string())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every pack file below `dir`.
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, LoadError> {
    let shown = dir.display().to_string();
    let shown = shown.trim_end_matches('/');
    list_files(dir)?
        .into_iter()
        .map(|(rel, path)| {
            let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
                path: path.display().to_string(),
                source,
            })?;
            Ok(SourceFile {
                display: format!("{shown}/{rel}"),
                rel,
                text,
            })
        })
        .collect()
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { with_snippet: false }
}

/// Parses all files and merges them. Parse errors go to `diags`.
pub fn parse(files: Vec<SourceFile>, diags: &mut Diagnostics) -> RawPack {
    let mut raw = RawPack::default();
    for (i, f) in files.iter().enumerate() {
        if f.text.trim().is_empty() {
            continue;
        }
        match serde_saphyr::from_str_with_options::<PackFile>(&f.text, options()) {
            Ok(pf) => merge(&mut raw, i, pf),
            Err(_) => parse_items(&mut raw, i, f, diags),
        }
    }
    raw.files = files;
    raw
}

fn merge(raw: &mut RawPack, file: usize, pf: PackFile) {
    fn items<T>(dst: &mut Vec<Item<T>>, file: usize, src: Option<Entries<T>>) {
        for (name, value) in src.unwrap_or_default().0 {
            dst.push(Item { file, name, value });
        }
    }
    fn list<T>(dst: &mut Vec<(usize, T)>, file: usize, src: Option<Vec<T>>) {
        dst.extend(src.unwrap_or_default().into_iter().map(|v| (file, v)));
    }
    if let Some(v) = pf.version {
        raw.version.push((file, v));
    }
    if let Some(s) = pf.settings {
        raw.settings.push((file, s));
    }
    items(&mut raw.calendars, file, pf.calendars);
    items(&mut raw.intents, file, pf.intents);
    items(&mut raw.entities, file, pf.entities);
    items(&mut raw.templates, file, pf.templates);
    items(&mut raw.snippets, file, pf.snippets);
    items(&mut raw.queues, file, pf.queues);
    items(&mut raw.connectors, file, pf.connectors);
    items(&mut raw.flows, file, pf.flows);
    list(&mut raw.rules, file, pf.rules);
    list(&mut raw.schedules, file, pf.schedules);
    list(&mut raw.tests, file, pf.tests);
}

/// The shape of a file: each section's keys (mapping) or length (sequence).
enum Shape {
    Keys(Vec<String>),
    Len(usize),
    Scalar,
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Shape, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = m.next_key::<KeyText>()? {
                    m.next_value::<IgnoredAny>()?;
                    keys.push(k.0);
                }
                Ok(Shape::Keys(keys))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Shape, A::Error> {
                let mut n = 0;
                while s.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Shape::Len(n))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Scalar)
            }
            fn visit_none<E>(self) -> Result<Shape, E> {
                Ok(Shape::Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

/// Any scalar key as text.
struct KeyText(String);

impl<'de> serde::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone)]
enum Pick {
    Whole,
    Key(String),
    Index(usize),
    /// Deeper: keys of mappings (`Ok`) and indexes of sequences (`Err`), outermost first.
    Path(Vec<Result<String, usize>>),
}

/// Deserializes the top-level mapping, picking one section (and in it one item) as `T` and
/// skipping everything else.
struct PickTop<'a, T> {
    section: &'a str,
    pick: Pick,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for PickTop<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        struct V<'a, T>(PickTop<'a, T>);
        impl<'de, T: DeserializeOwned> Visitor<'de> for V<'_, T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of sections")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Option<T>, A::Error> {
                let mut out = None;
                while let Some(k) = m.next_key::<KeyText>()? {
                    if k.0 == self.0.section && out.is_none() {
                        out = m.next_value_seed(PickIn::<T> {
                            pick: self.0.pick.clone(),
                            _t: std::marker::PhantomData,
                        })?;
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(self))
    }
}

struct PickIn<T> {
    pick: Pick,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for PickIn<T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        let (key, rest) = match self.pick {
            Pick::Whole => return T::deserialize(d).map(Some),
            Pick::Key(k) => (Ok(k), vec![]),
            Pick::Index(i) => (Err(i), vec![]),
            Pick::Path(mut p) if !p.is_empty() => (p.remove(0), p),
            Pick::Path(_) => return T::deserialize(d).map(Some),
        };
        let inner = move || PickIn::<T> {
            pick: Pick::Path(rest.clone()),
            _t: std::marker::PhantomData,
        };
        struct V<T, F>(Result<String, usize>, F, std::marker::PhantomData<T>);
        impl<'de, T: DeserializeOwned, F: Fn() -> PickIn<T>> Visitor<'de> for V<T, F> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping or a sequence")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Option<T>, A::Error> {
                let mut out = None;
                while let Some(k) = m.next_key::<KeyText>()? {
                    if self.0.as_ref().ok() == Some(&k.0) && out.is_none() {
                        out = m.next_value_seed((self.1)())?;
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Option<T>, A::Error> {
                let mut out = None;
                let mut i = 0;
                loop {
                    if self.0 == Err(i) {
                        match s.next_element_seed((self.1)())? {
                            Some(v) => out = v,
                            None => break,
                        }
                    } else if s.next_element::<IgnoredAny>()?.is_none() {
                        break;
                    }
                    i += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_any(V::<T, _>(key, inner, std::marker::PhantomData))
    }
}

fn pick<T: DeserializeOwned>(
    text: &str,
    section: &str,
    p: Pick,
) -> Result<Option<T>, serde_saphyr::Error> {
    serde_saphyr::with_deserializer_from_str_with_options(text, options(), |d| {
        PickTop::<T> {
            section,
            pick: p,
            _t: std::marker::PhantomData,
        }
        .deserialize(d)
    })
}

/// The slow path for a file that did not parse: item by item.
fn parse_items(raw: &mut RawPack, file: usize, f: &SourceFile, diags: &mut Diagnostics) {
    let shape = match serde_saphyr::from_str_with_options::<Entries<Shape>>(&f.text, options()) {
        Ok(s) => s,
        Err(e) => {
            let n = diags.items.len();
            report(diags, f, &e);
            for d in &mut diags.items[n..] {
                d.syntax = true;
            }
            raw.broken.entry("file").or_default().insert(f.rel.clone());
            return;
        }
    };
    for (key, shape) in shape.0 {
        let section = match SECTIONS.iter().find(|s| **s == key.value) {
            Some(s) => *s,
            None => {
                let d = diags.error(
                    &f.display,
                    key.pos,
                    format!("unknown section `{}`", key.value),
                );
                d.hint(
                    did_you_mean(&key.value, SECTIONS.iter().copied())
                        .unwrap_or_else(|| format!("sections are: {}", SECTIONS.join(", "))),
                );
                continue;
            }
        };
        macro_rules! keyed {
            ($field:ident, $ty:ty) => {{
                let Shape::Keys(keys) = &shape else {
                    // Not a mapping: parse it whole to get serde's own message.
                    if let Err(e) = pick::<Option<Entries<$ty>>>(&f.text, section, Pick::Whole) {
                        report(diags, f, &e);
                    }
                    continue;
                };
                for k in keys {
                    match pick::<$ty>(&f.text, section, Pick::Key(k.clone())) {
                        Ok(Some(value)) => {
                            // The key's own position: found again by a typed pass over the keys.
                            let pos = key_pos(&f.text, section, k).unwrap_or(value.pos);
                            raw.$field.push(Item {
                                file,
                                name: Sp::new(k.clone(), pos),
                                value,
                            });
                        }
                        Ok(None) => {}
                        Err(e) => {
                            report(diags, f, &e);
                            raw.broken.entry(section).or_default().insert(k.clone());
                            deeper(diags, f, section, Ok(k.clone()));
                        }
                    }
                }
            }};
        }
        macro_rules! listed {
            ($field:ident, $ty:ty) => {{
                let Shape::Len(n) = shape else {
                    if let Err(e) = pick::<Option<Vec<$ty>>>(&f.text, section, Pick::Whole) {
                        report(diags, f, &e);
                    }
                    continue;
                };
                for i in 0..n {
                    match pick::<$ty>(&f.text, section, Pick::Index(i)) {
                        Ok(Some(v)) => raw.$field.push((file, v)),
                        Ok(None) => {}
                        Err(e) => {
                            report(diags, f, &e);
                            raw.broken.entry(section).or_default().insert(i.to_string());
                            deeper(diags, f, section, Err(i));
                        }
                    }
                }
            }};
        }
        match section {
            "version" => match pick::<Option<Sp<u32>>>(&f.text, section, Pick::Whole) {
                Ok(Some(Some(v))) => raw.version.push((file, v)),
                Ok(_) => {}
                Err(e) => report(diags, f, &e),
            },
            "settings" => match pick::<Option<Sp<Settings>>>(&f.text, section, Pick::Whole) {
                Ok(Some(Some(v))) => raw.settings.push((file, v)),
                Ok(_) => {}
                Err(e) => {
                    report(diags, f, &e);
                    raw.broken.entry(section).or_default().insert(String::new());
                }
            },
            "calendars" => keyed!(calendars, Sp<Calendar>),
            "intents" => keyed!(intents, Sp<Intent>),
            "entities" => keyed!(entities, Sp<Entity>),
            "templates" => keyed!(templates, Sp<TemplateDef>),
            "snippets" => keyed!(snippets, Sp<Snippet>),
            "queues" => keyed!(queues, Sp<Queue>),
            "connectors" => keyed!(connectors, Sp<Connector>),
            "flows" => keyed!(flows, Sp<Flow>),
            "rules" => listed!(rules, Sp<Rule>),
            "schedules" => listed!(schedules, Sp<Schedule>),
            "tests" => listed!(tests, Sp<TestCase>),
            _ => unreachable!("every section is handled"),
        }
    }
}

/// Position of `key` inside `section` (for items whose value parsed on the slow path).
fn key_pos(text: &str, section: &str, key: &str) -> Option<Pos> {
    let keys = pick::<Entries<IgnoredAny>>(text, section, Pick::Whole).ok()??;
    let found = keys.keys().find(|k| k.value == key).map(|k| k.pos);
    found
}

/// Turns a serde-saphyr error into a diagnostic, with "did you mean" for unknown keys.
/// A flow or a rule that did not parse: serde stops at its first mistake, so its parts — a
/// flow's steps, a rule's actions — are read one by one as well, each reporting its own. The
/// first mistake is found twice; sorting the diagnostics merges the two.
fn deeper(diags: &mut Diagnostics, f: &SourceFile, section: &str, item: Result<String, usize>) {
    let (part, list) = match section {
        "flows" => ("steps", false),
        "rules" => ("then", true),
        _ => return,
    };
    let base = vec![item, Ok(part.to_string())];
    let parts: Vec<Result<String, usize>> =
        match pick::<Shape>(&f.text, section, Pick::Path(base.clone())) {
            Ok(Some(Shape::Keys(keys))) if !list => keys.into_iter().map(Ok).collect(),
            Ok(Some(Shape::Len(n))) if list => (0..n).map(Err).collect(),
            _ => return,
        };
    for p in parts {
        let mut path = base.clone();
        path.push(p);
        let r = if list {
            pick::<Sp<Action>>(&f.text, section, Pick::Path(path)).map(|_| ())
        } else {
            pick::<Sp<Step>>(&f.text, section, Pick::Path(path)).map(|_| ())
        };
        if let Err(e) = r {
            report(diags, f, &e);
        }
    }
}

pub(crate) fn report(diags: &mut Diagnostics, f: &SourceFile, e: &serde_saphyr::Error) {
    let e = e.without_snippet();
    let pos = e.location().map(Pos::from_location).unwrap_or(Pos::UNKNOWN);
    use serde_saphyr::Error as E;
    match e {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let d = diags.error(&f.display, pos, format!("unknown key `{field}`"));
            // Words other tools use for the same key (`on:` in GitHub Actions is our `when:`).
            let alias = ALIASES
                .iter()
                .find(|(a, to)| *a == field.as_str() && expected.contains(to))
                .map(|(_, to)| format!("did you mean `{to}`?"));
            match alias.or_else(|| did_you_mean(field, expected.iter().copied())) {
                Some(h) => d.hint(h),
                None if expected.is_empty() => d.hint("this mapping takes no keys"),
                None => d.hint(format!("expected one of: {}", expected.join(", "))),
            };
        }
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let d = diags.error(&f.display, pos, format!("unknown value `{variant}`"));
            match did_you_mean(variant, expected.iter().copied()) {
                Some(h) => d.hint(h),
                None => d.hint(format!("expected one of: {}", expected.join(", "))),
            };
        }
        E::SerdeMissingField { field, .. } => {
            diags
                .error(&f.display, pos, format!("missing key `{field}`"))
                .hint(format!("add `{field}:` here"));
        }
        other => {
            let msg = friendly(&strip_location(&other.to_string()));
            let d = diags.error(&f.display, pos, msg.clone());
            // `id: yes` is a boolean to YAML, not the word.
            let boolean = |w: &String| BOOLEAN_WORDS.contains(&w.as_str());
            let word = word_at(&f.text, pos).filter(boolean).or_else(|| {
                // The position may be the mapping's start (`{ id: no, … }`): the line's first
                // boolean word after it.
                let line = f.text.lines().nth((pos.line as usize).checked_sub(1)?)?;
                let rest: String = line
                    .chars()
                    .skip((pos.col as usize).saturating_sub(1))
                    .collect();
                rest.split(|c: char| !c.is_alphanumeric())
                    .map(str::to_string)
                    .find(boolean)
            });
            if let Some(word) = word.filter(|_| msg.contains("string")) {
                d.hint(format!(
                    "YAML reads `{word}` as true or false here: write it in quotes (\"{word}\")"
                ));
            }
        }
    }
}

/// Keys other rule tools use, and ours for the same thing (offered only where ours is expected).
const ALIASES: &[(&str, &str)] = &[
    ("on", "when"),
    ("trigger", "when"),
    ("event", "when"),
    ("condition", "if"),
    ("where", "if"),
    ("do", "then"),
    ("actions", "then"),
    ("action", "then"),
];

/// Plain words YAML may read as a boolean.
const BOOLEAN_WORDS: &[&str] = &[
    "yes", "no", "on", "off", "y", "n", "true", "false", "Yes", "No", "YES", "NO", "On", "Off",
    "True", "False",
];

/// The key written on the line of `pos` (`yes` in `  yes: { … }`), if the line has one.
pub(crate) fn key_on_line(text: &str, pos: Pos) -> Option<String> {
    let line = text.lines().nth((pos.line as usize).checked_sub(1)?)?;
    let key = line
        .trim_start()
        .trim_start_matches("- ")
        .split(':')
        .next()?
        .trim();
    (!key.is_empty() && key.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .then(|| key.to_string())
}

/// The plain word starting at `pos` in `text`, if any.
pub(crate) fn word_at(text: &str, pos: Pos) -> Option<String> {
    if pos == Pos::UNKNOWN {
        return None;
    }
    let line = text.lines().nth((pos.line as usize).checked_sub(1)?)?;
    let rest: String = line
        .chars()
        .skip((pos.col as usize).checked_sub(1)?)
        .collect();
    let word: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
    (!word.is_empty()).then_some(word)
}

/// Plain words for the type errors an ops manager meets most.
fn friendly(msg: &str) -> String {
    let m = match msg {
        "invalid floating point" => "expected a number",
        "invalid u32" | "invalid u64" | "invalid i64" | "invalid integer" => {
            "expected a whole number"
        }
        "expected sequence start" => "expected a list (`[a, b]` or lines starting with `- `)",
        "expected mapping start" => "expected a mapping (`key: value`)",
        "invalid boolean" => "expected true or false",
        other => other,
    };
    m.to_string()
}

/// serde-saphyr's messages end in " at line L, column C": we print the position in front.
fn strip_location(msg: &str) -> String {
    let m = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains("column") => &msg[..i],
        _ => msg,
    };
    m.trim().to_string()
}
