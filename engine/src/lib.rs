//! The Switchyard engine: domain model, the durable pipeline, flows, routing and assignment,
//! tickets, the `Store` port with its SQLite and PostgreSQL implementations (`store`), workers, and the pack test runner.
//! It talks to vendors only through the ports in [`ports`]; it knows no HTTP.

pub mod access;
pub mod desk;
pub mod domain;
pub mod feed;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod ports;
pub mod replay;
pub mod reports;
pub mod store;

pub use pipeline::{Engine, EngineError};
pub use store::{Store, StoreError};
pub mod testing;
pub mod trace;
pub mod worker;
