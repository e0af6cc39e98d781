//! Flows: steps, `on`/`capture`/`branch`, `goto` targets, reachability and dead ends.

use super::*;

pub(super) fn next(
    cx: &mut Ctx,
    f: usize,
    flow: &Flow,
    actions: &[Sp<Action>],
    goto: &Option<Sp<String>>,
    end: bool,
) -> Option<Next> {
    let actions = cx.actions(f, actions);
    let mut ok = true;
    if let Some(g) = goto {
        if flow.steps.get(&g.value).is_none() {
            let hint = name_hint(
                &g.value,
                "steps",
                flow.steps.keys().map(|k| k.value.as_str()),
            );
            cx.err(f, g.pos, format!("undefined step `{}`", g.value))
                .hint(hint);
            ok = false;
        }
        if end {
            cx.err(f, g.pos, "`goto` and `end: true` together")
                .hint("keep one");
            ok = false;
        }
    }
    (ok && actions.is_some()).then(|| Next {
        actions: actions.unwrap_or_default(),
        goto: goto.as_ref().map(|g| g.value.clone()),
        end,
    })
}

pub(super) fn leads_somewhere(n: &Next) -> bool {
    n.goto.is_some()
        || n.end
        || n.actions.iter().any(|a| {
            matches!(
                a,
                ActionRt::Handoff { .. } | ActionRt::StartFlow(_) | ActionRt::EndFlow
            )
        })
}

/// How a decision trace names the answer an `on` key matches (`Step::Answered::answer`).
pub fn answer_of(m: &Matcher) -> String {
    match m {
        Matcher::Choice(id) => format!("choice {id}"),
        Matcher::Intent(i) => format!("intent {i}"),
        Matcher::Regex(r) => format!("pattern {r}"),
    }
}

pub(super) fn flow(cx: &mut Ctx, it: &Item<Sp<Flow>>) -> Option<FlowRt> {
    let f = it.file;
    let fl = &it.value.value;
    let mut ok = true;
    if fl.steps.get(&fl.start.value).is_none() {
        let hint = name_hint(
            &fl.start.value,
            "steps",
            fl.steps.keys().map(|k| k.value.as_str()),
        );
        cx.err(
            f,
            fl.start.pos,
            format!("undefined step `{}`", fl.start.value),
        )
        .hint(hint);
        ok = false;
    }
    let mut steps = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (name, st) in fl.steps.iter() {
        if !seen.insert(name.value.clone()) {
            cx.err(
                f,
                name.pos,
                format!(
                    "step `{}` is defined twice in flow `{}`",
                    name.value, it.name.value
                ),
            );
            ok = false;
        }
        let s = &st.value;
        let send = match &s.send {
            Some(m) => {
                let r = cx.message(f, m);
                ok &= r.is_some();
                r
            }
            None => None,
        };
        // The ids a customer can tap in this step.
        let mut choices: BTreeSet<String> = BTreeSet::new();
        match s.send.as_ref().map(|m| &m.value) {
            Some(Send::Buttons(b)) => choices.extend(b.buttons.iter().map(|c| c.id.value.clone())),
            Some(Send::List(l)) => choices.extend(
                l.sections
                    .iter()
                    .flat_map(|s| s.rows.iter().map(|r| r.id.value.clone())),
            ),
            Some(Send::Template(t)) => {
                if let Some(def) = cx.raw.templates.iter().find(|x| x.name.value == t.value) {
                    if let Some(w) = &def.value.whatsapp {
                        choices.extend(w.buttons.iter().map(|b| b.value.clone()));
                    }
                }
            }
            _ => {}
        }
        let actions = cx.actions(f, &s.actions);
        ok &= actions.is_some();
        let mut on = Vec::new();
        for (key, br) in s.on.iter().flat_map(|o| o.iter()) {
            let matcher = if choices.contains(&key.value) {
                Some(Matcher::Choice(key.value.clone()))
            } else if cx.intents.contains(&key.value) {
                Some(Matcher::Intent(key.value.clone()))
            } else if key.value.len() >= 2 && key.value.starts_with('/') && key.value.ends_with('/')
            {
                match Regex::new(&format!("(?i){}", &key.value[1..key.value.len() - 1])) {
                    Ok(r) => Some(Matcher::Regex(r)),
                    Err(e) => {
                        cx.err(
                            f,
                            key.pos,
                            format!("pattern does not compile: {}", main_line(&e.to_string())),
                        );
                        None
                    }
                }
            } else {
                let mut known: Vec<&str> = choices.iter().map(String::as_str).collect();
                let intents: Vec<String> = cx.intents.iter().cloned().collect();
                known.extend(intents.iter().map(String::as_str));
                let hint = crate::diag::did_you_mean(&key.value, known.iter().copied()).unwrap_or_else(|| {
                    "an `on` key is a button or list row id of this step's message, an intent, or a `/regex/`".into()
                });
                cx.err(
                    f,
                    key.pos,
                    format!(
                        "`{}` is neither a choice of this step nor an intent",
                        key.value
                    ),
                )
                .hint(hint);
                None
            };
            let n = next(cx, f, fl, &br.actions, &br.goto, br.end);
            if let Some(n) = &n {
                if !leads_somewhere(n) {
                    cx.err(f, key.pos, format!("branch `{}` leads nowhere", key.value))
                        .hint("add `goto: STEP`, `end: true`, or a `handoff` in `do`");
                    ok = false;
                }
            }
            match (matcher, n) {
                (Some(m), Some(n)) => on.push((m, n)),
                _ => ok = false,
            }
        }
        let capture = match &s.capture {
            Some(c) => {
                let key = if c.into.pos == Pos::UNKNOWN {
                    Sp::new(c.into.value.clone(), c.pos)
                } else {
                    c.into.clone()
                };
                let mut c_ok = cx.ident(f, &key, "attribute name");
                if let Some(e) = &c.entity {
                    c_ok &= cx.reference(f, e, "entities", "entity");
                }
                ok &= c_ok;
                Some((
                    c.into.value.clone(),
                    c.entity.as_ref().map(|e| e.value.clone()),
                ))
            }
            None => None,
        };
        let timeout = match &s.timeout {
            Some(t) => {
                let after = cx.duration(f, &t.after);
                let n = next(cx, f, fl, &t.actions, &t.goto, t.end);
                if let Some(n) = &n {
                    if !leads_somewhere(n) {
                        cx.err(f, t.pos, "the timeout leads nowhere")
                            .hint("add `goto: STEP`, `end: true`, or a `handoff` in `do`");
                        ok = false;
                    }
                }
                match (after, n) {
                    (Some(a), Some(n)) => Some((a, n)),
                    _ => {
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        let mut branch = Vec::new();
        for d in &s.branch {
            let cond = match &d.condition {
                Some(c) => cx.script(f, c).map(Some),
                None => Some(None),
            };
            let n = next(cx, f, fl, &d.actions, &d.goto, d.end);
            if let Some(n) = &n {
                if !leads_somewhere(n) {
                    cx.err(f, d.pos, "this branch leads nowhere")
                        .hint("add `goto: STEP`, `end: true`, or a `handoff` in `do`");
                    ok = false;
                }
            }
            match (cond, n) {
                (Some(c), Some(n)) => branch.push((c, n)),
                _ => ok = false,
            }
        }
        if !s.branch.is_empty() && (s.on.is_some() || s.capture.is_some()) {
            cx.err(
                f,
                s.branch[0].pos,
                format!(
                    "step `{}` has `branch` and waits for an answer (`on`/`capture`)",
                    name.value
                ),
            )
            .hint("`branch` decides at once from data; put it in a step of its own and `goto` it");
            ok = false;
        }
        let nx = next(cx, f, fl, &[], &s.goto, s.end);
        let handoff = match &s.handoff {
            Some(h) => {
                let r = cx.handoff(f, h);
                ok &= r.is_some();
                r
            }
            None => None,
        };
        // What the author wrote, not what survived its own errors: an `on` arm with a typo is
        // reported once, not again as "retries without on".
        let waits = s.on.as_ref().is_some_and(|o| !o.0.is_empty()) || s.capture.is_some();
        if s.retries.is_some() && !waits {
            let p = s.retries.as_ref().map(|r| r.pos).unwrap_or(st.pos);
            cx.warn(f, p, "`retries` without `on` or `capture` has no effect");
        }
        if s.capture.is_some() && s.goto.is_none() && !s.end && s.handoff.is_none() {
            cx.err(
                f,
                name.pos,
                format!(
                    "step `{}` captures an answer but has nowhere to go next",
                    name.value
                ),
            )
            .hint("add `goto: STEP` or `end: true`");
            ok = false;
        }
        if let Some(nx) = nx {
            // A `branch` whose last entry has no `if` always leads somewhere.
            let branch_total = s.branch.last().is_some_and(|d| d.condition.is_none());
            let progresses = s.on.is_some()
                || s.capture.is_some()
                || s.handoff.is_some()
                || branch_total
                || leads_somewhere(&nx)
                || actions.as_ref().is_some_and(|a| {
                    leads_somewhere(&Next {
                        actions: a.clone(),
                        goto: None,
                        end: false,
                    })
                });
            if !progresses && !s.branch.is_empty() {
                cx.err(f, name.pos, format!("step `{}` has no way forward when no `branch` condition holds", name.value))
                    .hint("add `goto: STEP` or `end: true` (taken when none holds), or a last entry without `if`");
                ok = false;
            } else if !progresses {
                cx.err(f, name.pos, format!("step `{}` has no way forward", name.value))
                    .hint("add `on`, `capture`, `goto`, `end: true` or `handoff`, or the customer is stuck here");
                ok = false;
            }
            if ok {
                let flow = &it.name.value;
                cx.origin(format!("step:{flow}/{}", name.value), f, name.pos);
                for (key, (m, _)) in s.on.iter().flat_map(|o| o.iter()).map(|(k, _)| k).zip(&on) {
                    cx.origin(
                        format!("on:{flow}/{}/{}", name.value, answer_of(m)),
                        f,
                        key.pos,
                    );
                }
                for (i, d) in s.branch.iter().enumerate() {
                    cx.origin(format!("branch:{flow}/{}/{i}", name.value), f, d.pos);
                }
                steps.insert(
                    name.value.clone(),
                    StepRt {
                        send,
                        actions: actions.unwrap_or_default(),
                        on,
                        capture,
                        retries: s.retries.as_ref().map(|r| r.value).unwrap_or(1),
                        timeout,
                        next: nx,
                        handoff,
                        branch,
                    },
                );
            }
        } else {
            ok = false;
        }
    }
    // Reachability from the start step, over what the YAML says (even when a step is broken).
    if fl.steps.get(&fl.start.value).is_some() {
        let mut reached = BTreeSet::new();
        let mut todo = vec![fl.start.value.clone()];
        while let Some(sn) = todo.pop() {
            if !reached.insert(sn.clone()) {
                continue;
            }
            let Some(st) = fl.steps.get(&sn) else {
                continue;
            };
            let gotos = st
                .on
                .iter()
                .flat_map(|o| o.iter().map(|(_, b)| &b.goto))
                .chain(st.timeout.iter().map(|t| &t.goto))
                .chain(st.branch.iter().map(|b| &b.goto))
                .chain(std::iter::once(&st.goto));
            for g in gotos.flatten() {
                todo.push(g.value.clone());
            }
        }
        for (name, _) in fl.steps.iter() {
            if !reached.contains(&name.value) {
                cx.err(
                    f,
                    name.pos,
                    format!(
                        "step `{}` cannot be reached from `{}`",
                        name.value, fl.start.value
                    ),
                )
                .hint("add a `goto` to it, or remove it");
                ok = false;
            }
        }
    }
    if ok {
        goto_cycles(cx, f, fl, &steps);
    }
    ok.then(|| FlowRt {
        start: fl.start.value.clone(),
        steps,
    })
}

/// Steps that go round (`goto`s) without any of them waiting for the customer: the engine would
/// spin until its loop guard cuts the run. An error when every hop is unconditional; a
/// warning when a `branch` might leave the loop.
fn goto_cycles(cx: &mut Ctx, f: usize, fl: &Flow, steps: &BTreeMap<String, StepRt>) {
    // Edges between steps that do not wait: (to, unconditional).
    let edges = |name: &str| -> Vec<(String, bool)> {
        let Some(st) = steps.get(name).filter(|s| !s.waits()) else {
            return Vec::new();
        };
        let mut out: Vec<(String, bool)> = st
            .branch
            .iter()
            .filter_map(|(_, n)| n.goto.clone().map(|g| (g, false)))
            .collect();
        if let Some(g) = &st.next.goto {
            out.push((g.clone(), st.branch.is_empty()));
        }
        out
    };
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in steps.keys() {
        // Depth-first from each step, along the path (cycles through `start` only).
        let mut stack: Vec<(String, usize, bool)> = vec![(start.clone(), 0, true)];
        let mut on_path: Vec<String> = vec![start.clone()];
        let mut hops: Vec<bool> = Vec::new();
        while let Some((node, i, _)) = stack.last().cloned() {
            let next = edges(&node);
            if i >= next.len() {
                stack.pop();
                on_path.pop();
                hops.pop();
                continue;
            }
            stack.last_mut().expect("not empty").1 += 1;
            let (to, unconditional) = next[i].clone();
            if to == *start {
                let mut cycle = on_path.clone();
                let all_unconditional = hops.iter().all(|h| *h) && unconditional;
                let mut key = cycle.clone();
                key.sort();
                if reported.insert(key) {
                    cycle.push(start.clone());
                    let pos = fl
                        .steps
                        .iter()
                        .find(|(n, _)| n.value == *start)
                        .map(|(n, _)| n.pos)
                        .unwrap_or_default();
                    let msg = format!(
                        "steps {} go round without waiting for the customer",
                        cycle
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(" → ")
                    );
                    let hint = "make one of them wait (`on` or `capture`), or leave with `end: true` or a `handoff`";
                    if all_unconditional {
                        cx.err(f, pos, msg).hint(hint);
                    } else {
                        cx.warn(f, pos, format!("{msg} unless a `branch` leaves"))
                            .hint(hint);
                    }
                }
                continue;
            }
            if on_path.contains(&to) || !steps.contains_key(&to) {
                continue;
            }
            on_path.push(to.clone());
            hops.push(unconditional);
            stack.push((to, 0, unconditional));
        }
    }
}
