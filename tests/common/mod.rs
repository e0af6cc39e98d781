//! Helpers the binary's test files share (each file is a test binary of its own).

/// A port nothing listens on (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
