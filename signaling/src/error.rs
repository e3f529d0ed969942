//! Errors of starting and running a node.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalingError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("media engine: {0}")]
    Engine(#[from] chorus_engine::EngineError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] chorus_cluster::ClusterError),
}
