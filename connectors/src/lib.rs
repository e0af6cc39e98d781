//! Channel and lookup connectors. See ARCHITECTURE.md; built by issues #4 and #7.
