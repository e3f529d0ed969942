//! Capturing each session's DTLS-SRTP keys from str0m, without forking it.
//!
//! str0m 0.25 takes a crypto provider per `Rtc` (`RtcConfig::set_crypto_provider`) whose
//! fields are `&'static dyn …`; it calls `DtlsProvider::new_dtls` exactly once,
//! synchronously, inside `RtcConfig::build` (str0m `src/lib.rs` ~1286 → `src/dtls.rs` ~66).
//! [`build_rtc`] puts a per-session sink in a thread-local right before `build` and takes
//! it back right after; our [`DtlsProvider`] hands the sink to the instance it creates,
//! and the instance, which wraps dimpl's `Dtls` and passes every call through, copies
//! `DtlsOutput::KeyingMaterial(material, profile)` into the sink on its way to str0m
//! (the same output str0m keys its own SRTP from, str0m `src/lib.rs` ~1701).
//!
//! Once the handshake is over and quiet for [`DTLS_RETIRE_AFTER`] (as DTLS 1.2
//! server; [`DTLS_CLIENT_RETIRE_AFTER`] otherwise), an instance that carries no
//! application data (no data channel) drops dimpl's state, keeps a copy of its final
//! flight to send again if the client retransmits its own (RFC 6347 §4.2.4), and
//! answers str0m from a few fields ([`KeyCapture::dtls_retired`] tells): ~8 KB per
//! session.
//!
//! The instances are built from one cached `dimpl::Config` per MTU: building a config
//! runs the crypto provider's self-tests (~1 ms), which str0m's default provider does
//! for every `Rtc`.
//!
//! # RSA client certificates
//!
//! As DTLS server, dimpl asks only for ECDSA client certificates; OpenSSL-based clients
//! (GStreamer's webrtcbin) present RSA ones. `capture/client_cert.rs` widens the
//! CertificateRequest on its way out and verifies RSA CertificateVerify signatures;
//! the transcript patches below make dimpl's hash and verifier see the request as
//! sent.
//!
//! # Restricting the SRTP profiles
//!
//! Neither str0m nor dimpl 0.9 can be told which SRTP profiles to negotiate: a dimpl
//! server picks AES-256-GCM, then AES-128-GCM, then `AES_CM_128_HMAC_SHA1_80` from what
//! the client offers (dimpl `src/dtls12/server.rs` ~455). With
//! [`set_srtp_profiles`] / [`build_rtc_with`], the DTLS *server* side (Chorus answers
//! `a=setup:passive`) rewrites the `use_srtp` extension of the client's ClientHello
//! before dimpl parses it: every profile id but the first of ours the client offers
//! becomes an id dimpl skips (0x0000), in place (same length). The handshake
//! transcript must still be the client's bytes (Finished, the extended master secret
//! and the client's CertificateVerify cover it), so the dimpl crypto provider given to
//! every instance wraps the hash and signature-verification primitives and, while one
//! of our restricted instances is working, puts the original ClientHello back into any
//! data they see. Nothing is weakened: the transcript authenticates exactly what the
//! client sent, and the profile chosen is one it offered.
//!
//! Limits: DTLS 1.2 only (str0m's default), a ClientHello of at most 16 KiB whose
//! fragments arrive in order (Chromium 156 fragments its ClientHello), and only as DTLS
//! server; as client (active) the restriction is ignored with a
//! warning. A client that offers none of the allowed profiles gets none: the handshake
//! completes without SRTP keys (str0m then never decrypts media), which is what a
//! test flag should do.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dimpl::crypto::SignatureVerifier;
use dimpl::crypto::{Buf, HashAlgorithm, HashContext, HashProvider, SignatureAlgorithm};
use dimpl::CryptoError as DimplCryptoError;
use str0m::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider};
use str0m::crypto::dtls::{DtlsVersion, ProtocolVersion, SrtpProfile as DtlsSrtpProfile};
use str0m::crypto::{CryptoError, CryptoProvider};
use str0m::{Rtc, RtcConfig};

use crate::SrtpProfile;

mod client_cert;

// ============================================================================
// Public API
// ============================================================================

/// Where one `Rtc`'s DTLS-SRTP keys arrive. Cheap to clone, `Send + Sync` (the `Rtc`
/// moves between threads).
#[derive(Clone, Default)]
pub struct KeyCapture {
    slot: Arc<Mutex<Slot>>,
}

#[derive(Default)]
struct Slot {
    keys: Option<CapturedKeys>,
    /// The handshake exported keys at some point (stays true after `take`).
    exported: bool,
    /// The DTLS session let go of its handshake state ([`DTLS_RETIRE_AFTER`]).
    retired: bool,
    /// The session must keep DTLS (a data channel was negotiated).
    keep_dtls: bool,
}

/// The keys one DTLS-SRTP handshake exported (RFC 5764 §4.2).
#[derive(Clone, PartialEq, Eq)]
pub struct CapturedKeys {
    /// The negotiated protection profile.
    pub profile: SrtpProfile,
    /// The raw exporter output, `profile.keying_material_len()` bytes: client write key,
    /// server write key, client write salt, server write salt.
    pub material: Vec<u8>,
    /// Whether this side was the DTLS client (active). The DTLS client sends with the
    /// client half of `material`, the server (Chorus answering `a=setup:passive`) with
    /// the server half.
    pub dtls_client: bool,
}

impl fmt::Debug for CapturedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapturedKeys")
            .field("profile", &self.profile)
            .field("material", &format_args!("[{} bytes]", self.material.len()))
            .field("dtls_client", &self.dtls_client)
            .finish()
    }
}

impl KeyCapture {
    /// The keys, once the handshake exported them. Take-once: later calls return `None`.
    pub fn take(&self) -> Option<CapturedKeys> {
        lock(&self.slot).keys.take()
    }

    /// Whether the handshake has exported keys (whether or not they were taken).
    pub fn exported(&self) -> bool {
        lock(&self.slot).exported
    }

    /// Whether the DTLS session has let go of its handshake state (it does so once the
    /// handshake is over and the client quiet for [`DTLS_RETIRE_AFTER`]).
    pub fn dtls_retired(&self) -> bool {
        lock(&self.slot).retired
    }

    /// The session negotiated a data channel (SCTP over DTLS): its DTLS state is kept
    /// for the whole session, even before any application data crossed it (a first
    /// SCTP packet lost and resent after the retire time would find no DTLS).
    pub fn keep_dtls(&self) {
        lock(&self.slot).keep_dtls = true;
    }

    fn store(&self, keys: CapturedKeys) {
        let mut slot = lock(&self.slot);
        slot.keys = Some(keys);
        slot.exported = true;
    }
}

impl fmt::Debug for KeyCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCapture")
            .field("exported", &self.exported())
            .finish()
    }
}

/// Sets which SRTP profiles the node's DTLS accepts, in order of preference, for the
/// `Rtc`s [`build_rtc`] makes from now on. `None` (or an empty slice): dimpl's default,
/// AES-256-GCM, then AES-128-GCM, then `AES_CM_128_HMAC_SHA1_80`.
///
/// Applied on the DTLS server side only (see the module docs); e.g.
/// `set_srtp_profiles(Some(&[SrtpProfile::Aes128CmSha1_80]))` makes browsers use AES-CM.
pub fn set_srtp_profiles(profiles: Option<&[SrtpProfile]>) {
    let mut node = node_profiles()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *node = normalize(profiles);
}

/// The profiles [`set_srtp_profiles`] set, if any.
pub fn srtp_profiles() -> Option<Vec<SrtpProfile>> {
    node_profiles()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Builds an `Rtc` whose DTLS reports its keys to the returned capture, with the
/// node's SRTP profiles ([`set_srtp_profiles`]).
///
/// Replaces any crypto provider set on `config` (the default aws-lc-rs one is used for
/// everything but the DTLS instance, which is dimpl's, wrapped).
pub fn build_rtc(config: RtcConfig, now: Instant) -> (Rtc, KeyCapture) {
    let profiles = srtp_profiles();
    build_rtc_with(config, now, profiles.as_deref())
}

/// Like [`build_rtc`], with the SRTP profiles for this `Rtc` given explicitly (`None` or
/// empty: dimpl's default order) instead of the node's.
pub fn build_rtc_with(
    config: RtcConfig,
    now: Instant,
    profiles: Option<&[SrtpProfile]>,
) -> (Rtc, KeyCapture) {
    let capture = KeyCapture::default();
    let pending = Pending {
        capture: capture.clone(),
        profiles: normalize(profiles),
    };
    let previous = PENDING.with(|p| p.borrow_mut().replace(pending));
    debug_assert!(previous.is_none(), "build_rtc is not reentrant");
    // Taken back even if `build` panics, so a later `Rtc` never gets this sink.
    let _guard = ClearPending;
    let rtc = config.set_crypto_provider(provider()).build(now);
    (rtc, capture)
}

/// A DTLS 1.2 session exactly as [`build_rtc`] gives str0m one (with the node's SRTP
/// profiles), for tests and tools that drive DTLS without ICE, such as
/// `tests/openssl_client.rs`; the keys it exports arrive in the [`KeyCapture`].
pub fn dtls_session(
    cert: &DtlsCert,
    now: Instant,
) -> Result<(Box<dyn DtlsInstance>, KeyCapture), CryptoError> {
    let capture = KeyCapture::default();
    let pending = Pending {
        capture: capture.clone(),
        profiles: srtp_profiles(),
    };
    let previous = PENDING.with(|p| p.borrow_mut().replace(pending));
    debug_assert!(previous.is_none(), "dtls_session is not reentrant");
    let _guard = ClearPending;
    let session = CaptureDtlsProvider.new_dtls(cert, now, DtlsVersion::Dtls12, None)?;
    Ok((session, capture))
}

// ============================================================================
// The providers
// ============================================================================

thread_local! {
    /// The sink (and options) for the `Rtc` being built on this thread.
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
    /// While a restricted instance is inside dimpl: the ClientHellos to restore.
    static ACTIVE_PATCHES: RefCell<Option<Arc<Patches>>> = const { RefCell::new(None) };
}

struct Pending {
    capture: KeyCapture,
    profiles: Option<Vec<SrtpProfile>>,
}

struct ClearPending;

impl Drop for ClearPending {
    fn drop(&mut self) {
        PENDING.with(|p| p.borrow_mut().take());
    }
}

fn node_profiles() -> &'static std::sync::RwLock<Option<Vec<SrtpProfile>>> {
    static NODE: OnceLock<std::sync::RwLock<Option<Vec<SrtpProfile>>>> = OnceLock::new();
    NODE.get_or_init(Default::default)
}

fn normalize(profiles: Option<&[SrtpProfile]>) -> Option<Vec<SrtpProfile>> {
    profiles.filter(|p| !p.is_empty()).map(<[_]>::to_vec)
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    // A poisoned slot still holds consistent data (plain assignments).
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// str0m's default (aws-lc-rs) DTLS provider.
fn default_dtls() -> &'static dyn DtlsProvider {
    crate::lazy_ciphers::default_provider().dtls_provider
}

/// str0m's default (aws-lc-rs) provider with our DTLS provider and SRTP ciphers built
/// on first use ([`crate::lazy_ciphers`]).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: CaptureDtlsProvider = CaptureDtlsProvider;
    PROVIDER
        .get_or_init(|| {
            let mut provider = crate::lazy_ciphers::default_provider().clone();
            provider.dtls_provider = &DTLS;
            provider.srtp_provider = crate::lazy_ciphers::provider();
            Arc::new(provider)
        })
        .clone()
}

/// Creates dimpl instances from a cached config and wraps them.
#[derive(Debug)]
struct CaptureDtlsProvider;

impl DtlsProvider for CaptureDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        default_dtls().generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = dimpl_config(mtu)?;
        let cert = cert.clone();
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            _ => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version: {dtls_version}"
                )))
            }
        };
        let pending = PENDING.with(|p| p.borrow_mut().take());
        let (capture, profiles) = match pending {
            Some(p) => (Some(p.capture), p.profiles),
            None => (None, None),
        };
        let patches = Arc::<Patches>::default();
        let restrict = match profiles {
            Some(profiles) if dtls_version == DtlsVersion::Dtls12 => Some(Restriction {
                profiles,
                patches: patches.clone(),
                hello: None,
            }),
            Some(_) => {
                tracing::warn!(%dtls_version, "SRTP profile restriction needs DTLS 1.2; ignored");
                None
            }
            None => None,
        };
        Ok(Box::new(CaptureInstance {
            session: Session::Live(Box::new(dtls)),
            capture,
            patches,
            scratch: Vec::new(),
            restrict,
            keyed: false,
            carries_data: false,
            now,
            last_rx: now,
            flight: Vec::new(),
            new_flight: true,
            flight_too_big: false,
        }))
    }
}

/// One cached config per MTU (str0m passes its configured MTU, normally the same).
fn dimpl_config(mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
    static CONFIGS: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>> = Mutex::new(Vec::new());
    let mut configs = CONFIGS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, config)) = configs.iter().find(|(m, _)| *m == mtu) {
        return Ok(config.clone());
    }
    // As str0m-aws-lc-rs 0.7 builds it (`src/dtls.rs` ~43): ICE has verified return
    // routability before DTLS, so server cookies are redundant.
    let mut builder = dimpl::Config::builder()
        .use_server_cookie(false)
        .with_crypto_provider(dimpl_provider());
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    let config = builder
        .build()
        .map_err(|e| CryptoError::Other(format!("dimpl config creation failed: {e}")))?;
    let config = Arc::new(config);
    configs.push((mtu, config.clone()));
    Ok(config)
}

/// How long a DTLS 1.2 server session (Chorus answering `a=setup:passive`, as it does
/// for every browser) keeps dimpl's state after the handshake exported its keys and
/// the client sent its last DTLS record. The server's only duty after the handshake is
/// to send its final flight (ChangeCipherSpec, Finished) again when the client, which
/// lost it, retransmits its own (RFC 6347 §4.2.4): a retired server keeps a copy of
/// that flight's datagrams (about 100 bytes) and sends them again for each client
/// Finished that arrives, up to [`FINAL_FLIGHT_REPLAYS`] times. So the wait only lets
/// a handshake's stragglers (a flight's reordered or duplicated datagrams, within a
/// round trip) reach dimpl. It is short because the state is ~8 KB per session and
/// a join storm holds one per handshake of the last wait: at 250 joins a second, 1 s
/// held ~2 KB per participant of a 1,000-participant ramp (BENCHMARKS.md, issue 9).
pub const DTLS_RETIRE_AFTER: Duration = Duration::from_millis(250);

/// The same for a session that cannot replay (DTLS client, DTLS 1.3, a final flight
/// over [`MAX_FINAL_FLIGHT`]). A DTLS client's last flight is answered by the server's,
/// so a client that has its keys has its answer; what the quiet time guards is a
/// server peer still retransmitting. With retransmission timers doubling from 1 s, a
/// peer still waiting after 10 quiet seconds has lost four flights in a row and is
/// better served by its ICE and DTLS timeouts (chorus.js then resumes).
pub const DTLS_CLIENT_RETIRE_AFTER: Duration = Duration::from_secs(10);

/// How many times a retired server sends its final flight again (one per client
/// Finished received): a client retransmits a handful of times before it gives up.
pub const FINAL_FLIGHT_REPLAYS: u8 = 8;

/// The largest Certificate handshake message taken from a peer, in bytes. str0m polls
/// DTLS with a 2,000-byte buffer (`dtls_buf`, str0m `src/lib.rs` ~1298), and dimpl
/// copies the peer's leaf certificate into it with an `assert!` that it fits (dimpl
/// `src/dtls12/client.rs` ~1403, the server's output too): a larger one would panic the
/// shard. The message holds the list's and the leaf's 3-byte lengths besides the leaf,
/// so 1,994 bytes keep every leaf within 2,000. A WebRTC certificate is one self-signed
/// leaf, ~300 bytes for ECDSA, ~800 for RSA-2048, ~1,300 for RSA-4096; a larger
/// Certificate is dropped and the handshake never completes.
pub const MAX_CERTIFICATE_MESSAGE: usize = STR0M_DTLS_BUFFER - 6;

/// The size of the buffer str0m 0.25 polls DTLS output into (`dtls_buf`).
pub const STR0M_DTLS_BUFFER: usize = 2000;

/// The largest final flight a server session keeps a copy of, in bytes (DTLS 1.2's is
/// ~100: a ChangeCipherSpec record and an encrypted Finished).
pub const MAX_FINAL_FLIGHT: usize = 1500;

/// A DTLS session: dimpl's, with the keys copied out, the ClientHello rewritten if
/// the profiles are restricted, and dimpl's state let go once the handshake is over.
struct CaptureInstance {
    session: Session,
    capture: Option<KeyCapture>,
    /// What dimpl's transcript holds differently from the wire (a rewritten
    /// ClientHello, a widened CertificateRequest), for its hash and verifier.
    patches: Arc<Patches>,
    /// dimpl's output buffer while a server's handshake flights may need widening
    /// ([`client_cert`]); empty otherwise.
    scratch: Vec<u8>,
    restrict: Option<Restriction>,
    /// The handshake exported SRTP keys.
    keyed: bool,
    /// Application data (SCTP, a data channel) crossed this session: it stays live.
    carries_data: bool,
    /// The latest time str0m gave us (`handle_timeout`, or creation). str0m passes
    /// no time with a packet, so `now` can lag: during the handshake by at most a
    /// retransmission timer (DTLS's timers are armed then).
    now: Instant,
    /// When the client's latest DTLS record arrived, as far as `now` tells.
    last_rx: Instant,
    /// The datagrams dimpl sent after the latest input (a client record or a timeout)
    /// that made it send any: after the handshake, the server's final flight.
    flight: Vec<Box<[u8]>>,
    /// The next datagram dimpl sends starts a new flight.
    new_flight: bool,
    /// The latest flight was larger than [`MAX_FINAL_FLIGHT`]: not all of it is kept.
    flight_too_big: bool,
}

/// What a session holds.
enum Session {
    /// dimpl's handshake state machine, transcript, flights and record ciphers: about
    /// 8 KB per session after the handshake.
    Live(Box<dimpl::Dtls>),
    /// After the handshake, once quiet for [`DTLS_RETIRE_AFTER`] and carrying no
    /// application data: WebRTC media needs nothing more of DTLS (SRTP has its keys,
    /// DTLS 1.2 has no post-handshake messages). What str0m still asks is answered
    /// from these fields. A client's retransmitted final flight gets the server's
    /// again (`final_flight`); other DTLS records the client still sends (a
    /// `close_notify`) are dropped, and closing sends no `close_notify` (the peer
    /// learns it from signaling or ICE consent).
    Retired {
        active: bool,
        version: Option<ProtocolVersion>,
        /// A timeout far away: a retired session never needs waking.
        never: Instant,
        closed: bool,
        /// The server's final flight (empty for a DTLS client).
        final_flight: Vec<Box<[u8]>>,
        /// The next datagram of `final_flight` to send, while sending it again.
        replaying: Option<usize>,
        /// How many more times the final flight may be sent again.
        replays_left: u8,
    },
}

struct Restriction {
    profiles: Vec<SrtpProfile>,
    /// The instance's transcript patches (the same `Arc`).
    patches: Arc<Patches>,
    /// The ClientHello so far, while it arrives in fragments.
    hello: Option<HelloAssembly>,
}

impl fmt::Debug for CaptureInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureInstance")
            .field("capture", &self.capture)
            .field("restrict", &self.restrict.as_ref().map(|r| &r.profiles))
            .finish()
    }
}

impl CaptureInstance {
    /// Runs `f` on dimpl's instance with this instance's transcript patches visible to
    /// the dimpl provider; `None` once the session is retired.
    fn patched<R>(&mut self, f: impl FnOnce(&mut dimpl::Dtls) -> R) -> Option<R> {
        let Session::Live(dtls) = &mut self.session else {
            return None;
        };
        let previous = ACTIVE_PATCHES.with(|a| a.replace(Some(self.patches.clone())));
        let _restore = RestorePatches(previous);
        Some(f(dtls))
    }

    /// Whether dimpl's next flight may carry a CertificateRequest to widen: a server
    /// whose handshake has not exported keys yet.
    fn widens_requests(&self) -> bool {
        matches!(self.session, Session::Live(_)) && !self.keyed && !self.is_active()
    }

    /// dimpl's next output for a server mid-handshake, polled into [`Self::scratch`]
    /// and copied into `buf`, a CertificateRequest widened on the way
    /// ([`client_cert`]).
    fn poll_widening<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(buf.len(), 0);
        let now = self.now;
        let patches = self.patches.clone();
        let out = self
            .patched(|dtls| match dtls.poll_output(&mut scratch) {
                DtlsOutput::Packet(datagram) => {
                    let datagram = match client_cert::widen_certificate_request(datagram) {
                        Some(widened) if widened.datagram.len() <= buf.len() => {
                            tracing::debug!("CertificateRequest widened to RSA certificates");
                            patches.add(&widened.dimpl, &widened.sent);
                            widened.datagram
                        }
                        Some(_) => {
                            tracing::warn!("no room to widen the CertificateRequest");
                            datagram.to_vec()
                        }
                        None => datagram.to_vec(),
                    };
                    let out = &mut buf[..datagram.len()];
                    out.copy_from_slice(&datagram);
                    DtlsOutput::Packet(out)
                }
                DtlsOutput::PeerCert(der) => DtlsOutput::PeerCert(copy_into(buf, der)),
                DtlsOutput::ApplicationData(data) => {
                    DtlsOutput::ApplicationData(copy_into(buf, data))
                }
                DtlsOutput::BufferTooSmall { needed } => DtlsOutput::BufferTooSmall { needed },
                DtlsOutput::Timeout(at) => DtlsOutput::Timeout(at),
                DtlsOutput::Connected => DtlsOutput::Connected,
                DtlsOutput::KeyingMaterial(material, profile) => {
                    DtlsOutput::KeyingMaterial(material, profile)
                }
                DtlsOutput::CloseNotify => DtlsOutput::CloseNotify,
                other => {
                    tracing::warn!(?other, "DTLS output unknown to chorus-srtp; dropped");
                    DtlsOutput::Timeout(now)
                }
            })
            .unwrap_or(DtlsOutput::Timeout(now));
        self.scratch = scratch;
        out
    }

    /// When dimpl's state may be let go (see [`Session`]), if it may at all.
    fn retire_at(&self) -> Option<Instant> {
        let Session::Live(dtls) = &self.session else {
            return None;
        };
        if !self.keyed || self.carries_data || dtls.is_closing() || dtls.is_closed() {
            return None;
        }
        if self
            .capture
            .as_ref()
            .is_some_and(|c| lock(&c.slot).keep_dtls)
        {
            return None;
        }
        let quiet = if self.replays_final_flight(dtls) {
            DTLS_RETIRE_AFTER
        } else {
            DTLS_CLIENT_RETIRE_AFTER
        };
        Some(self.last_rx + quiet)
    }

    /// Whether this session, retired, can answer a retransmitted client flight: a DTLS
    /// 1.2 server whose final flight was kept.
    fn replays_final_flight(&self, dtls: &dimpl::Dtls) -> bool {
        !dtls.is_active()
            && dtls.protocol_version() == Some(ProtocolVersion::DTLS1_2)
            && !self.flight.is_empty()
            && !self.flight_too_big
    }

    /// Lets go of dimpl's state if the handshake is over and quiet (see [`Session`]).
    fn maybe_retire(&mut self) {
        if self.retire_at().is_none_or(|at| at > self.now) {
            return;
        }
        let Session::Live(dtls) = &self.session else {
            return;
        };
        tracing::debug!("DTLS handshake over and quiet: its state is let go");
        let final_flight = if self.replays_final_flight(dtls) {
            std::mem::take(&mut self.flight)
        } else {
            Vec::new()
        };
        self.session = Session::Retired {
            active: dtls.is_active(),
            version: dtls.protocol_version(),
            never: self.now + Duration::from_secs(365 * 24 * 3600),
            closed: false,
            final_flight,
            replaying: None,
            replays_left: FINAL_FLIGHT_REPLAYS,
        };
        self.flight = Vec::new();
        self.restrict = None;
        self.patches = Arc::default();
        self.scratch = Vec::new();
        if let Some(capture) = &self.capture {
            lock(&capture.slot).retired = true;
        }
    }
}

struct RestorePatches(Option<Arc<Patches>>);

impl Drop for RestorePatches {
    fn drop(&mut self) {
        let previous = self.0.take();
        ACTIVE_PATCHES.with(|a| *a.borrow_mut() = previous);
    }
}

impl DtlsInstance for CaptureInstance {
    fn set_active(&mut self, active: bool) {
        if active && self.restrict.is_some() {
            tracing::warn!("SRTP profile restriction applies to the DTLS server only; ignored");
            self.restrict = None;
        }
        match &mut self.session {
            Session::Live(dtls) => dtls.set_active(active),
            Session::Retired { active: was, .. } => *was = active,
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.last_rx = self.now;
        // RFC 6347 §4.1: content type 23 is application data (SCTP over DTLS).
        if packet.first() == Some(&23) {
            self.carries_data = true;
        }
        if let Session::Retired {
            final_flight,
            replaying,
            replays_left,
            ..
        } = &mut self.session
        {
            if !final_flight.is_empty() && *replays_left > 0 && carries_finished(packet) {
                tracing::debug!("client retransmitted its final flight: ours again");
                *replays_left -= 1;
                *replaying = Some(0);
            } else {
                tracing::debug!(
                    len = packet.len(),
                    "DTLS record after the handshake retired; dropped"
                );
            }
            return Ok(());
        }
        if oversized_certificate(packet) {
            tracing::warn!(
                max = MAX_CERTIFICATE_MESSAGE,
                "peer's DTLS Certificate too large; dropped"
            );
            return Ok(());
        }
        self.new_flight = true;
        let active = self.is_active();
        if let Some(restrict) = &mut self.restrict {
            if !active {
                if let Some(rewritten) = restrict.rewrite(packet) {
                    return self
                        .patched(|dtls| dtls.handle_packet(&rewritten))
                        .unwrap_or(Ok(()));
                }
            }
        }
        self.patched(|dtls| dtls.handle_packet(packet))
            .unwrap_or(Ok(()))
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let widens = self.widens_requests();
        let out = match &mut self.session {
            Session::Retired {
                never,
                final_flight,
                replaying,
                ..
            } => {
                let next = replaying.and_then(|i| final_flight.get(i).map(|d| (i, d)));
                let Some((i, datagram)) = next else {
                    *replaying = None;
                    return DtlsOutput::Timeout(*never);
                };
                *replaying = Some(i + 1);
                let Some(out) = buf.get_mut(..datagram.len()) else {
                    // str0m's buffer holds any datagram dimpl wrote into it before.
                    *replaying = None;
                    return DtlsOutput::Timeout(*never);
                };
                out.copy_from_slice(datagram);
                return DtlsOutput::Packet(out);
            }
            Session::Live(_) if widens => self.poll_widening(buf),
            Session::Live(_) => self
                .patched(|dtls| dtls.poll_output(buf))
                .unwrap_or(DtlsOutput::Timeout(self.now)),
        };
        if self.keyed && !self.scratch.is_empty() {
            self.scratch = Vec::new();
        }
        if let DtlsOutput::Packet(datagram) = &out {
            if std::mem::take(&mut self.new_flight) {
                self.flight.clear();
                self.flight_too_big = false;
            }
            let kept: usize = self.flight.iter().map(|d| d.len()).sum();
            if kept + datagram.len() <= MAX_FINAL_FLIGHT {
                self.flight.push(Box::from(*datagram));
            } else {
                // Too big to keep: such a session waits the long quiet time.
                self.flight_too_big = true;
            }
        }
        if let DtlsOutput::Timeout(at) = out {
            // str0m calls `handle_timeout` only when DTLS asks to be woken: ask for the
            // time the session may retire.
            if let Some(retire_at) = self.retire_at() {
                return DtlsOutput::Timeout(at.min(retire_at));
            }
        }
        if let DtlsOutput::KeyingMaterial(material, profile) = &out {
            self.keyed = true;
            if let Some(capture) = &self.capture {
                match map_profile(*profile) {
                    Some(profile) => capture.store(CapturedKeys {
                        profile,
                        material: material.to_vec(),
                        dtls_client: self.is_active(),
                    }),
                    None => {
                        tracing::warn!(%profile, "SRTP profile unknown to chorus-srtp; keys not captured")
                    }
                }
            }
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = now;
        self.new_flight = true;
        let result = self
            .patched(|dtls| dtls.handle_timeout(now))
            .unwrap_or(Ok(()));
        if result.is_ok() {
            self.maybe_retire();
        }
        result
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.carries_data = true;
        self.patched(|dtls| dtls.send_application_data(data))
            .unwrap_or(Err(DtlsImplError::ConnectionClosed))
    }

    fn is_active(&self) -> bool {
        match &self.session {
            Session::Live(dtls) => dtls.is_active(),
            Session::Retired { active, .. } => *active,
        }
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        match &self.session {
            Session::Live(dtls) => dtls.protocol_version(),
            Session::Retired { version, .. } => *version,
        }
    }

    fn is_closing(&self) -> bool {
        match &self.session {
            Session::Live(dtls) => dtls.is_closing(),
            Session::Retired { .. } => false,
        }
    }

    fn is_closed(&self) -> bool {
        match &self.session {
            Session::Live(dtls) => dtls.is_closed(),
            Session::Retired { closed, .. } => *closed,
        }
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if let Session::Retired { closed, .. } = &mut self.session {
            *closed = true;
            return Ok(());
        }
        self.patched(|dtls| dtls.close()).unwrap_or(Ok(()))
    }
}

/// One complete DTLS record of a datagram (RFC 6347 §4.1: a 13-byte header of type,
/// version, epoch, sequence number and length, then the body).
struct Record {
    content_type: u8,
    version: u16,
    epoch: u16,
    /// Where the body lies in the datagram.
    body: std::ops::Range<usize>,
}

/// The records of a datagram, back to back, up to the first incomplete one.
fn records(datagram: &[u8]) -> impl Iterator<Item = Record> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = datagram.get(at..at + 13)?;
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let body = at + 13..at + 13 + len;
        if body.end > datagram.len() {
            return None;
        }
        at = body.end;
        Some(Record {
            content_type: header[0],
            version: u16::from_be_bytes([header[1], header[2]]),
            epoch: u16::from_be_bytes([header[3], header[4]]),
            body,
        })
    })
}

/// One handshake fragment (RFC 6347 §4.2.2: a 12-byte header of type, length,
/// message_seq, fragment_offset and fragment_length, then the data) of a cleartext
/// (epoch 0) handshake record.
struct Fragment {
    msg_type: u8,
    /// The whole message's length.
    length: usize,
    offset: usize,
    /// Where its 12-byte header starts in the datagram.
    at: usize,
    /// Where its data lies in the datagram; `None` if it runs past the record's end
    /// (the last fragment of that record).
    data: Option<std::ops::Range<usize>>,
    /// The record's body.
    record: std::ops::Range<usize>,
}

/// The handshake fragments of a datagram's epoch-0 handshake records, back to back.
fn handshake_fragments(datagram: &[u8]) -> impl Iterator<Item = Fragment> + '_ {
    records(datagram)
        .filter(|r| r.content_type == 22 && r.epoch == 0)
        .flat_map(move |r| {
            let body = r.body;
            let mut m = Some(body.start);
            std::iter::from_fn(move || {
                let at = m.filter(|at| at + 12 <= body.end)?;
                let header = &datagram[at..at + 12];
                let end = at + 12 + u24(&header[9..12]);
                let data = (end <= body.end).then_some(at + 12..end);
                m = data.as_ref().map(|d| d.end);
                Some(Fragment {
                    msg_type: header[0],
                    length: u24(&header[1..4]),
                    offset: u24(&header[6..9]),
                    at,
                    data,
                    record: body.clone(),
                })
            })
        })
}

/// Whether a datagram holds a complete DTLS 1.2 handshake record of epoch 1 or later:
/// the client's (encrypted) Finished, the last record of its final flight.
fn carries_finished(datagram: &[u8]) -> bool {
    records(datagram).any(|r| r.content_type == 22 && r.version == 0xfefd && r.epoch >= 1)
}

fn map_profile(profile: DtlsSrtpProfile) -> Option<SrtpProfile> {
    match profile {
        DtlsSrtpProfile::AES128_CM_SHA1_80 => Some(SrtpProfile::Aes128CmSha1_80),
        DtlsSrtpProfile::AEAD_AES_128_GCM => Some(SrtpProfile::AeadAes128Gcm),
        DtlsSrtpProfile::AEAD_AES_256_GCM => Some(SrtpProfile::AeadAes256Gcm),
        _ => None,
    }
}

/// RFC 5764 §4.1.2, RFC 7714 §14.2.
fn profile_id(profile: SrtpProfile) -> u16 {
    match profile {
        SrtpProfile::Aes128CmSha1_80 => 0x0001,
        SrtpProfile::AeadAes128Gcm => 0x0007,
        SrtpProfile::AeadAes256Gcm => 0x0008,
    }
}

// ============================================================================
// ClientHello rewriting and transcript restoring
// ============================================================================

/// Where dimpl's transcript differs from the wire: each patch pairs the bytes dimpl
/// holds with the bytes the peer sent or received (a rewritten ClientHello and the
/// client's original, same length; dimpl's CertificateRequest and the widened one
/// sent, [`client_cert`]).
#[derive(Default)]
struct Patches {
    list: Mutex<Vec<Patch>>,
}

struct Patch {
    dimpl: Vec<u8>,
    wire: Vec<u8>,
}

impl Patches {
    fn add(&self, dimpl: &[u8], wire: &[u8]) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if !list.iter().any(|p| p.dimpl == dimpl) {
            list.push(Patch {
                dimpl: dimpl.to_vec(),
                wire: wire.to_vec(),
            });
        }
    }

    /// `data` with every patched message as it was on the wire, or `None` if it holds
    /// none.
    fn restore(&self, data: &[u8]) -> Option<Vec<u8>> {
        let list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Option<Vec<u8>> = None;
        for patch in list.iter() {
            let hay = out.as_deref().unwrap_or(data);
            let Some(at) = find(hay, &patch.dimpl) else {
                continue;
            };
            let mut owned = Vec::with_capacity(hay.len() + patch.wire.len());
            owned.extend_from_slice(&hay[..at]);
            owned.extend_from_slice(&patch.wire);
            owned.extend_from_slice(&hay[at + patch.dimpl.len()..]);
            out = Some(owned);
        }
        out
    }
}

/// Whether `datagram` carries (a fragment of) a Certificate handshake message longer than
/// [`MAX_CERTIFICATE_MESSAGE`] (every fragment's header names the whole length).
fn oversized_certificate(datagram: &[u8]) -> bool {
    handshake_fragments(datagram).any(|f| f.msg_type == 11 && f.length > MAX_CERTIFICATE_MESSAGE)
}

/// `data` copied to the front of `buf`, as much of it as fits.
fn copy_into<'a>(buf: &'a mut [u8], data: &[u8]) -> &'a [u8] {
    let n = data.len().min(buf.len());
    buf[..n].copy_from_slice(&data[..n]);
    &buf[..n]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn active_patches() -> Option<Arc<Patches>> {
    ACTIVE_PATCHES.with(|a| a.borrow().clone())
}

/// The largest ClientHello the restriction reassembles (post-quantum key shares make
/// browsers' ~1.3–2 KB, sent in fragments); a larger one is passed on unrestricted.
const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// A ClientHello being put together from its fragments (RFC 6347 §4.2.3), and what
/// the `use_srtp` profile ids become once they are found.
struct HelloAssembly {
    body: Vec<u8>,
    received: Vec<bool>,
    /// Where the profile ids are in the body, and their rewritten bytes.
    ids: Option<(usize, Vec<u8>)>,
    /// The transcript patch was recorded.
    patched: bool,
    /// Fragments that went to dimpl before the ids were located.
    passed: Vec<std::ops::Range<usize>>,
}

impl HelloAssembly {
    fn new(length: usize) -> Self {
        HelloAssembly {
            body: vec![0; length],
            received: vec![false; length],
            ids: None,
            patched: false,
            passed: Vec::new(),
        }
    }

    /// How many bytes from the start have arrived.
    fn prefix(&self) -> usize {
        self.received
            .iter()
            .position(|r| !r)
            .unwrap_or(self.received.len())
    }
}

impl Restriction {
    /// The datagram with the `use_srtp` profile ids of a ClientHello in it rewritten,
    /// if it carries any of them; records the transcript patch once the whole
    /// ClientHello has arrived. A ClientHello may come in fragments over several
    /// datagrams: they are put together here, and each fragment holding profile ids is
    /// rewritten as it passes (fragments that arrive before the ones that locate the
    /// extension pass unrewritten — browsers send them in order).
    fn rewrite(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for f in handshake_fragments(datagram) {
            let Some(data) = f.data.filter(|_| f.msg_type == 1) else {
                continue;
            };
            if let Some((skip, bytes)) =
                self.client_hello_fragment(f.length, f.offset, &datagram[data.clone()])
            {
                let owned = out.get_or_insert_with(|| datagram.to_vec());
                let start = data.start + skip;
                owned[start..start + bytes.len()].copy_from_slice(&bytes);
            }
        }
        out
    }

    /// Takes in one ClientHello fragment; returns where in it, and with what, to
    /// overwrite the profile ids it holds, if it holds any.
    fn client_hello_fragment(
        &mut self,
        length: usize,
        offset: usize,
        fragment: &[u8],
    ) -> Option<(usize, Vec<u8>)> {
        if length == 0 || length > MAX_CLIENT_HELLO || offset + fragment.len() > length {
            tracing::debug!(
                length,
                "ClientHello too large or malformed; SRTP profiles not restricted"
            );
            return None;
        }
        let span = offset..offset + fragment.len();
        // A retransmission repeats the bytes; anything else is a new ClientHello.
        let same = self.hello.as_ref().is_some_and(|h| {
            h.body.len() == length
                && h.body[span.clone()]
                    .iter()
                    .zip(&h.received[span.clone()])
                    .zip(fragment)
                    .all(|((b, r), f)| !r || b == f)
        });
        if !same {
            self.hello = Some(HelloAssembly::new(length));
        }
        let hello = self.hello.as_mut()?;
        hello.body[span.clone()].copy_from_slice(fragment);
        hello.received[span.clone()].fill(true);
        let prefix = hello.prefix();
        if hello.ids.is_none() {
            match use_srtp_profiles(&hello.body[..prefix]) {
                Some((ids_at, ids_len)) => {
                    let ids = &hello.body[ids_at..ids_at + ids_len];
                    let ids_span = ids_at..ids_at + ids_len;
                    // Some ids already went to dimpl as the client sent them: rewriting
                    // the rest would leave dimpl a ClientHello no patch describes.
                    let straddled = hello
                        .passed
                        .iter()
                        .any(|p| p.start < ids_span.end && ids_span.start < p.end);
                    let rewritten = if straddled {
                        tracing::warn!(
                            "ClientHello fragmented inside use_srtp; SRTP profiles not restricted"
                        );
                        ids.to_vec()
                    } else {
                        chosen_ids(ids, &self.profiles)
                    };
                    hello.ids = Some((ids_at, rewritten));
                }
                None => hello.passed.push(span.clone()),
            }
        }
        let (ids_at, ids) = hello.ids.as_ref()?;
        if prefix == length && !hello.patched {
            let mut rewritten = hello.body.clone();
            rewritten[*ids_at..*ids_at + ids.len()].copy_from_slice(ids);
            self.patches.add(&rewritten, &hello.body);
            hello.patched = true;
        }
        // The part of the ids inside this fragment.
        let from = (*ids_at).max(span.start);
        let to = (*ids_at + ids.len()).min(span.end);
        (from < to).then(|| (from - span.start, ids[from - ids_at..to - ids_at].to_vec()))
    }
}

/// `offered` (the `use_srtp` profile ids, 2 bytes each) with every id but the first of
/// `allowed` the client offers replaced by 0x0000, an id dimpl skips.
fn chosen_ids(offered: &[u8], allowed: &[SrtpProfile]) -> Vec<u8> {
    let ids: Vec<u16> = offered
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let chosen = allowed
        .iter()
        .map(|p| profile_id(*p))
        .find(|id| ids.contains(id));
    if chosen.is_none() {
        tracing::warn!(
            offered = ?ids,
            ?allowed,
            "client offers none of the allowed SRTP profiles"
        );
    }
    ids.iter()
        .flat_map(|id| match Some(*id) == chosen {
            true => id.to_be_bytes(),
            false => [0, 0],
        })
        .collect()
}

/// Where the profile ids of the ClientHello's `use_srtp` extension are: (offset,
/// length), if `body` (a ClientHello body, or the first part of one) holds them whole.
fn use_srtp_profiles(body: &[u8]) -> Option<(usize, usize)> {
    // RFC 6347 §4.2.1: client_version(2), random(32), session_id<0..32>,
    // cookie<0..2^8-1>, cipher_suites<2..2^16-2>, compression_methods<1..2^8-1>,
    // extensions<0..2^16-1>.
    let mut at = 34;
    at += 1 + usize::from(*body.get(at)?);
    at += 1 + usize::from(*body.get(at)?);
    at += 2 + u16_at(body, at)?;
    at += 1 + usize::from(*body.get(at)?);
    let end = at + 2 + u16_at(body, at)?;
    at += 2;
    while at + 4 <= end {
        let kind = u16_at(body, at)?;
        let len = u16_at(body, at + 2)?;
        let data = at + 4;
        if data + len > end {
            return None;
        }
        // RFC 5764 §4.1.1: use_srtp(14): SRTPProtectionProfiles<2..2^16-1>, srtp_mki<0..255>.
        if kind == 14 {
            let ids_len = u16_at(body, data)?;
            if ids_len % 2 != 0
                || data + 2 + ids_len > data + len
                || data + 2 + ids_len > body.len()
            {
                return None;
            }
            return Some((data + 2, ids_len));
        }
        at = data + len;
    }
    None
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 2)?;
    Some(usize::from(u16::from_be_bytes([s[0], s[1]])))
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// dimpl's aws-lc-rs provider with the transcript hash and signature verification
/// seeing the client's original ClientHello (a pass-through outside restricted
/// instances).
fn dimpl_provider() -> dimpl::crypto::CryptoProvider {
    static HASH: RestoringHash = RestoringHash;
    static VERIFY: RestoringVerifier = RestoringVerifier;
    let mut provider = base_provider().clone();
    provider.hash_provider = &HASH;
    provider.signature_verification = &VERIFY;
    provider
}

fn base_provider() -> &'static dimpl::crypto::CryptoProvider {
    static BASE: OnceLock<dimpl::crypto::CryptoProvider> = OnceLock::new();
    BASE.get_or_init(dimpl::crypto::aws_lc_rs::default_provider)
}

#[derive(Debug)]
struct RestoringHash;

impl HashProvider for RestoringHash {
    fn create_hash(&self, algorithm: HashAlgorithm) -> Box<dyn HashContext> {
        let inner = base_provider().hash_provider.create_hash(algorithm);
        match active_patches() {
            Some(patches) => Box::new(RestoringHashContext { inner, patches }),
            None => inner,
        }
    }
}

struct RestoringHashContext {
    inner: Box<dyn HashContext>,
    patches: Arc<Patches>,
}

impl fmt::Debug for RestoringHashContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RestoringHashContext")
    }
}

impl HashContext for RestoringHashContext {
    fn update(&mut self, data: &[u8]) {
        match self.patches.restore(data) {
            Some(original) => self.inner.update(&original),
            None => self.inner.update(data),
        }
    }

    fn clone_and_finalize(&self, out: &mut Buf) {
        self.inner.clone_and_finalize(out)
    }
}

#[derive(Debug)]
struct RestoringVerifier;

impl SignatureVerifier for RestoringVerifier {
    fn verify_signature(
        &self,
        cert_der: &[u8],
        data: &[u8],
        signature: &[u8],
        hash_alg: HashAlgorithm,
        sig_alg: SignatureAlgorithm,
    ) -> Result<(), DimplCryptoError> {
        let restored = active_patches().and_then(|p| p.restore(data));
        let data = restored.as_deref().unwrap_or(data);
        if let Some(result) = client_cert::verify_rsa(cert_der, data, signature, hash_alg, sig_alg)
        {
            return result;
        }
        let inner = base_provider().signature_verification;
        inner.verify_signature(cert_der, data, signature, hash_alg, sig_alg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal DTLS 1.2 ClientHello record offering `ids` in `use_srtp`.
    fn client_hello(ids: &[u16]) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend([7u8; 32]); // random
        body.push(0); // session id
        body.push(0); // cookie
        body.extend([0, 2, 0xc0, 0x2b]); // one cipher suite
        body.extend([1, 0]); // null compression
        let mut ext = vec![0, 23, 0, 0]; // extended_master_secret
        ext.extend([0, 14]);
        ext.extend(
            u16::try_from(2 + 2 * ids.len() + 1)
                .unwrap_or(0)
                .to_be_bytes(),
        );
        ext.extend(u16::try_from(2 * ids.len()).unwrap_or(0).to_be_bytes());
        for id in ids {
            ext.extend(id.to_be_bytes());
        }
        ext.push(0); // no MKI
        body.extend(u16::try_from(ext.len()).unwrap_or(0).to_be_bytes());
        body.extend(ext);
        let len = body.len();
        let mut hs = vec![1, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 0, 0, 0];
        hs.extend([(len >> 8) as u8, len as u8]);
        hs.extend(&body);
        let mut rec = vec![22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
        rec.extend(u16::try_from(hs.len()).unwrap_or(0).to_be_bytes());
        rec.extend(hs);
        rec
    }

    fn restriction(profiles: &[SrtpProfile]) -> Restriction {
        Restriction {
            profiles: profiles.to_vec(),
            patches: Arc::default(),
            hello: None,
        }
    }

    #[test]
    fn keeps_only_the_first_allowed_profile_offered() {
        let hello = client_hello(&[0x0007, 0x0008, 0x0001, 0x0002]);
        let mut r = restriction(&[SrtpProfile::Aes128CmSha1_80]);
        let rewritten = r.rewrite(&hello).expect("a rewrite");
        assert_eq!(rewritten.len(), hello.len());
        let tail = &rewritten[rewritten.len() - 9..rewritten.len() - 1];
        assert_eq!(tail, [0, 0, 0, 0, 0, 1, 0, 0]);

        // The transcript gets the original back.
        let transcript = [&[9u8; 5][..], &rewritten[13..]].concat();
        let restored = r.patches.restore(&transcript).expect("restored");
        assert_eq!(&restored[5..], &hello[13..]);
        assert_eq!(r.patches.restore(&hello[13..]), None);
    }

    /// `record` (one whole ClientHello record) as two records in two datagrams, split
    /// `at` bytes into the ClientHello body.
    fn fragmented(record: &[u8], at: usize) -> (Vec<u8>, Vec<u8>) {
        let hs = &record[13..];
        let body = &hs[12..];
        let part = |range: std::ops::Range<usize>| {
            let mut h = hs[..6].to_vec(); // msg_type, length, message_seq
            h.extend(&(range.start as u32).to_be_bytes()[1..]);
            h.extend(&(range.len() as u32).to_be_bytes()[1..]);
            h.extend(&body[range]);
            let mut rec = record[..11].to_vec();
            rec.extend(u16::try_from(h.len()).unwrap_or(0).to_be_bytes());
            rec.extend(h);
            rec
        };
        (part(0..at), part(at..body.len()))
    }

    #[test]
    fn rewrites_a_fragmented_client_hello() {
        let hello = client_hello(&[0x0007, 0x0008, 0x0001, 0x0002]);
        let body_len = hello.len() - 25;
        // The MKI byte follows the ids.
        let ids_end = body_len - 1;
        // Split before the extension and right after the ids.
        for at in [40, ids_end] {
            let (first, second) = fragmented(&hello, at);
            let mut r = restriction(&[SrtpProfile::Aes128CmSha1_80]);
            let a = r.rewrite(&first).unwrap_or_else(|| first.clone());
            let b = r.rewrite(&second).unwrap_or_else(|| second.clone());
            // Put together, the body reads as the unfragmented rewrite does.
            let whole = [&a[25..], &b[25..]].concat();
            let mut expect = restriction(&[SrtpProfile::Aes128CmSha1_80]);
            let expect = expect.rewrite(&hello).expect("a rewrite");
            assert_eq!(whole, &expect[25..], "split at {at}");
            // The transcript gets the client's original bytes back.
            let restored = r.patches.restore(&whole).expect("restored");
            assert_eq!(restored, &hello[25..]);
            // A retransmission is rewritten the same way.
            assert_eq!(r.rewrite(&second).unwrap_or_else(|| second.clone()), b);
        }
    }

    /// A fragment boundary inside the profile ids: nothing is rewritten (the handshake
    /// stays valid, unrestricted).
    #[test]
    fn a_split_inside_the_ids_is_left_alone() {
        let hello = client_hello(&[0x0007, 0x0008, 0x0001, 0x0002]);
        let ids_end = hello.len() - 25 - 1;
        let (first, second) = fragmented(&hello, ids_end - 3);
        let mut r = restriction(&[SrtpProfile::Aes128CmSha1_80]);
        assert_eq!(r.rewrite(&first), None);
        assert_eq!(r.rewrite(&second).unwrap_or_else(|| second.clone()), second);
    }

    #[test]
    fn finds_the_client_finished_among_records() {
        let record = |kind: u8, epoch: u16, body: usize| {
            let mut r = vec![kind, 0xfe, 0xfd];
            r.extend_from_slice(&epoch.to_be_bytes());
            r.extend_from_slice(&[0; 6]);
            r.extend_from_slice(&(body as u16).to_be_bytes());
            r.extend(std::iter::repeat_n(0xAB, body));
            r
        };
        // Flight 5 as one datagram: certificate (epoch 0), CCS, Finished (epoch 1).
        let mut flight = record(22, 0, 300);
        flight.extend(record(20, 0, 1));
        flight.extend(record(22, 1, 40));
        assert!(carries_finished(&flight));
        assert!(
            !carries_finished(&flight[..flight.len() - 1]),
            "a truncated Finished"
        );
        let mut dtls10 = record(22, 1, 40);
        dtls10[2] = 0xff;
        assert!(!carries_finished(&dtls10), "not DTLS 1.2");
        assert!(!carries_finished(&record(22, 0, 300)), "epoch 0 handshake");
        assert!(!carries_finished(&record(21, 1, 26)), "an alert");
        assert!(!carries_finished(&record(23, 1, 26)), "application data");
        // Truncated and garbage input: no panic, no match.
        for cut in 0..flight.len() - 50 {
            let _ = carries_finished(&flight[..cut]);
        }
        assert!(!carries_finished(&[22, 0xfe, 0xfd, 0]));
        assert!(!carries_finished(&[]));
    }

    #[test]
    fn preference_order_is_ours() {
        let hello = client_hello(&[0x0001, 0x0007]);
        let mut r = restriction(&[SrtpProfile::AeadAes256Gcm, SrtpProfile::AeadAes128Gcm]);
        let rewritten = r.rewrite(&hello).expect("a rewrite");
        let tail = &rewritten[rewritten.len() - 5..rewritten.len() - 1];
        assert_eq!(tail, [0, 0, 0, 7]);
    }

    #[test]
    fn leaves_other_records_alone() {
        let mut r = restriction(&[SrtpProfile::Aes128CmSha1_80]);
        let mut hello = client_hello(&[0x0007]);
        hello[3] = 1; // epoch 1: encrypted
        assert_eq!(r.rewrite(&hello), None);
        assert_eq!(r.rewrite(&[22, 0xfe]), None);
        assert_eq!(r.rewrite(&[]), None);
        let mut truncated = client_hello(&[0x0007]);
        truncated.truncate(40);
        assert_eq!(r.rewrite(&truncated), None);
    }

    #[test]
    fn capture_is_take_once() {
        let capture = KeyCapture::default();
        assert!(capture.take().is_none());
        capture.clone().store(CapturedKeys {
            profile: SrtpProfile::AeadAes128Gcm,
            material: vec![1; 56],
            dtls_client: false,
        });
        assert!(capture.exported());
        assert_eq!(capture.take().map(|k| k.material.len()), Some(56));
        assert!(capture.take().is_none());
        assert!(capture.exported());
    }

    #[test]
    fn finds_an_oversized_certificate_in_any_fragment() {
        let record = |length: usize, offset: usize, fragment: usize| {
            let mut hs = vec![11u8];
            hs.extend(&(length as u32).to_be_bytes()[1..]);
            hs.extend([0, 2]);
            hs.extend(&(offset as u32).to_be_bytes()[1..]);
            hs.extend(&(fragment as u32).to_be_bytes()[1..]);
            hs.extend(vec![0u8; fragment]);
            let mut rec = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
            rec.extend(u16::try_from(hs.len()).unwrap_or(0).to_be_bytes());
            rec.extend(hs);
            rec
        };
        assert!(!oversized_certificate(&record(800, 0, 800)));
        assert!(!oversized_certificate(&record(
            MAX_CERTIFICATE_MESSAGE,
            0,
            100
        )));
        assert!(oversized_certificate(&record(3000, 0, 1000)));
        assert!(oversized_certificate(&record(3000, 2000, 1000)));
        // A fragment length past the record's end stops the walk, no panic.
        let mut bad = record(800, 0, 10);
        bad[13 + 11] = 0xff;
        assert!(!oversized_certificate(&bad));
    }

    #[test]
    fn normalizes_empty_to_default() {
        assert_eq!(normalize(Some(&[])), None);
        assert_eq!(normalize(None), None);
    }
}
