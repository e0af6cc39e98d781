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
        // A conversation someone closed, opened again by the customer: if the bot does not
        // answer, the customer is told a person will (as on a first hand-off).
        let reopened = self.conv.status == Status::Resolved;
        if matches!(self.conv.status, Status::Resolved | Status::Waiting) {
            self.cs.cancel_jobs.push((JobKind::Snooze, "snooze".into()));
            self.set_status(Status::Open, "customer", 0);
        }
        if reopened {
            self.reopened().await?;
        }
        self.sla_on_customer_message();

        // The customer's language: the latest message's, unless a person or a rule set it. A
        // tapped button says nothing about it (its title is the bot's words).
        let language = if choice.is_some() {
            None
        } else {
            switchyard_rules::lang::detect(text)
        };
        if let Some(l) = language {
            if self.contact.language_set_by.is_none() && self.contact.language.as_deref() != Some(l)
            {
                self.contact.language = Some(l.to_string());
                self.contact_changed = true;
            }
        }

        // An answer to the bot's clarifying question: the message it asked about runs again,
        // with the intent the customer picked. Anything else is read as it is — a clear new
        // request is handled; an unclear one goes to a person.
        let mut picked = None;
        let asked_about;
        let mut text = text;
        // A reaction (👍 on an earlier message) answers no question and takes no choice.
        let reaction = kind == "reaction";
        let asking = self.conv.asking.take();
        // Only while no flow runs and no person has the conversation (a flow started since,
        // or a hand-off, cleared it already), and only a `clarify:` button among taps.
        let asking = asking.filter(|_| {
            self.conv.flow.is_none()
                && self.conv.assignee.is_none()
                && !reaction
                && choice.is_none_or(|c| c.starts_with("clarify:"))
        });
        if let Some(asking) = asking {
            match self.picked(&asking, text, choice) {
                clarify::Picked::Intent(i) => {
                    self.trace.push(Step::Clarified {
                        intent: Some(i.clone()),
                    });
                    picked = Some(i);
                    asked_about = asking.text;
                    text = asked_about.as_str();
                }
                clarify::Picked::Unclear => {
                    let (c, _) = self.pack.classify(text);
                    let clear = c.intent != UNKNOWN && c.clarify.is_none();
                    if choice.is_some() || !clear {
                        return self.clarify_unclear(&asking, text).await;
                    }
                }
            }
        }
        let choice = if picked.is_some() { None } else { choice };

        // Classify; below the threshold, the pack's language-model fallback (if it has one).
        let (mut cls, entities) = self.pack.classify(text);
        let mut source = None;
        if let Some(i) = picked {
            cls.intent = i;
            cls.confidence = 1.0;
            cls.clarify = None;
            source = Some("clarified");
        }
        if cls.intent == UNKNOWN
            && cls.confidence < self.pack.settings.intent_threshold
            && self.pack.settings.fallback.is_some()
        {
            match self.eng.lookup().understand(text).await {
                Ok(Some(u)) if self.pack.classifier.intent_names().any(|n| n == u.intent) => {
                    source = Some(if u.cached {
                        "fallback_cache"
                    } else {
                        "fallback"
                    });
                    cls.intent = u.intent;
                    cls.confidence = u.confidence;
                    cls.clarify = None;
                }
                Ok(_) => {}
                Err(e) => self.trace.push(Step::Lookup {
                    connector: "classifier.fallback".into(),
                    action: "understand".into(),
                    key: String::new(),
                    found: 0,
                    failed: Some(e.to_string()),
                }),
            }
        }
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
            language: language.map(String::from),
            source: source.map(String::from),
        });
        self.vars.set_json(
            "message",
            &json!({
                "text": text,
                "kind": kind,
                "choice": choice,
                "language": language,
                "closing": choice.is_none() && !reaction && switchyard_rules::reply::is_closing(text),
                "question": choice.is_none() && !reaction && switchyard_rules::reply::is_question(text),
            }),
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
        let mut resume: Option<(FlowState, StepRt)> = None;
        if let Some(fs) = self.conv.flow.clone() {
            let step = self
                .pack
                .flows
                .get(&fs.flow)
                .and_then(|f| f.steps.get(&fs.step))
                .cloned();
            // A reaction is no answer: never a yes, a typed title or a captured text.
            let said = if reaction { "" } else { text };
            let mut answer = step
                .as_ref()
                .and_then(|st| self.answer_of(st, said, choice, &cls.intent, &entities));
            // Not the current step's: a button of a step asked before (the customer changed
            // their mind — "no", then a tap on Confirm) is that step's answer, never text.
            // Before a free-text capture takes it as text.
            let mut earlier = None;
            if !matches!(answer, Some(Answer::On(..))) {
                earlier = self.earlier_answer(&fs, said, choice);
                if earlier.is_some() {
                    answer = earlier.as_ref().map(|(_, a)| a.clone());
                }
            }
            // A tapped button of the current step is an answer, whatever its text classifies
            // as; so is one of its `on` answers typed (a button's title). A free-text capture
            // does not keep a customer who asks for a person.
            let answered =
                (choice.is_some() && answer.is_some()) || matches!(answer, Some(Answer::On(..)));
            let settings = &self.pack.settings;
            let question = answer.is_none()
                && choice.is_none()
                && !reaction
                && cls.intent != UNKNOWN
                && switchyard_rules::reply::is_question(text);
            if let Some((step, a)) = earlier {
                self.cs
                    .cancel_jobs
                    .push((JobKind::FlowTimeout, format!("{}/{}", fs.flow, fs.step)));
                if let Answer::On(_, how, _) = &a {
                    self.trace.push(Step::EarlierAnswer {
                        flow: fs.flow.clone(),
                        step: step.clone(),
                        answer: how.clone(),
                    });
                }
                let at = FlowState { step, ..fs.clone() };
                self.step_flow(&at, text, Some(a)).await?;
                handled = true;
            } else if !answered && settings.escape_intents.contains(&cls.intent) {
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
            } else if answer.is_none()
                && settings.interrupt.contains(&cls.intent)
                && cls.confidence >= settings.interrupt_min_confidence
            {
                // A strong intent the step does not answer (a complaint typed at an order-number
                // prompt): not a failed retry — the rules handle it.
                let resumed = settings.interrupt_then == InterruptThen::Resume;
                self.trace.push(Step::Interrupted {
                    flow: fs.flow.clone(),
                    step: fs.step.clone(),
                    intent: cls.intent.clone(),
                    resumed,
                });
                if resumed {
                    resume = step.map(|st| (fs.clone(), st));
                } else {
                    self.end_flow(
                        false,
                        &format!("interrupted by `{}`", cls.intent),
                        "customer",
                        1,
                    );
                }
            } else if question {
                // A question of the customer's own at a waiting step is never its answer: the
                // rules answer it and the step asks again; one nothing answers counts as a
                // reply not understood.
                let answered = self.run_rules("message.received", &cls.intent, 0).await?;
                self.trace.push(Step::Question {
                    flow: fs.flow.clone(),
                    step: fs.step.clone(),
                    intent: cls.intent.clone(),
                    answered,
                });
                let same = self
                    .conv
                    .flow
                    .as_ref()
                    .is_some_and(|f| f.flow == fs.flow && f.step == fs.step);
                if !answered {
                    self.step_flow(&fs, text, None).await?;
                } else if same && !self.handed {
                    if let Some(st) = &step {
                        self.send_again(st, &format!("flow:{}", fs.flow)).await?;
                    }
                }
                handled = true;
            } else {
                self.step_flow(&fs, text, answer).await?;
                handled = true;
            }
        }
        // Unsure between two intents, no flow took the message and no person has it: ask, do
        // not guess.
        if !handled
            && !reaction
            && self.conv.flow.is_none()
            && self.conv.assignee.is_none()
            && self.conv.queue.is_none()
        {
            if let Some(candidates) = cls.clarify.clone() {
                self.ask_clarify(text, candidates, &cls.scores).await?;
                handled = self.conv.asking.is_some();
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
        } else if !handled && reopened {
            // Still in its queue (and with its owner, if it had one): back to them, and
            // acknowledged.
            if let Some(q) = self.conv.queue.clone() {
                self.trace.push(Step::Unhandled { queue: q });
                self.handed = true;
            }
        }
        // The flow the message interrupted goes on where it was (`interrupt: resume`), unless
        // the rules ended it, started another or handed the conversation to a person.
        if let Some((fs, st)) = resume {
            let same = self
                .conv
                .flow
                .as_ref()
                .is_some_and(|f| f.flow == fs.flow && f.step == fs.step);
            if same && !self.handed {
                self.ask_again(&st, &format!("flow:{}", fs.flow)).await?;
            }
        }
        Ok(())
    }

    /// After a run: a conversation the bot handed to a person is acknowledged to the customer
    /// with the pack's `settings.handoff` template for the reason — when the bot said nothing
    /// itself, or always for a reason the customer must hear (nothing found, store down,
    /// retries exhausted). Outside the `handoff.calendar`'s hours, `closed` instead, with
    /// `handoff.opens_at` / `handoff.opens_on` in its scope. Only a customer message's run
    /// acknowledges a hand-off without a known reason.
    pub(super) async fn acknowledge(&mut self, message_run: bool) -> Result<(), EngineError> {
        if !self.handed {
            return Ok(());
        }
        let reason = match self.handoff_reason {
            Some(r) => r,
            None if message_run && !self.said => {
                let intent = self.intent_trace.as_ref().map(|i| i.intent.as_str());
                if intent.is_some_and(|i| self.pack.settings.escape_intents.iter().any(|e| e == i))
                {
                    HandoffReason::Asked
                } else {
                    HandoffReason::Unhandled
                }
            }
            None => return Ok(()),
        };
        let h = &self.pack.settings.handoff;
        let now = time(self.now);
        let closed = h
            .calendar
            .as_ref()
            .and_then(|c| self.pack.calendars.get(c))
            .and_then(|cal| cal.next_opening(now));
        let (template, is_closed) = match (&closed, &h.closed) {
            (Some(_), Some(t)) => (Some(t.clone()), true),
            _ => (h.template(reason).map(String::from), false),
        };
        let Some(template) = template else {
            return Ok(());
        };
        self.vars.set_json(
            "handoff",
            &json!({
                "reason": reason.as_str(),
                "opens_at": closed.map(|t| t.format("%H:%M").to_string()),
                "opens_on": closed.map(|t| t.format("%A").to_string()),
            }),
        );
        self.trace.push(Step::Acknowledged {
            reason: reason.as_str().to_string(),
            template: template.clone(),
            closed: is_closed,
        });
        // Once: a send blocked by the window hands off again, which is not acknowledged twice.
        self.handoff_reason = None;
        self.handed = false;
        self.send(&MessageRt::Template(template), "system", 0).await
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
