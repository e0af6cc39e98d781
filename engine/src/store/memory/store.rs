//! [`Store`] for [`MemoryStore`]: each method one critical section over [`State`].

use async_trait::async_trait;

use super::*;

fn agent_json(a: &Agent) -> Value {
    serde_json::to_value(a).unwrap_or(Value::Null)
}

#[async_trait]
impl Store for MemoryStore {
    async fn ingest(&self, events: Vec<Inbound>, now: Millis) -> Result<Vec<Ingested>> {
        let mut s = self.lock();
        Ok(events
            .into_iter()
            .map(|e| {
                if !s.first_sighting((e.channel().to_string(), e.provider_id().to_string())) {
                    return Ingested::Duplicate;
                }
                s.next_inbox += 1;
                let id = s.next_inbox;
                s.inbox.insert(
                    id,
                    InboxEntry {
                        key: e.contact_key(),
                        event: e,
                        received_at: now,
                        processed_at: None,
                    },
                );
                Ingested::New(id)
            })
            .collect())
    }

    async fn pending_inbox(&self, after: i64, limit: i64) -> Result<Vec<InboxRow>> {
        let s = self.lock();
        Ok(s.inbox
            .range(after + 1..)
            .filter(|(_, e)| e.processed_at.is_none())
            .take(limit.max(0) as usize)
            .map(|(&id, e)| InboxRow {
                id,
                key: e.key.clone(),
                event: e.event.clone(),
            })
            .collect())
    }

    async fn inbox_since(
        &self,
        since: Millis,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Millis, Inbound)>> {
        let s = self.lock();
        Ok(s.inbox
            .range(after + 1..)
            .filter(|(_, e)| e.received_at >= since)
            .take(limit.max(0) as usize)
            .map(|(&id, e)| (id, e.received_at, e.event.clone()))
            .collect())
    }

    async fn skip_inbox(&self, inbox_id: i64, now: Millis, why: &str) -> Result<()> {
        let mut s = self.lock();
        if let Some(e) = s.inbox.get_mut(&inbox_id) {
            e.processed_at = Some(now);
        }
        s.add_audit(AuditRecord {
            at: now,
            actor: "system".into(),
            entity: format!("inbox:{inbox_id}"),
            action: "skipped".into(),
            before: Value::Null,
            after: why.into(),
        });
        Ok(())
    }

    async fn open_conversation(
        &self,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        phone: Option<&str>,
        now: Millis,
    ) -> Result<(Contact, Conversation, bool)> {
        let mut s = self.lock();
        let (id, created) = s.open_conversation(channel, external_id, name, phone, now);
        let ctx = s
            .context(id, created)
            .ok_or_else(|| StoreError::Corrupt("conversation without contact".into()))?;
        Ok((ctx.contact, ctx.conversation, created))
    }

    async fn context_of(&self, conversation_id: i64) -> Result<Option<Context>> {
        Ok(self.lock().context(conversation_id, false))
    }

    async fn contact(&self, id: i64) -> Result<Option<Contact>> {
        Ok(self.lock().contacts.get(&id).cloned())
    }

    async fn conversation(&self, id: i64) -> Result<Option<Conversation>> {
        Ok(self.lock().conversations.get(&id).cloned())
    }

    async fn open_ticket(&self, conversation_id: i64) -> Result<Option<Ticket>> {
        Ok(self.lock().open_ticket(conversation_id))
    }

    async fn allocate_id(&self, counter: &str) -> Result<i64> {
        let mut s = self.lock();
        if counter == "ticket" {
            s.last_ticket += 1;
            return Ok(s.last_ticket);
        }
        let n = s.counters.entry(counter.to_string()).or_default();
        *n += 1;
        Ok(*n)
    }

    async fn eligible_agents(&self, queue: &str) -> Result<Vec<AgentLoad>> {
        let s = self.lock();
        let mut out = Vec::new();
        for e in s.agents.values() {
            let a = &e.agent;
            if a.availability != "online" || !a.queues.iter().any(|q| q == queue) {
                continue;
            }
            let open = s
                .conversations
                .values()
                .filter(|c| c.assignee.as_deref() == Some(&a.id) && c.status != Status::Resolved)
                .count() as u32;
            if open < a.capacity {
                out.push(AgentLoad {
                    id: a.id.clone(),
                    open,
                    capacity: a.capacity,
                    last_assigned_at: e.last_assigned_at,
                    shift: a.shift.clone(),
                });
            }
        }
        Ok(out)
    }

    async fn waiting_conversations(&self, queue: &str, limit: i64) -> Result<Vec<i64>> {
        let s = self.lock();
        let mut v: Vec<(Option<Millis>, i64)> = s
            .conversations
            .values()
            .filter(|c| {
                c.queue.as_deref() == Some(queue)
                    && c.assignee.is_none()
                    && c.status != Status::Resolved
            })
            .map(|c| (c.queued_at, c.id))
            .collect();
        v.sort();
        Ok(v.into_iter()
            .take(limit.max(0) as usize)
            .map(|(_, id)| id)
            .collect())
    }

    async fn previous_assignee(&self, conversation_id: i64) -> Result<Option<String>> {
        let s = self.lock();
        let found = s
            .audit_of(&format!("conversation:{conversation_id}"))
            .filter_map(|a| extract(&a.after, "assignee"))
            .last();
        Ok(found)
    }

    async fn commit(&self, cs: Changeset) -> Result<()> {
        self.lock().apply(cs);
        Ok(())
    }

    async fn next_job_at(&self) -> Result<Option<Millis>> {
        let s = self.lock();
        Ok(s.jobs
            .values()
            .filter(|j| j.done_at.is_none())
            .map(|j| j.job.due_at)
            .min())
    }

    async fn due_jobs(&self, now: Millis, limit: i64) -> Result<Vec<Job>> {
        let s = self.lock();
        let mut v: Vec<&Job> = s
            .jobs
            .values()
            .filter(|j| j.done_at.is_none() && j.job.due_at <= now)
            .map(|j| &j.job)
            .collect();
        v.sort_by_key(|j| (j.due_at, j.id));
        Ok(v.into_iter().take(limit.max(0) as usize).cloned().collect())
    }

    async fn due_outbox(
        &self,
        now: Millis,
        full: &[String],
        busy: &[(i64, String)],
        limit: i64,
    ) -> Result<Vec<DueRow>> {
        let s = self.lock();
        Ok(s.outbox
            .iter()
            .filter(|(&id, o)| {
                o.status == "pending"
                    && o.next_attempt_at <= now
                    && !full.contains(&o.lane)
                    && !busy
                        .iter()
                        .any(|(c, l)| *c == o.conversation_id && *l == o.lane)
                    && s.first_in_lane(id, o)
            })
            .take(limit.max(0) as usize)
            .map(|(&id, o)| DueRow {
                id,
                conversation_id: o.conversation_id,
                lane: o.lane.clone(),
            })
            .collect())
    }

    async fn claim_outbox(&self, id: i64, now: Millis) -> Result<Option<OutboxRow>> {
        let mut s = self.lock();
        let Some(o) = s.outbox.get(&id) else {
            return Ok(None);
        };
        if o.status != "pending" || o.next_attempt_at > now || !s.first_in_lane(id, o) {
            return Ok(None);
        }
        let Some(o) = s.outbox.get_mut(&id) else {
            return Ok(None);
        };
        o.status = "sending";
        o.attempts += 1;
        o.updated_at = now;
        Ok(Some(OutboxRow {
            id,
            conversation_id: o.conversation_id,
            message_id: o.message_id,
            attempts: o.attempts,
            item: o.item.clone(),
        }))
    }

    async fn outbox_sent(&self, id: i64, provider_id: &str, now: Millis) -> Result<()> {
        let mut s = self.lock();
        if let Some(o) = s.outbox.get_mut(&id) {
            o.status = "sent";
            o.updated_at = now;
        }
        let Some(mid) = s.outbox.get(&id).and_then(|o| o.message_id) else {
            return Ok(());
        };
        if let Some(m) = s.messages.get_mut(&mid) {
            m.message.status = "sent".into();
            m.message.provider_id = Some(provider_id.to_string());
            let key = (m.channel.clone(), provider_id.to_string());
            s.messages_by_provider.entry(key).or_default().push(mid);
        }
        Ok(())
    }

    async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        let mut s = self.lock();
        let Some(o) = s.outbox.get_mut(&id) else {
            return Ok(());
        };
        o.updated_at = now;
        match retry_at {
            Some(at) => {
                o.status = "pending";
                o.next_attempt_at = at;
            }
            None => {
                o.status = "failed";
                let (conversation_id, webhook) = (o.conversation_id, o.message_id.is_none());
                let connector = match &o.item {
                    OutboxItem::Webhook { connector, .. } => Some(connector.clone()),
                    OutboxItem::Message(_) => None,
                };
                if let Some(m) = s.message_of_outbox(id) {
                    m.status = "failed".into();
                    m.error = Some(error.to_string());
                }
                if webhook {
                    // A webhook has no message: its failure goes on the conversation's audit
                    // (conversation 0: a schedule's).
                    s.add_audit(AuditRecord {
                        at: now,
                        actor: "system".into(),
                        entity: if conversation_id == 0 {
                            "schedules".into()
                        } else {
                            format!("conversation:{conversation_id}")
                        },
                        action: "webhook_failed".into(),
                        before: Value::Null,
                        after: serde_json::json!({ "connector": connector, "error": error }),
                    });
                }
            }
        }
        Ok(())
    }

    async fn recover_outbox(&self, now: Millis, claimed_before: Millis) -> Result<u64> {
        let mut s = self.lock();
        let stuck: Vec<i64> = s
            .outbox
            .iter()
            .filter(|(_, o)| o.status == "sending" && o.updated_at < claimed_before)
            .map(|(&id, _)| id)
            .collect();
        for &id in &stuck {
            if let Some(m) = s.message_of_outbox(id) {
                m.status = "unknown".into();
                m.error = Some("the process stopped while sending; not sent again".into());
            }
            if let Some(o) = s.outbox.get_mut(&id) {
                o.status = "unknown";
                o.updated_at = now;
            }
        }
        Ok(stuck.len() as u64)
    }

    async fn outbox_unknown(&self, id: i64, error: &str, now: Millis) -> Result<()> {
        let mut s = self.lock();
        if let Some(o) = s.outbox.get_mut(&id) {
            o.status = "unknown";
            o.updated_at = now;
        }
        if let Some(m) = s.message_of_outbox(id) {
            m.status = "unknown".into();
            m.error = Some(error.to_string());
        }
        Ok(())
    }

    async fn record_status(
        &self,
        channel: &str,
        provider_id: &str,
        status: &str,
        error: Option<&str>,
        now: Millis,
    ) -> Result<StatusRecorded> {
        let mut s = self.lock();
        let key = (channel.to_string(), provider_id.to_string());
        let ids = s
            .messages_by_provider
            .get(&key)
            .cloned()
            .unwrap_or_default();
        let mut updated = false;
        let mut known = None;
        for id in ids {
            let Some(m) = s.messages.get_mut(&id) else {
                continue;
            };
            let m = &mut m.message;
            if m.provider_id.as_deref() != Some(provider_id) {
                continue;
            }
            if m.direction == Direction::Out && rank(&m.status) < rank(status) {
                m.status = status.to_string();
                if let Some(e) = error {
                    m.error = Some(e.to_string());
                }
                updated = true;
            } else if known.is_none() {
                known = Some(m.status.clone());
            }
        }
        if updated {
            return Ok(StatusRecorded::Updated);
        }
        match known {
            Some(k) if k == status => return Ok(StatusRecorded::Repeated),
            Some(_) => return Ok(StatusRecorded::Unchanged),
            None => {}
        }
        s.add_audit(AuditRecord {
            at: now,
            actor: "system".into(),
            entity: format!("message:{channel}:{provider_id}"),
            action: "status_for_unknown_message".into(),
            before: Value::Null,
            after: serde_json::json!({ "status": status, "error": error }),
        });
        Ok(StatusRecorded::UnknownMessage)
    }

    async fn upsert_agent(&self, a: &Agent, actor: &str, now: Millis) -> Result<()> {
        let mut s = self.lock();
        let entity = format!("agent:{}", a.id);
        let before = s
            .audit_of(&entity)
            .last()
            .map_or(Value::Null, |r| r.after.clone());
        match s.agents.get_mut(&a.id) {
            Some(e) => e.agent = a.clone(),
            None => {
                s.agents.insert(
                    a.id.clone(),
                    AgentEntry {
                        agent: a.clone(),
                        password_hash: None,
                        last_assigned_at: None,
                    },
                );
            }
        }
        s.add_audit(AuditRecord {
            at: now,
            actor: actor.to_string(),
            entity,
            action: "saved".into(),
            before,
            after: agent_json(a),
        });
        Ok(())
    }

    async fn agent(&self, id: &str) -> Result<Option<Agent>> {
        Ok(self.lock().agents.get(id).map(|e| e.agent.clone()))
    }

    async fn agents(&self) -> Result<Vec<Agent>> {
        Ok(self
            .lock()
            .agents
            .values()
            .map(|e| e.agent.clone())
            .collect())
    }

    async fn set_password(
        &self,
        agent: &str,
        hash: Option<&str>,
        actor: &str,
        now: Millis,
    ) -> Result<bool> {
        let mut s = self.lock();
        let Some(e) = s.agents.get_mut(agent) else {
            return Ok(false);
        };
        e.password_hash = hash.map(str::to_string);
        // Never the hash: only that it changed.
        s.add_audit(AuditRecord {
            at: now,
            actor: actor.to_string(),
            entity: format!("agent:{agent}"),
            action: if hash.is_some() {
                "password_set"
            } else {
                "password_cleared"
            }
            .into(),
            before: Value::Null,
            after: Value::Null,
        });
        Ok(true)
    }

    async fn password_hash(&self, agent: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .agents
            .get(agent)
            .and_then(|e| e.password_hash.clone()))
    }

    async fn media_to_fetch(&self, after: i64, now: Millis, limit: i64) -> Result<Vec<MediaTask>> {
        let s = self.lock();
        let limit = limit.max(0) as usize;
        let task = |m: &StoredMessage, attempts| MediaTask {
            message_id: m.message.id,
            conversation_id: m.message.conversation_id,
            channel: m.channel.clone(),
            payload: m.message.payload.clone(),
            attempts,
        };
        let fresh = s
            .messages
            .range(after + 1..)
            .map(|(_, m)| m)
            .filter(|m| {
                m.message.kind == "media"
                    && m.message.direction == Direction::In
                    && !s.media.contains_key(&m.message.id)
            })
            .take(limit)
            .map(|m| task(m, 0));
        let mut due: Vec<&MediaRecord> = s
            .media
            .values()
            .filter(|r| r.status == "retry" && r.next_attempt_at.is_some_and(|t| t <= now))
            .collect();
        due.sort_by_key(|r| r.next_attempt_at);
        let due = due
            .into_iter()
            .take(limit)
            .filter_map(|r| s.messages.get(&r.message_id).map(|m| task(m, r.attempts)));
        Ok(fresh.chain(due).collect())
    }

    async fn save_media(&self, m: &MediaRecord) -> Result<()> {
        self.lock().media.insert(m.message_id, m.clone());
        Ok(())
    }

    async fn media(&self, message_id: i64) -> Result<Option<MediaRecord>> {
        Ok(self.lock().media.get(&message_id).cloned())
    }

    async fn owned_conversations(&self, agent: &str) -> Result<Vec<i64>> {
        let s = self.lock();
        Ok(s.conversations
            .values()
            .filter(|c| c.assignee.as_deref() == Some(agent) && c.status != Status::Resolved)
            .map(|c| c.id)
            .collect())
    }

    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let s = self.lock();
        Ok(queues
            .iter()
            .map(|q| {
                let open: Vec<&Conversation> = s
                    .conversations
                    .values()
                    .filter(|c| c.queue.as_ref() == Some(q) && c.status != Status::Resolved)
                    .collect();
                let waiting: Vec<&&Conversation> =
                    open.iter().filter(|c| c.assignee.is_none()).collect();
                QueueStats {
                    queue: q.clone(),
                    waiting: waiting.len() as i64,
                    oldest_waiting_since: waiting.iter().filter_map(|c| c.queued_at).min(),
                    assigned: (open.len() - waiting.len()) as i64,
                    agents_online: s
                        .agents
                        .values()
                        .filter(|e| e.agent.availability == "online" && e.agent.queues.contains(q))
                        .count() as i64,
                    breached: open
                        .iter()
                        .filter(|c| {
                            s.audit_of(&format!("conversation:{}", c.id))
                                .any(|a| a.action == "sla_breached")
                        })
                        .count() as i64,
                }
            })
            .collect())
    }

    async fn list_conversations(&self, q: &ConversationQuery) -> Result<Vec<ConversationLine>> {
        let s = self.lock();
        let mut v: Vec<&Conversation> = s
            .conversations
            .values()
            .filter(|c| s.matches(c, q))
            .collect();
        v.sort_by_key(|c| (c.queued_at.unwrap_or(c.created_at), c.id));
        Ok(v.into_iter()
            .take(q.limit.max(0) as usize)
            .map(|c| s.line(c))
            .collect())
    }

    async fn ticket(&self, id: i64) -> Result<Option<Ticket>> {
        Ok(self.lock().tickets.get(&id).cloned())
    }

    async fn list_tickets(&self, q: &TicketQuery) -> Result<Vec<Ticket>> {
        let s = self.lock();
        let range = ..q.before.unwrap_or(i64::MAX);
        Ok(s.tickets
            .range(range)
            .rev()
            .map(|(_, t)| t)
            .filter(|t| {
                q.status.is_none_or(|x| t.status == x)
                    && q.queue.as_ref().is_none_or(|x| t.queue.as_ref() == Some(x))
                    && q.owner.as_ref().is_none_or(|x| t.owner.as_ref() == Some(x))
                    && q.category
                        .as_ref()
                        .is_none_or(|x| t.category.as_ref() == Some(x))
                    && q.priority.is_none_or(|p| t.priority == p)
                    && q.visible_to.as_ref().is_none_or(|me| {
                        t.owner.as_ref() == Some(me)
                            || s.conversations
                                .get(&t.conversation_id)
                                .is_some_and(|c| c.assignee.as_ref() == Some(me))
                    })
            })
            .take(q.limit.max(0) as usize)
            .cloned()
            .collect())
    }

    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<(i64, AuditRecord)>> {
        let s = self.lock();
        let end = q.before.map_or(s.audit.len(), |b| {
            (b.max(1) - 1).min(s.audit.len() as i64) as usize
        });
        Ok(s.audit[..end]
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, a)| {
                (match q.entity.as_deref() {
                    Some(e) if e.ends_with(':') => a.entity.starts_with(e),
                    Some(e) => a.entity == e,
                    None => true,
                }) && q.actor.as_ref().is_none_or(|x| &a.actor == x)
                    && q.action.as_ref().is_none_or(|x| &a.action == x)
                    && q.from.is_none_or(|t| a.at >= t)
                    && q.to.is_none_or(|t| a.at < t)
            })
            .take(q.limit.max(0) as usize)
            .map(|(i, a)| (i as i64 + 1, a.clone()))
            .collect())
    }

    async fn init_schedules(&self, schedules: &[(String, Millis)]) -> Result<()> {
        let mut s = self.lock();
        for (name, next) in schedules {
            s.schedules.entry(name.clone()).or_insert(*next);
        }
        Ok(())
    }

    async fn due_schedules(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        let s = self.lock();
        let mut v: Vec<(String, Millis)> = s
            .schedules
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(n, &at)| (n.clone(), at))
            .collect();
        v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(v)
    }

    async fn stats(&self) -> Result<Value> {
        let s = self.lock();
        let open: Vec<&Conversation> = s
            .conversations
            .values()
            .filter(|c| c.status != Status::Resolved)
            .collect();
        let waiting = open
            .iter()
            .filter(|c| c.assignee.is_none() && c.queue.is_some())
            .count() as i64;
        let mut queues: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        let mut tags: BTreeMap<String, i64> = BTreeMap::new();
        for c in &open {
            if let Some(q) = &c.queue {
                let e = queues.entry(q).or_default();
                if c.assignee.is_none() {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
            for t in &c.tags {
                *tags.entry(t.clone()).or_default() += 1;
            }
        }
        Ok(queries::stats_json(
            (open.len() as i64, waiting),
            queues
                .into_iter()
                .map(|(q, (w, a))| (q.to_string(), w, a))
                .collect(),
            tags.into_iter().collect(),
        ))
    }

    async fn kpi_facts(
        &self,
        from: Millis,
        to: Millis,
        queue: Option<&str>,
    ) -> Result<crate::reports::KpiFacts> {
        use crate::reports::{ConversationFacts, KpiFacts};
        let s = self.lock();
        let in_range = |t: Millis| t >= from && t < to;
        let of_queue = |v: &Value| queue.is_none_or(|q| extract(v, "queue").as_deref() == Some(q));
        let human = |m: &Message| m.direction == Direction::Out && m.author != "bot";
        let conversations = s
            .conversations
            .values()
            .filter(|c| {
                in_range(c.created_at) && queue.is_none_or(|q| c.queue.as_deref() == Some(q))
            })
            .map(|c| {
                let audit: Vec<&AuditRecord> =
                    s.audit_of(&format!("conversation:{}", c.id)).collect();
                let first = |f: &dyn Fn(&AuditRecord) -> bool| {
                    audit.iter().filter(|a| f(a)).map(|a| a.at).min()
                };
                ConversationFacts {
                    id: c.id,
                    created_at: c.created_at,
                    queued_at: first(&|a| a.action == "routed"),
                    first_human_reply_at: s
                        .messages_of
                        .get(&c.id)
                        .into_iter()
                        .flatten()
                        .map(|id| &s.messages[id].message)
                        .filter(|m| human(m))
                        .map(|m| m.created_at)
                        .min(),
                    resolved_at: first(&|a| {
                        a.action == "status_changed"
                            && extract(&a.after, "status").as_deref() == Some("resolved")
                    }),
                    assigned: audit.iter().any(|a| a.action == "assigned"),
                }
            })
            .collect();
        let mut facts = KpiFacts {
            conversations,
            ..Default::default()
        };
        for a in s
            .audit
            .iter()
            .filter(|a| in_range(a.at) && of_queue(&a.after))
        {
            match a.action.as_str() {
                "assigned" if a.entity.starts_with("conversation:") => {
                    *facts
                        .assignments
                        .entry(extract(&a.after, "assignee").unwrap_or_default())
                        .or_default() += 1;
                }
                "updated"
                    if a.entity.starts_with("ticket:")
                        && extract(&a.after, "status").as_deref() == Some("resolved")
                        && extract(&a.before, "status").is_some_and(|b| b != "resolved") =>
                {
                    *facts
                        .tickets_resolved
                        .entry(extract(&a.after, "category").unwrap_or_default())
                        .or_default() += 1;
                }
                "sla_breached" => facts.sla_breaches += 1,
                _ => {}
            }
        }
        for m in s.messages.values().map(|m| &m.message) {
            let queued = || {
                queue.is_none_or(|q| {
                    s.conversations
                        .get(&m.conversation_id)
                        .is_some_and(|c| c.queue.as_deref() == Some(q))
                })
            };
            if human(m) && in_range(m.created_at) && queued() {
                *facts.replies.entry(m.author.clone()).or_default() += 1;
            }
        }
        for t in s.tickets.values() {
            if in_range(t.created_at) && queue.is_none_or(|q| t.queue.as_deref() == Some(q)) {
                *facts
                    .tickets_opened
                    .entry(t.category.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
        Ok(facts)
    }

    async fn backlog(&self) -> Result<(i64, Vec<(String, i64)>)> {
        let s = self.lock();
        let inbox = s
            .inbox
            .values()
            .filter(|e| e.processed_at.is_none())
            .count() as i64;
        let mut outbox: BTreeMap<&str, i64> = BTreeMap::new();
        for o in s.outbox.values() {
            *outbox.entry(o.status).or_default() += 1;
        }
        Ok((
            inbox,
            outbox
                .into_iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
        ))
    }

    async fn create_token(&self, t: &NewToken<'_>, actor: &str, now: Millis) -> Result<i64> {
        let mut s = self.lock();
        let id = s.tokens.len() as i64 + 1;
        s.tokens.push(TokenEntry {
            hash: t.hash.to_string(),
            record: TokenRecord {
                id,
                role: t.role.to_string(),
                agent: t.agent.map(str::to_string),
                revoked: false,
                kind: t.kind.to_string(),
                expires_at: t.expires_at,
            },
        });
        // The audit names the token by id, never by its value or hash.
        s.add_audit(AuditRecord {
            at: now,
            actor: actor.to_string(),
            entity: format!("token:{id}"),
            action: "created".into(),
            before: Value::Null,
            after: serde_json::json!({ "role": t.role, "agent": t.agent, "kind": t.kind, "expires_at": t.expires_at }),
        });
        Ok(id)
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        Ok(self
            .lock()
            .tokens
            .iter()
            .find(|t| t.hash == hash)
            .map(|t| t.record.clone()))
    }

    async fn revoke_token(&self, id: i64, actor: &str, now: Millis) -> Result<bool> {
        let mut s = self.lock();
        let Some(t) = s
            .tokens
            .iter_mut()
            .find(|t| t.record.id == id && !t.record.revoked)
        else {
            return Ok(false);
        };
        t.record.revoked = true;
        s.add_audit(AuditRecord {
            at: now,
            actor: actor.to_string(),
            entity: format!("token:{id}"),
            action: "revoked".into(),
            before: Value::Null,
            after: Value::Null,
        });
        Ok(true)
    }

    async fn messages(&self, conversation_id: i64) -> Result<Vec<Message>> {
        let s = self.lock();
        Ok(s.messages_of
            .get(&conversation_id)
            .into_iter()
            .flatten()
            .map(|id| s.messages[id].message.clone())
            .collect())
    }

    async fn notes(&self, conversation_id: i64) -> Result<Vec<Note>> {
        Ok(self
            .lock()
            .notes
            .iter()
            .filter(|n| n.conversation_id == conversation_id)
            .cloned()
            .collect())
    }

    async fn tickets(&self, conversation_id: i64) -> Result<Vec<Ticket>> {
        let s = self.lock();
        Ok(s.tickets_of
            .get(&conversation_id)
            .into_iter()
            .flatten()
            .filter_map(|id| s.tickets.get(id).cloned())
            .collect())
    }

    async fn ticket_history(&self, ticket_id: i64) -> Result<Vec<Value>> {
        Ok(self
            .lock()
            .ticket_events
            .iter()
            .filter(|(t, _)| *t == ticket_id)
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn audit(&self, entity: &str) -> Result<Vec<AuditRecord>> {
        Ok(self.lock().audit_of(entity).cloned().collect())
    }

    async fn traces(&self, conversation_id: i64) -> Result<Vec<(String, Value)>> {
        let s = self.lock();
        s.traces
            .values()
            .filter(|t| t.conversation_id == conversation_id)
            .map(|t| {
                let v = serde_json::to_value(&*t.trace)
                    .map_err(|e| StoreError::Corrupt(format!("trace: {e}")))?;
                Ok((t.pack_hash.clone(), v))
            })
            .collect()
    }

    async fn outbox_payloads(&self) -> Result<Vec<(String, Value)>> {
        let s = self.lock();
        s.outbox
            .values()
            .map(|o| {
                let v = serde_json::to_value(&o.item)
                    .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?;
                Ok((o.status.to_string(), v))
            })
            .collect()
    }

    async fn conversation_ids(&self) -> Result<Vec<i64>> {
        Ok(self.lock().conversations.keys().copied().collect())
    }

    async fn prune(&self, before: Millis) -> Result<Vec<(String, u64)>> {
        let mut s = self.lock();
        let mut counts = Vec::new();
        let n = s.inbox.len();
        s.inbox
            .retain(|_, e| e.processed_at.is_none_or(|t| t >= before));
        counts.push(("inbox".to_string(), (n - s.inbox.len()) as u64));
        let n = s.traces.len();
        s.traces.retain(|_, t| t.at >= before);
        counts.push(("traces".to_string(), (n - s.traces.len()) as u64));
        let n = s.jobs.len();
        s.jobs.retain(|_, j| j.done_at.is_none_or(|t| t >= before));
        counts.push(("jobs".to_string(), (n - s.jobs.len()) as u64));
        let n = s.outbox.len();
        s.outbox.retain(|_, o| {
            !(matches!(o.status, "sent" | "failed" | "unknown") && o.updated_at < before)
        });
        counts.push(("outbox".to_string(), (n - s.outbox.len()) as u64));
        debug_assert_eq!(counts.len(), PRUNE.len());
        Ok(counts)
    }
}
