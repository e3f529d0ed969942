//! The `chorus` command line, and the config file whose keys mirror its flags.
//!
//! Precedence, highest first: a flag, its `CHORUS_*` environment variable, the
//! `--config` TOML file, the default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches, Parser, Subcommand};
use serde::Deserialize;

use chorus_engine::SrtpProfile;

use crate::config::{ClusterSettings, NodeConfig};
use crate::ice::IceConfig;

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "Chorus WebRTC media node (SFU) for voice"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a media node: UDP media, HTTP + WebSocket signaling, and the demo page.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A TOML file whose keys are the flags' names (`udp = "0.0.0.0:7882"`,
    /// `token-secret = "…"`); flags and environment variables win over it.
    #[arg(long, env = "CHORUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Development mode: joins need no token and rooms are created on first join.
    #[arg(long, env = "CHORUS_DEV")]
    pub dev: bool,
    /// HTTP listen address (signaling at /v1/signal, demo page at /).
    #[arg(long, env = "CHORUS_HTTP", default_value = "127.0.0.1:7880")]
    pub http: SocketAddr,
    /// UDP media address: bound, and advertised as the ICE host candidate.
    #[arg(long, env = "CHORUS_UDP", default_value = "127.0.0.1:7882")]
    pub udp: SocketAddr,
    /// ICE-TCP listen address (RFC 6544: a passive TCP candidate for clients whose
    /// network blocks UDP), or `none`. Default: the --udp address (same IP and port).
    #[arg(long, env = "CHORUS_TCP")]
    pub tcp: Option<String>,
    /// ICE-TCP connections one IP address may hold at once (0: no limit).
    #[arg(long, env = "CHORUS_TCP_CONNECTIONS_PER_IP", default_value_t = 16)]
    pub tcp_connections_per_ip: usize,
    /// Shard threads, each with its own socket on the UDP port (default: one per core).
    #[arg(long, env = "CHORUS_SHARDS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: Option<u16>,
    /// An IP clients reach the node at, advertised in ICE candidates instead of the
    /// UDP address's (NAT; required with 0.0.0.0 or `[::]`). Repeatable: IPv4 and IPv6,
    /// or several NAT mappings, each a candidate on the UDP and TCP ports (the
    /// variable takes a comma-separated list).
    #[arg(long, env = "CHORUS_PUBLIC_IP", value_delimiter = ',')]
    pub public_ip: Vec<IpAddr>,
    /// Audio slots per subscriber in rooms created on join (1 to 32).
    #[arg(long, env = "CHORUS_AUDIO_SLOTS", default_value_t = 8,
          value_parser = clap::value_parser!(u8).range(1..=32))]
    pub audio_slots: u8,
    /// Video slots per subscriber in rooms created on join (0 to 16; 0: no video).
    #[arg(long, env = "CHORUS_VIDEO_SLOTS", default_value_t = 4,
          value_parser = clap::value_parser!(u8).range(0..=16))]
    pub video_slots: u8,
    /// Capacity of rooms created on join.
    #[arg(long, env = "CHORUS_MAX_PARTICIPANTS", default_value_t = 500)]
    pub max_participants: usize,
    /// Seconds without any datagram from a client before it is removed.
    #[arg(long, env = "CHORUS_DISCONNECT_TIMEOUT", default_value_t = 20)]
    pub disconnect_timeout: u64,
    /// Create rooms on first join without --dev too (otherwise only the control plane
    /// creates them).
    #[arg(long, env = "CHORUS_AUTO_CREATE_ROOMS")]
    pub auto_create_rooms: bool,
    /// Secret for the HS256 join tokens (required without --dev). Prefer the env var:
    /// command lines are visible to other users of the machine.
    #[arg(long, env = "CHORUS_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// WebSocket connections one IP address may hold at once (0: no limit); more get
    /// `rate_limited` and close 1013.
    #[arg(long, env = "CHORUS_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Seconds a new WebSocket may stay open without sending `join`.
    #[arg(long, env = "CHORUS_JOIN_TIMEOUT", default_value_t = 10)]
    pub join_timeout: u64,
    /// On SIGTERM, seconds to wait for participants to leave before closing their rooms
    /// (`room_closed {reason: "node_draining"}`) and exiting.
    #[arg(long, env = "CHORUS_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Joins (and resumes) per second one IP address may start, bursts of twice that
    /// (0: no limit); more get `rate_limited` and close 1013.
    #[arg(long, env = "CHORUS_JOIN_RATE_PER_IP", default_value_t = 10)]
    pub join_rate_per_ip: u32,
    /// Messages per second one WebSocket may send, bursts of twice that; more get
    /// `rate_limited` and are dropped.
    #[arg(long, env = "CHORUS_CLIENT_MESSAGE_RATE", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub client_message_rate: u32,
    /// Seconds an HTTP connection may take to send its request headers.
    #[arg(long, env = "CHORUS_HEADER_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Seconds a session whose WebSocket dropped can be resumed (`resume`) before it
    /// leaves (0: it leaves at once).
    #[arg(long, env = "CHORUS_RESUME_WINDOW", default_value_t = 15)]
    pub resume_window: u64,
    /// The control socket (JSON-RPC 2.0 for the backend and chorusctl; mode 0600), or
    /// `none`. Default: `$XDG_RUNTIME_DIR/chorus/control.sock`, else
    /// `/tmp/chorus/control.sock`.
    #[arg(long, env = "CHORUS_CONTROL")]
    pub control: Option<String>,
    /// Seconds between a participant's `quality` events on the control plane (0: none).
    #[arg(long, env = "CHORUS_QUALITY_INTERVAL", default_value_t = 5)]
    pub quality_interval: u64,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `chorus_engine=debug`.
    #[arg(long, env = "CHORUS_LOG", default_value = "info")]
    pub log: String,
    /// SRTP profiles the node agrees to, comma-separated, preferred first (default: all,
    /// AES-256-GCM first): `AEAD_AES_256_GCM`, `AEAD_AES_128_GCM`,
    /// `AES_CM_128_HMAC_SHA1_80` (or their `SRTP_…` IANA names). A client offering none
    /// of them connects without media.
    #[arg(long, env = "CHORUS_SRTP_PROFILES", value_delimiter = ',',
          value_parser = parse_srtp_profile)]
    pub srtp_profiles: Vec<SrtpProfile>,
    /// A STUN server for clients, e.g. `stun:stun.example.org:3478` (repeatable; the
    /// variable takes a comma-separated list). Handed out in `joined.ice_servers`.
    #[arg(long = "stun-url", env = "CHORUS_STUN_URL", value_delimiter = ',')]
    pub stun_urls: Vec<String>,
    /// A TURN server for clients (repeatable): `turn:host:3478?transport=udp`,
    /// `turn:host:3478?transport=tcp`, `turns:host:5349?transport=tcp`. Each client gets
    /// time-limited credentials for it (coturn's REST scheme); needs --turn-secret.
    #[arg(long = "turn-url", env = "CHORUS_TURN_URL", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// The TURN server's shared secret (coturn `static-auth-secret`). Prefer the env
    /// var: command lines are visible to other users of the machine.
    #[arg(long, env = "CHORUS_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Seconds a TURN credential stays valid after it is handed out (60 to 604800).
    #[arg(long, env = "CHORUS_TURN_TTL", default_value_t = 86_400)]
    pub turn_ttl: u64,
    /// The cluster's directory, e.g. `redis://10.0.0.2:6379`. Without it the node
    /// runs alone; with it, it joins the other nodes registered there (needs
    /// --cluster-secret).
    #[arg(long, env = "CHORUS_REDIS")]
    pub redis: Option<String>,
    /// Where the QUIC relay between nodes listens (UDP). Never open it to clients:
    /// only nodes that know --cluster-secret get through.
    #[arg(long, env = "CHORUS_RELAY", default_value = "0.0.0.0:7890")]
    pub relay: SocketAddr,
    /// The secret the nodes of a cluster prove to each other on the relay. Prefer the
    /// env var: command lines are visible to other users of the machine.
    #[arg(long, env = "CHORUS_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// The signaling URL other nodes send clients to (`redirect`); default:
    /// `ws://<first --public-ip, or the --http address>/v1/signal`.
    #[arg(long, env = "CHORUS_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
}

/// An SRTP profile by its name in WebRTC statistics (`srtpCipher`) or its IANA name.
pub fn parse_srtp_profile(name: &str) -> Result<SrtpProfile, String> {
    let name = name.trim();
    let iana = match name.to_ascii_uppercase().as_str() {
        "AES_CM_128_HMAC_SHA1_80" => "SRTP_AES128_CM_HMAC_SHA1_80".to_owned(),
        "AEAD_AES_128_GCM" | "AEAD_AES_256_GCM" => format!("SRTP_{name}"),
        _ => name.to_owned(),
    };
    SrtpProfile::from_name(&iana).ok_or_else(|| {
        format!(
            "unknown SRTP profile {name:?}: use AEAD_AES_256_GCM, AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80"
        )
    })
}

/// A config-file key that takes one value or a list (`public-ip = "203.0.113.10"` or
/// `public-ip = ["203.0.113.10", "2001:db8::10"]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> From<OneOrMany<T>> for Vec<T> {
    fn from(v: OneOrMany<T>) -> Self {
        match v {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// The config file: every key optional, named like its flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    dev: Option<bool>,
    http: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    tcp: Option<String>,
    tcp_connections_per_ip: Option<usize>,
    shards: Option<u16>,
    public_ip: Option<OneOrMany<IpAddr>>,
    audio_slots: Option<u8>,
    video_slots: Option<u8>,
    max_participants: Option<usize>,
    disconnect_timeout: Option<u64>,
    auto_create_rooms: Option<bool>,
    token_secret: Option<String>,
    drain_timeout: Option<u64>,
    max_connections_per_ip: Option<usize>,
    join_timeout: Option<u64>,
    control: Option<String>,
    quality_interval: Option<u64>,
    join_rate_per_ip: Option<u32>,
    resume_window: Option<u64>,
    client_message_rate: Option<u32>,
    header_timeout: Option<u64>,
    log: Option<String>,
    srtp_profiles: Option<Vec<String>>,
    stun_url: Option<Vec<String>>,
    turn_url: Option<Vec<String>>,
    turn_secret: Option<String>,
    turn_ttl: Option<u64>,
    redis: Option<String>,
    relay: Option<SocketAddr>,
    cluster_secret: Option<String>,
    advertise_url: Option<String>,
}

/// Why the command line or the config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ServeArgs {
    /// The `serve` arguments from parsed matches, with the config file (if any) filling
    /// in what no flag or environment variable set.
    pub fn resolve(matches: &ArgMatches) -> Result<ServeArgs, CliError> {
        let mut args =
            ServeArgs::from_arg_matches(matches).map_err(|e| CliError::Invalid(e.to_string()))?;
        if let Some(path) = args.config.clone() {
            let text = std::fs::read_to_string(&path).map_err(|source| CliError::Read {
                path: path.clone(),
                source,
            })?;
            args.merge_file(matches, &path, &text)?;
        }
        args.check()?;
        Ok(args)
    }

    fn merge_file(
        &mut self,
        matches: &ArgMatches,
        path: &Path,
        text: &str,
    ) -> Result<(), CliError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| CliError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // Only where the value is the default (or absent) does the file count.
        let unset = |id: &str| {
            !matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        macro_rules! take {
            ($field:ident, $id:literal) => {
                take!($field => $field, $id)
            };
            // A key named unlike its field (`turn-url` fills `turn_urls`).
            ($key:ident => $field:ident, $id:literal) => {
                if let Some(v) = file.$key {
                    if unset($id) {
                        self.$field = v.into();
                    }
                }
            };
        }
        take!(dev, "dev");
        take!(http, "http");
        take!(udp, "udp");
        take!(shards, "shards");
        take!(public_ip, "public_ip");
        take!(audio_slots, "audio_slots");
        take!(video_slots, "video_slots");
        take!(max_participants, "max_participants");
        take!(disconnect_timeout, "disconnect_timeout");
        take!(auto_create_rooms, "auto_create_rooms");
        take!(token_secret, "token_secret");
        take!(drain_timeout, "drain_timeout");
        take!(max_connections_per_ip, "max_connections_per_ip");
        take!(join_timeout, "join_timeout");
        if let Some(v) = file.control {
            if unset("control") {
                self.control = Some(v);
            }
        }
        take!(quality_interval, "quality_interval");
        take!(join_rate_per_ip, "join_rate_per_ip");
        take!(resume_window, "resume_window");
        take!(client_message_rate, "client_message_rate");
        take!(header_timeout, "header_timeout");
        take!(log, "log");
        take!(tcp, "tcp");
        take!(tcp_connections_per_ip, "tcp_connections_per_ip");
        take!(turn_secret, "turn_secret");
        take!(turn_ttl, "turn_ttl");
        take!(relay, "relay");
        for (value, id, field) in [
            (file.redis, "redis", &mut self.redis),
            (
                file.cluster_secret,
                "cluster_secret",
                &mut self.cluster_secret,
            ),
            (file.advertise_url, "advertise_url", &mut self.advertise_url),
        ] {
            if value.is_some() && unset(id) {
                *field = value;
            }
        }
        take!(stun_url => stun_urls, "stun_urls");
        take!(turn_url => turn_urls, "turn_urls");
        if let Some(names) = file.srtp_profiles {
            if unset("srtp_profiles") {
                self.srtp_profiles = names
                    .iter()
                    .map(|n| parse_srtp_profile(n))
                    .collect::<Result<_, _>>()
                    .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?;
            }
        }
        if !(1..=32).contains(&self.audio_slots) {
            return Err(CliError::Invalid(format!(
                "{}: audio-slots must be 1 to 32, not {}",
                path.display(),
                self.audio_slots
            )));
        }
        if self.video_slots > 16 {
            return Err(CliError::Invalid(format!(
                "{}: video-slots must be 0 to 16, not {}",
                path.display(),
                self.video_slots
            )));
        }
        if self.shards.is_some_and(|s| s == 0 || s > 256) {
            return Err(CliError::Invalid(format!(
                "{}: shards must be 1 to 256",
                path.display()
            )));
        }
        Ok(())
    }

    /// The node configuration these arguments describe.
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            dev: self.dev,
            http: self.http,
            udp: self.udp,
            public_ips: self.public_ips(),
            shards: self
                .shards
                .map(usize::from)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            audio_slots: self.audio_slots,
            video_slots: self.video_slots,
            max_participants: self.max_participants,
            disconnect_timeout: Duration::from_secs(self.disconnect_timeout),
            token_secret: self.token_secret.clone(),
            auto_create_rooms: self.auto_create_rooms,
            max_connections_per_ip: self.max_connections_per_ip,
            join_timeout: Duration::from_secs(self.join_timeout.max(1)),
            control: self.control_path(),
            join_rate_per_ip: self.join_rate_per_ip,
            resume_window: Duration::from_secs(self.resume_window),
            client_message_rate: self.client_message_rate.max(1),
            header_timeout: Duration::from_secs(self.header_timeout.max(1)),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            quality_interval: (self.quality_interval > 0)
                .then(|| Duration::from_secs(self.quality_interval)),
            srtp_profiles: (!self.srtp_profiles.is_empty()).then(|| self.srtp_profiles.clone()),
            ice: self.ice_config(),
            tcp: self.tcp_addr().unwrap_or(None),
            tcp_connections_per_ip: self.tcp_connections_per_ip,
            cluster: self.redis.clone().map(|redis| ClusterSettings {
                redis,
                relay: self.relay,
                secret: self.cluster_secret.clone().unwrap_or_default(),
                advertise_url: self.advertise_url.clone(),
            }),
        }
    }

    /// The ICE-TCP address: `--tcp`, `none` (`None`), or by default the UDP address.
    pub fn tcp_addr(&self) -> Result<Option<SocketAddr>, CliError> {
        match self.tcp.as_deref() {
            None => Ok(Some(self.udp)),
            Some("none") => Ok(None),
            Some(a) => a.parse().map(Some).map_err(|_| {
                CliError::Invalid(format!(
                    "--tcp {a:?}: expected an address (IP:PORT) or none"
                ))
            }),
        }
    }

    /// The STUN/TURN settings (checked by [`ServeArgs::check`]).
    pub fn ice_config(&self) -> IceConfig {
        IceConfig {
            stun_urls: self.stun_urls.clone(),
            turn_urls: self.turn_urls.clone(),
            turn_secret: self.turn_secret.clone(),
            turn_ttl: Duration::from_secs(self.turn_ttl),
        }
    }

    /// `--public-ip`, each once, in the order given.
    pub fn public_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = Vec::with_capacity(self.public_ip.len());
        for ip in &self.public_ip {
            if !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        ips
    }

    /// Whether each `--public-ip` can be reached through the socket bound to `bind`
    /// (`what` names it in the error): an IPv4 socket takes only IPv4, an IPv6 one
    /// only IPv6 unless it is `[::]` (dual-stack).
    fn check_public_ips(&self, what: &str, bind: SocketAddr) -> Result<(), CliError> {
        if bind.ip().is_unspecified() && self.public_ip.is_empty() {
            return Err(CliError::Invalid(format!(
                "{what} {bind} binds every interface: also give --public-ip, the address clients reach"
            )));
        }
        for ip in &self.public_ip {
            // What ICE takes as a host candidate (str0m refuses the rest: every join
            // would fail).
            let unusable = ip.is_unspecified()
                || ip.is_multicast()
                || matches!(ip, IpAddr::V4(v4) if v4.is_link_local() || v4.is_broadcast());
            if unusable {
                return Err(CliError::Invalid(format!(
                    "--public-ip {ip}: not an address clients can reach"
                )));
            }
            if let IpAddr::V6(v6) = ip {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return Err(CliError::Invalid(format!(
                        "--public-ip {ip}: an IPv4-mapped address; give the IPv4 address {v4}"
                    )));
                }
            }
            let reachable = match bind {
                SocketAddr::V4(_) => ip.is_ipv4(),
                SocketAddr::V6(v6) => ip.is_ipv6() || v6.ip().is_unspecified(),
            };
            if !reachable {
                return Err(CliError::Invalid(format!(
                    "--public-ip {ip} cannot reach {what} {bind} (another IP family): bind {what} [::]:{} to take IPv4 and IPv6",
                    bind.port()
                )));
            }
        }
        Ok(())
    }

    /// What the flags cannot check one by one.
    pub fn check(&self) -> Result<(), CliError> {
        self.check_public_ips("--udp", self.udp)?;
        if self.redis.is_some() && self.cluster_secret.as_deref().is_none_or(str::is_empty) {
            return Err(CliError::Invalid(
                "--redis needs --cluster-secret (or CHORUS_CLUSTER_SECRET): nodes prove it to each other on the relay".into(),
            ));
        }
        if let Some(url) = &self.advertise_url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(CliError::Invalid(format!(
                    "--advertise-url {url:?}: expected a ws:// or wss:// URL"
                )));
            }
        }
        if let Some(tcp) = self.tcp_addr()? {
            self.check_public_ips("--tcp", tcp)?;
        }
        self.ice_config()
            .check()
            .map_err(|e| CliError::Invalid(e.to_string()))
    }

    /// Where the control socket goes: `--control`, or the default path; `none`: nowhere.
    pub fn control_path(&self) -> Option<PathBuf> {
        match self.control.as_deref() {
            Some("none") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => Some(chorus_protocol::control::default_socket_path(
                std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::CommandFactory;

    use super::*;

    fn resolve(argv: &[&str], file: &str) -> Result<ServeArgs, CliError> {
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let serve = matches.subcommand_matches("serve").unwrap();
        let mut args = ServeArgs::from_arg_matches(serve).unwrap();
        args.merge_file(serve, Path::new("chorus.toml"), file)?;
        Ok(args)
    }

    #[test]
    fn the_file_fills_in_what_flags_do_not_set() {
        let args = resolve(
            &["chorus", "serve", "--http", "127.0.0.1:9000"],
            "http = \"0.0.0.0:1\"\nudp = \"127.0.0.1:9002\"\ndev = true\naudio-slots = 4\ntoken-secret = \"s\"\nshards = 3\n",
        )
        .unwrap();
        assert_eq!(
            args.http,
            "127.0.0.1:9000".parse().unwrap(),
            "the flag wins"
        );
        assert_eq!(
            args.udp,
            "127.0.0.1:9002".parse().unwrap(),
            "the file beats the default"
        );
        assert!(args.dev);
        assert_eq!(args.audio_slots, 4);
        assert_eq!(args.token_secret.as_deref(), Some("s"));
        assert_eq!(args.node_config().shards, 3);
    }

    #[test]
    fn srtp_profiles_by_stats_or_iana_name_from_flag_or_file() {
        let args = resolve(&["chorus", "serve"], "").unwrap();
        assert_eq!(args.node_config().srtp_profiles, None, "default: all");
        let args = resolve(
            &[
                "chorus",
                "serve",
                "--srtp-profiles",
                "AES_CM_128_HMAC_SHA1_80,aead_aes_128_gcm",
            ],
            "",
        )
        .unwrap();
        assert_eq!(
            args.node_config().srtp_profiles,
            Some(vec![
                SrtpProfile::Aes128CmSha1_80,
                SrtpProfile::AeadAes128Gcm
            ])
        );
        let args = resolve(
            &["chorus", "serve"],
            "srtp-profiles = [\"SRTP_AEAD_AES_256_GCM\"]",
        )
        .unwrap();
        assert_eq!(
            args.node_config().srtp_profiles,
            Some(vec![SrtpProfile::AeadAes256Gcm])
        );
        assert!(resolve(&["chorus", "serve"], "srtp-profiles = [\"ROT13\"]").is_err());
        let bad =
            Cli::command().try_get_matches_from(["chorus", "serve", "--srtp-profiles", "NULL"]);
        assert!(
            bad.is_err(),
            "an unknown profile is refused with a clear error"
        );
    }

    #[test]
    fn control_socket_path_default_file_and_none() {
        let args = resolve(&["chorus", "serve"], "control = \"/run/x.sock\"").unwrap();
        assert_eq!(args.control_path(), Some(PathBuf::from("/run/x.sock")));
        let args = resolve(&["chorus", "serve", "--control", "none"], "").unwrap();
        assert_eq!(args.control_path(), None);
        let args = resolve(&["chorus", "serve"], "").unwrap();
        assert!(args
            .control_path()
            .is_some_and(|p| p.ends_with("chorus/control.sock")));
        let args = resolve(&["chorus", "serve", "--quality-interval", "0"], "").unwrap();
        assert_eq!(args.node_config().quality_interval, None);
    }

    #[test]
    fn public_ips_repeat_and_must_match_the_sockets() {
        let args = resolve(
            &[
                "chorus",
                "serve",
                "--udp",
                "[::]:7882",
                "--public-ip",
                "203.0.113.10",
                "--public-ip",
                "2001:db8::10",
                "--public-ip",
                "203.0.113.10",
            ],
            "",
        )
        .unwrap();
        args.check().unwrap();
        let ips: Vec<IpAddr> = vec![
            "203.0.113.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        assert_eq!(args.node_config().public_ips, ips, "each once, in order");
        // The file takes one or a list.
        let one = resolve(&["chorus", "serve"], "public-ip = \"203.0.113.10\"").unwrap();
        assert_eq!(one.public_ips(), ips[..1]);
        let list = resolve(
            &["chorus", "serve", "--udp", "[::]:7882"],
            "public-ip = [\"203.0.113.10\", \"2001:db8::10\"]",
        )
        .unwrap();
        assert_eq!(list.public_ips(), ips);
        // Wildcard without a public IP; a family the socket cannot take; 0.0.0.0.
        for (argv, says) in [
            (vec!["--udp", "0.0.0.0:7882"], "also give --public-ip"),
            (
                vec!["--udp", "0.0.0.0:7882", "--public-ip", "2001:db8::10"],
                "another IP family",
            ),
            (
                vec!["--udp", "[::1]:7882", "--public-ip", "203.0.113.10"],
                "another IP family",
            ),
            (
                vec!["--udp", "127.0.0.1:7882", "--tcp", "0.0.0.0:443"],
                "--tcp 0.0.0.0:443 binds every interface",
            ),
            (
                vec!["--public-ip", "0.0.0.0"],
                "not an address clients can reach",
            ),
            (
                vec!["--public-ip", "169.254.1.1"],
                "not an address clients can reach",
            ),
            (
                vec!["--public-ip", "255.255.255.255"],
                "not an address clients can reach",
            ),
            (
                vec!["--udp", "[::]:7882", "--public-ip", "::ffff:203.0.113.10"],
                "give the IPv4 address 203.0.113.10",
            ),
        ] {
            let argv: Vec<&str> = ["chorus", "serve"].into_iter().chain(argv).collect();
            let e = resolve(&argv, "").unwrap().check().err().unwrap();
            assert!(e.to_string().contains(says), "{argv:?}: {e}");
        }
    }

    #[test]
    fn a_bad_file_is_a_clear_error() {
        let e = resolve(&["chorus", "serve"], "udpp = \"x\"").err().unwrap();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = resolve(&["chorus", "serve"], "audio-slots = 99")
            .err()
            .unwrap();
        assert!(e.to_string().contains("1 to 32"), "{e}");
        let e = resolve(&["chorus", "serve"], "udp = 5").err().unwrap();
        assert!(e.to_string().contains("chorus.toml"), "{e}");
    }
}
