//! Queues and owners: route, hand off, reassign, assign.

use super::*;

impl<'a> Run<'a> {
    pub(super) async fn handoff(
        &mut self,
        queue: Option<String>,
        agent: Option<String>,
        note: Option<String>,
        actor: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        if let Some(fs) = &self.conv.flow {
            let why = format!("handed off by {actor}");
            let completed = actor == format!("flow:{}", fs.flow);
            self.end_flow(completed, &why, actor, depth);
        }
        if let Some(n) = note {
            self.note(actor, n);
        }
        // A person answers now: no question of the bot's is waiting.
        self.conv.asking = None;
        self.handed = true;
        let q = queue.unwrap_or_else(|| self.eng.default_queue(&self.conv.channel, self.pack));
        self.route(&q, actor, depth).await?;
        if let Some(a) = agent {
            self.assign(&a, actor, depth);
        }
        if self.conv.status == Status::New || self.conv.status == Status::Resolved {
            self.set_status(Status::Open, actor, depth);
        }
        self.trace.push(Step::HandedOff {
            queue: q.to_string(),
            by: actor.to_string(),
        });
        Ok(())
    }

    /// Takes the conversation from its owner and assigns it again in its queue, never to the
    /// same owner; with nobody else free it waits in the queue.
    pub(super) async fn reassign(&mut self, actor: &str, depth: u32) -> Result<(), EngineError> {
        let (Some(prev), Some(queue)) = (self.conv.assignee.clone(), self.conv.queue.clone())
        else {
            self.trace.push(Step::ReassignSkipped {
                why: "no owner or no queue".into(),
            });
            return Ok(());
        };
        self.unassign(actor, "reassigned");
        self.route_without(&queue, Some(prev), actor, depth).await
    }

    /// Takes the conversation from its owner, audited with why; returns who had it.
    pub(super) fn unassign(&mut self, actor: &str, why: &str) -> Option<String> {
        let prev = self.conv.assignee.take()?;
        self.emit(
            actor,
            DomainEvent::Unassigned {
                from: prev.clone(),
                why: why.to_string(),
            },
            0,
        );
        Some(prev)
    }

    /// [`Run::route`], never picking `prev` (the owner the conversation was just taken from).
    pub(super) async fn route_without(
        &mut self,
        queue: &str,
        prev: Option<String>,
        actor: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        self.not_to = prev;
        let r = self.route(queue, actor, depth).await;
        self.not_to = None;
        r
    }

    /// Puts the conversation in `queue` and assigns it per the queue's policy.
    pub(super) async fn route(
        &mut self,
        queue: &str,
        actor: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        if self.conv.queue.as_deref() != Some(queue) {
            self.emit(
                actor,
                DomainEvent::Routed {
                    from: self.conv.queue.clone(),
                    to: queue.to_string(),
                },
                depth,
            );
            self.conv.queue = Some(queue.to_string());
            self.conv.queued_at = Some(self.now);
            self.handed = true;
            if self.conv.status == Status::New {
                self.set_status(Status::Open, actor, depth);
            }
            // The owner keeps it only if they work that queue.
            if let Some(a) = self.conv.assignee.clone() {
                let members = self.eng.store.eligible_agents(queue).await?;
                if !members.iter().any(|m| m.id == a) {
                    self.unassign(actor, "moved to another queue");
                }
            }
            self.trace.push(Step::Routed {
                queue: queue.to_string(),
                by: actor.to_string(),
            });
        }
        self.sla_on_route();
        self.assign_by_policy(queue, actor, depth).await
    }

    /// Whether an agent works now by their shift (no shift, or a calendar the pack no longer
    /// has: always).
    fn on_shift(&self, a: &AgentLoad) -> bool {
        match a.shift.as_ref().and_then(|c| self.pack.calendars.get(c)) {
            Some(cal) => cal.is_open(time(self.now)),
            None => true,
        }
    }

    /// A resolved conversation the customer opened again: its owner keeps it if they can
    /// take it now (online, on shift, under capacity); if not, it waits in its queue again
    /// and goes to whoever the queue's policy picks.
    pub(super) async fn reopened(&mut self) -> Result<(), EngineError> {
        let (Some(owner), Some(queue)) = (self.conv.assignee.clone(), self.conv.queue.clone())
        else {
            return Ok(());
        };
        let agents = self.eng.store.eligible_agents(&queue).await?;
        if agents
            .iter()
            .any(|a| a.id == owner && a.open < a.capacity && self.on_shift(a))
        {
            return Ok(());
        }
        self.unassign("system", "reopened while its owner is away");
        self.conv.queued_at = Some(self.now);
        self.route_without(&queue, Some(owner), "system", 0).await
    }

    /// Assigns a conversation nobody owns by its queue's policy, if anyone can take it.
    async fn assign_by_policy(
        &mut self,
        queue: &str,
        actor: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        if self.conv.assignee.is_some() {
            return Ok(());
        }
        let policy = self.pack.queues.get(queue).map(|q| q.assignment);
        use switchyard_rules::config::Assignment as A;
        let Some(policy) = policy.filter(|p| *p != A::Manual) else {
            return Ok(());
        };
        let mut agents = self.eng.store.eligible_agents(queue).await?;
        // Agents given conversations earlier in this same event count as busier.
        for a in &mut agents {
            a.open += self.cs.assigned.iter().filter(|x| **x == a.id).count() as u32;
        }
        agents.retain(|a| {
            a.open < a.capacity && Some(&a.id) != self.not_to.as_ref() && self.on_shift(a)
        });
        let pick = match policy {
            A::LeastLoaded => agents.iter().min_by(|a, b| {
                (a.open, a.last_assigned_at, &a.id).cmp(&(b.open, b.last_assigned_at, &b.id))
            }),
            // Who had it before is read only when there is a choice to make.
            A::Sticky if agents.len() > 1 => {
                let prev = self.eng.store.previous_assignee(self.conv.id).await?;
                agents
                    .iter()
                    .find(|a| Some(&a.id) == prev.as_ref())
                    .or_else(|| {
                        agents.iter().min_by(|a, b| {
                            (a.last_assigned_at, &a.id).cmp(&(b.last_assigned_at, &b.id))
                        })
                    })
            }
            _ => agents
                .iter()
                .min_by(|a, b| (a.last_assigned_at, &a.id).cmp(&(b.last_assigned_at, &b.id))),
        };
        match pick.map(|a| a.id.clone()) {
            Some(id) => self.assign(&id, actor, depth),
            None => self.trace.push(Step::Waiting {
                queue: queue.to_string(),
                why: "no agent available".into(),
            }),
        }
        Ok(())
    }

    pub(super) fn assign(&mut self, agent: &str, actor: &str, depth: u32) {
        if self.conv.assignee.as_deref() == Some(agent) {
            return;
        }
        self.emit(
            actor,
            DomainEvent::Assigned {
                from: self.conv.assignee.clone(),
                agent: agent.to_string(),
                queue: self.conv.queue.clone(),
            },
            depth,
        );
        self.conv.assignee = Some(agent.to_string());
        self.cs.assigned.push(agent.to_string());
        if let Some(t) = self.ticket.as_mut() {
            if t.owner.is_none() {
                t.owner = Some(agent.to_string());
            }
        }
        self.trace.push(Step::Assigned {
            agent: agent.to_string(),
        });
    }
}
