//! What a shard is told at start.

use std::net::SocketAddr;
use std::time::Duration;

use chorus_protocol::signal::IceServer;

/// Default number of audio slots per subscriber (per room).
pub const DEFAULT_AUDIO_SLOTS: u8 = 8;
/// Most slots a room may ask for: str0m's per-packet cost grows with m-lines.
pub const MAX_AUDIO_SLOTS: u8 = 32;

#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// The address advertised as the ICE host candidate; every datagram is taken as
    /// sent to it (str0m drops STUN whose destination is not a local candidate).
    pub local_addr: SocketAddr,
    /// Audio slots of rooms created on first join.
    pub audio_slots: u8,
    /// Capacity of rooms created on first join.
    pub max_participants: usize,
    /// Create a room when its first participant joins (`--dev`).
    pub auto_create_rooms: bool,
    /// Handed to clients in `joined`.
    pub ice_servers: Vec<IceServer>,
    /// A participant whose media has been silent this long (no datagram at all, not
    /// even STUN consent checks) is removed and announced as left.
    pub disconnect_timeout: Duration,
    /// How often each participant's `quality` event is produced (str0m's stats
    /// interval); `None`: never.
    pub quality_interval: Option<Duration>,
    /// Seeds the shard's own randomness (initial sequence numbers and timestamps).
    pub seed: u64,
}

impl ShardConfig {
    pub fn new(local_addr: SocketAddr) -> Self {
        ShardConfig {
            local_addr,
            audio_slots: DEFAULT_AUDIO_SLOTS,
            max_participants: 500,
            auto_create_rooms: true,
            ice_servers: Vec::new(),
            disconnect_timeout: Duration::from_secs(20),
            quality_interval: Some(Duration::from_secs(5)),
            seed: 0x00c0_ffee,
        }
    }
}
