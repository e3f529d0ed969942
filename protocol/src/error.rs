//! Errors of the parsers and writers in this crate.

/// Why a buffer could not be read as the packet it claimed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer ended before the structure did.
    #[error("truncated: needed {needed} bytes, had {had}")]
    Truncated { needed: usize, had: usize },
    /// A version field held a value we do not speak.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// A field held a value the RFC forbids.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Why a packet could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The output buffer cannot hold the packet.
    #[error("buffer too small: needed {needed} bytes, had {had}")]
    BufferTooSmall { needed: usize, had: usize },
    /// An input does not fit the wire format (a count, an id or a length out of range).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The value to rewrite in place is not present in the packet.
    #[error("{0} not present")]
    NotPresent(&'static str),
}
