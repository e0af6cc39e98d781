//! The actions of `do:` lists: each checked for its references, names and values.

use super::*;

impl Ctx<'_> {
    pub(super) fn actions(&mut self, f: usize, list: &[Sp<Action>]) -> Option<Vec<ActionRt>> {
        let mut out = Vec::new();
        let mut ok = true;
        for a in list {
            match self.action(f, a) {
                Some(x) => out.push(x),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(super) fn action(&mut self, f: usize, a: &Sp<Action>) -> Option<ActionRt> {
        Some(match &a.value {
            Action::Reply(m) => ActionRt::Reply(self.message(f, m)?),
            Action::StartFlow(name) => {
                self.reference(f, name, "flows", "flow").then_some(())?;
                ActionRt::StartFlow(name.value.clone())
            }
            Action::EndFlow => ActionRt::EndFlow,
            Action::Reassign => ActionRt::Reassign,
            Action::Route(r) => {
                self.reference(f, &r.queue, "queues", "queue")
                    .then_some(())?;
                ActionRt::Route {
                    queue: r.queue.value.clone(),
                }
            }
            Action::Assign(x) => {
                if let Some(q) = &x.queue {
                    self.reference(f, q, "queues", "queue").then_some(())?;
                }
                if x.agent.is_none() && x.queue.is_none() {
                    self.err(f, x.pos, "`assign` needs an `agent` or a `queue`");
                    return None;
                }
                ActionRt::Assign {
                    agent: x.agent.as_ref().map(|s| s.value.clone()),
                    queue: x.queue.as_ref().map(|s| s.value.clone()),
                }
            }
            Action::Handoff(h) => self.handoff(f, h)?,
            Action::Tag(t) => {
                self.tag(f, t).then_some(())?;
                ActionRt::Tag(t.value.clone())
            }
            Action::Untag(t) => {
                self.tag(f, t).then_some(())?;
                ActionRt::Untag(t.value.clone())
            }
            Action::Set(s) if s.key.value.starts_with("contact.language") => {
                self.err(
                    f,
                    s.key.pos,
                    "the contact's language is not a conversation attribute",
                )
                .hint(
                    "write `set_language: ur` (or `roman_ur`, `en`, …; `auto` to detect it again)",
                );
                return None;
            }
            Action::Set(s) => {
                let key_ok = self.ident(f, &s.key, "attribute name");
                let value = self.script(f, &s.value.value);
                key_ok.then_some(())?;
                ActionRt::Set {
                    key: s.key.value.clone(),
                    value: value?,
                }
            }
            Action::SetStatus(s) => ActionRt::SetStatus(s.value),
            Action::SetPriority(p) => ActionRt::SetPriority(p.value),
            Action::SetLanguage(l) if l.value == "auto" => ActionRt::SetLanguage(None),
            Action::SetLanguage(l) => {
                if !crate::lang::is_code(&l.value) {
                    self.err(f, l.pos, format!("`{}` is not a language code", l.value))
                        .hint("use `en`, `ur`, `roman_ur`, … as in the templates, or `auto`");
                    return None;
                }
                ActionRt::SetLanguage(Some(l.value.clone()))
            }
            Action::Ticket(t) => {
                let q_ok = t
                    .queue
                    .as_ref()
                    .is_none_or(|q| self.reference(f, q, "queues", "queue"));
                let title = match &t.title {
                    Some(x) => Some(self.template(f, x)?),
                    None => None,
                };
                q_ok.then_some(())?;
                ActionRt::Ticket {
                    title,
                    category: t.category.as_ref().map(|c| c.value.clone()),
                    priority: t.priority.as_ref().map(|p| p.value),
                    queue: t.queue.as_ref().map(|q| q.value.clone()),
                }
            }
            Action::Escalate(e) => {
                let q_ok = self.reference(f, &e.queue, "queues", "queue");
                let reason = match &e.reason {
                    Some(x) => Some(self.template(f, x)?),
                    None => None,
                };
                q_ok.then_some(())?;
                ActionRt::Escalate {
                    queue: e.queue.value.clone(),
                    reason,
                    priority: e
                        .priority
                        .as_ref()
                        .map(|p| p.value)
                        .unwrap_or(Priority::High),
                }
            }
            Action::Note(n) => ActionRt::Note(self.template(f, n)?),
            Action::Lookup(l) => {
                let action = LookupAction::parse(&l.action.value);
                let kind = if action == Some(LookupAction::Fetch) {
                    ConnectorKind::Http
                } else {
                    ConnectorKind::Store
                };
                let c_ok = self.connector(f, &l.connector, kind);
                if action.is_none() {
                    let names: Vec<&str> = LookupAction::ALL.iter().map(|(n, _)| *n).collect();
                    let hint = name_hint(&l.action.value, "lookup actions", names.iter().copied());
                    self.err(
                        f,
                        l.action.pos,
                        format!("unknown lookup action `{}`", l.action.value),
                    )
                    .hint(hint);
                }
                let by = match &l.by {
                    Some(b) => Some(self.script(f, b)?),
                    None => None,
                };
                let value = match &l.value.value {
                    Some(v) => Some(self.template(f, v)?),
                    None => None,
                };
                if let Some(b) = &l.bind {
                    self.ident(f, b, "scope name").then_some(())?;
                }
                c_ok.then_some(())?;
                ActionRt::Lookup {
                    connector: l.connector.value.clone(),
                    action: action?,
                    by,
                    bind: l.bind.as_ref().map(|b| b.value.clone()).unwrap_or_else(|| {
                        if action == Some(LookupAction::FindOrders) {
                            "orders".into()
                        } else {
                            "order".into()
                        }
                    }),
                    value,
                }
            }
            Action::Webhook(w) => {
                let c_ok = self.connector(f, &w.connector, ConnectorKind::Webhook);
                let body = match &w.body {
                    Some(b) => Some(self.template(f, b)?),
                    None => None,
                };
                c_ok.then_some(())?;
                ActionRt::Webhook {
                    connector: w.connector.value.clone(),
                    body,
                }
            }
            Action::Timer(t) => {
                let n_ok = self.ident(f, &t.name, "timer name");
                let after = self.duration(f, &t.after)?;
                n_ok.then_some(())?;
                ActionRt::Timer {
                    name: t.name.value.clone(),
                    after,
                }
            }
            Action::Snooze(d) => ActionRt::Snooze(self.duration(f, d)?),
            Action::Stop => ActionRt::Stop,
        })
    }

    pub(super) fn handoff(&mut self, f: usize, h: &Sp<Handoff>) -> Option<ActionRt> {
        let q_ok = h
            .queue
            .as_ref()
            .is_none_or(|q| self.reference(f, q, "queues", "queue"));
        let note = match &h.note {
            Some(n) => Some(self.template(f, n)?),
            None => None,
        };
        q_ok.then_some(())?;
        Some(ActionRt::Handoff {
            queue: h.queue.as_ref().map(|q| q.value.clone()),
            agent: h.agent.as_ref().map(|a| a.value.clone()),
            note,
        })
    }
}
