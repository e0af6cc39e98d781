//! The decision trace: why a run did what it did — the classification, each rule looked at,
//! each flow step, lookup, route and send — one [`Trace`] per processed event, stored with the
//! hash of the pack that decided and served by `GET /api/v1/conversations/{id}/trace`.
//!
//! Steps are a closed set ([`Step`], tagged by `kind`). Traces stored before the steps were
//! typed keep reading: a step that is not one of today's kinds reads as [`Step::Earlier`] with
//! its JSON as it was.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything one event's run decided, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trace {
    /// When it was decided (RFC 3339).
    pub at: String,
    /// How the customer's message was classified (none for other events).
    pub intent: Option<IntentTrace>,
    pub steps: Vec<Step>,
}

/// The classifier's answer for a customer message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntentTrace {
    /// The intent decided (`unknown` below the threshold).
    pub intent: String,
    pub confidence: f64,
    /// The best three intents with their scores.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<Value>>))]
    pub scores: Vec<(String, f64)>,
    pub threshold: f64,
    /// The language the message was written in (`en`, `ur`, `roman_ur`), when it showed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Who decided the intent when not the pack's classifier: `fallback` (the language model)
    /// or `fallback_cache` (its answer to the same text earlier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One thing a run did or looked at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Step {
    /// A rule for `event` was evaluated: `matched`, or its condition `failed` to run.
    Rule {
        event: String,
        rule: String,
        matched: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<String>,
    },
    /// A flow started.
    FlowStarted { flow: String, by: String },
    /// A flow step was entered (its message sent, its lookups run).
    StepEntered { flow: String, step: String },
    /// A step's `branch` arm `arm` was taken (or its condition `failed`).
    Branch {
        flow: String,
        step: String,
        arm: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<String>,
    },
    /// The customer answered a waiting step: a button or row id, or `text`.
    Answered {
        flow: String,
        step: String,
        answer: String,
    },
    /// The answer was captured into the flow's data.
    Captured {
        flow: String,
        step: String,
        into: String,
    },
    /// An intent that escapes flows interrupted the step.
    Escaped {
        flow: String,
        step: String,
        intent: String,
    },
    /// A strong intent other than the step's interrupted the flow: it ended (`resumed`
    /// false), or the rules handled the message and the step asked again.
    Interrupted {
        flow: String,
        step: String,
        intent: String,
        resumed: bool,
    },
    /// The bot handed the conversation to a person without a word of its own: the pack's
    /// acknowledgement for `reason` (`closed` when sent outside the calendar's hours).
    Acknowledged {
        reason: String,
        template: String,
        closed: bool,
    },
    /// The contact's language was set explicitly.
    LanguageSet { language: String, by: String },
    /// A tap (or typed title) of an earlier step's button in the same flow: the customer
    /// changed their mind; taken as that step's answer.
    EarlierAnswer {
        flow: String,
        step: String,
        answer: String,
    },
    /// A question at a waiting step ("if I confirm, when will it come?"): never taken as the
    /// step's answer; the rules answered it (`answered`) and the step asked again.
    Question {
        flow: String,
        step: String,
        intent: String,
        answered: bool,
    },
    /// The bot was unsure which intent the message meant and asked: the candidates with
    /// their probabilities.
    Clarify { candidates: Vec<(String, f64)> },
    /// The customer answered the clarifying question: the `intent` picked, or none (an
    /// unclear answer goes to a person).
    Clarified {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        intent: Option<String>,
    },
    /// An irreversible store action (`action` on `key`) was not done: the customer had not
    /// confirmed it with a button in this message; a person was asked to check.
    Withheld {
        connector: String,
        action: String,
        key: String,
    },
    /// The answer was not understood `tries` times: asked again, or handed to a person.
    Unrecognised {
        flow: String,
        step: String,
        tries: u32,
        handed_off: bool,
    },
    /// The step the conversation was at no longer exists in the pack.
    StepMissing { flow: String, step: String },
    /// The step's timeout fired.
    StepTimedOut { flow: String, step: String },
    /// A flow ended: `completed` or abandoned, and why.
    FlowEnded {
        flow: String,
        completed: bool,
        why: String,
    },
    /// A lookup through a store connector: how many it `found` (1 for an order, the list's
    /// length for `find_orders`, 0 for nothing), or why it `failed`.
    Lookup {
        connector: String,
        action: String,
        key: String,
        found: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<String>,
    },
    /// A list built from data got `rows` of `of` items.
    ListRows { rows: usize, of: usize, by: String },
    /// A message went to the outbox, or was `blocked` (closed window, no rows).
    Send {
        message: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blocked: Option<String>,
        /// The pack template it was made from, when it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
    },
    /// A template's hole failed to render.
    TemplateFailed {
        template: String,
        by: String,
        error: String,
    },
    /// A `set` action's value failed to compute.
    SetFailed {
        key: String,
        by: String,
        error: String,
    },
    /// The conversation went to a queue.
    Routed { queue: String, by: String },
    /// A customer message no flow or rule handled went to the default queue.
    Unhandled { queue: String },
    /// Handed off to a queue.
    HandedOff { queue: String, by: String },
    /// Nobody in the queue could take it now: it waits.
    Waiting { queue: String, why: String },
    /// Given to an agent.
    Assigned { agent: String },
    /// A reassignment that could not happen.
    ReassignSkipped { why: String },
    /// An SLA clock started, stopped, fired, or a stale SLA job did nothing.
    Sla {
        clock: String,
        what: SlaStep,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due_at: Option<i64>,
    },
    /// A flow timeout that found nothing to do.
    StaleTimeout { name: String, why: String },
    /// A job of a kind this version does not run.
    JobIgnored { job: String, why: String },
    /// A snooze ended.
    SnoozeEnded,
    /// A delivery status arrived for a message.
    Delivery { status: String, message: String },
    /// Caused events were dropped: too deep or too many (a loop in the rules).
    LoopGuard {
        event: String,
        depth: u32,
        dropped: usize,
    },
    /// A step stored before steps were typed, as it was.
    #[serde(untagged)]
    Earlier(Value),
}

/// What happened to an SLA clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SlaStep {
    Started,
    Stopped,
    /// Warning or breach (`detail` names the event).
    Fired,
    /// The job was for a clock that moved or no longer runs.
    Stale,
}

impl Trace {
    /// Reads a stored trace; what does not read (it never should) becomes an empty trace
    /// with the JSON kept as one [`Step::Earlier`].
    pub fn read(v: &Value) -> Trace {
        Trace::deserialize(v).unwrap_or_else(|_| Trace {
            steps: vec![Step::Earlier(v.clone())],
            ..Trace::default()
        })
    }

    /// The intent decided, if a customer message was classified.
    pub fn intent(&self) -> Option<&str> {
        self.intent.as_ref().map(|i| i.intent.as_str())
    }

    /// The rules that matched, with their events.
    pub fn matched_rules(&self) -> impl Iterator<Item = (&str, &str)> {
        self.steps.iter().filter_map(|s| match s {
            Step::Rule {
                event,
                rule,
                matched: true,
                ..
            } => Some((rule.as_str(), event.as_str())),
            _ => None,
        })
    }

    /// A one-line summary for people: intent, matched rules, flow steps, routes, owner.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(i) = &self.intent {
            parts.push(format!("intent {} ({})", i.intent, i.confidence));
        }
        for s in &self.steps {
            let p = match s {
                Step::Rule {
                    event,
                    rule,
                    matched: true,
                    ..
                } => format!("rule “{rule}” on {event}"),
                Step::StepEntered { flow, step } => format!("flow {flow}/{step}"),
                Step::HandedOff { queue, .. } => format!("hand-off to {queue}"),
                Step::Routed { queue, .. } | Step::Unhandled { queue } => format!("route {queue}"),
                Step::Assigned { agent } => format!("assigned to {agent}"),
                _ => continue,
            };
            if parts.last() != Some(&p) {
                parts.push(p);
            }
        }
        parts.join(" · ")
    }
}

/// The trace as one line of JSON (what the stored row holds).
impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_steps_round_trip_and_earlier_traces_keep_reading() {
        let t = Trace {
            at: "2026-11-28T10:00:00+00:00".into(),
            intent: Some(IntentTrace {
                intent: "order_status".into(),
                confidence: 0.91,
                scores: vec![("order_status".into(), 0.91)],
                threshold: 0.35,
                language: Some("en".into()),
                source: None,
            }),
            steps: vec![
                Step::Rule {
                    event: "message.received".into(),
                    rule: "greet".into(),
                    matched: true,
                    failed: None,
                },
                Step::Routed {
                    queue: "support".into(),
                    by: "rule:greet".into(),
                },
            ],
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["steps"][0]["kind"], "rule");
        assert_eq!(Trace::read(&v), t);
        assert_eq!(
            t.summary(),
            "intent order_status (0.91) · rule “greet” on message.received · route support"
        );
        // A trace stored before the steps had kinds.
        let old = json!({ "at": "2026-11-20T10:00:00+00:00", "intent": null,
            "steps": [ { "event": "message.received", "rule": "greet", "matched": true } ] });
        let read = Trace::read(&old);
        assert_eq!(read.steps.len(), 1);
        assert!(matches!(&read.steps[0], Step::Earlier(v) if v["rule"] == "greet"));
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            old,
            "it is served as it was stored"
        );
    }
}
