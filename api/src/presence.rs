//! Who is looking at a conversation, and who is typing in it: the collision guard of the
//! workspace. Each page says it is there (`POST /api/v1/conversations/{id}/presence`) when it
//! opens a conversation and every few seconds while it stays open, and that it types while
//! it does; a viewer not heard from for [`TTL`] is gone. Changes go out on the live feed as
//! `presence` events, to those who may see the conversation.
//!
//! Presence is kept in this process only (it is worth seconds): with several instances
//! behind a balancer, an agent sees the viewers of their own instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

/// A viewer not heard from for this long has left.
pub const TTL: Duration = Duration::from_secs(30);
/// "Typing" lasts this long after the last keystroke reported.
pub const TYPING: Duration = Duration::from_secs(6);
/// Conversations tracked at once (a bound on what callers can make us hold).
const MAX_CONVERSATIONS: usize = 20_000;

/// Someone on a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Viewer {
    pub agent: String,
    pub typing: bool,
}

/// A conversation's viewers changed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PresenceEvent {
    pub conversation_id: i64,
    /// Where the conversation is, to decide who may see the event.
    pub queue: Option<String>,
    pub assignee: Option<String>,
    pub viewers: Vec<Viewer>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    until: Instant,
    typing_until: Option<Instant>,
}

pub struct Presence {
    by_conversation: Mutex<HashMap<i64, HashMap<String, Seen>>>,
    tx: broadcast::Sender<PresenceEvent>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            by_conversation: Mutex::new(HashMap::new()),
            tx: broadcast::channel(256).0,
        }
    }
}

fn viewers_of(seen: &HashMap<String, Seen>, now: Instant) -> Vec<Viewer> {
    let mut v: Vec<Viewer> = seen
        .iter()
        .filter(|(_, s)| s.until > now)
        .map(|(a, s)| Viewer {
            agent: a.clone(),
            typing: s.typing_until.is_some_and(|t| t > now),
        })
        .collect();
    v.sort_by(|a, b| a.agent.cmp(&b.agent));
    v
}

impl Presence {
    pub fn subscribe(&self) -> broadcast::Receiver<PresenceEvent> {
        self.tx.subscribe()
    }

    /// `agent` is on the conversation (typing or not), or has left it; returns who is there
    /// now. Tells the feed when that changed.
    pub fn report(
        &self,
        conversation: (i64, Option<String>, Option<String>),
        agent: &str,
        typing: bool,
        leaving: bool,
    ) -> Vec<Viewer> {
        let now = Instant::now();
        let (id, queue, assignee) = conversation;
        let (before, after) = {
            let mut all = self
                .by_conversation
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if all.len() >= MAX_CONVERSATIONS && !all.contains_key(&id) {
                all.retain(|_, seen| seen.values().any(|s| s.until > now));
            }
            let seen = all.entry(id).or_default();
            let before = viewers_of(seen, now);
            seen.retain(|_, s| s.until > now);
            if leaving {
                seen.remove(agent);
            } else {
                let typing_until = if typing {
                    Some(now + TYPING)
                } else {
                    seen.get(agent).and_then(|s| s.typing_until)
                };
                seen.insert(
                    agent.to_string(),
                    Seen {
                        until: now + TTL,
                        typing_until,
                    },
                );
            }
            let after = viewers_of(seen, now);
            if seen.is_empty() {
                all.remove(&id);
            }
            (before, after)
        };
        if before != after {
            let _ = self.tx.send(PresenceEvent {
                conversation_id: id,
                queue,
                assignee,
                viewers: after.clone(),
            });
        }
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_come_type_and_leave_and_each_change_is_told_once() {
        let p = Presence::default();
        let mut rx = p.subscribe();
        let conv = || (7, Some("support".to_string()), None);
        assert_eq!(p.report(conv(), "ayesha", false, false).len(), 1);
        let v = p.report(conv(), "bilal", true, false);
        assert_eq!(
            v,
            vec![
                Viewer {
                    agent: "ayesha".into(),
                    typing: false
                },
                Viewer {
                    agent: "bilal".into(),
                    typing: true
                }
            ]
        );
        // The same again changes nothing, and says nothing.
        p.report(conv(), "bilal", false, false);
        let _ = p.report(conv(), "ayesha", false, true);
        let told: Vec<usize> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.viewers.len())
            .collect();
        assert_eq!(told, vec![1, 2, 1]);
    }
}
