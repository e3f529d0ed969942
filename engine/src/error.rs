//! Errors of the engine's own API (never of network input: that is dropped and counted).

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("could not generate the DTLS certificate")]
    Certificate,
    #[error("the local ICE candidate {addr} is not usable: {reason}")]
    Candidate {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
