//! Agent shifts: an agent with a `shift` (one of the pack's calendars) is assigned
//! conversations only inside its hours. When a shift ends, the agent's open conversations in
//! queues with `on_shift_end: hand_back` go back to their queue with a note (and to a colleague
//! on shift, per the queue's policy); when a shift starts, the agent pulls waiting work.

use std::collections::HashMap;

use switchyard_rules::config::OnShiftEnd;

use super::{time, Engine, EngineError, Run};
use crate::model::*;

impl Engine {
    /// Looks at every agent with a shift at `now`. `seen` remembers who was on shift at the
    /// last look (so a shift's start is noticed once). Returns how many conversations were
    /// handed back.
    pub async fn check_shifts(
        &self,
        now: Millis,
        seen: &mut HashMap<String, bool>,
    ) -> Result<usize, EngineError> {
        let pack = self.pack();
        let mut handed = 0;
        for a in self.store.agents().await? {
            let Some(cal) = a.shift.as_ref().and_then(|c| pack.calendars.get(c)) else {
                continue;
            };
            let on = cal.is_open(time(now));
            let before = seen.insert(a.id.clone(), on);
            if !on {
                handed += self.end_shift(&a, now).await?;
            } else if before != Some(true) && a.availability == "online" {
                for q in &a.queues {
                    self.assign_waiting(q, now).await?;
                }
            }
        }
        Ok(handed)
    }

    /// Hands back what an agent off shift still owns in `hand_back` queues.
    async fn end_shift(&self, agent: &Agent, now: Millis) -> Result<usize, EngineError> {
        let mut n = 0;
        for id in self.store.owned_conversations(&agent.id).await? {
            let Some((ctx, _guard)) = self.locked_context(id).await? else {
                continue;
            };
            let pack = self.pack();
            let conv = &ctx.conversation;
            let Some(queue) = conv.queue.clone() else {
                continue;
            };
            let hand_back = pack
                .queues
                .get(&queue)
                .is_some_and(|q| q.on_shift_end == OnShiftEnd::HandBack);
            if conv.assignee.as_deref() != Some(agent.id.as_str())
                || conv.status == Status::Resolved
                || !hand_back
            {
                continue;
            }
            let mut run = Run::new(self, &pack, ctx, now);
            let prev = run.unassign("system", "shift ended");
            run.note(
                "system",
                format!(
                    "{}'s shift ended; handed back to {queue} for the next agent on shift.",
                    agent.name
                ),
            );
            run.route_without(&queue, prev, "system", 0).await?;
            run.drain_caused().await?;
            let cs = run.finish();
            self.commit(cs).await?;
            n += 1;
        }
        Ok(n)
    }
}
