//! The QUIC relay between the nodes of one cluster.
//!
//! Each pair of nodes shares one QUIC connection, dialled by the node with the lower
//! [`NodeIndex`] (so the two never race to open two). On it:
//!
//! - media travels as unreliable QUIC datagrams ([`Relay::send_datagram`],
//!   [`RelayEvent::Datagram`]): opaque bytes to this module, dropped rather than
//!   queued when the path is congested — fine for audio;
//! - room state travels as frames (`u32` big-endian length + bytes, at most
//!   [`MAX_FRAME`]) on one reliable bidirectional stream ([`Relay::send_message`],
//!   [`RelayEvent::Message`]), in order.
//!
//! The relay is never open to clients. TLS only encrypts (each node makes a fresh
//! self-signed certificate at [`Relay::bind`] and the dialer accepts any server
//! certificate); what admits a peer is the cluster secret. Right after the QUIC
//! handshake both sides send a hello on the stream carrying
//! `HMAC-SHA256(secret, "chorus relay v1" || role || index || exporter)`, where
//! `exporter` is 32 bytes of TLS keying material of *this* connection, so a hello
//! can be neither replayed on another connection nor reflected back (the role byte
//! differs). Until both hellos check out nothing the peer sends is delivered; a
//! peer that fails is closed, counted in [`RelayStats::auth_failures`] and logged.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use aws_lc_rs::hmac;
use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::sync::mpsc;

use crate::ClusterError;

/// Nodes are named by their cluster node number (1..=255).
pub type NodeIndex = u16;

/// The largest frame [`Relay::send_message`] accepts and the stream reader admits
/// (1 MiB). A peer announcing a larger one is disconnected.
pub const MAX_FRAME: usize = 1 << 20;

/// The longest node id a hello carries (bytes of UTF-8).
pub const MAX_NODE_ID: usize = 1024;

/// Capacity of the event channel returned by [`Relay::bind`].
pub const EVENT_CAPACITY: usize = 65_536;

/// The ALPN protocol both sides must speak.
const ALPN: &[u8] = b"chorus-relay/1";
/// Server name the dialer presents (the certificate is not checked against it).
const SERVER_NAME: &str = "chorus-relay";
/// Hello magic and version.
const HELLO_MAGIC: &[u8; 4] = b"CHRL";
const HELLO_VERSION: u8 = 1;
/// MAC domain separation.
const MAC_LABEL: &[u8] = b"chorus relay v1";
/// Exporter label for the keying material the MAC is bound to.
const EXPORTER_LABEL: &[u8] = b"chorus relay auth";
const EXPORTER_LEN: usize = 32;
const MAC_LEN: usize = 32;
/// Magic + version + index + node id length + node id + mac.
const MAX_HELLO: usize = 4 + 1 + 2 + 2 + MAX_NODE_ID + MAC_LEN;
/// How long the hello exchange may take once QUIC is up.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound on a QUIC handshake when dialling (the idle timeout bounds it too).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Incoming connections that may be in their handshake or hello at once.
const MAX_PENDING: usize = 256;

/// Application close codes.
const CLOSE_NORMAL: u32 = 0;
const CLOSE_AUTH: u32 = 1;
const CLOSE_FRAME: u32 = 2;
const CLOSE_REPLACED: u32 = 3;
const CLOSE_FORGOTTEN: u32 = 4;
const CLOSE_PROTOCOL: u32 = 5;

/// How to run a [`Relay`].
#[derive(Clone)]
pub struct RelayConfig {
    /// The UDP address to listen on, e.g. `0.0.0.0:7890` or `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The cluster secret (`--cluster-secret`); must not be empty.
    pub secret: Vec<u8>,
    /// Our node number (1..=255).
    pub index: NodeIndex,
    /// Our node id, for logs and the hello.
    pub node_id: String,
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("listen", &self.listen)
            .field("secret", &"<redacted>")
            .field("index", &self.index)
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// What the relay reports, in order per peer.
#[derive(Debug, Clone)]
pub enum RelayEvent {
    /// A connection to `node` is up and authenticated (either direction).
    PeerUp {
        /// The peer's node number.
        node: NodeIndex,
        /// The node id it announced.
        node_id: String,
    },
    /// It is gone (closed, idle-timed-out, failed). Emitted once per `PeerUp`.
    PeerDown {
        /// The peer's node number.
        node: NodeIndex,
    },
    /// A frame from the reliable stream, in order.
    Message {
        /// The sending node.
        from: NodeIndex,
        /// The frame's bytes (without the length prefix).
        frame: Bytes,
    },
    /// A datagram.
    Datagram {
        /// The sending node.
        from: NodeIndex,
        /// The datagram's bytes.
        data: Bytes,
    },
}

/// Counters of a [`Relay`] since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams handed to QUIC.
    pub datagrams_out: u64,
    /// Datagrams received from authenticated peers.
    pub datagrams_in: u64,
    /// Payload bytes sent (datagrams and frames, without framing).
    pub bytes_out: u64,
    /// Payload bytes received (datagrams and frames, without framing).
    pub bytes_in: u64,
    /// Frames written to the reliable stream.
    pub messages_out: u64,
    /// Frames read from the reliable stream.
    pub messages_in: u64,
    /// Connections that did not complete the authenticated hello.
    pub auth_failures: u64,
    /// Received datagrams dropped because the event channel was full.
    pub datagrams_dropped: u64,
}

#[derive(Default)]
struct Counters {
    datagrams_out: AtomicU64,
    datagrams_in: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    messages_in: AtomicU64,
    auth_failures: AtomicU64,
    datagrams_dropped: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Which end of the connection we are; part of the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Dialer = 0,
    Acceptor = 1,
}

impl Role {
    fn other(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }
}

/// How a connection came to be.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// We dialled `node` at `addr`; `token` identifies the dial attempt.
    Dialed {
        node: NodeIndex,
        addr: SocketAddr,
        token: u64,
    },
    /// The peer dialled us.
    Accepted,
}

/// An authenticated connection.
struct Peer {
    conn: Connection,
    frames: mpsc::UnboundedSender<Vec<u8>>,
    /// Set while a `PeerUp` for this connection stands without its `PeerDown`;
    /// whoever swaps it to false emits the `PeerDown`.
    up: Arc<AtomicBool>,
    /// The address we dialled, if we dialled.
    dialed: Option<SocketAddr>,
}

#[derive(Default)]
struct State {
    peers: HashMap<NodeIndex, Peer>,
    /// Dials under way: node → attempt token.
    dialing: HashMap<NodeIndex, u64>,
    next_token: u64,
}

/// What the background tasks share.
struct Shared {
    endpoint: quinn::Endpoint,
    runtime: tokio::runtime::Handle,
    index: NodeIndex,
    node_id: String,
    key: hmac::Key,
    state: RwLock<State>,
    /// Serialises peer lifecycle events so that `PeerDown` of a replaced connection
    /// always precedes the `PeerUp` of its successor.
    lifecycle: tokio::sync::Mutex<()>,
    events: mpsc::Sender<RelayEvent>,
    counters: Counters,
    pending: AtomicUsize,
    closed: AtomicBool,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn clear_dial(&self, node: NodeIndex, token: u64) {
        let mut state = self.write();
        if state.dialing.get(&node) == Some(&token) {
            state.dialing.remove(&node);
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let peers: Vec<Peer> = {
            let mut state = self.write();
            state.dialing.clear();
            state.peers.drain().map(|(_, peer)| peer).collect()
        };
        for peer in peers {
            peer.conn
                .close(VarInt::from_u32(CLOSE_NORMAL), b"relay closing");
        }
        self.endpoint
            .close(VarInt::from_u32(CLOSE_NORMAL), b"relay closing");
    }
}

/// Closes the relay when the last [`Relay`] handle is dropped.
struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// The QUIC endpoint between this node and the other nodes of the cluster.
///
/// Cheap to clone; the relay closes when the last clone is dropped (or on
/// [`Relay::close`]).
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("index", &self.inner.shared.index)
            .field("node_id", &self.inner.shared.node_id)
            .field("local_addr", &self.local_addr())
            .finish()
    }
}

impl Relay {
    /// Binds the endpoint (server + client config) and starts accepting.
    ///
    /// Must be called from within a tokio runtime; the relay's tasks run on it (the
    /// other methods may be called from any thread). Events go to the returned
    /// receiver, bounded at [`EVENT_CAPACITY`]: when it is full, datagram events
    /// are dropped (and counted), messages and peer events wait.
    pub fn bind(config: RelayConfig) -> Result<(Relay, mpsc::Receiver<RelayEvent>), ClusterError> {
        if config.secret.is_empty() {
            return Err(ClusterError::Config("the cluster secret is empty".into()));
        }
        if config.index == 0 {
            return Err(ClusterError::Config("node index 0 is not valid".into()));
        }
        if config.node_id.len() > MAX_NODE_ID {
            return Err(ClusterError::Config(format!(
                "node id longer than {MAX_NODE_ID} bytes"
            )));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ClusterError::Io(std::io::Error::other(
                "the relay must be bound inside a tokio runtime",
            ))
        })?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let transport = Arc::new(transport_config());
        let mut server = server_config(&provider)?;
        server.transport_config(transport.clone());
        let mut client = client_config(&provider)?;
        client.transport_config(transport);

        let mut endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::server(server, config.listen)?
        };
        endpoint.set_default_client_config(client);

        let (events, receiver) = mpsc::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            endpoint,
            runtime: runtime.clone(),
            index: config.index,
            node_id: config.node_id,
            key: hmac::Key::new(hmac::HMAC_SHA256, &config.secret),
            state: RwLock::new(State::default()),
            lifecycle: tokio::sync::Mutex::new(()),
            events,
            counters: Counters::default(),
            pending: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        tracing::info!(
            index = shared.index,
            node_id = %shared.node_id,
            addr = ?shared.endpoint.local_addr().ok(),
            "relay listening"
        );
        runtime.spawn(accept_loop(shared.clone()));
        Ok((
            Relay {
                inner: Arc::new(Inner { shared }),
            },
            receiver,
        ))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The address the endpoint is bound to (with the actual port when `listen`
    /// asked for port 0). `0.0.0.0:0` if the socket is gone.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared()
            .endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Makes sure a connection to `node` at `addr` exists or is being made.
    ///
    /// Only the node with the lower index dials: if ours is higher (or equal) this
    /// does nothing and the other side will dial us. Idempotent and non-blocking
    /// (the dial runs in a task). A failed dial is retried on the next call. If we
    /// hold a connection we dialled to a different address (the node restarted
    /// elsewhere under the same number), a new one is dialled and replaces it.
    pub fn ensure_peer(&self, node: NodeIndex, addr: SocketAddr) {
        let shared = self.shared();
        if node <= shared.index || shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let token = {
            let mut state = shared.write();
            if state.dialing.contains_key(&node) {
                return;
            }
            if let Some(peer) = state.peers.get(&node) {
                if peer.dialed.is_none_or(|dialed| dialed == addr) {
                    return;
                }
            }
            state.next_token = state.next_token.wrapping_add(1);
            let token = state.next_token;
            state.dialing.insert(node, token);
            token
        };
        tracing::debug!(index = shared.index, node, %addr, "relay dialling");
        shared
            .runtime
            .spawn(dial(shared.clone(), node, addr, token));
    }

    /// Drops the connection to a node (it left the directory), and any dial to it.
    /// A `PeerDown` follows if it was up.
    pub fn forget_peer(&self, node: NodeIndex) {
        let shared = self.shared();
        let peer = {
            let mut state = shared.write();
            state.dialing.remove(&node);
            state.peers.remove(&node)
        };
        if let Some(peer) = peer {
            tracing::info!(index = shared.index, node, "relay forgetting peer");
            peer.conn
                .close(VarInt::from_u32(CLOSE_FORGOTTEN), b"forgotten");
        }
    }

    /// Sends a datagram to `node`; false if there is no authenticated connection
    /// to it or the datagram does not fit (`max_datagram_size`). Never blocks; when
    /// QUIC's send buffer is full the oldest queued datagrams are dropped.
    pub fn send_datagram(&self, node: NodeIndex, data: Bytes) -> bool {
        let shared = self.shared();
        let conn = match shared.read().peers.get(&node) {
            Some(peer) => peer.conn.clone(),
            None => return false,
        };
        let len = data.len() as u64;
        match conn.send_datagram(data) {
            Ok(()) => {
                bump(&shared.counters.datagrams_out, 1);
                bump(&shared.counters.bytes_out, len);
                true
            }
            Err(_) => false,
        }
    }

    /// [`Relay::send_datagram`] only while the connection's datagram send buffer
    /// keeps `reserve` bytes free after it: what is less urgent (video) gives way
    /// before it could push out what is more (voice), which quinn would drop oldest
    /// first. False when it was not sent.
    pub fn send_datagram_leaving(&self, node: NodeIndex, data: Bytes, reserve: usize) -> bool {
        let room = self
            .shared()
            .read()
            .peers
            .get(&node)
            .map(|peer| peer.conn.datagram_send_buffer_space());
        match room {
            Some(space) if space >= data.len() + reserve => self.send_datagram(node, data),
            _ => false,
        }
    }

    /// The largest datagram `node`'s connection carries now, if it is up.
    pub fn max_datagram_size(&self, node: NodeIndex) -> Option<usize> {
        self.shared()
            .read()
            .peers
            .get(&node)
            .and_then(|peer| peer.conn.max_datagram_size())
    }

    /// Queues a frame on the reliable stream to `node` (an unbounded per-peer
    /// queue drained by a writer task); false if there is no authenticated
    /// connection to it or the frame exceeds [`MAX_FRAME`].
    pub fn send_message(&self, node: NodeIndex, frame: Vec<u8>) -> bool {
        if frame.len() > MAX_FRAME {
            return false;
        }
        match self.shared().read().peers.get(&node) {
            Some(peer) => peer.frames.send(frame).is_ok(),
            None => false,
        }
    }

    /// The nodes with an authenticated connection, in ascending order.
    pub fn peers(&self) -> Vec<NodeIndex> {
        let mut peers: Vec<NodeIndex> = self.shared().read().peers.keys().copied().collect();
        peers.sort_unstable();
        peers
    }

    /// Counters since bind, for metrics and benchmarks.
    pub fn stats(&self) -> RelayStats {
        let c = &self.shared().counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RelayStats {
            datagrams_out: get(&c.datagrams_out),
            datagrams_in: get(&c.datagrams_in),
            bytes_out: get(&c.bytes_out),
            bytes_in: get(&c.bytes_in),
            messages_out: get(&c.messages_out),
            messages_in: get(&c.messages_in),
            auth_failures: get(&c.auth_failures),
            datagrams_dropped: get(&c.datagrams_dropped),
        }
    }

    /// Closes every connection and the endpoint. Peers that were up get their
    /// `PeerDown`; nothing is accepted or dialled afterwards.
    pub fn close(&self) {
        tracing::info!(index = self.shared().index, "relay closing");
        self.shared().close();
    }
}

fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(quinn::IdleTimeout::from(VarInt::from_u32(3_000))))
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .initial_mtu(1452)
        .datagram_receive_buffer_size(Some(1 << 20))
        .datagram_send_buffer_size(256 << 10)
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    transport
}

fn server_config(provider: &Arc<CryptoProvider>) -> Result<quinn::ServerConfig, ClusterError> {
    let tls_err = |e: &dyn fmt::Display| ClusterError::Tls(e.to_string());
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| tls_err(&e))?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| tls_err(&e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| tls_err(&e))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

fn client_config(provider: &Arc<CryptoProvider>) -> Result<quinn::ClientConfig, ClusterError> {
    let tls_err = |e: &dyn fmt::Display| ClusterError::Tls(e.to_string());
    let verifier = AnyServerCert {
        algorithms: provider.signature_verification_algorithms,
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| tls_err(&e))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// Accepts any server certificate (peers are authenticated by the cluster secret,
/// bound to the TLS session), but checks handshake signatures properly so the
/// session really belongs to the holder of the certificate's key.
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Decrements the pending-handshake count when dropped.
struct PendingGuard(Arc<Shared>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        if shared.closed.load(Ordering::SeqCst) {
            incoming.refuse();
            break;
        }
        if shared.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
            shared.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                index = shared.index,
                remote = %incoming.remote_address(),
                "relay refusing connection: too many pending handshakes"
            );
            incoming.refuse();
            continue;
        }
        let guard = PendingGuard(shared.clone());
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => run_connection(shared, conn, Origin::Accepted, Some(guard)).await,
                Err(e) => {
                    tracing::debug!(index = shared.index, %remote, error = %e, "relay handshake failed");
                }
            }
        });
    }
    tracing::debug!(index = shared.index, "relay accept loop ended");
}

async fn dial(shared: Arc<Shared>, node: NodeIndex, addr: SocketAddr, token: u64) {
    let connected = async {
        let connecting = shared
            .endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        }
    }
    .await;
    match connected {
        Ok(conn) => {
            let origin = Origin::Dialed { node, addr, token };
            run_connection(shared, conn, origin, None).await;
        }
        Err(reason) => {
            let e = ClusterError::Connect { addr, reason };
            tracing::warn!(index = shared.index, node, error = %e, "relay dial failed");
            shared.clear_dial(node, token);
        }
    }
}

/// What the peer said in its hello.
struct Hello {
    index: NodeIndex,
    node_id: String,
    mac: [u8; MAC_LEN],
}

/// Authenticates a fresh connection, registers it and serves it until it closes.
async fn run_connection(
    shared: Arc<Shared>,
    conn: Connection,
    origin: Origin,
    pending: Option<PendingGuard>,
) {
    let role = match origin {
        Origin::Dialed { .. } => Role::Dialer,
        Origin::Accepted => Role::Acceptor,
    };
    let remote = conn.remote_address();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, handshake(&shared, &conn, role)).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ClusterError::Auth("hello timed out".into())),
    };
    drop(pending);
    let (send, recv, hello) = match hello {
        Ok(done) => done,
        Err(e) => {
            bump(&shared.counters.auth_failures, 1);
            let code = match e {
                ClusterError::Auth(_) => CLOSE_AUTH,
                _ => CLOSE_PROTOCOL,
            };
            conn.close(VarInt::from_u32(code), b"authentication failed");
            tracing::warn!(index = shared.index, %remote, ?role, error = %e, "relay peer rejected");
            if let Origin::Dialed { node, token, .. } = origin {
                shared.clear_dial(node, token);
            }
            return;
        }
    };
    let node = hello.index;

    // Register and announce, with the lifecycle lock held so that a replaced
    // connection's PeerDown precedes our PeerUp.
    let lifecycle = shared.lifecycle.lock().await;
    let up = Arc::new(AtomicBool::new(true));
    let (frames, frames_rx) = mpsc::unbounded_channel();
    let registered = {
        let mut state = shared.write();
        if shared.closed.load(Ordering::SeqCst) {
            Err("relay closed".to_string())
        } else {
            let wanted = match origin {
                Origin::Dialed {
                    node: dialed,
                    token,
                    ..
                } => {
                    let current = state.dialing.get(&dialed) == Some(&token);
                    if current {
                        state.dialing.remove(&dialed);
                    }
                    if dialed != node {
                        Err(format!("dialled node {dialed} but node {node} answered"))
                    } else if !current {
                        Err("dial no longer wanted".to_string())
                    } else {
                        Ok(())
                    }
                }
                Origin::Accepted => Ok(()),
            };
            wanted.map(|()| {
                let dialed = match origin {
                    Origin::Dialed { addr, .. } => Some(addr),
                    Origin::Accepted => None,
                };
                state.peers.insert(
                    node,
                    Peer {
                        conn: conn.clone(),
                        frames,
                        up: up.clone(),
                        dialed,
                    },
                )
            })
        }
    };
    let replaced = match registered {
        Ok(replaced) => replaced,
        Err(reason) => {
            drop(lifecycle);
            tracing::info!(index = shared.index, node, %remote, %reason, "relay dropping connection");
            conn.close(VarInt::from_u32(CLOSE_NORMAL), b"not wanted");
            return;
        }
    };
    if let Some(old) = replaced {
        tracing::info!(
            index = shared.index,
            node,
            "relay replacing older connection"
        );
        old.conn
            .close(VarInt::from_u32(CLOSE_REPLACED), b"replaced");
        if old.up.swap(false, Ordering::SeqCst) {
            let _ = shared.events.send(RelayEvent::PeerDown { node }).await;
        }
    }
    tracing::info!(
        index = shared.index,
        node,
        node_id = %hello.node_id,
        %remote,
        ?role,
        "relay peer up"
    );
    let _ = shared
        .events
        .send(RelayEvent::PeerUp {
            node,
            node_id: hello.node_id,
        })
        .await;
    drop(lifecycle);

    tokio::spawn(write_frames(shared.clone(), node, send, frames_rx));
    tokio::spawn(read_datagrams(
        shared.clone(),
        node,
        conn.clone(),
        up.clone(),
    ));
    read_frames(&shared, node, &conn, recv, &up).await;

    // The stream is gone: the connection is of no further use.
    conn.close(VarInt::from_u32(CLOSE_NORMAL), b"closing");
    let reason = conn.close_reason();
    let _lifecycle = shared.lifecycle.lock().await;
    {
        let mut state = shared.write();
        if state
            .peers
            .get(&node)
            .is_some_and(|peer| peer.conn.stable_id() == conn.stable_id())
        {
            state.peers.remove(&node);
        }
    }
    if up.swap(false, Ordering::SeqCst) {
        tracing::info!(index = shared.index, node, reason = ?reason, "relay peer down");
        let _ = shared.events.send(RelayEvent::PeerDown { node }).await;
    }
}

/// Opens (dialer) or accepts (acceptor) the stream and exchanges hellos.
async fn handshake(
    shared: &Shared,
    conn: &Connection,
    role: Role,
) -> Result<(SendStream, RecvStream, Hello), ClusterError> {
    let frame_err = |e: &dyn fmt::Display| ClusterError::Frame(e.to_string());
    let (mut send, mut recv) = match role {
        Role::Dialer => conn.open_bi().await,
        Role::Acceptor => conn.accept_bi().await,
    }
    .map_err(|e| frame_err(&e))?;
    let mut exporter = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .map_err(|_| ClusterError::Auth("TLS keying material unavailable".into()))?;

    let ours = encode_hello(shared, role, &exporter);
    write_frame(&mut send, &ours)
        .await
        .map_err(|e| frame_err(&e))?;
    let theirs = read_frame(&mut recv, MAX_HELLO)
        .await?
        .ok_or_else(|| ClusterError::Frame("stream ended before the hello".into()))?;
    let hello = parse_hello(&theirs)?;
    let input = mac_input(role.other(), hello.index, &exporter);
    hmac::verify(&shared.key, &input, &hello.mac)
        .map_err(|_| ClusterError::Auth(format!("bad MAC from claimed node {}", hello.index)))?;
    if hello.index == 0 || hello.index == shared.index {
        return Err(ClusterError::Auth(format!(
            "peer claims node index {}",
            hello.index
        )));
    }
    Ok((send, recv, hello))
}

fn mac_input(role: Role, index: NodeIndex, exporter: &[u8; EXPORTER_LEN]) -> [u8; 50] {
    let mut input = [0u8; 50];
    let (label, rest) = input.split_at_mut(MAC_LABEL.len());
    label.copy_from_slice(MAC_LABEL);
    rest[0] = role as u8;
    rest[1..3].copy_from_slice(&index.to_be_bytes());
    rest[3..].copy_from_slice(exporter);
    input
}

fn encode_hello(shared: &Shared, role: Role, exporter: &[u8; EXPORTER_LEN]) -> Vec<u8> {
    let node_id = shared.node_id.as_bytes();
    let mut out = Vec::with_capacity(9 + node_id.len() + MAC_LEN);
    out.extend_from_slice(HELLO_MAGIC);
    out.push(HELLO_VERSION);
    out.extend_from_slice(&shared.index.to_be_bytes());
    // bind() caps the node id at MAX_NODE_ID bytes, which fits a u16.
    out.extend_from_slice(&(node_id.len() as u16).to_be_bytes());
    out.extend_from_slice(node_id);
    let tag = hmac::sign(&shared.key, &mac_input(role, shared.index, exporter));
    out.extend_from_slice(tag.as_ref());
    out
}

fn parse_hello(bytes: &[u8]) -> Result<Hello, ClusterError> {
    let bad = |why: &str| ClusterError::Frame(format!("bad hello: {why}"));
    let rest = bytes
        .strip_prefix(HELLO_MAGIC.as_slice())
        .ok_or_else(|| bad("magic"))?;
    let (&version, rest) = rest.split_first().ok_or_else(|| bad("short"))?;
    if version != HELLO_VERSION {
        return Err(bad(&format!("version {version}")));
    }
    let (index, rest) = rest.split_at_checked(2).ok_or_else(|| bad("short"))?;
    let index = u16::from_be_bytes([index[0], index[1]]);
    let (len, rest) = rest.split_at_checked(2).ok_or_else(|| bad("short"))?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > MAX_NODE_ID {
        return Err(bad("node id too long"));
    }
    let (node_id, mac) = rest.split_at_checked(len).ok_or_else(|| bad("short"))?;
    let mac: [u8; MAC_LEN] = mac.try_into().map_err(|_| bad("mac length"))?;
    let node_id = std::str::from_utf8(node_id)
        .map_err(|_| bad("node id is not UTF-8"))?
        .to_string();
    Ok(Hello {
        index,
        node_id,
        mac,
    })
}

async fn write_frame(send: &mut SendStream, frame: &[u8]) -> Result<(), quinn::WriteError> {
    // Frames are capped at MAX_FRAME (well under u32::MAX) before they get here.
    let len = (frame.len() as u32).to_be_bytes();
    send.write_all(&len).await?;
    send.write_all(frame).await
}

/// Reads one frame; `Ok(None)` when the stream ended cleanly between frames.
async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Option<Vec<u8>>, ClusterError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(ClusterError::Frame(e.to_string())),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(ClusterError::Frame(format!(
            "frame of {len} bytes exceeds {max}"
        )));
    }
    let mut frame = vec![0u8; len];
    recv.read_exact(&mut frame)
        .await
        .map_err(|e| ClusterError::Frame(e.to_string()))?;
    Ok(Some(frame))
}

async fn read_frames(
    shared: &Shared,
    node: NodeIndex,
    conn: &Connection,
    mut recv: RecvStream,
    up: &AtomicBool,
) {
    loop {
        match read_frame(&mut recv, MAX_FRAME).await {
            Ok(Some(frame)) => {
                if !up.load(Ordering::SeqCst) {
                    return;
                }
                bump(&shared.counters.messages_in, 1);
                bump(&shared.counters.bytes_in, frame.len() as u64);
                let event = RelayEvent::Message {
                    from: node,
                    frame: Bytes::from(frame),
                };
                if shared.events.send(event).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                tracing::debug!(index = shared.index, node, "relay stream finished by peer");
                return;
            }
            Err(e) => {
                if conn.close_reason().is_none() {
                    tracing::warn!(index = shared.index, node, error = %e, "relay stream error");
                    conn.close(VarInt::from_u32(CLOSE_FRAME), b"bad frame");
                }
                return;
            }
        }
    }
}

async fn write_frames(
    shared: Arc<Shared>,
    node: NodeIndex,
    mut send: SendStream,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(frame) = frames.recv().await {
        if let Err(e) = write_frame(&mut send, &frame).await {
            tracing::debug!(index = shared.index, node, error = %e, "relay stream write failed");
            return;
        }
        bump(&shared.counters.messages_out, 1);
        bump(&shared.counters.bytes_out, frame.len() as u64);
    }
    let _ = send.finish();
}

async fn read_datagrams(
    shared: Arc<Shared>,
    node: NodeIndex,
    conn: Connection,
    up: Arc<AtomicBool>,
) {
    while let Ok(data) = conn.read_datagram().await {
        if !up.load(Ordering::Relaxed) {
            return;
        }
        bump(&shared.counters.datagrams_in, 1);
        bump(&shared.counters.bytes_in, data.len() as u64);
        match shared
            .events
            .try_send(RelayEvent::Datagram { from: node, data })
        {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&shared.counters.datagrams_dropped, 1);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
