//! A `Run`: the state of one event's processing, its scope for scripts and templates,
//! and the bookkeeping every change goes through (audit, caused events, status, notes).

use super::*;

impl<'a> Run<'a> {
    pub(super) fn new(
        eng: &'a Engine,
        pack: &'a Pack,
        ctx: crate::store::Context,
        now: Millis,
    ) -> Run<'a> {
        let crate::store::Context {
            contact,
            conversation: conv,
            ticket,
            ..
        } = ctx;
        let clock = Clock {
            now: time(now),
            window_open: eng.window_open(&conv, now),
        };
        let mut vars = pack.empty_vars();
        vars.set(
            "now",
            Dynamic::from(
                time(now)
                    .with_timezone(&pack.settings.timezone)
                    .to_rfc3339(),
            ),
        );
        if let Some(fs) = &conv.flow {
            for (k, v) in &fs.bound {
                vars.set_json(k, v);
            }
        }
        let cs = Changeset {
            at: now,
            conversation_id: conv.id,
            ..Default::default()
        };
        Run {
            eng,
            pack,
            now,
            clock,
            contact,
            conv,
            ticket,
            cs,
            vars,
            trace: Vec::new(),
            intent_trace: None,
            caused: VecDeque::new(),
            caused_total: 0,
            contact_changed: false,
            steps_followed: 0,
            pending_bound: Map::new(),
            holes: Vec::new(),
            blocked: None,
            not_to: None,
            said: false,
            handed: false,
            handoff_reason: None,
            chose: false,
            vars_of: (None, None, None),
        }
    }

    /// The queue whose agent just freed capacity (their conversation was resolved).
    pub(super) fn freed_queue(&self) -> Option<String> {
        let resolved = self.conv.status == Status::Resolved && self.conv.assignee.is_some();
        let was_open = self
            .cs
            .audit
            .iter()
            .any(|a| a.action == "status_changed" && a.after["status"] == "resolved");
        (resolved && was_open)
            .then(|| self.conv.queue.clone())
            .flatten()
    }

    pub(super) fn finish(mut self) -> Changeset {
        self.cs.conversation = Some(self.conv.clone());
        if self.contact_changed {
            self.cs.contact = Some(self.contact.clone());
        }
        let trace = Trace {
            at: time(self.now).to_rfc3339(),
            intent: self.intent_trace.take(),
            steps: std::mem::take(&mut self.trace),
        };
        self.cs.trace = Some((self.pack.hash.clone(), Arc::new(trace)));
        self.cs
    }

    // ---- scope -------------------------------------------------------------------------

    pub(super) fn refresh_vars(&mut self) {
        self.clock.window_open = self.eng.window_open(&self.conv, self.now);
        if self.vars_of.0.as_ref() != Some(&self.conv) {
            self.set_conversation_var();
            self.vars_of.0 = Some(self.conv.clone());
        }
        if self.vars_of.1.as_ref() != Some(&self.contact) {
            self.set_contact_var();
            self.vars_of.1 = Some(self.contact.clone());
        }
        if self.vars_of.2.as_ref() != Some(&self.ticket) {
            match &self.ticket {
                Some(t) => self.vars.set_json("ticket", &ticket_json(t)),
                None => self.vars.set("ticket", Dynamic::UNIT),
            }
            self.vars_of.2 = Some(self.ticket.clone());
        }
    }

    pub(super) fn set_conversation_var(&mut self) {
        let c = &self.conv;
        self.vars.set_json(
            "conversation",
            &json!({
                "id": c.id,
                "channel": c.channel,
                "status": c.status.as_str(),
                "queue": c.queue,
                "assignee": c.assignee,
                "priority": c.priority.as_str(),
                "tags": c.tags,
                "attributes": c.attributes,
                "flow": c.flow.as_ref().map(|f| f.flow.clone()),
                "step": c.flow.as_ref().map(|f| f.step.clone()),
            }),
        );
    }

    pub(super) fn set_contact_var(&mut self) {
        let k = &self.contact;
        let mut contact = k.attributes.clone();
        contact.insert("id".into(), json!(k.id));
        contact.insert("name".into(), json!(k.name));
        contact.insert("phone".into(), json!(k.phone));
        contact.insert("language".into(), json!(k.language));
        contact.insert("external_id".into(), json!(k.external_id));
        self.vars.set_json("contact", &Value::Object(contact));
    }

    pub(super) fn render(
        &mut self,
        t: &switchyard_rules::template::Template,
        actor: &str,
    ) -> String {
        // A text without holes reads nothing: no scope to build.
        let mut scope = if t.holes().next().is_none() {
            rhai::Scope::new()
        } else {
            self.vars.scope()
        };
        match t.render(&self.pack.sandbox, &mut scope, self.clock) {
            Ok(s) => s,
            Err(e) => {
                self.emit(
                    actor,
                    DomainEvent::ScriptFailed {
                        detail: json!({ "template": t.source(), "error": e.to_string() }),
                    },
                    0,
                );
                self.trace.push(Step::TemplateFailed {
                    template: t.source().to_string(),
                    by: actor.to_string(),
                    error: e.to_string(),
                });
                self.holes.push(format!("`{}`: {e}", t.source()));
                String::new()
            }
        }
    }

    // ---- bookkeeping -------------------------------------------------------------------

    /// Records one change: its audit records, the event the rules see next (one deeper than
    /// `depth`), and the event itself for the live feed and the metrics.
    pub(super) fn emit(&mut self, actor: &str, ev: DomainEvent, depth: u32) {
        for a in ev.audit() {
            self.cs.audit.push(AuditRecord {
                at: self.now,
                actor: actor.to_string(),
                entity: match a.ticket {
                    Some(t) => format!("ticket:{t}"),
                    None => format!("conversation:{}", self.conv.id),
                },
                action: a.action.to_string(),
                before: a.before,
                after: a.after,
            });
        }
        if let Some((event, data)) = ev.rule_event() {
            self.caused
                .push_back((event.as_str().to_string(), data, depth + 1));
        }
        self.cs.events.push(ev);
    }

    pub(super) fn set_status(&mut self, status: Status, actor: &str, depth: u32) {
        if self.conv.status == status {
            return;
        }
        let from = self.conv.status;

        self.conv.status = status;
        self.sla_on_status(from, status, actor);
        self.emit(
            actor,
            DomainEvent::StatusChanged { from, to: status },
            depth,
        );
    }

    pub(super) fn set_priority(&mut self, p: Priority, actor: &str) {
        if self.conv.priority == p {
            return;
        }
        self.emit(
            actor,
            DomainEvent::PriorityChanged {
                from: self.conv.priority,
                to: p,
            },
            0,
        );
        self.conv.priority = p;
        self.sla_recompute();
    }

    /// Sets the contact's language explicitly (kept until a person or a rule changes it), or
    /// with `None` lets the customer's messages decide again.
    pub(super) fn set_language(&mut self, lang: Option<String>, actor: &str) {
        let by = lang.as_ref().map(|_| actor.to_string());
        if self.contact.language_set_by == by && (lang.is_none() || self.contact.language == lang) {
            return;
        }
        self.emit(
            actor,
            DomainEvent::LanguageSet {
                before: self.contact.language.clone(),
                after: lang.clone(),
            },
            0,
        );
        self.trace.push(Step::LanguageSet {
            language: lang.clone().unwrap_or_else(|| "auto".into()),
            by: actor.to_string(),
        });
        if lang.is_some() {
            self.contact.language = lang;
        }
        self.contact.language_set_by = by;
        self.contact_changed = true;
    }

    /// Puts the conversation aside (`waiting`) until `d` passes or the customer writes.
    pub(super) fn snooze(&mut self, d: std::time::Duration, actor: &str, depth: u32) {
        self.cs.cancel_jobs.push((JobKind::Snooze, "snooze".into()));
        self.cs.new_jobs.push(NewJob {
            kind: JobKind::Snooze,
            name: "snooze".into(),
            due_at: self.now + d.as_millis() as i64,
        });
        self.emit(
            actor,
            DomainEvent::Snoozed {
                until: time(self.now + d.as_millis() as i64).to_rfc3339(),
            },
            depth,
        );
        self.set_status(Status::Waiting, actor, depth);
    }

    /// Notes, like messages, are append-only records with their author and time: the row is
    /// its own audit record.
    pub(super) fn note(&mut self, actor: &str, text: String) {
        if !text.trim().is_empty() {
            self.cs.notes.push((actor.to_string(), text));
        }
    }

    // ---- events ------------------------------------------------------------------------
}
