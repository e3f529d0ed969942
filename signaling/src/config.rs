//! How a node is set up (the `chorus serve` flags, parsed).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use chorus_engine::config::DEFAULT_AUDIO_SLOTS;
use chorus_engine::SrtpProfile;

use crate::ice::IceConfig;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Development mode: no token needed, rooms are created on first join.
    pub dev: bool,
    /// HTTP and WebSocket listen address.
    pub http: SocketAddr,
    /// UDP media address, bound and advertised as the ICE host candidate.
    pub udp: SocketAddr,
    /// Shard threads, each with its own socket on the UDP port (`SO_REUSEPORT`).
    pub shards: usize,
    /// The IPs advertised instead of the UDP (and TCP) address's: the first as the
    /// primary host candidate, each further one as another (`--public-ip`, repeatable).
    pub public_ips: Vec<IpAddr>,
    pub audio_slots: u8,
    /// Video slots per client in rooms created on join (0: no video).
    pub video_slots: u8,
    pub max_participants: usize,
    pub disconnect_timeout: Duration,
    /// Create a room when its first participant joins, also without `--dev`.
    pub auto_create_rooms: bool,
    /// The HS256 secret join tokens are signed with. Without it, only `--dev` joins
    /// (no token) are possible.
    pub token_secret: Option<String>,
    /// WebSocket connections one IP address may hold at once (0: no limit).
    pub max_connections_per_ip: usize,
    /// A connection that has not sent `join` this long after opening is closed.
    pub join_timeout: Duration,
    /// Messages per second a client may send (bursts of twice that pass).
    pub client_message_rate: u32,
    /// Joins (and resumes) per second one IP address may start, bursts of twice that
    /// (0: no limit).
    pub join_rate_per_ip: u32,
    /// How long a session whose WebSocket dropped can be resumed (0: it leaves at once).
    pub resume_window: Duration,
    /// How long an HTTP connection may take to send its request headers.
    pub header_timeout: Duration,
    /// The control socket's path (`None`: no control socket).
    pub control: Option<PathBuf>,
    /// How long `node.drain` waits for participants to leave, when it gives no
    /// deadline.
    pub drain_timeout: Duration,
    /// How often each participant's `quality` event is produced (`None`: never).
    pub quality_interval: Option<Duration>,
    /// SRTP profiles the node agrees to, preferred first (`None`: all).
    pub srtp_profiles: Option<Vec<SrtpProfile>>,
    /// STUN and TURN servers for clients.
    pub ice: IceConfig,
    /// ICE-TCP listen address (`None`: no ICE-TCP).
    pub tcp: Option<SocketAddr>,
    /// ICE-TCP connections one IP address may hold at once (0: no limit).
    pub tcp_connections_per_ip: usize,
    /// In a cluster (`--redis`); `None`: the node runs alone.
    pub cluster: Option<ClusterSettings>,
}

/// How a node joins a cluster.
#[derive(Clone)]
pub struct ClusterSettings {
    /// `--redis`.
    pub redis: String,
    /// `--relay`.
    pub relay: SocketAddr,
    /// `--cluster-secret`.
    pub secret: String,
    /// `--advertise-url`; `None`: from `--public-ip` or `--http`.
    pub advertise_url: Option<String>,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis", &self.redis)
            .field("relay", &self.relay)
            .field("secret", &"<redacted>")
            .field("advertise_url", &self.advertise_url)
            .finish()
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            dev: true,
            http: SocketAddr::from(([127, 0, 0, 1], 7880)),
            udp: SocketAddr::from(([127, 0, 0, 1], 7882)),
            shards: 1,
            public_ips: Vec::new(),
            audio_slots: DEFAULT_AUDIO_SLOTS,
            video_slots: 4,
            max_participants: 500,
            disconnect_timeout: Duration::from_secs(20),
            auto_create_rooms: false,
            token_secret: None,
            max_connections_per_ip: 256,
            join_timeout: Duration::from_secs(10),
            client_message_rate: 50,
            join_rate_per_ip: 10,
            header_timeout: crate::http::HEADER_TIMEOUT,
            resume_window: Duration::from_secs(15),
            control: None,
            drain_timeout: Duration::from_secs(30),
            quality_interval: Some(Duration::from_secs(5)),
            srtp_profiles: None,
            ice: IceConfig::default(),
            tcp: None,
            tcp_connections_per_ip: 16,
            cluster: None,
        }
    }
}
