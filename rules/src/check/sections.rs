//! The pack's sections outside rules and flows: duplicates across files, calendars, settings,
//! intents, entities, templates, and the `tests:` cases.

use super::*;

pub(super) fn duplicates(raw: &RawPack, d: &mut Diagnostics) {
    pub(super) fn keyed<T>(raw: &RawPack, d: &mut Diagnostics, items: &[Item<T>], kind: &str) {
        let mut seen: HashMap<&str, (usize, Pos)> = HashMap::new();
        for it in items {
            // `yes:` as a name is the boolean `true` to YAML: the pack would define `true`.
            if matches!(it.name.value.as_str(), "true" | "false") {
                let file = &raw.files[it.file];
                if let Some(w) = crate::load::key_on_line(&file.text, it.name.pos)
                    .filter(|w| w != "true" && w != "false")
                {
                    d.error(
                        &file.display,
                        it.name.pos,
                        format!("YAML reads the {kind} name `{w}` as `{}`", it.name.value),
                    )
                    .hint(format!("write it in quotes: \"{w}\":"));
                }
            }
            if let Some((f0, p0)) = seen.get(it.name.value.as_str()) {
                let here = raw.files[it.file].display.clone();
                let there = format!("{}:{}", raw.files[*f0].display, p0);
                d.error(
                    &here,
                    it.name.pos,
                    format!("{kind} `{}` is defined twice", it.name.value),
                )
                .hint(format!("first defined at {there}"));
            } else {
                seen.insert(&it.name.value, (it.file, it.name.pos));
            }
        }
    }
    keyed(raw, d, &raw.calendars, "calendar");
    keyed(raw, d, &raw.intents, "intent");
    keyed(raw, d, &raw.entities, "entity");
    keyed(raw, d, &raw.templates, "template");
    keyed(raw, d, &raw.snippets, "snippet");
    keyed(raw, d, &raw.queues, "queue");
    keyed(raw, d, &raw.connectors, "connector");
    keyed(raw, d, &raw.flows, "flow");
    let as_items = |v: Vec<(usize, &Sp<String>)>| -> Vec<Item<()>> {
        v.into_iter()
            .map(|(file, n)| Item {
                file,
                name: n.clone(),
                value: (),
            })
            .collect()
    };
    keyed(
        raw,
        d,
        &as_items(raw.rules.iter().map(|(f, r)| (*f, &r.name)).collect()),
        "rule",
    );
    keyed(
        raw,
        d,
        &as_items(raw.schedules.iter().map(|(f, r)| (*f, &r.name)).collect()),
        "schedule",
    );
    keyed(
        raw,
        d,
        &as_items(raw.tests.iter().map(|(f, r)| (*f, &r.name)).collect()),
        "test",
    );
    if raw.settings.len() > 1 {
        let (f0, s0) = &raw.settings[0];
        for (f, s) in &raw.settings[1..] {
            let here = raw.files[*f].display.clone();
            d.error(&here, s.pos, "`settings` is defined twice")
                .hint(format!(
                    "first defined at {}:{}",
                    raw.files[*f0].display, s0.pos
                ));
        }
    }
}

pub(super) fn calendar(
    raw: &RawPack,
    it: &Item<Sp<Calendar>>,
    default_tz: chrono_tz::Tz,
    d: &mut Diagnostics,
) -> Option<CalendarRt> {
    let file = raw.files[it.file].display.clone();
    let c = &it.value.value;
    let mut ok = true;
    let mut days = [false; 7];
    for day in &c.days {
        days[weekday_index(day.value)] = true;
    }
    if c.days.is_empty() {
        d.error(
            &file,
            it.value.pos,
            "a calendar needs at least one open day",
        );
        ok = false;
    }
    let open = parse_clock(&c.open.value)
        .map_err(|m| {
            d.error(&file, c.open.pos, m)
                .hint("write `HH:MM`, e.g. `10:00`")
        })
        .ok();
    let close = parse_clock(&c.close.value)
        .map_err(|m| {
            d.error(&file, c.close.pos, m)
                .hint("write `HH:MM`, e.g. `22:00`")
        })
        .ok();
    if let (Some(o), Some(cl)) = (open, close) {
        if o >= cl {
            d.error(
                &file,
                c.close.pos,
                format!(
                    "closes at {} before it opens at {}",
                    c.close.value, c.open.value
                ),
            );
            ok = false;
        }
    }
    let mut holidays = BTreeSet::new();
    for h in &c.holidays {
        match parse_date(&h.value) {
            Ok(x) => {
                holidays.insert(x);
            }
            Err(m) => {
                d.error(&file, h.pos, m).hint("write `YYYY-MM-DD`");
                ok = false;
            }
        }
    }
    let tz = match &c.timezone {
        Some(t) => match parse_tz(&t.value) {
            Ok(tz) => tz,
            Err(m) => {
                d.error(&file, t.pos, m).hint("e.g. `Asia/Karachi`");
                return None;
            }
        },
        None => default_tz,
    };
    (ok && open.is_some() && close.is_some()).then(|| CalendarRt {
        days,
        open: open.unwrap_or(0),
        close: close.unwrap_or(0),
        holidays,
        tz,
    })
}

/// Names bound by `lookup: { as: NAME }` anywhere in the pack: scripts may use them.
pub(super) fn lookup_binds(raw: &RawPack) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut visit = |list: &[Sp<Action>]| {
        for a in list {
            if let Action::Lookup(l) = &a.value {
                if let Some(b) = &l.bind {
                    if !SCOPE_NAMES.contains(&b.value.as_str()) {
                        out.insert(b.value.clone());
                    }
                }
            }
        }
    };
    for (_, r) in &raw.rules {
        visit(&r.then);
    }
    for (_, s) in &raw.schedules {
        visit(&s.then);
    }
    for fl in &raw.flows {
        for (_, st) in fl.value.steps.iter() {
            visit(&st.actions);
            for (_, b) in st.on.iter().flat_map(|o| o.iter()) {
                visit(&b.actions);
            }
            if let Some(t) = &st.timeout {
                visit(&t.actions);
            }
            for b in &st.branch {
                visit(&b.actions);
            }
        }
    }
    out.into_iter().collect()
}

pub(super) fn settings(cx: &mut Ctx, tz: chrono_tz::Tz) -> Option<SettingsRt> {
    let Some((f, s)) = cx.raw.settings.first() else {
        if !cx.raw.broken.contains_key("settings") && !cx.raw.broken.contains_key("file") {
            let file = cx.file(0).to_string();
            cx.d.error(&file, Pos::UNKNOWN, "the pack has no `settings`")
                .hint("add `settings: { default_queue: support }` to one file");
        }
        return None;
    };
    let f = *f;
    if let Some(t) = &s.timezone {
        if let Err(m) = parse_tz(&t.value) {
            cx.err(f, t.pos, m).hint("e.g. `Asia/Karachi`");
        }
    }
    let q_ok = cx.reference(f, &s.default_queue, "queues", "queue");
    let threshold = s.intent_threshold.as_ref().map(|t| t.value).unwrap_or(0.55);
    if let Some(t) = &s.intent_threshold {
        if !(0.0..1.0).contains(&t.value) {
            cx.err(
                f,
                t.pos,
                format!("intent_threshold {} is outside 0–1", t.value),
            )
            .hint("0.55 is a good start; `switchyard classify --eval` shows the effect");
        }
    }
    let default_language = s
        .default_language
        .as_ref()
        .map(|l| l.value.clone())
        .unwrap_or_else(|| "en".into());
    let escape_intents = match &s.escape_intents {
        Some(list) => {
            for i in list {
                cx.reference(f, i, "intents", "intent");
            }
            list.iter().map(|i| i.value.clone()).collect()
        }
        None => cx
            .intents
            .iter()
            .filter(|i| *i == "human_agent")
            .cloned()
            .collect(),
    };
    let mut language_fallbacks = std::collections::BTreeMap::new();
    for (lang, next) in s.language_fallbacks.iter().flat_map(|m| m.iter()) {
        for l in std::iter::once(lang).chain(next.iter()) {
            if !crate::lang::is_code(&l.value) {
                cx.err(f, l.pos, format!("`{}` is not a language code", l.value))
                    .hint("use `en`, `ur`, `roman_ur`, … as in the templates");
            }
        }
        language_fallbacks.insert(
            lang.value.clone(),
            next.iter().map(|l| l.value.clone()).collect(),
        );
    }
    let mut handoff = crate::pack::HandoffRt::default();
    match &s.handoff {
        Some(h) => {
            use crate::pack::HandoffReason as R;
            let named = [
                (R::Unhandled, &h.value.unhandled),
                (R::NotFound, &h.value.not_found),
                (R::Retries, &h.value.retries),
                (R::StoreUnavailable, &h.value.store_unavailable),
                (R::Asked, &h.value.asked),
            ];
            let mut written = [false; 5];
            for (r, t) in named {
                if let Some(t) = t {
                    written[r as usize] = true;
                    if cx.reference(f, t, "templates", "template") {
                        handoff.templates[r as usize] = Some(t.value.clone());
                    }
                }
            }
            // What is not written at all (an undefined template is its own error).
            let missing: Vec<&str> = R::ALL
                .iter()
                .filter(|r| !written[**r as usize])
                .map(|r| r.as_str())
                .collect();
            if !missing.is_empty() && missing.len() < R::ALL.len() {
                cx.warn(
                    f,
                    h.pos,
                    format!(
                        "`settings.handoff` says nothing when the bot hands off for: {}",
                        missing.join(", ")
                    ),
                )
                .hint(
                    "name a template for each reason: a customer must never be left without a word",
                );
            }
            match (&h.value.calendar, &h.value.closed) {
                (Some(c), Some(t)) => {
                    if cx.reference(f, c, "calendars", "calendar") {
                        handoff.calendar = Some(c.value.clone());
                    }
                    if cx.reference(f, t, "templates", "template") {
                        handoff.closed = Some(t.value.clone());
                    }
                }
                (Some(c), None) => {
                    cx.err(f, c.pos, "`settings.handoff.calendar` without `closed`")
                        .hint("name the template sent outside the calendar's hours: `closed: …`");
                }
                (None, Some(t)) => {
                    cx.err(f, t.pos, "`settings.handoff.closed` without `calendar`")
                        .hint("name the calendar whose hours decide: `calendar: store_hours`");
                }
                (None, None) => {}
            }
        }
        None => {
            if !cx.raw.broken.contains_key("settings") {
                cx.warn(f, s.pos, "the pack does not say what a customer is told when the bot hands off to a person")
                    .hint("add `settings.handoff` with a template per reason (unhandled, not_found, retries, store_unavailable, asked): otherwise the customer hears nothing");
            }
            // A pack written before `settings.handoff` keeps its store apology.
            if cx.templates.contains(crate::pack::STORE_UNAVAILABLE) {
                handoff.templates[crate::pack::HandoffReason::StoreUnavailable as usize] =
                    Some(crate::pack::STORE_UNAVAILABLE.to_string());
            }
        }
    }
    let mut interrupt_min_confidence = 0.8f32;
    let (interrupt, interrupt_then) = match &s.interrupt {
        Some(i) => {
            for n in &i.value.intents {
                cx.reference(f, n, "intents", "intent");
            }
            if let Some(m) = &i.value.min_confidence {
                if !(0.0..=1.0).contains(&m.value) {
                    cx.err(
                        f,
                        m.pos,
                        format!("min_confidence {} is outside 0–1", m.value),
                    );
                }
                interrupt_min_confidence = m.value as f32;
            }
            (
                i.value.intents.iter().map(|n| n.value.clone()).collect(),
                i.value
                    .then
                    .as_ref()
                    .map(|t| t.value)
                    .unwrap_or(crate::config::InterruptThen::Leave),
            )
        }
        None => (Vec::new(), crate::config::InterruptThen::Leave),
    };
    let reprompt = s.reprompt.as_ref().and_then(|t| {
        cx.reference(f, t, "templates", "template")
            .then(|| t.value.clone())
    });
    let mut synonyms = Vec::new();
    let mut fallback = None;
    let mut unrelated = Vec::new();
    // By default an order number alone asks about that order, when the pack has the
    // conventional `order_status` intent.
    let mut entity_only = cx
        .intents
        .contains("order_status")
        .then(|| "order_status".to_string());
    let clarify = s.clarify.as_ref().and_then(|c| clarify(cx, f, &c.value));
    if let Some(v) = &s.values {
        check_values(cx, f, v);
    }
    if let Some(c) = &s.classifier {
        unrelated = c.value.unrelated.iter().map(|u| u.value.clone()).collect();
        if let Some(e) = &c.value.entity_only {
            if cx.reference(f, e, "intents", "intent") {
                entity_only = Some(e.value.clone());
            }
        }
        for (word, variants) in c.value.synonyms.iter().flat_map(|m| m.iter()) {
            if variants.is_empty() {
                cx.warn(
                    f,
                    word.pos,
                    format!("synonym `{}` lists nothing", word.value),
                )
                .hint("write what customers say for it: `refund: [money back, paisay wapis]`");
            }
            synonyms.push((
                word.value.clone(),
                variants.iter().map(|v| v.value.clone()).collect(),
            ));
        }
        if let Some(fb) = &c.value.fallback {
            let fb = &fb.value;
            let timeout = match &fb.timeout {
                Some(t) => cx.duration(f, t),
                None => Some(std::time::Duration::from_secs(3)),
            };
            let min_confidence = fb.min_confidence.as_ref().map_or(0.6, |m| m.value);
            if let Some(m) = &fb.min_confidence {
                if !(0.0..=1.0).contains(&m.value) {
                    cx.err(
                        f,
                        m.pos,
                        format!("min_confidence {} is outside 0–1", m.value),
                    );
                }
            }
            if let Some(timeout) = timeout {
                fallback = Some(crate::pack::FallbackRt {
                    url_env: fb.url_env.value.clone(),
                    key_env: fb.key_env.as_ref().map(|k| k.value.clone()),
                    model: fb.model.value.clone(),
                    timeout,
                    per_minute: fb.per_minute.as_ref().map_or(60, |p| p.value),
                    min_confidence: min_confidence as f32,
                });
            }
        }
    }
    q_ok.then_some(SettingsRt {
        timezone: tz,
        default_queue: s.default_queue.value.clone(),
        intent_threshold: threshold as f32,
        default_language,
        escape_intents,
        language_fallbacks,
        handoff,
        interrupt,
        interrupt_then,
        interrupt_min_confidence,
        reprompt,
        synonyms,
        unrelated,
        fallback,
        entity_only,
        clarify,
    })
}

/// `settings.values` as the sandbox reads them (checked by [`check_values`]).
pub(super) fn values(raw: &crate::load::RawPack) -> crate::script::Values {
    let mut out = crate::script::Values::new();
    let Some(v) = raw.settings.first().and_then(|(_, s)| s.values.as_ref()) else {
        return out;
    };
    for (expr, by_value) in v.iter() {
        let entry = out.entry(expr.value.trim().to_string()).or_default();
        for (value, words) in by_value.iter() {
            entry.insert(
                value.value.clone(),
                words
                    .iter()
                    .map(|(l, w)| (l.value.clone(), w.value.clone()))
                    .collect(),
            );
        }
    }
    out
}

/// `settings.values`: each expression a scope object's field (`order.status`), each language
/// a code or `text`, no words empty.
fn check_values(
    cx: &mut Ctx,
    f: usize,
    v: &crate::span::Entries<crate::span::Entries<crate::span::Entries<Sp<String>>>>,
) {
    for (expr, by_value) in v.iter() {
        let path = expr.value.trim();
        let object = path.split('.').next().unwrap_or("");
        let simple = path.split('.').count() >= 2
            && path
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !simple || !crate::script::SCOPE_NAMES.contains(&object) {
            cx.err(f, expr.pos, format!("`{path}` is not a field of the scope"))
                .hint("name what templates show, as they write it: `order.status`, `order.courier`, `order.payment`");
        }
        for (value, words) in by_value.iter() {
            if words.is_empty() {
                cx.err(f, value.pos, format!("`{}` has no words", value.value))
                    .hint("give it per language: `{ en: on its way, roman_ur: raste mein, ur: راستے میں }`");
            }
            for (lang, w) in words.iter() {
                if lang.value != "text" && !crate::lang::is_code(&lang.value) {
                    cx.err(
                        f,
                        lang.pos,
                        format!("`{}` is not a language code", lang.value),
                    )
                    .hint("use `en`, `roman_ur`, `ur` (or any ll / ll_Xxxx code), or `text`");
                }
                if w.value.trim().is_empty() {
                    cx.err(f, w.pos, "empty words")
                        .hint("say what the value means, or leave the language out");
                }
            }
        }
    }
}

/// `settings.clarify`, checked.
fn clarify(cx: &mut Ctx, f: usize, c: &crate::config::Clarify) -> Option<crate::pack::ClarifyRt> {
    let mut ok = cx.reference(f, &c.template, "templates", "template");
    let mut share = |cx: &mut Ctx, v: &Option<Sp<f64>>, default: f64, what: &str| match v {
        Some(m) if !(0.0..=1.0).contains(&m.value) => {
            cx.err(f, m.pos, format!("{what} {} is outside 0–1", m.value))
                .hint("a confidence: 0.25 asks about anything a quarter sure or more");
            ok = false;
            default as f32
        }
        Some(m) => m.value as f32,
        None => default as f32,
    };
    let floor = share(cx, &c.floor, 0.25, "floor");
    let margin = share(cx, &c.margin, 0.15, "margin");
    let mut other = Vec::new();
    for (lang, title) in c.other.iter() {
        if button_title(cx, f, lang, title) {
            other.push((lang.value.clone(), title.value.clone()));
        } else {
            ok = false;
        }
    }
    if c.other.is_empty() {
        cx.err(f, c.template.pos, "`clarify.other` names no title")
            .hint(
            "the third button: `other: { en: Something else, roman_ur: Kuch aur, ur: کچھ اور }`",
        );
        ok = false;
    }
    ok.then(|| crate::pack::ClarifyRt {
        floor,
        margin,
        template: c.template.value.clone(),
        other,
    })
}

/// The most examples a pack may have in all: the classifier is trained on them at every load
/// and its confusions measured leave-one-out (quadratic in their number), and a pack is
/// validated on upload.
pub const MAX_EXAMPLES: usize = 5_000;

pub(super) fn intents(cx: &mut Ctx) -> Vec<IntentSpec> {
    let total: usize = cx
        .raw
        .intents
        .iter()
        .map(|it| it.value.value.examples.len())
        .sum();
    if total > MAX_EXAMPLES {
        if let Some(it) = cx
            .raw
            .intents
            .iter()
            .max_by_key(|it| it.value.value.examples.len())
        {
            let (f, pos) = (it.file, it.value.pos);
            cx.err(
                f,
                pos,
                format!("{total} intent examples in the pack; at most {MAX_EXAMPLES}"),
            )
            .hint("keep the examples that differ; a few hundred per intent are plenty");
        }
        return Vec::new();
    }
    let mut specs = Vec::new();
    let mut seen_examples: HashMap<String, (String, usize, Pos)> = HashMap::new();
    for it in &cx.raw.intents {
        let f = it.file;
        let name = &it.name;
        let i = &it.value.value;
        if name.value == UNKNOWN {
            cx.err(f, name.pos, "`unknown` is the name of no intent")
                .hint(
                    "pick another name: `unknown` is what the classifier says below the threshold",
                );
        }
        cx.ident(f, name, "intent name");
        if i.examples.is_empty() {
            cx.err(
                f,
                it.value.pos,
                format!("intent `{}` has no examples", name.value),
            )
            .hint("write at least 5 messages customers send for it, in every language you see");
        } else if i.examples.len() < 5 {
            cx.warn(
                f,
                name.pos,
                format!(
                    "intent `{}` has only {} examples",
                    name.value,
                    i.examples.len()
                ),
            )
            .hint("5 or more per intent make the classifier much more reliable");
        }
        for e in &i.examples {
            let n = normalize(&e.value);
            if n.is_empty() {
                cx.err(f, e.pos, "this example has no words")
                    .hint("remove it");
                continue;
            }
            match seen_examples.get(&n) {
                Some((other, f0, p0)) if other != &name.value => {
                    let there = format!("{}:{}", cx.file(*f0), p0);
                    let other = other.clone();
                    cx.warn(
                        f,
                        e.pos,
                        format!(
                            "intents `{other}` and `{}` share the example \"{}\"",
                            name.value, e.value
                        ),
                    )
                    .hint(format!("the other is at {there}; keep it in one intent"));
                }
                Some(_) => {}
                None => {
                    seen_examples.insert(n, (name.value.clone(), f, e.pos));
                }
            }
        }
        let mut patterns = Vec::new();
        for p in &i.patterns {
            match Regex::new(&p.value) {
                Ok(r) => patterns.push(r),
                Err(e) => {
                    cx.err(
                        f,
                        p.pos,
                        format!("pattern does not compile: {}", main_line(&e.to_string())),
                    )
                    .hint("patterns are matched against the normalised, lower-case message");
                }
            }
        }
        let mut label = Vec::new();
        for (lang, title) in i.label.iter().flat_map(|l| l.iter()) {
            if button_title(cx, f, lang, title) {
                label.push((lang.value.clone(), title.value.clone()));
            }
        }
        specs.push(IntentSpec {
            name: name.value.clone(),
            examples: i.examples.iter().map(|e| e.value.clone()).collect(),
            keywords: i.keywords.iter().map(|k| k.value.clone()).collect(),
            patterns,
            description: i.description.clone(),
            label,
        });
    }
    specs
}

/// A button title by language (an intent's `label`, `settings.clarify.other`): a language
/// code or `text`, at most 20 characters (WhatsApp refuses longer), not empty.
fn button_title(cx: &mut Ctx, f: usize, lang: &Sp<String>, title: &Sp<String>) -> bool {
    let mut ok = true;
    if lang.value != "text" && !crate::lang::is_code(&lang.value) {
        cx.err(
            f,
            lang.pos,
            format!("`{}` is not a language code", lang.value),
        )
        .hint(
            "use `en`, `roman_ur`, `ur` (or any ll / ll_Xxxx code), or `text` for every language",
        );
        ok = false;
    }
    let n = title.value.trim().chars().count();
    if n == 0 || n > 20 {
        cx.err(
            f,
            title.pos,
            format!("a button title has 1 to 20 characters; this one has {n}"),
        )
        .hint("WhatsApp refuses longer button titles; say it in fewer words");
        ok = false;
    }
    ok
}

/// The line of a library's multi-line error that says what is wrong (its last non-empty
/// one; the others draw a caret under the input).
pub(super) fn main_line(s: &str) -> String {
    let last = s
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

pub(super) fn entity(cx: &mut Ctx, it: &Item<Sp<Entity>>) -> Option<Extractor> {
    let f = it.file;
    let e = &it.value.value;
    cx.ident(f, &it.name, "entity name");
    match (&e.pattern, &e.builtin) {
        (Some(p), None) => match Regex::new(&p.value) {
            Ok(r) if r.captures_len() > 1 => Some(Extractor::Pattern(r)),
            Ok(_) => {
                cx.err(f, p.pos, "the pattern has no capture group")
                    .hint("wrap the value in parentheses, e.g. '#?\\b(\\d{4,8})\\b'");
                None
            }
            Err(err) => {
                cx.err(
                    f,
                    p.pos,
                    format!("pattern does not compile: {}", main_line(&err.to_string())),
                );
                None
            }
        },
        (None, Some(b)) => Some(Extractor::Builtin(b.value)),
        _ => {
            cx.err(
                f,
                it.value.pos,
                format!(
                    "entity `{}` needs exactly one of `pattern` or `builtin`",
                    it.name.value
                ),
            );
            None
        }
    }
}

pub(super) fn template_def(cx: &mut Ctx, it: &Item<Sp<TemplateDef>>) -> Option<TemplateRt> {
    let f = it.file;
    let t = &it.value.value;
    let mut ok = true;
    let mut variants = Vec::new();
    let lang_re = |s: &str| s == "text" || crate::lang::is_code(s);
    for (lang, body) in &t.variants {
        // A plain-string template has no position of its own: use the template's.
        let body = if body.pos == Pos::UNKNOWN {
            Sp::new(body.value.clone(), it.value.pos)
        } else {
            body.clone()
        };
        if !lang_re(&lang.value) {
            cx.err(f, lang.pos, format!("`{}` is not a language code", lang.value))
                .hint("use `en`, `ur`, … (or `text` for any language) and `whatsapp` for the approved template");
            ok = false;
            continue;
        }
        cx.limit(f, &body, "text", cx.caps.text);
        match cx.template(f, &body) {
            Some(c) => variants.push((lang.value.clone(), c)),
            None => ok = false,
        }
    }
    let whatsapp = match &t.whatsapp {
        Some(w) => {
            let mut body = Vec::new();
            for p in &w.body {
                match cx.template(f, p) {
                    Some(c) => body.push(c),
                    None => ok = false,
                }
            }
            if w.buttons.len() > cx.caps.template_buttons {
                cx.err(
                    f,
                    w.pos,
                    format!(
                        "{} template buttons; WhatsApp allows at most {}",
                        w.buttons.len(),
                        cx.caps.template_buttons
                    ),
                );
                ok = false;
            }
            if w.name.value.is_empty()
                || !w
                    .name
                    .value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                cx.err(
                    f,
                    w.name.pos,
                    format!("`{}` is not a WhatsApp template name", w.name.value),
                )
                .hint("approved template names are lower-case letters, digits and `_`");
                ok = false;
            }
            if variants.is_empty() {
                cx.err(
                    f,
                    it.name.pos,
                    format!(
                        "template `{}` has a WhatsApp form but no `text` form",
                        it.name.value
                    ),
                )
                .hint("add `text: \"…\"`: web chat, the sandbox and agents see it");
                ok = false;
            }
            Some(WaTemplateRt {
                name: w.name.value.clone(),
                language: w.language.value.clone(),
                body,
                buttons: w.buttons.iter().map(|b| b.value.clone()).collect(),
            })
        }
        None => None,
    };
    if variants.is_empty() && whatsapp.is_none() && ok {
        cx.err(
            f,
            it.value.pos,
            format!("template `{}` is empty", it.name.value),
        );
        ok = false;
    }
    ok.then_some(TemplateRt { variants, whatsapp })
}

pub(super) fn test_case(cx: &mut Ctx, f: usize, t: &Sp<TestCase>) {
    if t.conversation.is_empty() {
        cx.err(
            f,
            t.name.pos,
            format!("test `{}` has no conversation", t.name.value),
        );
    }
    for a in &t.agents {
        if let Some(sh) = &a.shift {
            cx.reference(f, sh, "calendars", "calendar");
        }
    }
    for u in &t.fixtures.unavailable {
        if crate::pack::LookupAction::parse(&u.value).is_none() {
            let names: Vec<&str> = crate::pack::LookupAction::ALL
                .iter()
                .map(|(n, _)| *n)
                .collect();
            cx.err(f, u.pos, format!("`{}` is not a store action", u.value))
                .hint(format!("one of: {}", names.join(", ")));
        }
    }
    for turn in &t.conversation {
        let n = turn.customer.is_some() as u8
            + turn.event.is_some() as u8
            + turn.wait.is_some() as u8
            + turn.agent.is_some() as u8;
        if n != 1 {
            cx.err(
                f,
                turn.pos,
                "each conversation line needs exactly one of `customer`, `event`, `wait` or `agent`",
            );
        }
        if let Some(a) = &turn.agent {
            if !t.agents.iter().any(|x| x.id.value == a.id.value) {
                cx.err(
                    f,
                    a.id.pos,
                    format!("`{}` is not one of this test's agents", a.id.value),
                )
                .hint("list them under `agents:` of the test");
            }
            if a.reply.is_none() && a.note.is_none() && a.status.is_none() && a.snooze.is_none() {
                cx.err(
                    f,
                    a.pos,
                    "an agent line needs `reply`, `note`, `status` or `snooze`",
                );
            }
            if let Some(d) = &a.snooze {
                cx.duration(f, d);
            }
        }
        if let Some(w) = &turn.wait {
            cx.duration(f, w);
        }
        if let Some(ev) = &turn.event {
            check_event(cx, f, &ev.name);
        }
        if let Some(e) = &turn.expect {
            if let Some(i) = &e.intent {
                if i.value != UNKNOWN {
                    cx.reference(f, i, "intents", "intent");
                }
            }
            if let Some(fl) = &e.flow {
                if fl.value != "none" {
                    cx.reference(f, fl, "flows", "flow");
                }
            }
            if let Some(q) = &e.queue {
                cx.reference(f, q, "queues", "queue");
            }
            if let (Some(st), Some(fl)) = (&e.step, &e.flow) {
                if let Some(def) = cx.raw.flows.iter().find(|x| x.name.value == fl.value) {
                    if def.value.steps.get(&st.value).is_none() {
                        let hint = name_hint(
                            &st.value,
                            "steps",
                            def.value.steps.keys().map(|k| k.value.as_str()),
                        );
                        cx.err(
                            f,
                            st.pos,
                            format!("flow `{}` has no step `{}`", fl.value, st.value),
                        )
                        .hint(hint);
                    }
                }
            }
            if let Some(ExpectTicket::Some(tf)) = e.ticket.as_ref().map(|t| &t.value) {
                if let Some(q) = &tf.queue {
                    cx.reference(f, q, "queues", "queue");
                }
            }
        }
    }
}
