//! Connectors: implementations of the engine's ports. Today the sandbox channel (records what
//! would be sent) and the demo store (orders from fixtures); WhatsApp, web chat and Shopify
//! follow (issues #4 and #7).

pub mod demo;
pub mod sandbox;
pub mod whatsapp;
