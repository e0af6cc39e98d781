//! KPIs for supervisors, computed from what the store kept (messages, audit, tickets) over a
//! time range. The store gathers the facts ([`KpiFacts`]); [`kpis`] turns them into figures.
//!
//! Definitions (each over conversations **created** in `[from, to)`, in `queue` when given):
//! - *first response*: from the conversation's first entry into a queue (the hand-off to
//!   people) to the first message a person wrote; conversations without both are left out;
//! - *resolution*: from creation to the first time it was resolved;
//! - *bot containment*: share of conversations resolved that no person ever owned or wrote in;
//! - *hand-off rate*: share of conversations that entered a queue;
//! - percentiles are nearest-rank (median = p50, p90), in seconds.
//!
//! Per-agent workload counts assignments and replies in the range; tickets opened and resolved
//! in the range are counted by category (`""` for none).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Millis;

/// One conversation's milestones.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationFacts {
    pub id: i64,
    pub created_at: Millis,
    /// First entry into a queue.
    pub queued_at: Option<Millis>,
    /// First message written by a person (not the bot).
    pub first_human_reply_at: Option<Millis>,
    pub resolved_at: Option<Millis>,
    /// Whether a person ever owned it.
    pub assigned: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct KpiFacts {
    pub conversations: Vec<ConversationFacts>,
    /// Agent → conversations assigned in the range.
    pub assignments: BTreeMap<String, i64>,
    /// Agent → messages they sent in the range.
    pub replies: BTreeMap<String, i64>,
    /// Category → tickets opened in the range.
    pub tickets_opened: BTreeMap<String, i64>,
    /// Category → tickets resolved in the range.
    pub tickets_resolved: BTreeMap<String, i64>,
    pub sla_breaches: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Spread {
    pub count: usize,
    pub median_s: Option<f64>,
    pub p90_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentWork {
    pub agent: String,
    pub assigned: i64,
    pub replies: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Kpis {
    pub conversations: usize,
    pub first_response: Spread,
    pub resolution: Spread,
    /// `None` when no conversation was resolved.
    pub bot_containment_rate: Option<f64>,
    pub handoff_rate: Option<f64>,
    pub sla_breaches: i64,
    pub agents: Vec<AgentWork>,
    pub tickets_opened: BTreeMap<String, i64>,
    pub tickets_resolved: BTreeMap<String, i64>,
}

/// Nearest-rank percentile of sorted values.
fn rank(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let k = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[k - 1] as f64 / 1000.0)
}

fn spread(mut v: Vec<i64>) -> Spread {
    v.sort_unstable();
    Spread {
        count: v.len(),
        median_s: rank(&v, 0.5),
        p90_s: rank(&v, 0.9),
    }
}

pub fn kpis(f: &KpiFacts) -> Kpis {
    let c = &f.conversations;
    let first = c
        .iter()
        .filter_map(|x| Some(x.first_human_reply_at? - x.queued_at?))
        .filter(|d| *d >= 0)
        .collect();
    let resolution = c
        .iter()
        .filter_map(|x| Some(x.resolved_at? - x.created_at))
        .collect();
    let resolved: Vec<_> = c.iter().filter(|x| x.resolved_at.is_some()).collect();
    let contained = resolved
        .iter()
        .filter(|x| !x.assigned && x.first_human_reply_at.is_none())
        .count();
    let ratio = |n: usize, d: usize| (d > 0).then(|| n as f64 / d as f64);
    let mut agents: BTreeMap<&String, AgentWork> = BTreeMap::new();
    for (a, n) in &f.assignments {
        agents
            .entry(a)
            .or_insert_with(|| AgentWork {
                agent: a.clone(),
                assigned: 0,
                replies: 0,
            })
            .assigned = *n;
    }
    for (a, n) in &f.replies {
        agents
            .entry(a)
            .or_insert_with(|| AgentWork {
                agent: a.clone(),
                assigned: 0,
                replies: 0,
            })
            .replies = *n;
    }
    Kpis {
        conversations: c.len(),
        first_response: spread(first),
        resolution: spread(resolution),
        bot_containment_rate: ratio(contained, resolved.len()),
        handoff_rate: ratio(c.iter().filter(|x| x.queued_at.is_some()).count(), c.len()),
        sla_breaches: f.sla_breaches,
        agents: agents.into_values().collect(),
        tickets_opened: f.tickets_opened.clone(),
        tickets_resolved: f.tickets_resolved.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = spread(vec![4000, 1000, 3000, 2000]);
        assert_eq!((s.median_s, s.p90_s), (Some(2.0), Some(4.0)));
        assert_eq!(spread(vec![]).median_s, None);
    }
}
