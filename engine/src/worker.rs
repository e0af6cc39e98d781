//! The workers: the inbox scheduler (events of one conversation in order, one at a time;
//! different conversations in parallel, bounded), the job poller (timers), and the outbox
//! dispatcher (sends with retries and backoff, at most once per row).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::model::now_millis as now;
use crate::model::*;
use crate::pipeline::{Engine, EngineError, Skip};
use crate::ports::{Channel, Notifier, SendError};
use crate::store::{Ingested, StoreError};

/// On a shared store, a row `sending` for longer than this was claimed by an instance that
/// died mid-send (a send times out long before).
const SEND_LEASE_MS: Millis = 120_000;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Conversations processed at once.
    pub concurrency: usize,
    /// How often idle workers look for work they were not woken for (timers, retries).
    pub poll: Duration,
    /// Send attempts before an outbound message is failed for good.
    pub max_attempts: u32,
    /// First retry delay; doubles with every attempt, up to five minutes.
    pub backoff: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 16,
            poll: Duration::from_millis(250),
            max_attempts: 5,
            backoff: Duration::from_secs(1),
        }
    }
}

/// The running workers. Dropping it does not stop them: call [`Runtime::shutdown`].
pub struct Runtime {
    pub engine: Arc<Engine>,
    /// Where outbound webhooks go; a reload with new connectors replaces it.
    notifier: Arc<arc_swap::ArcSwap<Arc<dyn Notifier>>>,
    inbox_wake: Arc<Notify>,
    outbox_wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Starts the workers. Whatever was committed and not processed before (a crash, a
    /// restart) is picked up first; outbound rows a crash left mid-send are marked `unknown`
    /// and never sent again.
    pub async fn start(
        engine: Arc<Engine>,
        channel: Arc<dyn Channel>,
        notifier: Arc<dyn Notifier>,
        cfg: WorkerConfig,
    ) -> Result<Runtime, StoreError> {
        // One process: every row still `sending` is from before the stop. Shared: only rows
        // claimed longer ago than any send takes (another instance may be sending now).
        let before = if engine.store.shared() {
            now() - SEND_LEASE_MS
        } else {
            Millis::MAX
        };
        let recovered = engine.store.recover_outbox(now(), before).await?;
        if recovered > 0 {
            tracing::warn!(
                count = recovered,
                "outbound messages were mid-send at the last stop; marked unknown, not resent"
            );
        }
        let (stop, stop_rx) = watch::channel(false);
        let inbox_wake = Arc::new(Notify::new());
        engine.store.listen(inbox_wake.clone());
        let outbox_wake = Arc::new(Notify::new());
        let notifier = Arc::new(arc_swap::ArcSwap::from_pointee(notifier));
        let tasks = vec![
            tokio::spawn(inbox_loop(
                engine.clone(),
                cfg.clone(),
                inbox_wake.clone(),
                outbox_wake.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(job_loop(
                engine.clone(),
                cfg.clone(),
                outbox_wake.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(outbox_loop(
                engine.clone(),
                channel,
                notifier.clone(),
                cfg,
                outbox_wake.clone(),
                stop_rx,
            )),
        ];
        inbox_wake.notify_one();
        Ok(Runtime {
            engine,
            notifier,
            inbox_wake,
            outbox_wake,
            stop,
            tasks,
        })
    }

    /// Swaps in a reloaded pack with the connectors built for it: the lookups together with the
    /// pack, then the webhook sender.
    pub fn replace_rules(
        &self,
        pack: Arc<switchyard_rules::Pack>,
        lookup: Arc<dyn crate::ports::Lookup>,
        notifier: Arc<dyn Notifier>,
    ) {
        self.engine.replace_pack_and_lookup(pack, lookup);
        self.notifier.store(Arc::new(notifier));
    }

    /// Commits events to the inbox and wakes the workers; returns after the commit.
    pub async fn ingest(&self, events: Vec<Inbound>) -> Result<Vec<Ingested>, StoreError> {
        let r = self.engine.store.ingest(events, now()).await?;
        self.inbox_wake.notify_one();
        Ok(r)
    }

    /// Wakes the dispatcher (e.g. after an agent's reply was committed).
    pub fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
    }

    /// Stops taking new work and waits for the workers to finish what they hold.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.inbox_wake.notify_waiters();
        self.outbox_wake.notify_waiters();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

type Queues = Arc<Mutex<HashMap<String, VecDeque<InboxRow>>>>;

/// How often an instance sharing the store reads every unprocessed event again.
const RESCAN: Duration = Duration::from_secs(1);

async fn inbox_loop(
    engine: Arc<Engine>,
    cfg: WorkerConfig,
    wake: Arc<Notify>,
    outbox_wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let queues: Queues = Arc::default();
    let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut last = 0i64;
    let shared = engine.store.shared();
    let mut rescanned = std::time::Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        // Instances sharing the store leave a conversation another holds to it (see
        // `conversation_task`); what that one leaves unprocessed (it died) is read again here.
        let rescan = shared && rescanned.elapsed() >= RESCAN;
        if rescan {
            rescanned = std::time::Instant::now();
        }
        let after = if rescan { 0 } else { last };
        match engine.store.pending_inbox(after, 1000).await {
            Ok(rows) => {
                let full = rows.len() == 1000 && !rescan;
                for row in rows {
                    last = last.max(row.id);
                    let key = row.key.clone();
                    let mut q = queues.lock().unwrap_or_else(|e| e.into_inner());
                    match q.get_mut(&key) {
                        Some(list) => enqueue(list, row),
                        None => {
                            q.insert(key.clone(), VecDeque::from([row]));
                            tasks.spawn(conversation_task(
                                engine.clone(),
                                key,
                                queues.clone(),
                                permits.clone(),
                                outbox_wake.clone(),
                                stop.clone(),
                            ));
                        }
                    }
                }
                while tasks.try_join_next().is_some() {}
                if full {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the inbox failed; retrying"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(cfg.poll) => {}
            _ = stop.changed() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Adds an event to its conversation's queue in id order, once (a rescan finds rows already
/// queued), never before the front, which its task may be processing. The list may be empty:
/// its task has just finished the last row and not yet removed the entry.
fn enqueue(list: &mut VecDeque<InboxRow>, row: InboxRow) {
    if let Err(at) = list.binary_search_by_key(&row.id, |r| r.id) {
        let at = if list.is_empty() { 0 } else { at.max(1) };
        list.insert(at, row);
    }
}

/// Processes one conversation's queue, in order, until it is empty.
async fn conversation_task(
    engine: Arc<Engine>,
    key: String,
    queues: Queues,
    permits: Arc<Semaphore>,
    outbox_wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
) {
    loop {
        let row = {
            let mut q = queues.lock().unwrap_or_else(|e| e.into_inner());
            match q.get_mut(&key).and_then(|l| l.front().cloned()) {
                Some(r) => r,
                None => {
                    q.remove(&key);
                    return;
                }
            }
        };
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        loop {
            if *stop.borrow() {
                // Unprocessed rows stay in the inbox for the next start.
                queues
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                return;
            }
            let started = std::time::Instant::now();
            // A store shared with other instances: never wait for a conversation another
            // instance holds, nor process an event before an earlier one of its conversation.
            let shared = engine.store.shared();
            match engine.process_turn(&row, now(), !shared).await {
                Ok((_, Some(Skip::Busy | Skip::NotYet))) => {
                    // Left to the instance that holds it; the rescan brings back whatever is
                    // still unprocessed, in order.
                    queues
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    return;
                }
                Ok((_, skipped)) => {
                    if skipped.is_none() {
                        engine
                            .metrics
                            .pipeline_seconds
                            .observe(started.elapsed().as_secs_f64());
                    }
                    break;
                }
                Err(EngineError::Store(e)) => {
                    tracing::error!(inbox.id = row.id, error = %e, "processing failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(inbox.id = row.id, error = %e, "event cannot be processed; skipped and audited");
                    if engine
                        .store
                        .skip_inbox(row.id, now(), &e.to_string())
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        outbox_wake.notify_one();
        let mut q = queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = q.get_mut(&key) {
            l.retain(|r| r.id != row.id);
        }
    }
}

async fn job_loop(
    engine: Arc<Engine>,
    cfg: WorkerConfig,
    outbox_wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    // The pack whose schedules have their next tick recorded (a reload may add some).
    let mut scheduled_for = String::new();
    // Who was on shift at the last look, and when that was (shifts are looked at each second).
    let mut shifts = HashMap::new();
    let mut shifts_at = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        if now() - shifts_at >= 1000 {
            shifts_at = now();
            match engine.check_shifts(shifts_at, &mut shifts).await {
                Ok(0) => {}
                Ok(_) => outbox_wake.notify_one(),
                Err(e) => tracing::error!(error = %e, "handing back at shift end failed; retrying"),
            }
        }
        let hash = engine.pack().hash.clone();
        if hash != scheduled_for {
            match engine.init_schedules(now()).await {
                Ok(()) => scheduled_for = hash,
                Err(e) => tracing::error!(error = %e, "recording the schedules failed; retrying"),
            }
        }
        match engine.fire_due_schedules(now()).await {
            Ok(0) => {}
            Ok(_) => outbox_wake.notify_one(),
            Err(e) => tracing::error!(error = %e, "firing a schedule failed; retrying"),
        }
        match engine.store.due_jobs(now(), 100).await {
            Ok(jobs) => {
                for job in jobs {
                    if let Err(e) = engine.fire_job(&job, now().max(job.due_at)).await {
                        tracing::error!(job.id = job.id, error = %e, "firing a timer failed; retrying");
                    }
                    outbox_wake.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, "reading due jobs failed"),
        }
        // Until the next job is due (timers fire on time, not on the next poll), or the poll
        // interval (new jobs, schedules, shifts), whichever comes first; at least 10 ms, so a
        // job that keeps failing is retried, not spun on.
        let poll = cfg.poll.as_millis() as i64;
        let wait = match engine.store.next_job_at().await {
            Ok(Some(at)) => (at - now()).clamp(10.min(poll), poll),
            _ => poll,
        };
        let wait = Duration::from_millis(wait as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn outbox_loop(
    engine: Arc<Engine>,
    channel: Arc<dyn Channel>,
    notifier: Arc<arc_swap::ArcSwap<Arc<dyn Notifier>>>,
    cfg: WorkerConfig,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut recovered_at = std::time::Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        // A shared store: rows another instance left `sending` when it died.
        if engine.store.shared() && recovered_at.elapsed() > Duration::from_secs(60) {
            recovered_at = std::time::Instant::now();
            match engine.store.recover_outbox(now(), now() - SEND_LEASE_MS).await {
                Ok(n) if n > 0 => tracing::warn!(
                    count = n,
                    "outbound messages were mid-send on an instance that stopped; marked unknown, not resent"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "recovering stale sends failed"),
            }
        }
        // One row at a time: a row is `sending` only while it is really being sent, so a
        // crash leaves at most one message in doubt.
        let rows = match engine.store.claim_outbox(now(), 1).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "claiming outbound messages failed");
                Vec::new()
            }
        };
        let busy = !rows.is_empty();
        for row in rows {
            let result = match &row.item {
                OutboxItem::Message(m) => channel.send(m).await,
                OutboxItem::Webhook { connector, body } => notifier
                    .load_full()
                    .notify(connector, body)
                    .await
                    .map(|_| String::new())
                    .map_err(|e| SendError::Retry(e.to_string())),
            };
            let t = now();
            if let Err(e) = &result {
                // The reason only: never the message body.
                tracing::warn!(outbox.id = row.id, conversation.id = row.conversation_id, attempt = row.attempts, error = %e, "send failed");
            }
            engine.metrics.send_result(match &result {
                Ok(_) => "sent",
                Err(SendError::Retry(_)) => "retry",
                Err(SendError::Permanent(_)) => "failed",
                Err(SendError::WindowClosed(_)) => "window_closed",
                Err(SendError::Unknown(_)) => "unknown",
            });
            let r = match result {
                Ok(provider_id) => engine.store.outbox_sent(row.id, &provider_id, t).await,
                Err(SendError::Retry(e)) if row.attempts < cfg.max_attempts => {
                    let delay = cfg.backoff.as_millis() as i64
                        * (1i64 << (row.attempts.saturating_sub(1)).min(16));
                    engine
                        .store
                        .outbox_failed(row.id, &e, Some(t + delay.min(300_000)), t)
                        .await
                }
                Err(SendError::Retry(e)) => {
                    engine
                        .store
                        .outbox_failed(
                            row.id,
                            &format!("gave up after {} attempts: {e}", row.attempts),
                            None,
                            t,
                        )
                        .await
                }
                Err(SendError::Permanent(e)) => {
                    engine.store.outbox_failed(row.id, &e, None, t).await
                }
                // At most once: a send that may have arrived is not repeated.
                Err(SendError::Unknown(e)) => engine.store.outbox_unknown(row.id, &e, t).await,
                Err(SendError::WindowClosed(e)) => {
                    match engine.store.outbox_failed(row.id, &e, None, t).await {
                        Ok(()) => engine
                            .send_refused(row.conversation_id, &e, t)
                            .await
                            .map_err(|e| match e {
                                EngineError::Store(s) => s,
                                other => StoreError::Corrupt(other.to_string()),
                            }),
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = r {
                tracing::error!(outbox.id = row.id, error = %e, "recording a send failed");
            }
        }
        if busy {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(cfg.poll) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64) -> InboxRow {
        InboxRow {
            id,
            key: "whatsapp:1".into(),
            event: Inbound::Status {
                channel: "whatsapp".into(),
                to: "1".into(),
                provider_id: format!("s{id}"),
                message: "m".into(),
                status: "read".into(),
                error: None,
            },
        }
    }

    /// The scheduler queues an event for a conversation whose task just emptied its list (it
    /// panicked on this before: the inbox stopped being processed).
    #[test]
    fn an_event_joins_an_emptied_queue_and_never_jumps_the_front() {
        let mut q = VecDeque::new();
        enqueue(&mut q, row(7));
        assert_eq!(q.iter().map(|r| r.id).collect::<Vec<_>>(), [7]);
        // The front (being processed) stays first even for a lower id found by a rescan.
        enqueue(&mut q, row(5));
        enqueue(&mut q, row(9));
        enqueue(&mut q, row(9));
        assert_eq!(q.iter().map(|r| r.id).collect::<Vec<_>>(), [7, 5, 9]);
    }
}
