//! Domain model, pipeline, store. See ARCHITECTURE.md; built by issue #3.
