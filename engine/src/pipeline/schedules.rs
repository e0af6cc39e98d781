//! Cron schedules: each of the pack's `schedules:` fires `schedule.<name>` at its ticks, in
//! the pack's time zone, outside any conversation. Its `if:` and the rules on
//! `schedule.<name>` see `stats` and `now`; their actions are outbound webhooks (validation
//! allows nothing that needs a conversation). A firing and the move to the next tick commit
//! together, so a tick fires once; ticks missed while the process was down fire once at start.

use chrono::TimeZone;
use rhai::Dynamic;
use serde_json::{json, Value};
use switchyard_rules::pack::{ActionRt, Pack, RuleOutcome, ScheduleRt};
use switchyard_rules::script::Clock;

use super::{millis, time, Engine, EngineError};
use crate::domain::DomainEvent;
use crate::model::*;
use crate::store::Changeset;

/// The tick of `s` after `at`, in the pack's time zone.
fn next_tick(pack: &Pack, s: &ScheduleRt, at: Millis) -> Option<Millis> {
    let tz = pack.settings.timezone;
    let local = tz.from_utc_datetime(&time(at).naive_utc());
    s.cron.after(&local).next().map(|t| millis(t.to_utc()))
}

impl Engine {
    /// Gives every schedule of the current pack that has none its next tick after `now`. Called
    /// at start and after a reload.
    pub async fn init_schedules(&self, now: Millis) -> Result<(), EngineError> {
        let pack = self.pack();
        let next: Vec<(String, Millis)> = pack
            .schedules
            .iter()
            .filter_map(|s| Some((s.name.clone(), next_tick(&pack, s, now)?)))
            .collect();
        self.store.init_schedules(&next).await?;
        Ok(())
    }

    /// Fires every schedule due at `now`, once each however many ticks were missed; returns how
    /// many fired.
    pub async fn fire_due_schedules(&self, now: Millis) -> Result<usize, EngineError> {
        let due = self.store.due_schedules(now).await?;
        let mut n = 0;
        for (name, at) in due {
            // Instances sharing the store take turns; the one that comes second finds the
            // tick moved on and does nothing (each tick fires once).
            let guard = self.hold(&format!("schedule:{name}")).await?;
            if guard.shared()
                && !self
                    .store
                    .due_schedules(now)
                    .await?
                    .contains(&(name.clone(), at))
            {
                continue;
            }
            self.fire_schedule(&name, at, now).await?;
            drop(guard);
            n += 1;
        }
        Ok(n)
    }

    async fn fire_schedule(&self, name: &str, due: Millis, now: Millis) -> Result<(), EngineError> {
        let pack = self.pack();
        let entity = format!("schedule:{name}");
        let mut cs = Changeset {
            at: now,
            ..Default::default()
        };
        let Some(s) = pack.schedules.iter().find(|s| s.name == name) else {
            // The pack no longer has it.
            cs.schedule = Some((name.to_string(), None));
            self.commit(cs).await?;
            return Ok(());
        };
        let stats = self.store.stats().await?;
        let event = format!("schedule.{name}");
        let mut vars = pack.empty_vars();
        vars.set(
            "now",
            Dynamic::from(
                time(now)
                    .with_timezone(&pack.settings.timezone)
                    .to_rfc3339(),
            ),
        );
        vars.set_json("stats", &stats);
        vars.set_json(
            "event",
            &json!({ "name": event, "due_at": time(due).to_rfc3339() }),
        );
        let clock = Clock {
            now: time(now),
            window_open: false,
        };
        let mut scope = vars.scope();
        let mut fired = Vec::new();
        let run = match &s.condition {
            None => true,
            Some(c) => match pack.sandbox.eval_bool(c, &mut scope, clock) {
                Ok(b) => b,
                Err(e) => {
                    failed(&mut cs, now, &entity, json!({ "error": e.to_string() }));
                    false
                }
            },
        };
        let mut stopped = false;
        if run {
            fired.push(entity.clone());
            stopped = system_actions(
                &pack, &s.actions, &entity, &event, &mut scope, clock, now, &mut cs,
            );
        }
        if !stopped {
            let ev = pack.evaluate(&event, switchyard_rules::UNKNOWN, &mut scope, clock);
            for (idx, outcome) in ev.outcomes {
                let rule = &pack.rules[idx];
                let actor = format!("rule:{}", rule.name);
                match outcome {
                    RuleOutcome::Matched => {
                        fired.push(actor.clone());
                        if system_actions(
                            &pack,
                            &rule.actions,
                            &actor,
                            &event,
                            &mut scope,
                            clock,
                            now,
                            &mut cs,
                        ) {
                            break;
                        }
                    }
                    RuleOutcome::NotMatched => {}
                    RuleOutcome::Failed(e) => failed(
                        &mut cs,
                        now,
                        &entity,
                        json!({ "rule": rule.name, "error": e.to_string() }),
                    ),
                }
            }
        }
        let next = next_tick(&pack, s, now);
        cs.audit.push(audit(
            now,
            &entity,
            "schedule_fired",
            json!({ "due_at": due, "late_s": (now - due).max(0) / 1000, "ran": fired, "next_at": next }),
        ));
        cs.schedule = Some((name.to_string(), next));
        drop(scope);
        self.commit(cs).await
    }
}

/// A script of a schedule failed: audited on the schedule, counted as a rule error.
fn failed(cs: &mut Changeset, at: Millis, entity: &str, detail: Value) {
    let ev = DomainEvent::ScriptFailed { detail };
    for a in ev.audit() {
        cs.audit.push(AuditRecord {
            at,
            actor: "system".into(),
            entity: entity.into(),
            action: a.action.into(),
            before: a.before,
            after: a.after,
        });
    }
    cs.events.push(ev);
}

fn audit(at: Millis, entity: &str, action: &str, after: Value) -> AuditRecord {
    AuditRecord {
        at,
        actor: "system".into(),
        entity: entity.into(),
        action: action.into(),
        before: Value::Null,
        after,
    }
}

/// Runs actions outside a conversation: webhooks (validation allows nothing else but `stop`).
/// Returns whether they said `stop`.
#[allow(clippy::too_many_arguments)]
fn system_actions(
    pack: &Pack,
    actions: &[ActionRt],
    actor: &str,
    event: &str,
    scope: &mut rhai::Scope<'static>,
    clock: Clock,
    now: Millis,
    cs: &mut Changeset,
) -> bool {
    for a in actions {
        match a {
            ActionRt::Webhook { connector, body } => {
                let text = match body.as_ref().map(|b| b.render(&pack.sandbox, scope, clock)) {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => {
                        failed(cs, now, actor, json!({ "error": e.to_string() }));
                        String::new()
                    }
                    None => String::new(),
                };
                cs.webhooks.push((
                    connector.clone(),
                    json!({ "text": text, "conversation": null, "event": { "name": event }, "at": time(now).to_rfc3339() }),
                ));
            }
            ActionRt::Stop => return true,
            other => cs.audit.push(audit(
                now,
                actor,
                "skipped",
                json!({ "why": "needs a conversation", "action": format!("{other:?}").split([' ', '(', '{']).next().unwrap_or("") }),
            )),
        }
    }
    false
}
