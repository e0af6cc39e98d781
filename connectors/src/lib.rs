//! Connectors: implementations of the engine's ports — the sandbox channel (records what would
//! be sent), the demo store (orders from fixtures or a file), the WhatsApp Cloud API (webhook
//! payloads in `whatsapp`, sending in `cloud_api`), Shopify (`shopify`: order lookups and
//! writes, order webhook payloads) and outbound webhooks (`webhooks`); `assemble` builds a
//! pack's connectors from the environment.

pub mod assemble;
pub mod channels;
pub mod cloud_api;
pub mod demo;
pub mod http_lookup;
pub mod llm;
pub mod sandbox;
pub mod shopify;
pub mod webchat;
pub mod webhooks;
pub mod whatsapp;
