//! SLA clocks: started when a conversation enters a queue with a policy, paused while it waits
//! on the customer, stopped when met, recomputed when the queue or the priority changes, and
//! fired as `sla.warning` / `sla.breached` through the rules by durable jobs (`sla`,
//! `sla_warning`, named by the clock's kind). Targets count only open hours when the policy
//! names a calendar. After a breach the clock starts again, so rules can climb a ladder on
//! `sla.breaches`.

use serde_json::json;
use switchyard_rules::config::RuleEvent;
use switchyard_rules::pack::{SlaKind, SlaRt};

use super::{time, EngineError, Run};
use crate::domain::DomainEvent;
use crate::model::*;
use crate::store::NewJob;
use crate::trace::{SlaStep, Step};

/// Breaches of one clock after which it stops restarting.
const MAX_BREACHES: u32 = 5;

fn priority_index(p: Priority) -> usize {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Urgent => 3,
    }
}

impl Run<'_> {
    fn sla_policy(&self) -> Option<&SlaRt> {
        let q = self.conv.queue.as_deref()?;
        self.pack.queues.get(q)?.sla.as_ref()
    }

    fn sla_target(&self, kind: SlaKind) -> Option<i64> {
        let p = self.sla_policy()?;
        p.target(kind, priority_index(self.conv.priority))
            .map(|d| d.as_millis() as i64)
    }

    /// `from` plus `ms` of counted time (open hours when the policy has a calendar).
    fn sla_deadline(&self, from: Millis, ms: i64) -> Millis {
        let cal = self
            .sla_policy()
            .and_then(|p| p.calendar.as_ref())
            .and_then(|c| self.pack.calendars.get(c));
        match cal {
            Some(c) => super::millis(c.add_open_time(
                time(from),
                std::time::Duration::from_millis(ms.max(0) as u64),
            )),
            None => from + ms.max(0),
        }
    }

    /// Counted time between `from` and `to`.
    fn sla_counted(&self, from: Millis, to: Millis) -> i64 {
        let cal = self
            .sla_policy()
            .and_then(|p| p.calendar.as_ref())
            .and_then(|c| self.pack.calendars.get(c));
        match cal {
            Some(c) => c.open_time_between(time(from), time(to)).as_millis() as i64,
            None => (to - from).max(0),
        }
    }

    /// Sets a running clock's due and warning times from what is left of its target, and
    /// replaces its jobs.
    fn sla_schedule(&mut self, i: usize) {
        let warn_frac = self.sla_policy().and_then(|p| p.warn_at);
        let c = self.conv.sla.clocks[i].clone();
        let (due, warn) = match c.running_since {
            Some(since) => {
                let due = self.sla_deadline(since, c.target_ms - c.elapsed_ms);
                let warn = match warn_frac {
                    Some(f) if !c.warned => {
                        let at = (c.target_ms as f64 * f) as i64 - c.elapsed_ms;
                        (at > 0).then(|| self.sla_deadline(since, at))
                    }
                    _ => None,
                };
                (Some(due), warn)
            }
            None => (None, None),
        };
        let clock = &mut self.conv.sla.clocks[i];
        clock.due_at = due;
        clock.warn_at = warn;
        let kind = clock.kind.clone();
        self.sla_jobs(&kind, due, warn);
    }

    /// When the resolution clock is due: a ticket opened now is due then. (The conversation's
    /// clock stays the live due time: copying every recompute onto the ticket row would cost
    /// a ticket write and a history row per queue change.)
    pub(super) fn resolution_due(&self) -> Option<Millis> {
        let i = self.sla_index(SlaKind::Resolution)?;
        self.conv.sla.clocks[i].due_at
    }

    /// Replaces the pending `sla`/`sla_warning` jobs of `kind`.
    fn sla_jobs(&mut self, kind: &str, due: Option<Millis>, warn: Option<Millis>) {
        self.cs
            .new_jobs
            .retain(|j| !(matches!(j.kind, JobKind::Sla | JobKind::SlaWarning) && j.name == kind));
        for k in [JobKind::Sla, JobKind::SlaWarning] {
            let c = (k, kind.to_string());
            if !self.cs.cancel_jobs.contains(&c) {
                self.cs.cancel_jobs.push(c);
            }
        }
        for (k, at) in [(JobKind::Sla, due), (JobKind::SlaWarning, warn)] {
            if let Some(at) = at {
                self.cs.new_jobs.push(NewJob {
                    kind: k,
                    name: kind.into(),
                    due_at: at,
                });
            }
        }
    }

    fn sla_index(&self, kind: SlaKind) -> Option<usize> {
        self.conv
            .sla
            .clocks
            .iter()
            .position(|c| c.kind == kind.as_str())
    }

    /// Starts a clock of `kind` now, unless one runs or the policy has no target for it.
    fn sla_start(&mut self, kind: SlaKind, breaches: u32) {
        let Some(target) = self.sla_target(kind) else {
            return;
        };
        if self.sla_index(kind).is_some() {
            return;
        }
        let paused = self.conv.status == Status::Waiting;
        self.conv.sla.clocks.push(SlaClock {
            kind: kind.as_str().into(),
            target_ms: target,
            elapsed_ms: 0,
            running_since: (!paused).then_some(self.now),
            due_at: None,
            warn_at: None,
            warned: false,
            breaches,
        });
        let i = self.conv.sla.clocks.len() - 1;
        self.sla_schedule(i);
        self.trace.push(Step::Sla {
            clock: kind.as_str().to_string(),
            what: SlaStep::Started,
            detail: None,
            due_at: self.conv.sla.clocks[i].due_at,
        });
    }

    /// Stops a clock: met (a person answered, the conversation was resolved) or no longer
    /// measured.
    pub(super) fn sla_stop(&mut self, kind: SlaKind, why: &str, actor: &str) {
        let Some(i) = self.sla_index(kind) else {
            return;
        };
        let c = self.conv.sla.clocks.remove(i);
        self.sla_jobs(kind.as_str(), None, None);
        if why == "met" {
            self.emit(
                actor,
                DomainEvent::SlaMet {
                    kind: c.kind.clone(),
                    due_at: c.due_at,
                    at: self.now,
                    breaches: c.breaches,
                },
                0,
            );
        }
        self.trace.push(Step::Sla {
            clock: kind.as_str().to_string(),
            what: SlaStep::Stopped,
            detail: Some(why.to_string()),
            due_at: None,
        });
    }

    /// The conversation is in a queue (routed, or handed off again): the policy's clocks that
    /// do not run yet start now; those that run follow the (new) policy.
    pub(super) fn sla_on_route(&mut self) {
        if self.conv.status == Status::Resolved {
            return;
        }
        self.sla_recompute();
        if !self.conv.sla.responded {
            self.sla_start(SlaKind::FirstResponse, 0);
        }
        self.sla_start(SlaKind::Resolution, 0);
    }

    /// The policy changed (queue or priority): each clock takes its new target, keeping the
    /// time already counted; a kind the policy no longer measures stops.
    pub(super) fn sla_recompute(&mut self) {
        let mut i = 0;
        while i < self.conv.sla.clocks.len() {
            let kind = SlaKind::parse(&self.conv.sla.clocks[i].kind);
            match kind.and_then(|k| self.sla_target(k)) {
                Some(t) => {
                    if self.conv.sla.clocks[i].target_ms != t {
                        self.conv.sla.clocks[i].target_ms = t;
                        self.sla_schedule(i);
                    }
                    i += 1;
                }
                None => {
                    let c = self.conv.sla.clocks.remove(i);
                    self.sla_jobs(&c.kind, None, None);
                    self.trace.push(Step::Sla {
                        clock: c.kind.clone(),
                        what: SlaStep::Stopped,
                        detail: Some("not in this queue's policy".into()),
                        due_at: None,
                    });
                }
            }
        }
    }

    /// The status changed: waiting pauses every clock, leaving waiting resumes them, resolved
    /// ends the cycle.
    pub(super) fn sla_on_status(&mut self, from: Status, to: Status, actor: &str) {
        if to == Status::Resolved {
            for k in SlaKind::ALL {
                let why = if k == SlaKind::Resolution {
                    "met"
                } else {
                    "resolved"
                };
                self.sla_stop(k, why, actor);
            }
            self.conv.sla.responded = false;
        } else if to == Status::Waiting {
            for i in 0..self.conv.sla.clocks.len() {
                if let Some(since) = self.conv.sla.clocks[i].running_since {
                    let counted = self.sla_counted(since, self.now);
                    let c = &mut self.conv.sla.clocks[i];
                    c.elapsed_ms += counted;
                    c.running_since = None;
                    self.sla_schedule(i);
                }
            }
        } else if from == Status::Waiting {
            for i in 0..self.conv.sla.clocks.len() {
                if self.conv.sla.clocks[i].running_since.is_none() {
                    self.conv.sla.clocks[i].running_since = Some(self.now);
                    self.sla_schedule(i);
                }
            }
        }
    }

    /// A person answered the customer.
    pub(super) fn sla_on_agent_reply(&mut self, actor: &str) {
        self.sla_stop(SlaKind::FirstResponse, "met", actor);
        self.sla_stop(SlaKind::NextResponse, "met", actor);
        if self.conv.queue.is_some() {
            self.conv.sla.responded = true;
        }
    }

    /// The customer wrote: once a person has answered, the next answer is due.
    pub(super) fn sla_on_customer_message(&mut self) {
        if self.conv.sla.responded && self.conv.status != Status::Resolved {
            self.sla_start(SlaKind::NextResponse, 0);
        }
    }

    /// A due `sla` or `sla_warning` job: fires `sla.breached` / `sla.warning` when the clock
    /// still says so (a met, paused or recomputed clock makes the job stale).
    pub(super) async fn on_sla_job(&mut self, job: &Job) -> Result<(), EngineError> {
        let warning = job.kind == JobKind::SlaWarning;
        let Some(kind) = SlaKind::parse(&job.name) else {
            self.trace.push(Step::JobIgnored {
                job: job.kind.as_str().to_string(),
                why: "unknown SLA kind".into(),
            });
            return Ok(());
        };
        let Some(i) = self.sla_index(kind) else {
            self.trace.push(Step::Sla {
                clock: job.name.clone(),
                what: SlaStep::Stale,
                detail: Some("no such clock runs".into()),
                due_at: None,
            });
            return Ok(());
        };
        let c = self.conv.sla.clocks[i].clone();
        let current = if warning { c.warn_at } else { c.due_at };
        if current != Some(job.due_at) {
            self.trace.push(Step::Sla {
                clock: job.name.clone(),
                what: SlaStep::Stale,
                detail: Some("the clock moved".into()),
                due_at: None,
            });
            return Ok(());
        }
        let due = c.due_at.unwrap_or(job.due_at);
        let late_s = ((self.now - due).max(0)) / 1000;
        let owner = self.conv.assignee.clone();
        let queue = self.conv.queue.clone();
        let (event, breaches) = if warning {
            self.conv.sla.clocks[i].warned = true;
            self.conv.sla.clocks[i].warn_at = None;
            self.sla_jobs(&c.kind, c.due_at, None);
            (RuleEvent::SlaWarning.as_str(), c.breaches)
        } else {
            // The clock starts again, for the next rung of a ladder.
            let breaches = c.breaches + 1;
            self.conv.sla.clocks.remove(i);
            self.sla_jobs(&c.kind, None, None);
            if breaches < MAX_BREACHES {
                self.sla_start(kind, breaches);
            }
            (RuleEvent::SlaBreached.as_str(), breaches)
        };
        let sla = json!({
            "kind": c.kind,
            "due_at": time(due).to_rfc3339(),
            "late_s": late_s,
            "owner": owner,
            "queue": queue,
            "breaches": breaches,
        });
        self.emit(
            "system",
            DomainEvent::SlaFired {
                warning,
                sla: sla.clone(),
            },
            0,
        );
        self.trace.push(Step::Sla {
            clock: c.kind.clone(),
            what: SlaStep::Fired,
            detail: Some(event.to_string()),
            due_at: None,
        });
        self.vars.set_json("sla", &sla);
        self.vars.set_json("event", &json!({ "name": event }));
        self.refresh_vars();
        self.run_rules(event, switchyard_rules::UNKNOWN, 0).await?;
        Ok(())
    }
}
