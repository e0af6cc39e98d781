//! HTTP API (axum). See ARCHITECTURE.md; built by issues #4 and #5.
