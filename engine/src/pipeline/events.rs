//! What starts a run: a customer message, an order event, a delivery status, a job; then
//! the events the actions caused, and the rules for each.

use super::*;

impl<'a> Run<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn on_message(
        &mut self,
        kind: &str,
        text: &str,
        choice: Option<&str>,
        payload: &Value,
        provider_id: &str,
        name: Option<&str>,
        phone: Option<&str>,
    ) -> Result<(), EngineError> {
        // The customer's own details fill gaps, never overwrite what an agent set.
        if self.contact.name.is_none() && name.is_some() {
            self.contact.name = name.map(String::from);
            self.contact_changed = true;
        }
        if self.contact.phone.is_none() && phone.is_some() {
            self.contact.phone = phone.map(String::from);
            self.contact_changed = true;
        }
        self.cs.messages.push(NewMessage {
            direction: Direction::In,
            kind: kind.to_string(),
            body: text.to_string(),
            payload: if choice.is_some() {
                json!({ "choice": choice, "raw": payload })
            } else {
                payload.clone()
            },
            provider_id: Some(provider_id.to_string()),
            author: "customer".into(),
            status: "received".into(),
            outbound: None,
        });
        self.conv.last_customer_message_at = Some(self.now);
        if matches!(self.conv.status, Status::Resolved | Status::Waiting) {
            self.cs.cancel_jobs.push((JobKind::Snooze, "snooze".into()));
            self.set_status(Status::Open, "customer", 0);
        }
        self.sla_on_customer_message();

        // Classify.
        let (cls, entities) = self.pack.classify(text);
        let milli = |x: f32| (x as f64 * 1000.0).round() / 1000.0;
        self.intent_trace = Some(IntentTrace {
            intent: cls.intent.clone(),
            confidence: milli(cls.confidence),
            scores: cls
                .scores
                .iter()
                .take(3)
                .map(|(n, s)| (n.clone(), milli(*s)))
                .collect(),
            threshold: milli(self.pack.settings.intent_threshold),
        });
        self.vars.set_json(
            "message",
            &json!({ "text": text, "kind": kind, "choice": choice }),
        );
        self.vars.set("intent", Dynamic::from(cls.intent.clone()));
        self.vars
            .set("confidence", Dynamic::from(cls.confidence as f64));
        self.vars
            .set_json("entities", &Value::Object(entities.clone()));
        self.vars
            .set_json("event", &json!({ "name": "message.received" }));
        self.refresh_vars();

        // The active flow first.
        let mut handled = false;
        if let Some(fs) = self.conv.flow.clone() {
            // A tapped button of the current step is an answer, whatever its text classifies as.
            let tapped = choice.is_some_and(|c| {
                self.pack
                    .flows
                    .get(&fs.flow)
                    .and_then(|f| f.steps.get(&fs.step))
                    .is_some_and(|st| {
                        st.on
                            .iter()
                            .any(|(m, _)| matches!(m, Matcher::Choice(id) if id == c))
                            || (st.capture.is_some()
                                && matches!(
                                    &st.send,
                                    Some(MessageRt::List {
                                        rows_from: Some(_),
                                        ..
                                    })
                                ))
                    })
            });
            if !tapped && self.pack.settings.escape_intents.contains(&cls.intent) {
                self.trace.push(Step::Escaped {
                    flow: fs.flow.clone(),
                    step: fs.step.clone(),
                    intent: cls.intent.clone(),
                });
                self.end_flow(
                    false,
                    &format!("the customer asked for `{}`", cls.intent),
                    "customer",
                    1,
                );
            } else {
                self.step_flow(&fs, text, choice, &cls.intent, &entities)
                    .await?;
                handled = true;
            }
        }
        if !handled {
            handled = self.run_rules("message.received", &cls.intent, 0).await?;
        }
        if !handled && self.conv.assignee.is_none() && self.conv.queue.is_none() {
            let q = self.eng.default_queue(&self.conv.channel, self.pack);
            self.trace.push(Step::Unhandled {
                queue: q.to_string(),
            });
            self.route(&q, "system", 0).await?;
        }
        Ok(())
    }

    pub(super) async fn on_event(
        &mut self,
        event: &str,
        order: Option<Value>,
    ) -> Result<(), EngineError> {
        if let Some(o) = order {
            // For the rules, and for a flow they start (a running flow keeps its own order).
            self.vars.set_json("order", &o);
            self.pending_bound.insert("order".into(), o);
        }
        self.vars.set_json("event", &json!({ "name": event }));
        self.refresh_vars();
        self.run_rules(event, UNKNOWN, 0).await?;
        Ok(())
    }

    /// A delivery status that moved one of our messages forward: the `message.status` rules
    /// see `event.status`, `event.error` and `event.message` (the provider's id).
    pub(super) async fn on_status(
        &mut self,
        message: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), EngineError> {
        self.vars.set_json(
            "event",
            &json!({ "name": "message.status", "message": message, "status": status, "error": error }),
        );
        self.trace.push(Step::Delivery {
            status: status.to_string(),
            message: message.to_string(),
        });
        self.refresh_vars();
        self.run_rules("message.status", UNKNOWN, 0).await?;
        Ok(())
    }

    pub(super) async fn on_job(&mut self, job: &Job) -> Result<(), EngineError> {
        self.refresh_vars();
        match &job.kind {
            JobKind::FlowTimeout => {
                let Some(fs) = self.conv.flow.clone() else {
                    self.trace.push(Step::StaleTimeout {
                        name: job.name.clone(),
                        why: "no flow running".into(),
                    });
                    return Ok(());
                };
                if format!("{}/{}", fs.flow, fs.step) != job.name {
                    self.trace.push(Step::StaleTimeout {
                        name: job.name.clone(),
                        why: "the flow moved on".into(),
                    });
                    return Ok(());
                }
                let Some(step) = self
                    .pack
                    .flows
                    .get(&fs.flow)
                    .and_then(|f| f.steps.get(&fs.step))
                else {
                    self.lost_step(&fs).await?;
                    return Ok(());
                };
                let Some((_, next)) = step.timeout.clone() else {
                    return Ok(());
                };
                self.trace.push(Step::StepTimedOut {
                    flow: fs.flow.clone(),
                    step: fs.step.clone(),
                });
                let actor = format!("flow:{}", fs.flow);
                self.follow(&fs.flow, &next, &actor).await?;
            }
            JobKind::Timer => {
                let ev = format!("timer.{}", job.name);
                self.vars.set_json("event", &json!({ "name": ev }));
                self.run_rules(&ev, UNKNOWN, 0).await?;
            }
            JobKind::Sla | JobKind::SlaWarning => self.on_sla_job(job).await?,
            JobKind::Snooze => {
                self.trace.push(Step::SnoozeEnded);
                self.set_status(Status::Open, "system", 0);
            }
            JobKind::Other(other) => {
                self.trace.push(Step::JobIgnored {
                    job: other.clone(),
                    why: "unknown kind".into(),
                });
            }
        }
        Ok(())
    }

    /// Runs the events caused by actions through the rules, with the loop guard.
    pub(super) async fn drain_caused(&mut self) -> Result<(), EngineError> {
        while let Some((event, payload, depth)) = self.caused.pop_front() {
            self.caused_total += 1;
            if depth > MAX_EVENT_DEPTH || self.caused_total > MAX_CAUSED_EVENTS {
                let dropped = self.caused.len() + 1;
                self.caused.clear();
                self.trace.push(Step::LoopGuard {
                    event: event.to_string(),
                    depth,
                    dropped,
                });
                self.emit(
                    "system",
                    DomainEvent::LoopGuard {
                        event: event.clone(),
                        depth,
                        dropped,
                    },
                    depth,
                );
                break;
            }
            let mut ev = payload.as_object().cloned().unwrap_or_default();
            ev.insert("name".into(), json!(event));
            self.vars.set_json("event", &Value::Object(ev));
            self.refresh_vars();
            self.run_rules(&event, UNKNOWN, depth).await?;
        }
        Ok(())
    }

    /// Rules for `event` in file order until `stop`. Returns whether any matched.
    pub(super) async fn run_rules(
        &mut self,
        event: &str,
        intent: &str,
        depth: u32,
    ) -> Result<bool, EngineError> {
        self.refresh_vars();
        let mut scope = self.vars.scope();
        let ev = self.pack.evaluate(event, intent, &mut scope, self.clock);
        drop(scope);
        let mut matched = false;
        for (idx, outcome) in &ev.outcomes {
            let rule = &self.pack.rules[*idx];
            let actor = format!("rule:{}", rule.name);
            match outcome {
                RuleOutcome::Matched => {
                    self.trace.push(Step::Rule {
                        event: event.to_string(),
                        rule: rule.name.clone(),
                        matched: true,
                        failed: None,
                    });
                    matched = true;
                }
                RuleOutcome::NotMatched => {
                    self.trace.push(Step::Rule {
                        event: event.to_string(),
                        rule: rule.name.clone(),
                        matched: false,
                        failed: None,
                    });
                    continue;
                }
                RuleOutcome::Failed(e) => {
                    self.trace.push(Step::Rule {
                        event: event.to_string(),
                        rule: rule.name.clone(),
                        matched: false,
                        failed: Some(e.to_string()),
                    });
                    self.emit(
                        &actor,
                        DomainEvent::ScriptFailed {
                            detail: json!({ "error": e.to_string() }),
                        },
                        0,
                    );
                    continue;
                }
            }
            // Conditions were evaluated on the state before any action: rules see one event.
            let actions = rule.actions.clone();
            if self.exec(&actions, &actor, depth).await? == Flow::Stop {
                break;
            }
        }
        Ok(matched)
    }

    // ---- flows -------------------------------------------------------------------------
}
