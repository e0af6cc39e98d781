//! Bot flows: start, enter a step (its message, lookups, `branch`), take a customer's
//! answer, follow `goto`, end.

use super::*;

impl<'a> Run<'a> {
    pub(super) async fn start_flow(
        &mut self,
        name: &str,
        actor: &str,
        depth: u32,
    ) -> Result<Flow, EngineError> {
        if self.conv.flow.is_some() {
            self.end_flow(
                false,
                &format!("replaced by flow `{name}`"),
                actor,
                depth + 1,
            );
        }
        let Some(f) = self.pack.flows.get(name) else {
            return Ok(Flow::Continue);
        };
        let start = f.start.clone();
        let bound = std::mem::take(&mut self.pending_bound);
        self.conv.flow = Some(FlowState {
            flow: name.to_string(),
            step: start.clone(),
            retries: 0,
            bound,
        });
        self.emit(
            actor,
            DomainEvent::FlowStarted {
                flow: name.to_string(),
            },
            depth,
        );
        self.trace.push(Step::FlowStarted {
            flow: name.to_string(),
            by: actor.to_string(),
        });
        self.enter_step(name, &start).await?;
        Ok(Flow::Continue)
    }

    pub(super) fn end_flow(&mut self, completed: bool, why: &str, actor: &str, depth: u32) {
        let Some(fs) = self.conv.flow.take() else {
            return;
        };
        self.cs
            .cancel_jobs
            .push((JobKind::FlowTimeout, format!("{}/{}", fs.flow, fs.step)));

        self.trace.push(Step::FlowEnded {
            flow: fs.flow.clone(),
            completed,
            why: why.to_string(),
        });
        self.emit(
            actor,
            DomainEvent::FlowEnded {
                flow: fs.flow,
                step: fs.step,
                completed,
                why: why.to_string(),
            },
            depth,
        );
    }

    pub(super) async fn enter_step(&mut self, flow: &str, step: &str) -> Result<(), EngineError> {
        self.steps_followed += 1;
        let actor = format!("flow:{flow}");
        if self.steps_followed > MAX_STEPS_PER_EVENT {
            self.handoff(None, None, Some(format!("Flow `{flow}` went through more than {MAX_STEPS_PER_EVENT} steps at once; stopped at `{step}`")), &actor, 1).await?;
            return Ok(());
        }
        let Some(st) = self
            .pack
            .flows
            .get(flow)
            .and_then(|f| f.steps.get(step))
            .cloned()
        else {
            let fs = FlowState {
                flow: flow.into(),
                step: step.into(),
                retries: 0,
                bound: Map::new(),
            };
            return self.lost_step(&fs).await;
        };
        if let Some(fs) = self.conv.flow.as_mut() {
            if fs.step != step {
                self.cs
                    .cancel_jobs
                    .push((JobKind::FlowTimeout, format!("{}/{}", fs.flow, fs.step)));
            }
            fs.step = step.to_string();
            fs.retries = 0;
        }
        self.trace.push(Step::StepEntered {
            flow: flow.to_string(),
            step: step.to_string(),
        });
        if self.exec(&st.actions, &actor, 0).await? != Flow::Continue || !self.in_flow(flow) {
            return Ok(());
        }
        if let Some(m) = &st.send {
            self.send(m, &actor, 0).await?;
            if !self.in_flow(flow) {
                return Ok(());
            }
        }
        if let Some(h) = &st.handoff {
            self.exec(std::slice::from_ref(h), &actor, 0).await?;
            self.end_flow(true, "handed off", &actor, 0);
            return Ok(());
        }
        if st.waits() {
            if let Some((after, _)) = &st.timeout {
                self.cs.new_jobs.push(NewJob {
                    kind: JobKind::FlowTimeout,
                    name: format!("{flow}/{step}"),
                    due_at: self.now + after.as_millis() as i64,
                });
            }
            return Ok(());
        }
        if let Some((i, next)) = self.decide_branch(&st.branch, flow, step, &actor) {
            self.trace.push(Step::Branch {
                flow: flow.to_string(),
                step: step.to_string(),
                arm: i,
                failed: None,
            });
            return Box::pin(self.follow(flow, &next, &actor)).await;
        }
        if st.next.end {
            self.end_flow(true, "completed", &actor, 0);
        } else if let Some(g) = &st.next.goto {
            Box::pin(self.enter_step(flow, g)).await?;
        }
        Ok(())
    }

    /// The first entry of a step's `branch` whose condition holds (a condition that fails to
    /// run is audited and counts as false), with its index.
    pub(super) fn decide_branch(
        &mut self,
        branch: &[(Option<rhai::AST>, Next)],
        flow: &str,
        step: &str,
        actor: &str,
    ) -> Option<(usize, Next)> {
        if branch.is_empty() {
            return None;
        }
        self.refresh_vars();
        let mut scope = self.vars.scope();
        for (i, (cond, next)) in branch.iter().enumerate() {
            let holds = match cond {
                None => Ok(true),
                Some(ast) => self.pack.sandbox.eval_bool(ast, &mut scope, self.clock),
            };
            match holds {
                Ok(true) => return Some((i, next.clone())),
                Ok(false) => {}
                Err(e) => {
                    self.emit(actor, DomainEvent::ScriptFailed { detail: json!({ "flow": flow, "step": step, "branch": i, "error": e.to_string() }) }, 0);
                    self.trace.push(Step::Branch {
                        flow: flow.to_string(),
                        step: step.to_string(),
                        arm: i,
                        failed: Some(e.to_string()),
                    });
                }
            }
        }
        None
    }

    pub(super) fn in_flow(&self, flow: &str) -> bool {
        self.conv.flow.as_ref().is_some_and(|f| f.flow == flow)
    }

    /// A branch: its actions, then `goto` or `end`.
    pub(super) async fn follow(
        &mut self,
        flow: &str,
        next: &Next,
        actor: &str,
    ) -> Result<(), EngineError> {
        if self.exec(&next.actions, actor, 0).await? != Flow::Continue || !self.in_flow(flow) {
            return Ok(());
        }
        if next.end {
            self.end_flow(true, "completed", actor, 0);
        } else if let Some(g) = &next.goto {
            Box::pin(self.enter_step(flow, g)).await?;
        }
        Ok(())
    }

    pub(super) async fn step_flow(
        &mut self,
        fs: &FlowState,
        text: &str,
        choice: Option<&str>,
        intent: &str,
        entities: &Map<String, Value>,
    ) -> Result<(), EngineError> {
        let Some(st) = self
            .pack
            .flows
            .get(&fs.flow)
            .and_then(|f| f.steps.get(&fs.step))
            .cloned()
        else {
            return self.lost_step(fs).await;
        };
        let actor = format!("flow:{}", fs.flow);
        let typed = text.trim().to_lowercase();
        let hit = st.on.iter().find(|(m, _)| match m {
            Matcher::Choice(id) => choice == Some(id.as_str()) || typed == id.to_lowercase(),
            Matcher::Intent(i) => i == intent,
            Matcher::Regex(r) => r.is_match(text),
        });
        if let Some((m, next)) = hit {
            let how = match m {
                Matcher::Choice(id) => format!("choice {id}"),
                Matcher::Intent(i) => format!("intent {i}"),
                Matcher::Regex(r) => format!("pattern {r}"),
            };
            self.trace.push(Step::Answered {
                flow: fs.flow.clone(),
                step: fs.step.clone(),
                answer: how.to_string(),
            });
            self.cs
                .cancel_jobs
                .push((JobKind::FlowTimeout, format!("{}/{}", fs.flow, fs.step)));
            let next = next.clone();
            return self.follow(&fs.flow, &next, &actor).await;
        }
        if let Some((into, entity)) = &st.capture {
            // A row tapped in a list built from data is captured by its id (the rows are
            // ours, so no entity check).
            let rows_from = matches!(
                &st.send,
                Some(MessageRt::List {
                    rows_from: Some(_),
                    ..
                })
            );
            let value = match (choice.filter(|_| rows_from), entity) {
                (Some(c), _) => Some(json!(c)),
                (None, Some(e)) => entities.get(e).cloned(),
                (None, None) if !text.trim().is_empty() => Some(json!(text.trim())),
                (None, None) => None,
            };
            if let Some(v) = value {
                let before = self
                    .conv
                    .attributes
                    .get(into)
                    .cloned()
                    .unwrap_or(Value::Null);
                self.emit(
                    &actor,
                    DomainEvent::AttributeSet {
                        key: into.clone(),
                        before,
                        after: v.clone(),
                    },
                    0,
                );
                self.conv.attributes.insert(into.clone(), v);
                self.trace.push(Step::Captured {
                    flow: fs.flow.clone(),
                    step: fs.step.clone(),
                    into: into.to_string(),
                });
                self.cs
                    .cancel_jobs
                    .push((JobKind::FlowTimeout, format!("{}/{}", fs.flow, fs.step)));
                self.refresh_vars();
                let next = st.next.clone();
                return self.follow(&fs.flow, &next, &actor).await;
            }
        }
        // Not understood: ask again, or hand off after the retries.
        let retries = fs.retries + 1;
        if retries > st.retries {
            self.trace.push(Step::Unrecognised {
                flow: fs.flow.clone(),
                step: fs.step.clone(),
                tries: retries,
                handed_off: true,
            });
            let note = format!(
                "Flow `{}` stopped at step `{}` after {} unrecognised replies; the last was: \"{}\"",
                fs.flow, fs.step, retries, text
            );
            self.end_flow(false, "unrecognised replies", &actor, 0);
            self.handoff(None, None, Some(note), &actor, 0).await?;
            return Ok(());
        }
        if let Some(f) = self.conv.flow.as_mut() {
            f.retries = retries;
        }
        self.trace.push(Step::Unrecognised {
            flow: fs.flow.clone(),
            step: fs.step.clone(),
            tries: retries,
            handed_off: false,
        });
        if let Some(m) = &st.send {
            self.send(m, &actor, 0).await?;
        }
        Ok(())
    }

    /// The step the conversation is in no longer exists (the pack changed): a human takes over.
    pub(super) async fn lost_step(&mut self, fs: &FlowState) -> Result<(), EngineError> {
        let note = format!(
            "Flow `{}` step `{}` no longer exists in the rule pack; please take over",
            fs.flow, fs.step
        );
        self.trace.push(Step::StepMissing {
            flow: fs.flow.clone(),
            step: fs.step.clone(),
        });
        self.end_flow(false, "step missing after a reload", "system", 0);
        self.handoff(None, None, Some(note), "system", 0).await
    }

    // ---- actions -----------------------------------------------------------------------
}
