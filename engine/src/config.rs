//! What a shard is told at start.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_srtp::SrtpProfile;

/// Default number of audio slots per subscriber (per room).
pub const DEFAULT_AUDIO_SLOTS: u8 = 8;
/// Most slots a room may ask for: str0m's per-packet cost grows with m-lines.
pub const MAX_AUDIO_SLOTS: u8 = 32;

#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// The address advertised as the ICE host candidate; every datagram of its IP
    /// family is taken as sent to it (str0m drops STUN whose destination is not a local
    /// candidate).
    pub local_addr: SocketAddr,
    /// The address advertised as the passive ICE-TCP host candidate (RFC 6544), and
    /// taken as the destination of every datagram of its family that came over TCP;
    /// `None`: no TCP.
    pub tcp_addr: Option<SocketAddr>,
    /// More IPs the node is reached at (`--public-ip` given more than once: IPv6 next
    /// to IPv4, several NAT mappings), each advertised as a host candidate too, on the
    /// UDP port and on the TCP port. A datagram from an address of a family
    /// `local_addr` is not of is taken as sent to the first of these of its family.
    pub extra_ips: Vec<IpAddr>,
    /// Audio slots of rooms created on first join.
    pub audio_slots: u8,
    /// Video slots per client in rooms created by a join (0: no video).
    pub video_slots: u8,
    /// Capacity of rooms created on first join.
    pub max_participants: usize,
    /// Create a room when its first participant joins (`--dev`).
    pub auto_create_rooms: bool,
    /// A participant whose media has been silent this long (no datagram at all, not
    /// even STUN consent checks) is removed and announced as left.
    pub disconnect_timeout: Duration,
    /// How often each participant's `quality` event is produced (str0m's stats
    /// interval); `None`: never.
    pub quality_interval: Option<Duration>,
    /// Seeds the shard's own randomness (initial sequence numbers and timestamps).
    pub seed: u64,
    /// The wall-clock time at the `now` the shard is created with: RTCP sender
    /// reports carry wall-clock (NTP) time, and the core never reads a clock. The
    /// driver sets it; the default is a fixed date, for deterministic tests.
    pub wallclock_at_start: SystemTime,
    /// The SRTP profiles the node's DTLS agrees to, in order of preference; `None`:
    /// str0m's default (AES-256-GCM, AES-128-GCM, AES-CM-128-HMAC-SHA1-80). The slot
    /// streams Chorus seals itself follow whichever was negotiated.
    pub srtp_profiles: Option<Vec<SrtpProfile>>,
    /// The node's number in its cluster (0: a node alone). Participant ids and CSRCs
    /// carry it; with it, rooms report their own members' changes
    /// ([`crate::Event::Roster`]) and relay local speakers' packets to other nodes.
    pub node: crate::cluster::NodeIndex,
}

impl ShardConfig {
    pub fn new(local_addr: SocketAddr) -> Self {
        ShardConfig {
            local_addr,
            tcp_addr: None,
            extra_ips: Vec::new(),
            audio_slots: DEFAULT_AUDIO_SLOTS,
            video_slots: chorus_protocol::control::RoomKind::Guild
                .defaults()
                .video_slots,
            max_participants: 500,
            auto_create_rooms: true,
            disconnect_timeout: Duration::from_secs(20),
            quality_interval: Some(Duration::from_secs(5)),
            seed: 0x00c0_ffee,
            // 2026-01-01T00:00:00Z
            wallclock_at_start: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            srtp_profiles: None,
            node: 0,
        }
    }
}

impl ShardConfig {
    /// How often a quiet participant's str0m is woken for its own timers at most
    /// ([`crate::participant::QUIET_RTC_EVERY`], or the `quality` interval if that is
    /// shorter: statistics keep their period).
    pub(crate) fn quiet_rtc_every(&self) -> Duration {
        let every = crate::participant::QUIET_RTC_EVERY;
        self.quality_interval.map_or(every, |q| q.min(every))
    }

    /// The node's address a peer's datagrams are taken as sent to, and its copies as
    /// sent from (what str0m knows the pair by): the transport's advertised address,
    /// or, for a peer of the other IP family, the first extra IP of that family on the
    /// transport's port.
    pub fn local_for(&self, peer: crate::io::Peer) -> SocketAddr {
        let primary = match peer.proto {
            crate::io::Protocol::Tcp => self.tcp_addr.unwrap_or(self.local_addr),
            crate::io::Protocol::Udp => self.local_addr,
        };
        if primary.is_ipv4() == peer.addr.is_ipv4() {
            return primary;
        }
        self.extra_ips
            .iter()
            .find(|ip| ip.is_ipv4() == peer.addr.is_ipv4())
            .map_or(primary, |ip| SocketAddr::new(*ip, primary.port()))
    }

    /// Every UDP host candidate: `local_addr`, then each extra IP on its port.
    pub fn udp_candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.local_addr).chain(
            self.extra_ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, self.local_addr.port())),
        )
    }

    /// Every TCP host candidate: `tcp_addr`, then each extra IP on its port; none
    /// without TCP.
    pub fn tcp_candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.tcp_addr.into_iter().flat_map(|tcp| {
            std::iter::once(tcp).chain(
                self.extra_ips
                    .iter()
                    .map(move |ip| SocketAddr::new(*ip, tcp.port())),
            )
        })
    }
}
