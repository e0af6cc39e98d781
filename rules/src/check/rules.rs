//! Rules and schedules: events, conditions, the intents a condition requires (the rule index).

use super::*;

pub(super) fn check_event(cx: &mut Ctx, f: usize, when: &Sp<String>) -> bool {
    let w = &when.value;
    let ok = EVENTS.contains(&w.as_str())
        || w.strip_prefix("timer.").is_some_and(|n| !n.is_empty())
        || w.strip_prefix("schedule.").is_some_and(|n| !n.is_empty());
    if !ok {
        let hint = crate::diag::did_you_mean(w, EVENTS.iter().copied()).unwrap_or_else(|| {
            format!(
                "events are {}, `timer.NAME` and `schedule.NAME`",
                EVENTS.join(", ")
            )
        });
        cx.err(f, when.pos, format!("unknown event `{w}`"))
            .hint(hint);
    }
    ok
}

/// Schedules fire outside any conversation: their actions (and those of rules on
/// `schedule.<name>`) may only post webhooks.
pub(super) fn outside_conversation(cx: &mut Ctx, f: usize, actions: &[Sp<Action>], what: &str) {
    for a in actions {
        if !matches!(a.value, Action::Webhook(_) | Action::Stop) {
            cx.err(
                f,
                a.pos,
                format!("`{}` needs a conversation, and {what} runs outside any", a.value.name()),
            )
            .hint("schedules post to webhooks (`webhook: { connector, body }`); act on conversations from rules on their events");
        }
    }
}

pub(super) fn rule(cx: &mut Ctx, f: usize, r: &Sp<Rule>) -> Option<RuleRt> {
    let ev_ok = check_event(cx, f, &r.when);
    if r.when.value.starts_with("schedule.") {
        outside_conversation(cx, f, &r.then, &format!("`{}`", r.when.value));
    }
    let condition = r.condition.as_ref().map(|c| cx.script(f, c));
    let actions = cx.actions(f, &r.then);
    if r.then.is_empty() {
        cx.err(
            f,
            r.name.pos,
            format!("rule `{}` does nothing", r.name.value),
        )
        .hint("add actions under `then:`");
        return None;
    }
    let condition = match condition {
        Some(Some(ast)) => Some(ast),
        Some(None) => return None,
        None => None,
    };
    let intents = condition.as_ref().and_then(required_intents);
    if let Some(set) = &intents {
        for i in set {
            if !cx.intents.contains(i) && i != UNKNOWN {
                let broken = cx.raw.broken.get("intents").into_iter().flatten();
                let names = cx.intents.iter().chain(broken).filter(|n| !n.is_empty());
                let hint = cx.unread_files(name_hint(i, "intents", names.map(String::as_str)));
                let pos = r.condition.as_ref().map(|c| c.pos).unwrap_or(r.pos);
                cx.err(
                    f,
                    pos,
                    format!("the condition tests undefined intent `{i}`"),
                )
                .hint(hint);
                return None;
            }
        }
    }
    (ev_ok).then_some(())?;
    cx.origin(format!("rule:{}", r.name.value), f, r.pos);
    Some(RuleRt {
        name: r.name.value.clone(),
        origin: format!("{}:{}", cx.raw.files[f].display, r.pos),
        when: r.when.value.clone(),
        condition,
        actions: actions?,
        stop: r.stop,
        intents,
    })
}

pub(super) fn schedule(cx: &mut Ctx, f: usize, s: &Sp<Schedule>) -> Option<ScheduleRt> {
    let fields = s.cron.value.split_whitespace().count();
    let cron = match s.cron.value.parse::<cron::Schedule>() {
        Ok(c) => Some(c),
        Err(e) => {
            let msg = if fields != 6 && fields != 7 {
                format!(
                    "cron expression `{}` has {fields} fields; it needs 6 (or 7 with a year)",
                    s.cron.value
                )
            } else {
                format!(
                    "cron expression `{}` does not parse: {}",
                    s.cron.value,
                    main_line(&e.to_string())
                )
            };
            cx.err(f, s.cron.pos, msg)
                .hint("six fields, seconds first: `sec min hour day-of-month month day-of-week`; \"0 0 10 * * *\" is 10:00 every day");
            None
        }
    };
    let condition = match &s.condition {
        Some(c) => Some(cx.script(f, c)?),
        None => None,
    };
    outside_conversation(cx, f, &s.then, "a schedule");
    let actions = cx.actions(f, &s.then)?;
    Some(ScheduleRt {
        name: s.name.value.clone(),
        cron: cron?,
        condition,
        actions,
    })
}

/// The intents a condition requires: `intent == "a"`, `intent == "a" || intent == "b"`, and
/// either inside `&&`. `None` when the condition can match any intent.
pub(super) fn required_intents(ast: &rhai::AST) -> Option<BTreeSet<String>> {
    use rhai::{Expr, Stmt};
    fn of_call(call: &rhai::FnCallExpr) -> Option<BTreeSet<String>> {
        if call.name != "==" || call.args.len() != 2 {
            return None;
        }
        match (&call.args[0], &call.args[1]) {
            (Expr::Variable(v, ..), Expr::StringConstant(s, _))
            | (Expr::StringConstant(s, _), Expr::Variable(v, ..))
                if v.1 == "intent" =>
            {
                Some([s.to_string()].into())
            }
            _ => None,
        }
    }
    pub(super) fn of(e: &Expr) -> Option<BTreeSet<String>> {
        match e {
            Expr::FnCall(call, _) => of_call(call),
            Expr::And(list, _) => {
                let sets: Vec<BTreeSet<String>> = list.iter().filter_map(of).collect();
                sets.into_iter()
                    .reduce(|a, b| a.intersection(&b).cloned().collect())
            }
            Expr::Or(list, _) => {
                let mut out = BTreeSet::new();
                for x in list.iter() {
                    out.extend(of(x)?);
                }
                Some(out)
            }
            Expr::Stmt(block) => of_statements(block.statements()),
            _ => None,
        }
    }
    // A lone comparison is a statement of its own (`Stmt::FnCall`), not an expression.
    fn of_statements(s: &[Stmt]) -> Option<BTreeSet<String>> {
        match s {
            [Stmt::Expr(e)] => of(e),
            [Stmt::FnCall(call, _)] => of_call(call),
            _ => None,
        }
    }
    of_statements(ast.statements())
}

pub(super) fn index_rules(rules: &[RuleRt]) -> RuleIndex {
    let mut idx = RuleIndex::default();
    for (i, r) in rules.iter().enumerate() {
        let slot = idx.by_event_mut(&r.when);
        match &r.intents {
            Some(set) => {
                for intent in set {
                    slot.1.entry(intent.clone()).or_default().push(i);
                }
            }
            None => slot.0.push(i),
        }
    }
    idx
}

/// The top-level `&&` parts of a condition, each with its spaces collapsed (outside string
/// literals the text is compared as written).
fn conjuncts(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0usize);
    let bytes: Vec<(usize, char)> = src.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        let (at, c) = bytes[i];
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => i += 1,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, '&') if depth == 0 && bytes.get(i + 1).map(|b| b.1) == Some('&') => {
                out.insert(src[start..at].to_string());
                start = at + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.insert(src[start..].to_string());
    out.into_iter()
        .map(|p| {
            let mut p = p.split_whitespace().collect::<Vec<_>>().join(" ");
            while p.starts_with('(') && p.ends_with(')') && conjuncts_balanced(&p[1..p.len() - 1]) {
                p = p[1..p.len() - 1].trim().to_string();
            }
            p
        })
        .filter(|p| !p.is_empty() && p != "true")
        .collect()
}

fn conjuncts_balanced(s: &str) -> bool {
    let mut d = 0i32;
    for c in s.chars() {
        match c {
            '(' => d += 1,
            ')' => {
                d -= 1;
                if d < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    d == 0
}

/// Rules that can never run: an earlier rule for the same event stops, and its condition is
/// part of theirs (every event theirs would match, it matches first) — a warning naming it.
pub(super) fn shadowed_rules(cx: &mut Ctx) {
    let rules: Vec<(usize, Sp<Rule>)> = cx.raw.rules.clone();
    for (j, (fj, later)) in rules.iter().enumerate() {
        let theirs = later
            .condition
            .as_ref()
            .map(|c| conjuncts(&c.value))
            .unwrap_or_default();
        let hit = rules[..j].iter().find(|(_, earlier)| {
            earlier.stop
                && earlier.when.value == later.when.value
                && earlier
                    .condition
                    .as_ref()
                    .map(|c| conjuncts(&c.value))
                    .unwrap_or_default()
                    .is_subset(&theirs)
        });
        if let Some((fi, earlier)) = hit {
            let there = format!("{}:{}", cx.file(*fi), earlier.name.pos);
            let (name, first) = (later.name.value.clone(), earlier.name.value.clone());
            cx.warn(
                *fj,
                later.name.pos,
                format!("rule `{name}` can never run: rule `{first}` matches every event it would, first, and stops"),
            )
            .hint(format!("`{first}` is at {there}: move `{name}` before it, or narrow `{first}`'s `if`"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::conjuncts;

    #[test]
    fn conditions_split_into_their_parts() {
        let c = conjuncts(r#"intent == "complaint" && (conversation.status == "new")"#);
        assert_eq!(c.len(), 2);
        assert!(c.contains(r#"conversation.status == "new""#));
        let c = conjuncts(r#"message.text.contains("a && b") && intent == "x""#);
        assert!(c.contains(r#"message.text.contains("a && b")"#), "{c:?}");
        let c = conjuncts(r#"(a || b) && c"#);
        assert!(c.contains("a || b") && c.contains("c"), "{c:?}");
        assert!(conjuncts("  intent  ==  \"x\" ").contains("intent == \"x\""));
    }
}
