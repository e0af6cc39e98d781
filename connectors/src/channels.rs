//! Routing outbound messages to the connector of their channel.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use switchyard_engine::model::Outbound;
use switchyard_engine::ports::{Channel, Fetched, MediaError, SendError};

/// A [`Channel`] that hands each message to the connector registered for its
/// `Outbound::channel` (`whatsapp`, `webchat`, …), and the rest to a fallback (the sandbox).
pub struct ByChannel {
    routes: HashMap<String, Arc<dyn Channel>>,
    fallback: Arc<dyn Channel>,
}

impl ByChannel {
    pub fn new(fallback: Arc<dyn Channel>) -> ByChannel {
        ByChannel {
            routes: HashMap::new(),
            fallback,
        }
    }

    /// Sends messages of `channel` through `connector`.
    pub fn with(mut self, channel: &str, connector: Arc<dyn Channel>) -> ByChannel {
        self.routes.insert(channel.to_string(), connector);
        self
    }
}

#[async_trait]
impl Channel for ByChannel {
    async fn send(&self, message: &Outbound) -> Result<String, SendError> {
        self.routes
            .get(&message.channel)
            .unwrap_or(&self.fallback)
            .send(message)
            .await
    }

    async fn fetch_media(
        &self,
        channel: &str,
        media_id: &str,
    ) -> Result<Option<Fetched>, MediaError> {
        self.routes
            .get(channel)
            .unwrap_or(&self.fallback)
            .fetch_media(channel, media_id)
            .await
    }
}
