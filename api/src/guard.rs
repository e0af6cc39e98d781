//! Failed authentication, limited per client address: after [`FAILURES`] wrong tokens in a
//! minute from one address, that address's requests with a token not seen valid recently are
//! refused (429) *before* the token is looked at, until the minute is over — so guessing is
//! slow, while agents already signed in from the same office (one address behind NAT or a
//! proxy) keep working.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens an address may send in a window.
pub const FAILURES: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Tables are cleared past this many entries (a flood of addresses cannot grow them).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct AuthGuard {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per address: the window's start and its failures.
    failures: HashMap<IpAddr, (Instant, u32)>,
    /// Token hashes that were valid recently, with when.
    good: HashMap<String, Instant>,
}

impl AuthGuard {
    /// Whether a request from `ip` with token `hash` may be checked now; `Err(seconds)` to
    /// wait otherwise.
    pub fn admit(&self, ip: Option<IpAddr>, hash: &str) -> Result<(), u64> {
        let Some(ip) = ip else { return Ok(()) };
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match g.failures.get(&ip) {
            Some((start, n)) if *n >= FAILURES && start.elapsed() < WINDOW => {
                if g.good.get(hash).is_some_and(|t| t.elapsed() < WINDOW * 60) {
                    Ok(())
                } else {
                    Err((WINDOW - start.elapsed()).as_secs().max(1))
                }
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.failures.len() > MAX_ENTRIES {
            g.failures.retain(|_, (start, _)| start.elapsed() < WINDOW);
            if g.failures.len() > MAX_ENTRIES {
                g.failures.clear();
            }
        }
        let e = g.failures.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }

    pub fn succeeded(&self, hash: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.good.len() > MAX_ENTRIES {
            g.good.clear();
        }
        g.good.insert(hash.to_string(), Instant::now());
    }
}
