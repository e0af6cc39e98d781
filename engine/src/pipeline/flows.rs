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
        // A question the bot asked outside a flow is no longer the one waiting.
        self.conv.asking = None;
        self.conv.flow = Some(FlowState {
            flow: name.to_string(),
            step: start.clone(),
            retries: 0,
            bound,
            asked: vec![],
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
                asked: vec![],
            };
            return self.lost_step(&fs).await;
        };
        if let Some(fs) = self.conv.flow.as_mut() {
            if fs.step != step {
                self.cs
                    .cancel_jobs
                    .push((JobKind::FlowTimeout, format!("{}/{}", fs.flow, fs.step)));
                // The step left behind asked the customer: its buttons stay understood.
                let left = self
                    .pack
                    .flows
                    .get(&fs.flow)
                    .and_then(|f| f.steps.get(&fs.step));
                if left.is_some_and(has_choices) {
                    let prev = std::mem::take(&mut fs.step);
                    fs.asked.retain(|s| *s != prev && *s != step);
                    fs.asked.push(prev);
                    if fs.asked.len() > MAX_ASKED {
                        fs.asked.remove(0);
                    }
                }
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

    /// What the waiting step makes of a customer message: one of its `on` answers (a tapped
    /// or typed choice — its id or its title, read as the classifier reads — an intent, a
    /// pattern), or a value for its `capture` (an entity, bare forms included, or the text).
    pub(super) fn answer_of(
        &self,
        st: &StepRt,
        text: &str,
        choice: Option<&str>,
        intent: &str,
        entities: &Map<String, Value>,
    ) -> Option<Answer> {
        let typed = text.trim().to_lowercase();
        // A typed title or id: read as the classifier reads, so "Replacement", "replacement!"
        // and a Roman Urdu spelling the lexicon knows all match. A few words around it are
        // fine ("Confirm please"); a sentence that merely mentions it is not an answer.
        let canon = if choice.is_none() && !typed.is_empty() {
            self.pack.canon(text)
        } else {
            String::new()
        };
        let words: Vec<&str> = canon.split(' ').filter(|w| !w.is_empty()).collect();
        let names = |label: &str| -> bool {
            let l = self.pack.canon(label);
            let lw: Vec<&str> = l.split(' ').filter(|w| !w.is_empty()).collect();
            !lw.is_empty()
                && (l == canon
                    || (words.len() <= lw.len() + 2
                        && words.windows(lw.len()).any(|w| w == lw.as_slice())))
        };
        let titles = st.titles();
        let title_of = |id: &str| titles.iter().find(|(i, _)| *i == id).map(|(_, t)| *t);
        // A question of the customer's own ("if I confirm, when will it come?") is never a
        // decision: only a tap answers for it.
        let question = choice.is_none() && switchyard_rules::reply::is_question(text);
        let negated = choice.is_none() && switchyard_rules::reply::negated(text);
        // A plain yes or no ("haan ji", "nahi", "👍") to a step whose choices say yes and
        // no: the one it stands for, before what the classifier guessed. It is the
        // customer's choice when the title itself starts with that yes or no ("Yes, cancel
        // it"), not when a bare "no" is read as "Cancel".
        if choice.is_none() && !question {
            if let Some(yes) = switchyard_rules::reply::polarity(text) {
                if let Some((i, id, chose)) = polar_choice(st, yes) {
                    let said = if yes { "yes" } else { "no" };
                    return Some(Answer::On(i, format!("choice {id} (said {said})"), chose));
                }
            }
            // Only a choice's own words ("haan, cancel kar dein" to "Yes, cancel it").
            let said: Vec<&str> = words
                .iter()
                .copied()
                .filter(|w| !switchyard_rules::reply::is_filler(w))
                .collect();
            if !said.is_empty() {
                let mut hits = st.on.iter().enumerate().filter_map(|(i, (m, _))| match m {
                    Matcher::Choice(id) => {
                        let t = self.pack.canon(title_of(id).unwrap_or(id));
                        let tw: Vec<&str> = t.split(' ').collect();
                        (tw.len() > 1 && said.iter().all(|w| tw.contains(w))).then_some((i, id))
                    }
                    _ => None,
                });
                if let (Some((i, id)), None) = (hits.next(), hits.next()) {
                    return Some(Answer::On(i, format!("choice {id} (its words)"), true));
                }
            }
        }
        for (i, (m, _)) in st.on.iter().enumerate() {
            let hit = match m {
                Matcher::Choice(id) => {
                    // "don't cancel order" does not choose "Cancel order".
                    let said = title_of(id).unwrap_or(id);
                    let against = negated && !switchyard_rules::reply::negated(said);
                    choice == Some(id.as_str())
                        || (!question
                            && !against
                            && (typed == id.to_lowercase()
                                || (!canon.is_empty()
                                    && (names(id) || title_of(id).is_some_and(names)))))
                }
                Matcher::Intent(x) => !question && x == intent,
                Matcher::Regex(r) => r.is_match(text),
            };
            if hit {
                let how = match m {
                    Matcher::Choice(id) if choice == Some(id.as_str()) => format!("choice {id}"),
                    Matcher::Choice(id) => format!("choice {id} (typed)"),
                    Matcher::Intent(x) => format!("intent {x}"),
                    Matcher::Regex(r) => format!("pattern {r}"),
                };
                let chose = matches!(m, Matcher::Choice(_));
                return Some(Answer::On(i, how, chose));
            }
        }
        // A sentence that opens with yes or no ("yes cancel it, I didn't order this"), when
        // nothing above took it: the choice a plain yes or no would be.
        if choice.is_none() && !question {
            if let Some(yes) = switchyard_rules::reply::leading_polarity(text) {
                let said = |id: &str| title_of(id).unwrap_or(id).to_string();
                let polar = polar_choice(st, yes).filter(|(_, id, _)| {
                    let others: Vec<String> = st
                        .on
                        .iter()
                        .filter_map(|(m, _)| match m {
                            Matcher::Choice(o) if o != id => Some(said(o)),
                            _ => None,
                        })
                        .collect();
                    let others: Vec<&str> = others.iter().map(String::as_str).collect();
                    !switchyard_rules::reply::contradicts(text, &said(id), &others)
                });
                if let Some((i, id, chose)) = polar {
                    let said = if yes { "yes" } else { "no" };
                    return Some(Answer::On(
                        i,
                        format!("choice {id} (opens with {said})"),
                        chose,
                    ));
                }
            }
        }
        let (_, entity) = st.capture.as_ref()?;
        // A row tapped in a list built from data is captured by its id (the rows are ours,
        // so no entity check).
        let rows_from = matches!(
            &st.send,
            Some(MessageRt::List {
                rows_from: Some(_),
                ..
            })
        );
        let value = match (choice.filter(|_| rows_from), entity) {
            (Some(c), _) => Some(json!(c)),
            // Waiting for an entity, its bare form counts: "10251" is an order number here.
            (None, Some(e)) => entities
                .get(e)
                .cloned()
                .or_else(|| self.pack.extract_bare(e, text)),
            (None, None) if !text.trim().is_empty() => Some(json!(text.trim())),
            (None, None) => None,
        };
        value.map(Answer::Capture)
    }

    /// Takes the step's answer (see [`Run::answer_of`]), or counts a reply not understood:
    /// asks again, varied when the pack has `settings.reprompt`, and hands off after the
    /// retries.
    pub(super) async fn step_flow(
        &mut self,
        fs: &FlowState,
        text: &str,
        answer: Option<Answer>,
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
        match answer {
            Some(Answer::On(i, how, chose)) => {
                // What an irreversible action waits for.
                self.chose |= chose;
                self.trace.push(Step::Answered {
                    flow: fs.flow.clone(),
                    step: fs.step.clone(),
                    answer: how,
                });
                self.cs
                    .cancel_jobs
                    .push((JobKind::FlowTimeout, format!("{}/{}", fs.flow, fs.step)));
                let next = st.on[i].1.clone();
                return self.follow(&fs.flow, &next, &actor).await;
            }
            Some(Answer::Capture(v)) => {
                let into = st.capture.as_ref().map(|c| c.0.clone()).unwrap_or_default();
                let before = self
                    .conv
                    .attributes
                    .get(&into)
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
                    into,
                });
                self.cs
                    .cancel_jobs
                    .push((JobKind::FlowTimeout, format!("{}/{}", fs.flow, fs.step)));
                self.refresh_vars();
                let next = st.next.clone();
                return self.follow(&fs.flow, &next, &actor).await;
            }
            None => {}
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
            self.handoff_reason.get_or_insert(HandoffReason::Retries);
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
        self.ask_again(&st, &actor).await
    }

    /// A tap (or a typed title) of a button of a step this flow asked before, newest first:
    /// `(that step, its answer)`. Only choices count — an earlier step's intents or free text
    /// would swallow what the customer says now.
    pub(super) fn earlier_answer(
        &self,
        fs: &FlowState,
        text: &str,
        choice: Option<&str>,
    ) -> Option<(String, Answer)> {
        let flow = self.pack.flows.get(&fs.flow)?;
        for name in fs.asked.iter().rev().filter(|s| **s != fs.step) {
            let Some(st) = flow.steps.get(name) else {
                continue;
            };
            let typed = choice.is_none().then(|| self.pack.canon(text));
            let titles = st.titles();
            for (i, (m, _)) in st.on.iter().enumerate() {
                let Matcher::Choice(id) = m else { continue };
                let hit = match (&typed, choice) {
                    (_, Some(c)) => c == id,
                    (Some(t), None) => {
                        !t.is_empty()
                            && (self.pack.canon(id) == *t
                                || titles
                                    .iter()
                                    .any(|(tid, title)| tid == id && self.pack.canon(title) == *t))
                    }
                    _ => false,
                };
                if hit {
                    let how = if choice.is_some() {
                        format!("choice {id}")
                    } else {
                        format!("choice {id} (typed)")
                    };
                    return Some((name.clone(), Answer::On(i, how, true)));
                }
            }
        }
        None
    }

    /// Sends a waiting step's message again, without the reprompt (the customer was
    /// answered, not misunderstood).
    pub(super) async fn send_again(&mut self, st: &StepRt, actor: &str) -> Result<(), EngineError> {
        if let Some(m) = &st.send {
            self.send(m, actor, 0).await?;
        }
        Ok(())
    }

    /// Sends a waiting step's message again, after the pack's `settings.reprompt` (so the
    /// customer does not read the same words twice in a row).
    pub(super) async fn ask_again(&mut self, st: &StepRt, actor: &str) -> Result<(), EngineError> {
        if let Some(t) = self.pack.settings.reprompt.clone() {
            self.send(&MessageRt::Template(t), actor, 0).await?;
        }
        if let Some(m) = &st.send {
            self.send(m, actor, 0).await?;
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

/// How many earlier steps of a flow are remembered ([`FlowState::asked`]).
const MAX_ASKED: usize = 8;

/// Whether a step offers choices (buttons, list rows, a template's quick replies).
pub(super) fn has_choices(st: &StepRt) -> bool {
    st.on.iter().any(|(m, _)| matches!(m, Matcher::Choice(_)))
}

/// The one choice of a step a yes (`true`) or a no stands for — its title's (else its id's)
/// first word says so — and whether that is the customer's own choice: the title itself
/// starts with that yes or no ("Yes, cancel it"), unlike a bare "no" read as "Cancel".
fn polar_choice(st: &StepRt, yes: bool) -> Option<(usize, &str, bool)> {
    use switchyard_rules::reply::{choice_polarity, yes_no_title};
    let titles = st.titles();
    let mut hits = st.on.iter().enumerate().filter_map(|(i, (m, _))| match m {
        Matcher::Choice(id) => {
            let said = titles
                .iter()
                .find(|(t, _)| *t == id)
                .map_or(id.as_str(), |(_, t)| *t);
            (choice_polarity(said).or_else(|| choice_polarity(id)) == Some(yes))
                .then(|| (i, id.as_str(), yes_no_title(said) == Some(yes)))
        }
        _ => None,
    });
    match (hits.next(), hits.next()) {
        (Some(hit), None) => Some(hit),
        _ => None,
    }
}
