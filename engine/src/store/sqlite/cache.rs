//! The write-through cache of conversation contexts: what was committed, kept in memory
//! (a SQLite file belongs to one process).

use super::*;

/// Contexts by conversation id, and conversation ids by `channel:external_id`.
#[derive(Debug, Default)]
pub(super) struct ContextCache {
    inner: std::sync::Mutex<(HashMap<i64, Context>, HashMap<String, i64>)>,
}

const CACHE_MAX: usize = 50_000;

impl ContextCache {
    pub(super) fn by_key(&self, key: &str) -> Option<Context> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.get(key).and_then(|id| g.0.get(id)).cloned()
    }
    pub(super) fn by_id(&self, id: i64) -> Option<Context> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(&id)
            .cloned()
    }
    pub(super) fn put(&self, ctx: &Context) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.len() >= CACHE_MAX {
            g.0.clear();
            g.1.clear();
        }
        let key = format!("{}:{}", ctx.contact.channel, ctx.contact.external_id);
        g.1.insert(key, ctx.conversation.id);
        g.0.insert(
            ctx.conversation.id,
            Context {
                created: false,
                ..ctx.clone()
            },
        );
    }
    /// After a commit: the cached context becomes what was written.
    pub(super) fn committed(&self, cs: &Changeset) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ctx) = g.0.get_mut(&cs.conversation_id) else {
            return;
        };
        if let Some(c) = &cs.conversation {
            ctx.conversation = c.clone();
        }
        if let Some(c) = &cs.contact {
            ctx.contact = c.clone();
        }
        for t in &cs.tickets {
            if t.ticket.status.is_open() {
                ctx.ticket = Some(t.ticket.clone());
            } else if ctx.ticket.as_ref().is_some_and(|o| o.id == t.ticket.id) {
                ctx.ticket = None;
            }
        }
    }
    pub(super) fn forget(&self, id: i64) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .remove(&id);
    }
}
