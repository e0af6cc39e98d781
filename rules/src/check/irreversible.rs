//! Nothing irreversible on a guess: a store action that cannot be undone (`cancel_order`, or
//! an `http` connector marked `irreversible: true`) must be reached only through a step's
//! choice — a button the customer tapped (or its title typed, or a plain yes/no for it).
//! `validate` warns a rule that runs one (rules answer messages the classifier read, never a
//! tap) and a flow that reaches one any other way; the engine withholds it at run time too.

use std::collections::BTreeMap;

use super::Ctx;
use crate::pack::{
    is_irreversible, ActionRt, ConnectorRt, FlowRt, LookupAction, Matcher, Next, RuleRt,
};

/// The irreversible lookups among `actions`: `(connector, action name)`.
fn irreversible<'a>(
    actions: &'a [ActionRt],
    connectors: &BTreeMap<String, ConnectorRt>,
) -> Vec<(&'a str, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            ActionRt::Lookup {
                connector, action, ..
            } if is_irreversible(connectors, connector, *action) => {
                let name = LookupAction::ALL
                    .iter()
                    .find(|(_, a)| a == action)
                    .map_or("?", |(n, _)| n);
                Some((connector.as_str(), name.to_string()))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn unconfirmed(
    cx: &mut Ctx,
    flows: &BTreeMap<String, FlowRt>,
    rules: &[RuleRt],
    connectors: &BTreeMap<String, ConnectorRt>,
) {
    let hint = "ask first: a step with buttons naming the action and the order (\"Cancel order {{order.name}}?\" — \"Yes, cancel it\" / \"No, keep it\"), and run it in that choice's branch or a step only it leads to";
    let raw = cx.raw;
    for (f, r) in &raw.rules {
        let Some(rt) = rules.iter().find(|x| x.name == r.value.name.value) else {
            continue;
        };
        for (connector, action) in irreversible(&rt.actions, connectors) {
            cx.warn(
                *f,
                r.value.name.pos,
                format!(
                    "rule `{}` runs `{action}` on `{connector}`, which cannot be undone, without the customer confirming it",
                    rt.name
                ),
            )
            .hint(hint);
        }
    }
    for it in &raw.flows {
        let Some(fl) = flows.get(&it.name.value) else {
            continue;
        };
        // How each step is entered: only by a choice's branch (`true`), or otherwise too.
        let mut only_by_choice: BTreeMap<String, bool> = BTreeMap::new();
        only_by_choice.insert(fl.start.clone(), false);
        let mut enter = |next: &Next, by_choice: bool| {
            if let Some(g) = &next.goto {
                let e = only_by_choice.entry(g.clone()).or_insert(true);
                *e &= by_choice;
            }
        };
        for st in fl.steps.values() {
            for (m, next) in &st.on {
                enter(next, matches!(m, Matcher::Choice(_)));
            }
            enter(&st.next, false);
            for (_, next) in &st.branch {
                enter(next, false);
            }
            if let Some((_, next)) = &st.timeout {
                enter(next, false);
            }
        }
        let mut found: Vec<(String, String, &str, String)> = Vec::new();
        for (name, st) in &fl.steps {
            let guarded = only_by_choice.get(name).copied().unwrap_or(false);
            if !guarded {
                for (c, a) in irreversible(&st.actions, connectors) {
                    found.push((name.clone(), "when entered".into(), c, a));
                }
            }
            for (m, next) in &st.on {
                if !matches!(m, Matcher::Choice(_)) {
                    for (c, a) in irreversible(&next.actions, connectors) {
                        let how = crate::check::flows::answer_of(m);
                        found.push((name.clone(), format!("on {how}"), c, a));
                    }
                }
            }
            let others = std::iter::once(&st.next)
                .chain(st.branch.iter().map(|(_, n)| n))
                .chain(st.timeout.iter().map(|(_, n)| n));
            for next in others {
                for (c, a) in irreversible(&next.actions, connectors) {
                    found.push((name.clone(), "without a choice".into(), c, a));
                }
            }
        }
        for (step, how, connector, action) in found {
            let pos = it
                .value
                .value
                .steps
                .keys()
                .find(|k| k.value == step)
                .map(|k| k.pos)
                .unwrap_or(it.name.pos);
            cx.warn(
                it.file,
                pos,
                format!(
                    "flow `{}` step `{step}` runs `{action}` on `{connector}` ({how}), which cannot be undone, without the customer confirming it with a button",
                    it.name.value
                ),
            )
            .hint(hint);
        }
    }
}
