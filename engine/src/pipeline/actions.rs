//! The pack's actions (`do:` lists of rules, steps and branches) and tickets.

use super::*;

impl<'a> Run<'a> {
    pub(super) async fn exec(
        &mut self,
        actions: &[ActionRt],
        actor: &str,
        depth: u32,
    ) -> Result<Flow, EngineError> {
        // A ticket with a queue routes its conversation there, unless the same list routes
        // it itself: someone works the customer whose complaint became the ticket.
        let routes = actions.iter().any(|a| {
            matches!(
                a,
                ActionRt::Route { .. }
                    | ActionRt::Handoff { .. }
                    | ActionRt::Escalate { .. }
                    | ActionRt::Assign { queue: Some(_), .. }
            )
        });
        for a in actions {
            let r = self.exec_one(a, actor, depth).await?;
            if let ActionRt::Ticket { queue: Some(q), .. } = a {
                if !routes && self.conv.queue.as_deref() != Some(q.as_str()) {
                    self.route(q, actor, depth).await?;
                }
            }
            if r != Flow::Continue {
                return Ok(r);
            }
        }
        Ok(Flow::Continue)
    }

    pub(super) async fn exec_one(
        &mut self,
        a: &ActionRt,
        actor: &str,
        depth: u32,
    ) -> Result<Flow, EngineError> {
        match a {
            ActionRt::Reply(m) => self.send(m, actor, depth).await?,
            ActionRt::StartFlow(name) => {
                return Box::pin(self.start_flow(name, actor, depth)).await
            }
            ActionRt::EndFlow => self.end_flow(true, &format!("ended by {actor}"), actor, depth),
            ActionRt::Route { queue } => self.route(queue, actor, depth).await?,
            ActionRt::Reassign => self.reassign(actor, depth).await?,
            ActionRt::Assign { agent, queue } => {
                if let Some(q) = queue {
                    self.route(q, actor, depth).await?;
                }
                if let Some(a) = agent {
                    self.assign(a, actor, depth);
                }
            }
            ActionRt::Handoff { queue, agent, note } => {
                let note = note.as_ref().map(|n| self.render(n, actor));
                self.handoff(queue.clone(), agent.clone(), note, actor, depth)
                    .await?;
            }
            ActionRt::Tag(t) => {
                if !self.conv.tags.contains(t) {
                    self.emit(actor, DomainEvent::Tagged { tag: t.clone() }, 0);
                    self.conv.tags.push(t.clone());
                }
            }
            ActionRt::Untag(t) => {
                if self.conv.tags.contains(t) {
                    self.emit(actor, DomainEvent::Untagged { tag: t.clone() }, 0);
                    self.conv.tags.retain(|x| x != t);
                }
            }
            ActionRt::Set { key, value } => {
                self.refresh_vars();
                let mut scope = self.vars.scope();
                match self.pack.sandbox.eval(value, &mut scope, self.clock) {
                    Ok(v) => {
                        let v = dynamic_to_json(&v);
                        let before = self
                            .conv
                            .attributes
                            .get(key)
                            .cloned()
                            .unwrap_or(Value::Null);
                        self.emit(
                            actor,
                            DomainEvent::AttributeSet {
                                key: key.clone(),
                                before,
                                after: v.clone(),
                            },
                            depth,
                        );
                        self.conv.attributes.insert(key.clone(), v);
                    }
                    Err(e) => {
                        self.trace.push(Step::SetFailed {
                            key: key.to_string(),
                            by: actor.to_string(),
                            error: e.to_string(),
                        });
                        self.emit(
                            actor,
                            DomainEvent::ScriptFailed {
                                detail: json!({ "set": key, "error": e.to_string() }),
                            },
                            0,
                        );
                    }
                }
            }
            ActionRt::SetStatus(s) => self.set_status(*s, actor, depth),
            ActionRt::SetPriority(p) => self.set_priority(*p, actor),
            ActionRt::SetLanguage(l) => self.set_language(l.clone(), actor),
            ActionRt::Ticket {
                title,
                category,
                priority,
                queue,
            } => {
                let title = title.as_ref().map(|t| self.render(t, actor));
                self.ticket(
                    title,
                    category.clone(),
                    *priority,
                    queue.clone(),
                    actor,
                    depth,
                )
                .await?;
            }
            ActionRt::Escalate {
                queue,
                reason,
                priority,
            } => {
                let reason = reason.as_ref().map(|r| self.render(r, actor));
                self.route(queue, actor, depth).await?;
                if *priority > self.conv.priority {
                    self.set_priority(*priority, actor);
                }
                self.set_status(Status::Escalated, actor, depth);
                let title = reason
                    .clone()
                    .unwrap_or_else(|| format!("Escalated to {queue}"));
                self.ticket(
                    Some(title),
                    Some("escalation".into()),
                    Some(*priority),
                    Some(queue.clone()),
                    actor,
                    depth,
                )
                .await?;
                if let Some(r) = reason {
                    self.note(actor, format!("Escalated: {r}"));
                }
            }
            ActionRt::Note(t) => {
                let text = self.render(t, actor);
                self.note(actor, text);
            }
            ActionRt::Lookup {
                connector,
                action,
                by,
                bind,
                value,
            } => {
                return self
                    .lookup(
                        connector,
                        *action,
                        by.as_ref(),
                        bind,
                        value.as_ref(),
                        actor,
                        depth,
                    )
                    .await;
            }
            ActionRt::Webhook { connector, body } => {
                let text = body
                    .as_ref()
                    .map(|b| self.render(b, actor))
                    .unwrap_or_default();
                let payload = json!({
                    "text": text,
                    "conversation": self.conv.id,
                    "event": self.vars.get("event").map(dynamic_to_json).unwrap_or(Value::Null),
                    "at": time(self.now).to_rfc3339(),
                });
                self.emit(
                    actor,
                    DomainEvent::WebhookQueued {
                        connector: connector.clone(),
                    },
                    depth,
                );
                self.cs.webhooks.push((connector.clone(), payload));
            }
            ActionRt::Timer { name, after } => {
                self.cs.cancel_jobs.push((JobKind::Timer, name.clone()));
                self.cs.new_jobs.push(NewJob {
                    kind: JobKind::Timer,
                    name: name.clone(),
                    due_at: self.now + after.as_millis() as i64,
                });
                self.emit(
                    actor,
                    DomainEvent::TimerSet {
                        timer: name.clone(),
                        after_s: after.as_secs(),
                    },
                    depth,
                );
            }
            ActionRt::Snooze(d) => self.snooze(*d, actor, depth),
            ActionRt::Stop => return Ok(Flow::Stop),
        }
        Ok(Flow::Continue)
    }

    pub(super) async fn ticket(
        &mut self,
        title: Option<String>,
        category: Option<String>,
        priority: Option<Priority>,
        queue: Option<String>,
        actor: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        match self.ticket.clone() {
            Some(mut t) => {
                let before = ticket_json(&t);
                if let Some(p) = priority {
                    t.priority = t.priority.max(p);
                }
                if category.is_some() && t.category.is_none() {
                    t.category = category;
                }
                if let Some(q) = queue {
                    t.queue = Some(q);
                }
                t.updated_at = self.now;
                let after = ticket_json(&t);
                self.emit(
                    actor,
                    DomainEvent::TicketUpdated {
                        ticket: t.id,
                        before: before.clone(),
                        after: after.clone(),
                    },
                    depth,
                );
                self.cs.tickets.push(TicketChange { ticket: t.clone(), created: false, actor: actor.into(), change: json!({ "updated": { "before": before, "after": after }, "why": "the open ticket of this conversation was raised again" }) });
                self.ticket = Some(t);
            }
            None => {
                let id = self.eng.store.allocate_id("ticket").await?;
                let t = Ticket {
                    id,
                    conversation_id: self.conv.id,
                    title: title
                        .filter(|s| !s.trim().is_empty())
                        .unwrap_or_else(|| "Ticket".into()),
                    category,
                    priority: priority.unwrap_or(Priority::Normal),
                    status: TicketStatus::Open,
                    owner: self.conv.assignee.clone(),
                    queue: queue.or_else(|| self.conv.queue.clone()),
                    // The conversation's resolution SLA, when one runs.
                    due_at: self.resolution_due(),
                    created_at: self.now,
                    updated_at: self.now,
                };
                let after = ticket_json(&t);
                self.emit(
                    actor,
                    DomainEvent::TicketCreated {
                        ticket: t.clone(),
                        fields: after.clone(),
                    },
                    depth,
                );
                self.cs.tickets.push(TicketChange {
                    ticket: t.clone(),
                    created: true,
                    actor: actor.into(),
                    change: json!({ "created": after }),
                });
                self.ticket = Some(t);
            }
        }
        self.refresh_vars();
        Ok(())
    }
}
