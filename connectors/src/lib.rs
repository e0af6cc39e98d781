//! Connectors: implementations of the engine's ports — the sandbox channel (records what would
//! be sent), the demo store (orders from fixtures), the WhatsApp Cloud API (webhook payloads in
//! `whatsapp`, sending in `cloud_api`). Shopify follows (issue #7).

pub mod channels;
pub mod cloud_api;
pub mod demo;
pub mod sandbox;
pub mod whatsapp;
