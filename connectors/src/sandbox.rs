//! The sandbox channel and notifier: they record what would be sent, for the demo and tests.

use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;
use switchyard_engine::model::Outbound;
use switchyard_engine::ports::{Channel, LookupError, Notifier, SendError};

#[derive(Debug, Default)]
pub struct SandboxChannel {
    sent: Mutex<Vec<(String, Outbound)>>,
    /// Print each message instead of keeping it (for `serve` without credentials).
    print: std::sync::atomic::AtomicBool,
    count: std::sync::atomic::AtomicU64,
}

impl SandboxChannel {
    pub fn new() -> SandboxChannel {
        SandboxChannel::default()
    }

    /// A sandbox that prints what it would send on stdout and keeps nothing.
    pub fn printing() -> SandboxChannel {
        let s = SandboxChannel::default();
        s.set_printing(true);
        s
    }

    /// From now on, print (`true`) or keep (`false`) what is sent.
    pub fn set_printing(&self, on: bool) {
        self.print.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Everything sent so far, with the ids it was given.
    pub fn sent(&self) -> Vec<(String, Outbound)> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl Channel for SandboxChannel {
    async fn send(&self, message: &Outbound) -> Result<String, SendError> {
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let id = format!("sandbox.{}.{n}", std::process::id());
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if self.print.load(std::sync::atomic::Ordering::SeqCst) {
            println!(
                "[sandbox → {} {}] {}",
                message.channel, message.to, message.text
            );
        } else {
            sent.push((id.clone(), message.clone()));
        }
        Ok(id)
    }
}

#[derive(Debug, Default)]
pub struct SandboxNotifier {
    posted: Mutex<Vec<(String, Value)>>,
}

impl SandboxNotifier {
    pub fn posted(&self) -> Vec<(String, Value)> {
        self.posted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Notifier for SandboxNotifier {
    async fn notify(&self, connector: &str, body: &Value) -> Result<(), LookupError> {
        self.posted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((connector.to_string(), body.clone()));
        Ok(())
    }
}
