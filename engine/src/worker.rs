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
    /// Sends in flight to one destination (a WhatsApp number, web chat, a webhook connector):
    /// a slow destination holds only its own rows back. A crash leaves at most this many rows
    /// per destination in doubt (`unknown`, never resent).
    pub sends_per_destination: usize,
    /// Sends in flight in all.
    pub sends: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 16,
            poll: Duration::from_millis(250),
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            sends_per_destination: 4,
            sends: 32,
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
            tokio::spawn(media_loop(
                engine.clone(),
                channel.clone(),
                cfg.clone(),
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

/// Media fetches at once.
const MEDIA_AT_ONCE: usize = 4;
/// Fetch attempts before a media message is failed for good.
const MEDIA_ATTEMPTS: u32 = 5;

/// The media fetcher: the bytes of customers' photos, voice notes and documents, fetched
/// through their channel soon after the message is committed and kept in the store (media
/// ids expire after days). A temporary failure is retried with backoff; a refusal (too large,
/// a type we do not keep, a wrong checksum, an expired id) is recorded with why.
async fn media_loop(
    engine: Arc<Engine>,
    channel: Arc<dyn Channel>,
    cfg: WorkerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut after = 0;
    let poll = cfg.poll.max(Duration::from_millis(200));
    loop {
        if *stop.borrow() {
            break;
        }
        let tasks = match engine
            .store
            .media_to_fetch(after, now(), MEDIA_AT_ONCE as i64 * 4)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "reading media to fetch failed");
                Vec::new()
            }
        };
        let full = tasks.len() == MEDIA_AT_ONCE * 4;
        let mut fetches = tokio::task::JoinSet::new();
        for t in tasks {
            after = after.max(t.message_id);
            while fetches.len() >= MEDIA_AT_ONCE {
                fetches.join_next().await;
            }
            let (engine, channel) = (engine.clone(), channel.clone());
            fetches.spawn(async move { fetch_media(&engine, &*channel, t).await });
        }
        while fetches.join_next().await.is_some() {}
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn fetch_media(engine: &Engine, channel: &dyn Channel, t: MediaTask) {
    let ty = t.payload["type"].as_str().unwrap_or_default();
    let declared = &t.payload["message"][ty];
    let mut rec = MediaRecord {
        message_id: t.message_id,
        conversation_id: t.conversation_id,
        status: "failed".into(),
        mime_type: declared["mime_type"].as_str().map(String::from),
        bytes: None,
        error: None,
        attempts: t.attempts + 1,
        next_attempt_at: None,
        updated_at: now(),
    };
    match declared["id"].as_str() {
        None => rec.error = Some("the message names no media".into()),
        Some(id) => match channel.fetch_media(&t.channel, id).await {
            Ok(Some(f)) => {
                rec.status = "stored".into();
                rec.mime_type = Some(f.mime_type);
                rec.bytes = Some(f.bytes);
            }
            Ok(None) => rec.error = Some(format!("channel `{}` keeps no media", t.channel)),
            Err(crate::ports::MediaError::Retry(e)) if rec.attempts < MEDIA_ATTEMPTS => {
                rec.status = "retry".into();
                rec.next_attempt_at = Some(now() + 30_000 * (1 << rec.attempts.min(10)));
                rec.error = Some(e);
            }
            Err(e) => rec.error = Some(e.to_string()),
        },
    }
    if rec.status != "stored" {
        tracing::warn!(message.id = t.message_id, status = %rec.status, error = ?rec.error, "media not kept");
    }
    if let Err(e) = engine.store.save_media(&rec).await {
        tracing::error!(message.id = t.message_id, error = %e, "recording media failed");
    }
}

/// What one send task gives back: its lane, to free.
type Lane = (i64, String);

/// The dispatcher: starts sends concurrently, at most `sends_per_destination` per destination
/// and one at a time per lane (a conversation's rows to one destination), oldest first. Each
/// row is claimed (`sending`, committed) just before it is sent and only then, so a crash
/// leaves only the rows really in flight in doubt. On a shared store a lane is also held
/// against other instances while its row is sent; a dead instance's hold ends with it.
async fn outbox_loop(
    engine: Arc<Engine>,
    channel: Arc<dyn Channel>,
    notifier: Arc<arc_swap::ArcSwap<Arc<dyn Notifier>>>,
    cfg: WorkerConfig,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut recovered_at = std::time::Instant::now();
    let mut sends: tokio::task::JoinSet<Lane> = tokio::task::JoinSet::new();
    let mut lanes: Vec<Lane> = Vec::new();
    let mut per_destination: HashMap<String, usize> = HashMap::new();
    let free = |lane: &Lane, lanes: &mut Vec<Lane>, per: &mut HashMap<String, usize>| {
        lanes.retain(|l| l != lane);
        if let Some(n) = per.get_mut(&lane.1) {
            *n -= 1;
            if *n == 0 {
                per.remove(&lane.1);
            }
        }
    };
    loop {
        while let Some(done) = sends.try_join_next() {
            if let Ok(lane) = done {
                free(&lane, &mut lanes, &mut per_destination);
            }
        }
        if *stop.borrow() {
            // Sends in flight finish (each is bounded by its timeout); none is started.
            while sends.join_next().await.is_some() {}
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
        let mut started = false;
        let room = cfg.sends.saturating_sub(sends.len());
        if room > 0 {
            let full: Vec<String> = per_destination
                .iter()
                .filter(|(_, n)| **n >= cfg.sends_per_destination)
                .map(|(d, _)| d.clone())
                .collect();
            let due = match engine
                .store
                .due_outbox(now(), &full, &lanes, (room * 2) as i64)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "reading due outbound messages failed");
                    Vec::new()
                }
            };
            for d in due {
                let lane = (d.conversation_id, d.lane);
                if sends.len() >= cfg.sends
                    || lanes.contains(&lane)
                    || per_destination.get(&lane.1).copied().unwrap_or(0)
                        >= cfg.sends_per_destination
                {
                    continue;
                }
                let hold = if engine.store.shared() {
                    let key = format!("outbox:{}:{}", lane.0, lane.1);
                    match engine.store.try_hold(&key).await {
                        Ok(Some(h)) => Some(h),
                        // Another instance is sending this lane's previous row.
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::error!(error = %e, "holding an outbound lane failed");
                            continue;
                        }
                    }
                } else {
                    None
                };
                let row = match engine.store.claim_outbox(d.id, now()).await {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "claiming an outbound message failed");
                        continue;
                    }
                };
                lanes.push(lane.clone());
                *per_destination.entry(lane.1.clone()).or_default() += 1;
                started = true;
                let (engine, channel, notifier, cfg) = (
                    engine.clone(),
                    channel.clone(),
                    notifier.clone(),
                    cfg.clone(),
                );
                sends.spawn(async move {
                    deliver(&engine, &*channel, &notifier, &cfg, row).await;
                    drop(hold);
                    lane
                });
            }
        }
        if started {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(cfg.poll) => {}
            Some(done) = sends.join_next(), if !sends.is_empty() => {
                if let Ok(lane) = done {
                    free(&lane, &mut lanes, &mut per_destination);
                }
            }
            _ = stop.changed() => {}
        }
    }
}

/// Sends one claimed row and records the outcome: sent, retried later with backoff, failed
/// for good, or `unknown` (it may have arrived: at most once, never repeated).
async fn deliver(
    engine: &Engine,
    channel: &dyn Channel,
    notifier: &arc_swap::ArcSwap<Arc<dyn Notifier>>,
    cfg: &WorkerConfig,
    row: OutboxRow,
) {
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
    // The outcome is known: record it even if the database is away for a while (a send that
    // went out must not turn `unknown` for want of a write). Given up after a minute; the
    // row then stays `sending` and is recovered as `unknown` (never resent).
    let mut tries = 0;
    loop {
        match record(engine, cfg, &row, &result, t).await {
            Ok(()) => break,
            Err(e) if tries < 120 => {
                if tries == 0 {
                    tracing::warn!(outbox.id = row.id, error = %e, "recording a send failed; retrying");
                }
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::error!(outbox.id = row.id, error = %e, "recording a send failed");
                break;
            }
        }
    }
}

/// Records a send's outcome on its row (and message).
async fn record(
    engine: &Engine,
    cfg: &WorkerConfig,
    row: &OutboxRow,
    result: &Result<String, SendError>,
    t: Millis,
) -> Result<(), StoreError> {
    match result {
        Ok(provider_id) => engine.store.outbox_sent(row.id, provider_id, t).await,
        Err(SendError::Retry(e)) if row.attempts < cfg.max_attempts => {
            let delay =
                cfg.backoff.as_millis() as i64 * (1i64 << (row.attempts.saturating_sub(1)).min(16));
            engine
                .store
                .outbox_failed(row.id, e, Some(t + delay.min(300_000)), t)
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
        Err(SendError::Permanent(e)) => engine.store.outbox_failed(row.id, e, None, t).await,
        // At most once: a send that may have arrived is not repeated.
        Err(SendError::Unknown(e)) => engine.store.outbox_unknown(row.id, e, t).await,
        Err(SendError::WindowClosed(e)) => {
            engine.store.outbox_failed(row.id, e, None, t).await?;
            engine
                .send_refused(row.conversation_id, e, t)
                .await
                .map_err(|e| match e {
                    EngineError::Store(s) => s,
                    other => StoreError::Corrupt(other.to_string()),
                })
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
