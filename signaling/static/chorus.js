// chorus.js: browser client for the Chorus voice SFU (signaling protocol v1).
//
// A plain ES module with no dependencies. Typical use:
//
//   import { ChorusClient } from '/chorus.js';
//   const chorus = new ChorusClient();                 // same-origin /v1/signal
//   chorus.addEventListener('participant_joined', (e) => console.log(e.detail.participant));
//   await chorus.join({ room: 'lobby', name: 'Alice' });
//   chorus.setMuted(true);
//   await chorus.leave();
//
// One ChorusClient is one session: after `closed` fires, make a new one to join again.
// A dropped WebSocket does not end it: the client resumes the session on a new socket
// (state 'reconnecting', events `reconnecting` / `resumed`) while media keeps flowing,
// and it restarts ICE when the media connection fails (`restartIce()`). In a cluster
// it follows a join's `redirect` to the room's node (`redirected`), and when its node
// is gone it joins the room again at another one (`rejoining` / `rejoined`).
// Small calls may run peer to peer (mode 'p2p'): the node then only signals, and the
// client moves the audio to the node and back without a gap as the room grows and
// shrinks (`mode` event). See docs/client.md for the full API, the events and their
// `detail` payloads.

/** Protocol version spoken by this module (the `/v1/` in the WebSocket path). */
export const PROTOCOL_VERSION = 1;

/** A contributing source older than this (ms) is no longer "current" (speaking now). */
export const CSRC_FRESH_MS = 500;

const PING_INTERVAL_MS = 4_000;
/**
 * This many pings in a row without a pong (8–12 s of silence) and the socket counts as
 * dead: well within the node's 15 s resume window, should the node have noticed first.
 */
const MAX_UNANSWERED_PINGS = 2;
const JOIN_TIMEOUT_MS = 15_000;

/** Default time to resume a dropped session in; the node keeps it 15 s (`--resume-window`). */
const RESUME_TIMEOUT_MS = 14_000;
/** How much quieter the other slots play while a priority speaker speaks (dB). */
const PRIORITY_DUCK_DB = 12;
/** Least time between two `position` messages (the node takes the latest per 50 ms). */
const POSITION_INTERVAL_MS = 50;
/** Pause before each resume attempt (the last one repeats), ±20 % jitter. */
const RESUME_BACKOFF_MS = [250, 500, 1_000, 2_000];
/** One resume attempt (connect, `resume`, `resumed`) gets at most this long. */
const RESUME_ATTEMPT_TIMEOUT_MS = 4_000;
/**
 * Close codes with which the node ends a session for good (docs/protocol.md §7): 1000
 * (left, kicked, room closed), 1001 (node stopping or draining), 1008 (refused, policy),
 * 1011 (engine stopped, queue overflow), 1013 (rate limited), 4000 (media timeout),
 * 4001 (resumed elsewhere). Any other close of a joined session (1006: no close frame,
 * a network failure) is resumed.
 */
const TERMINAL_CLOSE_CODES = new Set([1000, 1001, 1008, 1011, 1013, 4000, 4001]);
/** Close codes this client sends itself (never 1000, which would end the session). */
const CLOSE_PING_TIMEOUT = 4900;
const CLOSE_RESUME_ATTEMPT_TIMEOUT = 4901;

// A cluster (docs/protocol.md, "Cluster: redirect and alternates").
/** A join is sent on to another node (`redirect`) at most this many times in a row. */
const MAX_REDIRECTS = 3;
/**
 * This many resume attempts in a row that never reach the node (the socket does not
 * even open: ~1.75 s of backoff) and the node counts as gone: a client that knows other
 * nodes (`joined.alternates`) joins the room again at one of them.
 */
const RESUME_UNREACHABLE_ATTEMPTS = 3;
/** Default time to join again elsewhere once the session cannot be resumed. */
const REJOIN_TIMEOUT_MS = 30_000;
/** Pause before each rejoin attempt (the last one repeats), ±20 % jitter. */
const REJOIN_BACKOFF_MS = [500, 1_000, 2_000, 4_000];
/** One rejoin attempt (connect, `join`, `joined`, offer, answer) gets at most this long. */
const REJOIN_ATTEMPT_TIMEOUT_MS = 8_000;
/** Join refusals a rejoin does not retry: any node would refuse the same join. */
const REJOIN_FATAL_CODES = new Set(['unauthorized', 'bad_request']);

/**
 * The camera's simulcast layers, lowest first as the protocol orders them (a 1280×720
 * camera sends 320×180, 640×360 and 1280×720). Browsers drop the layers a small
 * camera cannot fill.
 */
const CAMERA_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];
/** What `publishCamera()` asks getUserMedia for. */
const CAMERA_CONSTRAINTS = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
const VIDEO_SOURCES = ['camera', 'screen'];
const QUALITIES = ['low', 'medium', 'high'];

// Peer to peer (mode 'p2p', docs/protocol.md): one audio-only RTCPeerConnection per
// other member; the node's connection stays up as a warm standby.
/** Upgrade to the node: the longest the peer connections keep playing while the node's audio is awaited. */
const UPGRADE_SWITCH_MAX_MS = 1_500;
/** Downgrade: the microphone leaves the node's connection this long after every peer plays directly. */
const NODE_SEND_STOP_DELAY_MS = 1_000;
/** The peer connections stay open this long after playback moved to the node (the others may still be switching). */
const PEER_CLOSE_GRACE_MS = 1_000;
/** A source whose last frame is younger than this (ms) plays now: the evidence for switching paths. */
const LIVE_MS = 200;
/** How often the playback paths are looked at while a switch runs, and otherwise while there are peer connections. */
const ROUTE_INTERVAL_MS = 20;
const ROUTE_IDLE_INTERVAL_MS = 100;
/** Time constant (s) of a gain change: a path switch is a 20 ms crossfade, not a click. */
const GAIN_TIME_CONSTANT_S = 0.006;
/** `speaking` reports in mode p2p: every 200 ms while the microphone is at or above this level. */
const SPEAKING_REPORT_MS = 200;
/** How often the microphone level is sampled for those reports. */
const SPEAKING_SAMPLE_MS = 50;
const SPEAKING_MIN_LEVEL = 0.003;
/** An offer unanswered this long is made again (a lost signal), at most LINK_OFFER_ATTEMPTS times. */
const LINK_ANSWER_TIMEOUT_MS = 5_000;
const LINK_OFFER_ATTEMPTS = 3;
/** A `p2p_signal` from someone not in the roster yet is kept this long for its `participant_joined`. */
const EARLY_SIGNAL_MS = 5_000;
/** `p2p_signal` pacing, under the node's limit (20 a second, bursts of 60). */
const SIGNAL_RATE_PER_S = 18;
const SIGNAL_BURST = 40;
/** A connected peer connection that carries no audio for this long counts as ready. */
const SILENT_LINK_READY_MS = 1500;
/** Samples of the output analyser (`outputLevel()`): ~10.7 ms at 48 kHz. */
const OUTPUT_FFT_SIZE = 512;

/** An automatic ICE restart happens at most this often. */
const ICE_RESTART_MIN_INTERVAL_MS = 5_000;
/** 'disconnected' for this long (it often heals by itself) triggers an ICE restart. */
const ICE_DISCONNECTED_GRACE_MS = 3_000;

/**
 * Error raised by `join()` and carried by `error` events. `code` is the server's error
 * code (`bad_request`, `not_joined`, `unauthorized`, `room_full`, `rate_limited`,
 * `internal`, ...) or a client-side one (`timeout`, `socket_closed`, `media`, `webrtc`).
 */
export class ChorusError extends Error {
  constructor(code, message) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'ChorusError';
    this.code = code;
    this.serverMessage = message ?? '';
  }
}

function defaultUrl() {
  if (typeof location === 'undefined') {
    throw new ChorusError('bad_request', 'no url given and no page location to default to');
  }
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/v1/signal`;
}

/** Milliseconds since an RTCRtpContributingSource.timestamp (epoch- or page-relative). */
function ageOf(timestamp) {
  const now = performance.timeOrigin + performance.now();
  // The spec (and Chromium) use timeOrigin + now(); tolerate a page-relative clock too.
  if (timestamp < 1e12) return performance.now() - timestamp;
  return now - timestamp;
}

/**
 * Offer Opus only (the protocol's one codec) where the browser lets us choose: a
 * smaller offer, and no RED/G.711/CN payload types for the node to ignore.
 * Best effort: without setCodecPreferences the default offer (Opus first) is fine.
 */
function preferOpus(pc, transceivers) {
  try {
    const caps = RTCRtpReceiver.getCapabilities?.('audio');
    const opus = caps?.codecs?.filter((c) => c.mimeType.toLowerCase() === 'audio/opus') ?? [];
    if (opus.length === 0) return;
    for (const t of transceivers ?? pc.getTransceivers()) {
      if (typeof t.setCodecPreferences === 'function') t.setCodecPreferences(opus);
    }
  } catch {
    /* keep the browser's default codec list */
  }
}

/**
 * Offer the video codecs the node forwards (VP8 first, then H.264 in packetization
 * mode 1, with their RTX) where the browser lets us choose; `first` ('h264') puts
 * H.264 first instead, so that the camera and the screen send it. Best effort.
 */
function preferForwardedVideo(transceivers, first = 'vp8') {
  try {
    const codecs = RTCRtpReceiver.getCapabilities?.('video')?.codecs ?? [];
    const vp8 = codecs.filter((c) => c.mimeType.toLowerCase() === 'video/vp8');
    const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === 'video/h264'
      && /packetization-mode=1/.test(c.sdpFmtpLine ?? ''));
    const rtx = codecs.filter((c) => c.mimeType.toLowerCase() === 'video/rtx');
    const list = first === 'h264' ? [...h264, ...vp8, ...rtx] : [...vp8, ...h264, ...rtx];
    if (vp8.length + h264.length === 0) return;
    for (const t of transceivers) {
      if (typeof t.setCodecPreferences === 'function') t.setCodecPreferences(list);
    }
  } catch {
    /* keep the browser's default codec list */
  }
}

/** The number in a participant id ("p" + hex), for ordering a pair; null if it has none. */
function idNumber(id) {
  const m = /^p([0-9a-f]+)$/i.exec(String(id));
  if (!m) return null;
  try { return BigInt(`0x${m[1]}`); } catch { return null; }
}

/** Of two members, the one whose id is the larger number sends the offer. */
function offersTo(self, other) {
  const a = idNumber(self);
  const b = idNumber(other);
  if (a !== null && b !== null && a !== b) return a > b;
  return String(self) > String(other);
}

/**
 * The selected ICE candidate pair of a getStats() report:
 * `{local, remote, rtt_ms}` (each end `{address, port, candidate_type, protocol,
 * relay_protocol}`), or null before one is selected.
 */
function selectedPairOf(report) {
  let pair = null;
  report.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId) ?? pair;
  });
  if (!pair) {
    report.forEach((r) => {
      if (!pair && r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
    });
  }
  if (!pair) return null;
  const end = (id) => {
    const c = id && report.get(id);
    if (!c) return null;
    return {
      address: c.address ?? c.ip ?? null,
      port: typeof c.port === 'number' ? c.port : null,
      candidate_type: c.candidateType ?? null,
      protocol: c.protocol ?? null,
      relay_protocol: c.relayProtocol ?? null,
    };
  };
  return {
    local: end(pair.localCandidateId),
    remote: end(pair.remoteCandidateId),
    rtt_ms: typeof pair.currentRoundTripTime === 'number' ? pair.currentRoundTripTime * 1000 : null,
  };
}

/** The RMS (linear 0..1) of what an AnalyserNode holds now, read into `buf`. */
function rmsOf(analyser, buf) {
  analyser.getFloatTimeDomainData(buf);
  let sum = 0;
  for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
  return Math.min(1, Math.sqrt(sum / buf.length));
}

function sameParticipant(a, b) {
  return a.name === b.name && a.muted === b.muted && a.server_muted === b.server_muted
    && a.deafened === b.deafened && a.csrc === b.csrc && a.camera === b.camera && a.screen === b.screen;
}

function iceUfrag(sdp) {
  return /^a=ice-ufrag:(\S+)/m.exec(String(sdp ?? ''))?.[1] ?? null;
}

/** A finite `[x, y, z]`, or a ChorusError `bad_request`. */
function vec3(v, what) {
  const ok = Array.isArray(v) && v.length === 3 && v.every((c) => typeof c === 'number' && Number.isFinite(c));
  if (!ok) throw new ChorusError('bad_request', `${what} must be [x, y, z] of finite numbers`);
  return v.slice();
}

function copyParticipant(p) {
  return {
    participant_id: String(p.participant_id),
    name: String(p.name ?? ''),
    muted: Boolean(p.muted),
    server_muted: Boolean(p.server_muted),
    deafened: Boolean(p.deafened),
    csrc: Number(p.csrc) >>> 0,
    camera: p.camera === true,
    screen: p.screen === true,
  };
}

/**
 * A voice-chat session with one Chorus node.
 *
 * Properties (read-only for callers):
 * - `state`: 'idle' | 'connecting' | 'joined' | 'reconnecting' | 'closed'
 *   ('reconnecting': the WebSocket dropped and the session is being resumed on a new
 *   one; media keeps flowing meanwhile)
 * - `self`: `{participant_id, csrc, room, name, muted, server_muted, deafened}` once joined,
 *   else null (`server_muted`: the backend muted you; only it can lift that)
 * - `participants`: Map participant_id → `{participant_id, name, muted, server_muted,
 *   deafened, csrc}` of the *other* participants in the room (yourself is in `self`)
 * - `permissions`: `{publish, subscribe, priority}` as the backend last set them, or null
 *   (the join token's grants apply) until it changes them
 * - `slots`: the receive slots, `[{index, mid, transceiver, receiver, track, audio}]`
 * - `audioSlots`: number of slots the server asked for
 * - `pc`: the RTCPeerConnection (null before join / after close)
 * - `iceServers`: the RTCIceServer list the server sent
 * - `lastSpeakers`: the last `speakers` list received, `[{participant_id, level, slot,
 *   priority, whisper}]` (`priority`: a priority speaker; while one speaks, the other
 *   slots play `priorityDuckDb` quieter; `whisper`: it whispers to you)
 * - `whisperTo`: the ids you whisper to (`whisper()`), or null
 * - `position`: the last position given to `setPosition()`, or null
 * - `lastSpeakers[].distance`: in a proximity room, how far that speaker is from you
 *   (world units; null when unknown or outside proximity rooms)
 * - `signalRttMs`: round-trip time of the last ping/pong over the WebSocket
 * - `videoSlots`: the video slots, `[{index, mid, transceiver, receiver, track, stream,
 *   participant_id, source, quality, layer}]` (`stream`: a MediaStream to put in a
 *   `<video>`; `participant_id`/`source`/`quality`: what the slot asked for; `layer`:
 *   what the node forwards now, `'low'|'medium'|'high'` or null)
 * - `videoSlotCount`: video slots the room gives (0: no video in this room)
 * - `publishing`: `{camera: MediaStreamTrack|null, screen: MediaStreamTrack|null}`
 * - `mode`: `'p2p'` (the audio goes directly between the members, the node only
 *   signals) or `'sfu'` (through the node), null before joining
 * - `peers`: Map participant_id → the peer connection to that member in mode p2p
 *   (`{participant_id, pc, offerer, ...}`), empty in mode sfu
 * - `nodeSending`: whether the microphone goes to the node (false in mode p2p once
 *   every peer plays directly)
 * - `url`: the signaling URL of the node the session is on (a `redirect` or a rejoin
 *   elsewhere changes it)
 *
 * Events (CustomEvent, payload in `event.detail`): `joined`, `participant_joined`,
 * `participant_updated`, `participant_left`, `speakers`, `error`, `room_closed`,
 * `kicked`, `permissions`, `closed`, `connection_state`, `reconnecting`, `resumed`,
 * `ice_restarting`, `ice_restarted`, `ice_restart_failed`, `video_slots` (`{slots}`:
 * the whole video slot map, after each `subscribe()` and whenever the node changes
 * what a slot forwards), `video` (`{source, enabled}`: your own camera or screen
 * started or stopped), `mode` (`{mode, reason, previous}`: the room moved to `'p2p'` or
 * `'sfu'`, also once at join with reason `'joined'`), `mode_switched` (`{mode,
 * duration_ms}`: playback now runs on the new path), `peer_state` (`{participant_id,
 * state}`: a peer connection's connectionState), `redirected` (`{url}`: a join went on
 * to the room's node), `rejoining` (`{reason, message, urls}`: the session's node is
 * gone, the client joins the room again at another), `rejoined` (the new session:
 * `{participant_id, previous_participant_id, url, room, participants, attempts,
 * downtime_ms, mode}`).
 */
export class ChorusClient extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string} [options.url] WebSocket URL; defaults to `ws(s)://<this origin>/v1/signal`.
   * @param {HTMLElement} [options.audioContainer] where to put the `<audio>` elements of the
   *   slots and peer connections (hidden); by default they are kept detached from the
   *   document, which plays just as well. The elements play what you hear (the
   *   browser's echo canceller hears them; `setSinkId()` on them picks the output),
   *   except with `spatial`, where a Web Audio graph places the voices and the
   *   elements only render (muted). Either way a Web Audio tap measures the sum
   *   (`outputLevel()`).
   * @param {number} [options.resumeTimeoutMs] how long to try resuming a dropped session
   *   (default 14000, just under the node's 15 s resume window); 0 never resumes.
   * @param {number} [options.rejoinTimeoutMs] in a cluster, once the session cannot be
   *   resumed (its node is gone), how long to try joining the room again at the other
   *   nodes `joined` named (`alternates`), then at this one (default 30000); 0 never
   *   rejoins. Without alternates (a node alone) the session just ends.
   * @param {boolean} [options.autoIceRestart] restart ICE by itself when the media
   *   connection fails (default true).
   * @param {number} [options.priorityDuckDb] how much quieter the other slots play while a
   *   priority speaker (grant `priority`) speaks, in dB (default 12; 0: no ducking).
   * @param {boolean|{radius?: number}} [options.spatial] spatial playback: each slot plays
   *   through a WebAudio panner placed where its speaker is (`setParticipantPositions()`),
   *   heard from the listener pose (`setListenerPose()`; by default where `setPosition()`
   *   put you). With `radius` (the room's proximity radius) a speaker also gets quieter
   *   with distance as the node ranks it: gain (1 − d / radius)². Default: off (no
   *   panners).
   * @param {'all'|'relay'} [options.iceTransportPolicy] `'relay'` sends media only through
   *   the TURN servers the node hands out (`joined.ice_servers`), e.g. to hide your
   *   address or to test TURN; default `'all'`.
   * @param {boolean} [options.video] offer video (a camera and a screen section, and
   *   the room's video slots) when the room has video; default true. Publishing later
   *   never renegotiates: the sections are there from the join.
   * @param {'vp8'|'h264'} [options.videoCodec] what the camera and the screen send:
   *   VP8 (default) or H.264 (packetization mode 1). Either way the video slots take
   *   both: the node forwards each publisher's codec as it is.
   * @param {boolean} [options.encodedInsertableStreams] create the RTCPeerConnection with
   *   Chromium's `encodedInsertableStreams` (for end-to-end encryption by encoded
   *   transforms: the node forwards payloads it never reads); default false.
   * @param {function(RTCRtpTransceiver, string): void} [options.onTransceiver] called
   *   with every transceiver the client creates and what it is for (`'microphone'`,
   *   `'slot'`, `'camera'`, `'screen'`, `'video_slot'`), before the offer: where an app
   *   attaches encoded transforms (`createEncodedStreams()` with
   *   `encodedInsertableStreams`).
   * @param {boolean|{quality?: string}} [options.autoSubscribe] fill the video slots by
   *   themselves: screen shares first, then cameras, newest first, at `quality`
   *   (default `'medium'`). See `setAutoSubscribe()`.
   * @param {boolean} [options.p2p] offer to carry the call peer to peer (`join` with
   *   `p2p: true`): in a room that allows it (its `p2p_max`) the node puts small calls in
   *   mode p2p. Default true, except with `encodedInsertableStreams` (an app's encoded
   *   transforms would have to handle the peer connections too: the `'peer'`
   *   transceivers given to `onTransceiver`).
   */
  constructor({ url, audioContainer, resumeTimeoutMs, rejoinTimeoutMs, autoIceRestart, priorityDuckDb, spatial, iceTransportPolicy, video, autoSubscribe, encodedInsertableStreams, onTransceiver, videoCodec, p2p } = {}) {
    super();
    this.url = url ?? defaultUrl();
    this.audioContainer = audioContainer ?? null;
    this.resumeTimeoutMs = Math.max(0, Number(resumeTimeoutMs ?? RESUME_TIMEOUT_MS) || 0);
    this.rejoinTimeoutMs = Math.max(0, Number(rejoinTimeoutMs ?? REJOIN_TIMEOUT_MS) || 0);
    this.autoIceRestart = autoIceRestart ?? true;
    this.priorityDuckDb = Math.max(0, Number(priorityDuckDb ?? PRIORITY_DUCK_DB) || 0);
    this.state = 'idle';
    this.self = null;
    /** @type {Map<string, {participant_id:string,name:string,muted:boolean,server_muted:boolean,deafened:boolean,csrc:number}>} */
    this.participants = new Map();
    /** @type {{publish:boolean, subscribe:boolean, priority:boolean}|null} */
    this.permissions = null;
    this.slots = [];
    this.audioSlots = 0;
    this.pc = null;
    this.ws = null;
    this.iceServers = [];
    this.lastSpeakers = [];
    this.whisperTo = null;
    this.position = null;
    this.signalRttMs = null;
    this.localTrack = null;
    this.muted = false;
    this.deafened = false;

    this._ownsTrack = false;
    this._waiters = [];
    this._pingTimer = null;
    this._pingId = 0;
    this._pingsSent = new Map();
    this._pendingCandidates = [];
    this._offerSent = false;
    this._audioCtx = null;
    this._analyser = null;
    this._analyserBuf = null;
    this._statsLocalLevel = 0;
    this._closedEmitted = false;
    this._joinName = '';

    this._resumeToken = null;
    /**
     * The resume in progress: {since, attempts, code, reason, timer, attemptTimer,
     * opened, unreachable, rejoin} (`opened`: this attempt's socket opened;
     * `unreachable`: attempts in a row whose socket never did; `rejoin`: joining the
     * room again elsewhere instead, see `_startRejoin`).
     */
    this._reconnect = null;
    /** The `join` sent (a rejoin sends it again), and the other nodes' URLs the last `joined` named. */
    this._joinMsg = null;
    this._alternates = [];
    /** leave() was called, or the node ended the session (kicked, room_closed). */
    this._leaving = false;
    this._ended = false;
    /** The node drains and closed the room here: join it again elsewhere once the socket closes. */
    this._moveOnClose = false;
    /** mute/deafen that could not be sent while reconnecting: sent after `resumed`. */
    this._unsent = { mute: false, deafen: false, whisper: false, position: false, video: false };
    /** `position` throttling: when the last one went out, and the timer for the next. */
    this._positionSentAt = -Infinity;
    this._positionTimer = null;
    /** Spatial playback: {radius} or null; its AudioContext, the listener pose set by
     * the app (null: follow setPosition), and where the app says participants are. */
    this.iceTransportPolicy = iceTransportPolicy === 'relay' ? 'relay' : 'all';
    this.spatial = spatial ? { radius: Number(spatial.radius) > 0 ? Number(spatial.radius) : null } : null;
    this._spatialTimer = null;
    this._listenerPose = null;
    this._peerPositions = new Map();
    this._iceRestart = null; // the restart in progress (a Promise)
    this._lastIceRestartAt = -Infinity;
    this._iceRestartTimer = null;
    this._disconnectedTimer = null;
    /** A restart due once resumed: {reason, force} (force: the node may hold its offer). */
    this._iceRestartAfterResume = null;

    this.video = video !== false;
    this.encodedInsertableStreams = encodedInsertableStreams === true;
    this.videoCodec = videoCodec === 'h264' ? 'h264' : 'vp8';
    this._onTransceiver = typeof onTransceiver === 'function' ? onTransceiver : null;
    this.videoSlots = [];
    this.videoSlotCount = 0;
    this.publishing = { camera: null, screen: null };
    /** The camera and screen transceivers (null without video), and which tracks we opened. */
    this._videoTx = { camera: null, screen: null };
    this._ownsVideo = { camera: false, screen: false };
    /** When each `${participant_id}:${source}` was first seen published (newest first). */
    this._publishedAt = new Map();
    this._auto = null;
    if (autoSubscribe) this._auto = { quality: QUALITIES.includes(autoSubscribe?.quality) ? autoSubscribe.quality : 'medium' };

    // Peer to peer.
    this.p2p = p2p === undefined ? !this.encodedInsertableStreams : Boolean(p2p);
    this.mode = null;
    /** @type {Map<string, object>} participant_id → peer link (see `_makeLink`) */
    this.peers = new Map();
    this.nodeSending = true;
    /** The node connection's microphone transceiver, and its replaceTrack calls in order. */
    this._micTx = null;
    this._nodeSendChain = Promise.resolve();
    /** Which path each other member is heard on now: 'node' (slots) or 'peer'. */
    this._routes = new Map();
    /** The mode change being carried out: {mode, previous, reason, since, done}. */
    this._transition = null;
    this._routeTimer = null;
    this._routeEvery = 0;
    this._nodeStopTimer = null;
    this._peerCloseTimer = null;
    this._speakingTimer = null;
    this._lastSpeakingReport = 0;
    /** Outgoing `p2p_signal`s, paced: [{to, data}], a token bucket and its timer. */
    this._signalQueue = [];
    this._signalTokens = SIGNAL_BURST;
    this._signalRefillAt = 0;
    this._signalTimer = null;
    /** `p2p_signal`s from members not in the roster yet: [{msg, at}]. */
    this._earlySignals = [];
    /** Playback: one AudioContext for every remote sound (slots and peers), its master gain
     * and the analyser on the sum (`outputLevel()`). */
    this._playCtx = null;
    this._master = null;
    this._outAnalyser = null;
    this._outBuf = null;
  }

  // ---------------------------------------------------------------- public API

  /**
   * Join a room: open the WebSocket, get the microphone (unless a track is given), send
   * `join`, build the RTCPeerConnection with one send transceiver and `audio_slots`
   * receive slots, offer, apply the answer and trickle ICE candidates.
   *
   * Resolves with the `joined` message once the answer is applied (media may still be
   * connecting: watch `connection_state`). Rejects with a ChorusError (`unauthorized`,
   * `room_full`, `timeout`, `media`, ...) and leaves the client `closed` on failure.
   *
   * @param {object} opts
   * @param {string} opts.room
   * @param {string} opts.name
   * @param {string} [opts.token] JWT; optional when the node runs with `--dev`
   * @param {MediaStreamTrack|null} [opts.audioTrack] track to send; omitted: the default
   *   microphone via getUserMedia (stopped on leave); `null`: listen only (no send transceiver)
   * @param {MediaTrackConstraints} [opts.audioConstraints] for that getUserMedia (default:
   *   the browser's, with echo cancellation, noise suppression and gain control; e.g.
   *   `{noiseSuppression: false, autoGainControl: false}` for music or a soundboard)
   * @param {boolean} [opts.p2p] peer to peer allowed (default: the constructor's `p2p`)
   */
  async join({ room, name, token, audioTrack, audioConstraints, p2p } = {}) {
    if (this.state !== 'idle') throw new ChorusError('bad_request', `join() called in state ${this.state}`);
    this.state = 'connecting';
    if (p2p !== undefined) this.p2p = Boolean(p2p);
    // Made while the page may still count the user's click (autoplay policy).
    this._ensurePlayback();
    try {
      if (audioTrack === undefined) {
        try {
          const stream = await navigator.mediaDevices.getUserMedia({ audio: audioConstraints ?? true });
          audioTrack = stream.getAudioTracks()[0] ?? null;
          this._ownsTrack = true;
        } catch (e) {
          throw new ChorusError('media', `microphone unavailable: ${e?.message ?? e}`);
        }
      }
      this.localTrack = audioTrack ?? null;
      if (this.state === 'closed') throw new ChorusError('socket_closed', 'left while joining');
      this._setupAnalyser();

      this._joinName = String(name);
      const msg = { type: 'join', room: String(room), name: String(name) };
      if (token) msg.token = String(token);
      if (this.p2p) msg.p2p = true;
      this._joinMsg = msg;
      const joined = await this._sendJoin(msg);
      this._onJoined(joined);
      this._startPing(); // after joined: a strict node may answer a ping before join with not_joined

      await this._negotiate();
      this.state = 'joined';
      this._emit('joined', {
        participant_id: this.self.participant_id,
        csrc: this.self.csrc,
        room: this.self.room,
        audio_slots: this.audioSlots,
        video_slots: this.videoSlots.length,
        participants: [...this.participants.values()],
        mode: this.mode,
      });
      this._autoAssign();
      this._kickRoutes();
      return joined;
    } catch (e) {
      const err = e instanceof ChorusError ? e : new ChorusError('webrtc', e?.message ?? String(e));
      this._teardown({ code: 1000, reason: err.message, wasClean: false, error: err.code });
      throw err;
    }
  }

  /**
   * Mute or unmute the microphone: disables the local track and tells the server.
   * Unmuting while the backend has muted you (`self.server_muted`) throws a ChorusError
   * `forbidden` and changes nothing; muting is always allowed.
   */
  setMuted(muted) {
    muted = Boolean(muted);
    if (!muted && this.self?.server_muted) {
      throw new ChorusError('forbidden', 'muted by the server: only the backend can unmute you');
    }
    this.muted = muted;
    // The one track goes to the node and to every peer connection: muted everywhere.
    if (this.localTrack) this.localTrack.enabled = !muted;
    if (this.self) this.self.muted = muted;
    if (!this._send({ type: 'mute', muted }) && this.state === 'reconnecting') this._unsent.mute = true;
  }

  /** Deafen or undeafen: mutes local playback of every slot and peer and tells the server. */
  setDeafened(deafened) {
    deafened = Boolean(deafened);
    this.deafened = deafened;
    for (const s of this.slots) this._applyVolume(s);
    for (const l of this.peers.values()) this._applyVolume(l);
    this._syncElements();
    if (this.self) this.self.deafened = deafened;
    if (!this._send({ type: 'deafen', deafened }) && this.state === 'reconnecting') this._unsent.deafen = true;
  }

  /**
   * Whisper: send your audio only to these participants (ids), or to everyone again
   * (`null` or an empty list). Rooms allow it by their `whisper` policy (guild, party and
   * raid rooms by default); a refusal comes back as an `error` event (`forbidden`: off
   * in this room; `bad_request`: an id not in the room, or your own).
   */
  whisper(ids) {
    const to = Array.isArray(ids) && ids.length ? ids.map(String) : null;
    this.whisperTo = to;
    this._syncPeerSenders(); // peer to peer: only they get the microphone
    if (!this._send({ type: 'whisper', to }) && this.state === 'reconnecting') this._unsent.whisper = true;
  }

  /**
   * Where you are, in a proximity room whose positions come from clients
   * (`proximity.positions: "client"`): sent as `position`, at most every 50 ms (the
   * latest one wins). Until the first one you hear no one there. Also places the
   * spatial listener unless `setListenerPose()` took over. A refusal comes back as an
   * `error` event (`forbidden`: the backend sets positions in this room).
   * @param {number[]} position `[x, y, z]` in the game's world units
   */
  setPosition(position) {
    const p = vec3(position, 'position');
    this.position = p;
    if (!this._listenerPose) this._placeListener();
    const wait = POSITION_INTERVAL_MS - (performance.now() - this._positionSentAt);
    if (wait <= 0) this._sendPosition();
    else if (!this._positionTimer) {
      this._positionTimer = setTimeout(() => {
        this._positionTimer = null;
        this._sendPosition();
      }, wait);
    }
  }

  /**
   * Spatial playback: where you hear from, and which way you face (defaults: -z
   * forward, +y up). Once called, `setPosition()` no longer moves the listener.
   */
  setListenerPose(position, forward = [0, 0, -1], up = [0, 1, 0]) {
    this._listenerPose = {
      position: vec3(position, 'position'),
      forward: vec3(forward, 'forward'),
      up: vec3(up, 'up'),
    };
    this._placeListener();
  }

  /**
   * Spatial playback: where other participants are, `{participant_id: [x, y, z]}` (or a
   * Map; `null` forgets one). Their slots' panners follow.
   */
  setParticipantPositions(positions) {
    const entries = positions instanceof Map ? positions.entries() : Object.entries(positions ?? {});
    for (const [id, pos] of entries) {
      if (pos == null) this._peerPositions.delete(String(id));
      else this._peerPositions.set(String(id), vec3(pos, `position of ${id}`));
    }
    this._placeSlots();
  }

  /**
   * Start sending your camera (simulcast: three layers from a 1280×720 camera). Gets
   * the camera with getUserMedia unless a `track` is given, attaches it to the camera
   * section offered at join (no renegotiation) and tells the room (`video`). Rejects
   * with a ChorusError: `bad_request` (not joined, or the room has no video), `media`
   * (no camera).
   * @param {object} [opts]
   * @param {MediaStreamTrack} [opts.track] a video track to send instead of the camera
   * @param {MediaTrackConstraints} [opts.constraints] for getUserMedia (default 1280×720, 30 fps)
   */
  async publishCamera({ track, constraints } = {}) {
    return this._publish('camera', track, async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ video: constraints ?? CAMERA_CONSTRAINTS });
      return stream.getVideoTracks()[0];
    });
  }

  /**
   * Share your screen (one layer): getDisplayMedia unless a `track` is given. Ends by
   * itself when the browser's own "stop sharing" ends the track.
   * @param {object} [opts]
   * @param {MediaStreamTrack} [opts.track] a video track to share (e.g. a canvas's)
   */
  async shareScreen({ track } = {}) {
    return this._publish('screen', track, async () => {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      return stream.getVideoTracks()[0];
    });
  }

  /** Stop sending `source` (`'camera'` or `'screen'`) and tell the room. */
  async stopVideo(source) {
    if (!VIDEO_SOURCES.includes(source)) throw new ChorusError('bad_request', 'source must be "camera" or "screen"');
    const track = this.publishing[source];
    if (!track) return;
    this.publishing[source] = null;
    try { await this._videoTx[source]?.sender.replaceTrack(null); } catch { /* closed */ }
    if (this._ownsVideo[source]) track.stop();
    this._ownsVideo[source] = false;
    if (!this._send({ type: 'video', source, enabled: false }) && this.state === 'reconnecting') this._unsent.video = true;
    this._emit('video', { source, enabled: false });
  }

  /**
   * Video slot `slot` shows `participantId`'s `source` at `quality` (`null` clears it).
   * The node answers with `video_slots` (an `error` event, `bad_request`, for a slot out
   * of range or an unknown participant). Subscribing to a source not published yet is
   * fine: the slot waits for it.
   * @param {number} slot 0 … videoSlotCount − 1
   * @param {string|null} participantId
   * @param {'camera'|'screen'} [source]
   * @param {'low'|'medium'|'high'} [quality] low = the publisher's smallest layer
   */
  subscribe(slot, participantId, source = 'camera', quality = 'high') {
    if (!VIDEO_SOURCES.includes(source)) throw new ChorusError('bad_request', 'source must be "camera" or "screen"');
    if (!QUALITIES.includes(quality)) throw new ChorusError('bad_request', 'quality must be "low", "medium" or "high"');
    const id = participantId == null ? null : String(participantId);
    const s = this.videoSlots[slot];
    if (s) Object.assign(s, { participant_id: id, source, quality });
    this._send({ type: 'subscribe', slot: Number(slot), participant_id: id, source, quality });
  }

  /**
   * Fill the video slots automatically (screen shares first, then cameras, newest
   * first) at `quality`, or stop doing so (`false`; the slots keep what they show).
   * A slot's quality can still be raised with `subscribe()`; it keeps it while it
   * shows the same video.
   */
  setAutoSubscribe(options = {}) {
    this._auto = options === false || options === null ? null
      : { quality: QUALITIES.includes(options?.quality) ? options.quality : 'medium' };
    this._autoAssign();
  }

  /**
   * What each video slot receives, from getStats(): frames decoded, resolution, frame
   * rate, bytes.
   * @returns {Promise<Array<{slot:number, mid:string, participant_id:string|null,
   *   layer:string|null, frames_decoded:number, frame_width:number|null,
   *   frame_height:number|null, fps:number|null, bytes_received:number,
   *   packets_lost:number, nack_count:number, pli_count:number}>>}
   */
  async videoStats() {
    const out = this.videoSlots.map((s) => ({
      slot: s.index, mid: s.mid, participant_id: s.participant_id, layer: s.layer,
      frames_decoded: 0, frame_width: null, frame_height: null, fps: null,
      bytes_received: 0, packets_lost: 0, nack_count: 0, pli_count: 0, codec: null,
    }));
    if (!this.pc) return out;
    let report;
    try { report = await this.pc.getStats(); } catch { return out; }
    const byMid = new Map(out.map((s) => [s.mid, s]));
    const byTrack = new Map(this.videoSlots.map((s, i) => [s.track?.id, out[i]]));
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
      const s = byMid.get(r.mid) ?? byTrack.get(r.trackIdentifier);
      if (!s) return;
      s.frames_decoded = r.framesDecoded ?? 0;
      s.frame_width = r.frameWidth ?? null;
      s.frame_height = r.frameHeight ?? null;
      s.fps = r.framesPerSecond ?? null;
      s.bytes_received = r.bytesReceived ?? 0;
      s.packets_lost = r.packetsLost ?? 0;
      s.nack_count = r.nackCount ?? 0;
      s.pli_count = r.pliCount ?? 0;
      const codec = r.codecId && report.get(r.codecId);
      s.codec = codec?.mimeType ? codec.mimeType.replace(/^video\//i, '').toLowerCase() : null;
    });
    return out;
  }

  /**
   * Leave the room: sends `leave`, waits (briefly) for the server to close the socket,
   * then closes the peer connection and stops the microphone if this client opened it.
   */
  async leave() {
    if (this.state === 'closed') return;
    this._leaving = true;
    const ws = this.ws;
    // While reconnecting there is no session on the socket to leave: the node lets the
    // parked session go at the end of its resume window.
    if (ws && ws.readyState === WebSocket.OPEN && this.state !== 'reconnecting') {
      this._send({ type: 'leave' });
      await new Promise((resolve) => {
        const t = setTimeout(resolve, 1500);
        ws.addEventListener('close', () => { clearTimeout(t); resolve(); }, { once: true });
      });
    }
    this._teardown({ code: 1000, reason: 'left', wasClean: true });
  }

  /**
   * Restart ICE: `pc.restartIce()`, a new offer (new ICE credentials), and the node's
   * answer (its new credentials) applied. The session, slots and CSRC stay. Use it after a
   * network change; the client also does it by itself when the media connection fails.
   * Resolves once the answer is applied (the connection may still be re-checking: watch
   * `connection_state`); rejects with a ChorusError. One restart runs at a time (a second
   * call gets the running one). While reconnecting it waits for the resume first.
   */
  async restartIce() {
    if (this.state === 'reconnecting') {
      const resumed = await new Promise((resolve) => {
        const done = (ok) => () => {
          this.removeEventListener('resumed', onResumed);
          this.removeEventListener('rejoined', onResumed);
          this.removeEventListener('closed', onClosed);
          resolve(ok);
        };
        const onResumed = done(true);
        const onClosed = done(false);
        this.addEventListener('resumed', onResumed);
        this.addEventListener('rejoined', onResumed);
        this.addEventListener('closed', onClosed);
      });
      if (!resumed) throw new ChorusError('socket_closed', 'the session ended while reconnecting');
    }
    return this._restartIce('manual');
  }

  /**
   * Current level of every participant heard, in a slot (from the slots' contributing
   * sources: each forwarded packet names its speaker by CSRC and carries its audio
   * level) or on a peer connection (mode p2p; a muted member's silence is left out).
   * Only sources fresher than 500 ms count.
   * @returns {Map<string, {level:number, slot:number|null, csrc:number, ageMs:number, path:'sfu'|'p2p'}>}
   */
  speakerLevels() {
    const byCsrc = new Map();
    for (const p of this.participants.values()) byCsrc.set(p.csrc, p);
    const out = new Map();
    for (const src of this.contributingSources()) {
      if (src.ageMs > CSRC_FRESH_MS) continue;
      const p = src.path === 'p2p' ? this.participants.get(src.participant_id) : byCsrc.get(src.source);
      if (!p) continue;
      if (src.path === 'p2p' && (p.muted || p.server_muted)) continue;
      const prev = out.get(p.participant_id);
      if (!prev || src.ageMs < prev.ageMs) {
        out.set(p.participant_id, { level: src.audioLevel ?? 0, slot: src.slot, csrc: src.source, ageMs: src.ageMs, path: src.path });
      }
    }
    return out;
  }

  /**
   * Raw contributing sources of every slot receiver (whatever their age), and in mode
   * p2p the source of every peer connection, under that member's CSRC (`slot` null,
   * `path` `'p2p'`).
   * @returns {Array<{slot:number|null, source:number, audioLevel:number|undefined, ageMs:number,
   *   participant_id:string|null, path:'sfu'|'p2p'}>}
   */
  contributingSources() {
    const byCsrc = new Map();
    for (const p of this.participants.values()) byCsrc.set(p.csrc, p.participant_id);
    const out = [];
    for (const s of this.slots) {
      let list = [];
      try { list = s.receiver.getContributingSources(); } catch { /* closed */ }
      for (const c of list) {
        out.push({
          slot: s.index,
          source: c.source >>> 0,
          audioLevel: c.audioLevel,
          ageMs: ageOf(c.timestamp),
          participant_id: byCsrc.get(c.source >>> 0) ?? null,
          path: 'sfu',
        });
      }
    }
    for (const link of this.peers.values()) {
      const csrc = this.participants.get(link.participant_id)?.csrc ?? 0;
      for (const c of this._linkSources(link)) {
        out.push({
          slot: null,
          source: csrc,
          audioLevel: c.audioLevel,
          ageMs: ageOf(c.timestamp),
          participant_id: link.participant_id,
          path: 'p2p',
        });
      }
    }
    return out;
  }

  /**
   * The level of what you hear now, linear RMS 0..1 of the sum of every slot and peer
   * connection as played (after volume, ducking and deafen), over the last ~10 ms; null
   * without Web Audio or while the browser holds the audio back (autoplay policy: see
   * `resumeAudio()`).
   */
  outputLevel() {
    const a = this._outAnalyser;
    if (!a || this._playCtx?.state !== 'running') return null;
    return rmsOf(a, this._outBuf);
  }

  /**
   * Statistics of each peer connection (mode p2p), from its getStats().
   * @returns {Promise<Array<{participant_id:string, name:string|null, offerer:boolean,
   *   connection_state:string, ice_state:string, route:'peer'|'node', rtt_ms:number|null,
   *   packets_received:number, packets_lost:number, loss:number|null, jitter_ms:number|null,
   *   bytes_received:number, bytes_sent:number, packets_sent:number, audio_level:number|null,
   *   selected_pair:{local:object|null, remote:object|null, rtt_ms:number|null}|null}>>}
   */
  async peerStats() {
    const links = [...this.peers.values()];
    return Promise.all(links.map(async (link) => {
      const out = {
        participant_id: link.participant_id,
        name: this.participants.get(link.participant_id)?.name ?? null,
        offerer: link.offerer,
        connection_state: link.pc.connectionState,
        ice_state: link.pc.iceConnectionState,
        route: this._routes.get(link.participant_id) ?? 'node',
        rtt_ms: null, packets_received: 0, packets_lost: 0, loss: null, jitter_ms: null,
        bytes_received: 0, bytes_sent: 0, packets_sent: 0, audio_level: null, selected_pair: null,
      };
      let report;
      try { report = await link.pc.getStats(); } catch { return out; }
      let remoteRtt = null;
      report.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'audio') {
          out.packets_received += r.packetsReceived ?? 0;
          out.packets_lost += r.packetsLost ?? 0;
          out.bytes_received += r.bytesReceived ?? 0;
          if (typeof r.jitter === 'number') out.jitter_ms = r.jitter * 1000;
          if (typeof r.audioLevel === 'number') out.audio_level = r.audioLevel;
        } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
          out.bytes_sent += r.bytesSent ?? 0;
          out.packets_sent += r.packetsSent ?? 0;
        } else if (r.type === 'remote-inbound-rtp' && typeof r.roundTripTime === 'number') {
          remoteRtt = r.roundTripTime * 1000;
        }
      });
      out.selected_pair = selectedPairOf(report);
      out.rtt_ms = out.selected_pair?.rtt_ms ?? remoteRtt;
      const total = out.packets_received + out.packets_lost;
      out.loss = total > 0 ? Math.max(0, out.packets_lost) / total : null;
      return out;
    }));
  }

  /** Current microphone level, linear 0..1 (0 while muted). */
  localLevel() {
    if (!this.localTrack || this.muted) return 0;
    if (this._analyser) return rmsOf(this._analyser, this._analyserBuf);
    return this._statsLocalLevel;
  }

  /**
   * Connection statistics from RTCPeerConnection.getStats().
   * @returns {Promise<{rtt_ms:number|null, packets_lost:number, packets_received:number,
   *   jitter_ms:number|null, bytes_received:number, bytes_sent:number, packets_sent:number,
   *   local_audio_level:number|null, ice_state:string|null, connection_state:string|null,
   *   signal_rtt_ms:number|null, mode:string|null, node_sending:boolean,
   *   selected_pair:{local:object|null, remote:object|null, rtt_ms:number|null}|null,
   *   slots:Array<{slot:number, mid:string|null, packets_received:number, packets_lost:number,
   *   bytes_received:number, jitter_ms:number|null, audio_level:number|null}>}>}
   */
  async stats() {
    const out = {
      rtt_ms: null, packets_lost: 0, packets_received: 0, jitter_ms: null,
      bytes_received: 0, bytes_sent: 0, packets_sent: 0, local_audio_level: null,
      ice_state: this.pc?.iceConnectionState ?? null,
      connection_state: this.pc?.connectionState ?? null,
      signal_rtt_ms: this.signalRttMs,
      mode: this.mode,
      node_sending: this.nodeSending,
      selected_pair: null,
      slots: this.slots.map((s) => ({
        slot: s.index, mid: s.mid, packets_received: 0, packets_lost: 0,
        bytes_received: 0, jitter_ms: null, audio_level: null,
      })),
    };
    if (!this.pc) return out;
    let report;
    try { report = await this.pc.getStats(); } catch { return out; }
    const byMid = new Map(out.slots.map((s) => [s.mid, s]));
    const byTrack = new Map(this.slots.map((s, i) => [s.track?.id, out.slots[i]]));
    let remoteRtt = null;
    let jitterMax = null;
    report.forEach((r) => {
      switch (r.type) {
        case 'inbound-rtp': {
          if (r.kind !== 'audio') break;
          out.packets_received += r.packetsReceived ?? 0;
          out.packets_lost += r.packetsLost ?? 0;
          out.bytes_received += r.bytesReceived ?? 0;
          if (typeof r.jitter === 'number') jitterMax = Math.max(jitterMax ?? 0, r.jitter);
          const slot = byMid.get(r.mid) ?? byTrack.get(r.trackIdentifier);
          if (slot) {
            slot.packets_received = r.packetsReceived ?? 0;
            slot.packets_lost = r.packetsLost ?? 0;
            slot.bytes_received = r.bytesReceived ?? 0;
            slot.jitter_ms = typeof r.jitter === 'number' ? r.jitter * 1000 : null;
            slot.audio_level = typeof r.audioLevel === 'number' ? r.audioLevel : null;
          }
          break;
        }
        case 'outbound-rtp':
          if (r.kind !== 'audio') break;
          out.bytes_sent += r.bytesSent ?? 0;
          out.packets_sent += r.packetsSent ?? 0;
          break;
        case 'remote-inbound-rtp':
          if (typeof r.roundTripTime === 'number') remoteRtt = r.roundTripTime;
          break;
        case 'media-source':
          if (r.kind === 'audio' && typeof r.audioLevel === 'number') out.local_audio_level = r.audioLevel;
          break;
        default:
          break;
      }
    });
    out.selected_pair = selectedPairOf(report);
    out.rtt_ms = out.selected_pair?.rtt_ms ?? (remoteRtt === null ? null : remoteRtt * 1000);
    out.jitter_ms = jitterMax === null ? null : jitterMax * 1000;
    if (out.local_audio_level !== null) this._statsLocalLevel = out.local_audio_level;
    return out;
  }

  // ------------------------------------------------------------- internals

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _send(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    // A socket that has not resumed the session yet carries nothing but `resume`; one
    // that joins the room again elsewhere, nothing but its `join` until `joined`.
    if (this.state === 'reconnecting') {
      const rejoin = this._reconnect?.rejoin;
      if (rejoin ? !rejoin.joined && msg.type !== 'join' : msg.type !== 'resume') return false;
    }
    try { ws.send(JSON.stringify(msg)); return true; } catch { return false; }
  }

  /**
   * Open a WebSocket to the node; it becomes `this.ws`. Its events count only while it is
   * `this.ws`: a replaced (stale) socket can neither deliver messages nor end the session.
   */
  _connect() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    // Remember a close started from this page (ours, or the app's via `client.ws`): the
    // node does not always answer it with a close frame, so the close event cannot say
    // which code was sent, and that code decides whether the node kept the session.
    let localClose = null;
    const nativeClose = ws.close;
    ws.close = function close(...args) {
      const open = ws.readyState <= WebSocket.OPEN;
      nativeClose.apply(ws, args); // throws on a code a page may not send (e.g. 1001)
      if (open && localClose === null) localClose = { code: args[0] === undefined ? 1005 : Number(args[0]) };
    };
    ws.addEventListener('message', (ev) => { if (ws === this.ws) this._onMessage(ev.data); });
    ws.addEventListener('close', (ev) => { if (ws === this.ws) this._onSocketClose(ev, localClose); });
    return ws;
  }

  /**
   * Sends `msg` (a `join`) on a new socket to `this.url` and resolves with `joined`. A
   * `redirect` (in a cluster: the room lives on another node) is followed: the same
   * join goes to the URL it names, which becomes `this.url` (`redirected` event), at
   * most MAX_REDIRECTS times in a row; one more fails with `too_many_redirects`.
   */
  async _sendJoin(msg) {
    for (let redirects = 0; ; redirects += 1) {
      await this._openSocket();
      this._send(msg);
      const answer = await this._waitFor('joined');
      if (answer.type !== 'redirect') return answer;
      if (redirects >= MAX_REDIRECTS) {
        throw new ChorusError('too_many_redirects', `the join was redirected ${redirects + 1} times in a row (last to ${answer.url})`);
      }
      this.url = answer.url;
      this._emit('redirected', { url: this.url });
    }
  }

  /** Forgets the current socket (its events are stale from now on) and closes it. */
  _abandonSocket(code, reason) {
    const ws = this.ws;
    this.ws = null;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      try { ws.close(code, reason); } catch { /* ignore */ }
    }
  }

  /** `_connect()` for join: resolves once open, rejects if it closes first. */
  _openSocket() {
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = this._connect(); } catch (e) {
        reject(new ChorusError('socket_closed', `cannot open ${this.url}: ${e?.message ?? e}`));
        return;
      }
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('close', () => reject(new ChorusError('socket_closed', `cannot connect to ${this.url}`)), { once: true });
    });
  }

  /** The current socket closed (stale sockets never get here). */
  _onSocketClose(ev, localClose) {
    const code = ev.code;
    const reason = ev.reason ?? '';
    if (this.state === 'reconnecting') {
      this.ws = null;
      if (this._reconnect?.rejoin) {
        // A rejoin attempt's socket: that attempt fails (`_attemptRejoin` goes on).
        this._failWaiters(new ChorusError('socket_closed', `socket closed (${code}${reason ? ` ${reason}` : ''})`));
        return;
      }
      // A resume attempt's socket closed before `resumed` (no network yet, 1013 rate
      // limited, the node gone, ...): try again, unless the node is going away.
      this._clearAttemptTimer();
      if (code === 1001) this._giveUpResume('resume_failed', `the node is going away (${code}${reason ? ` ${reason}` : ''})`);
      else this._resumeAttemptFailed();
      return;
    }
    if (this.state === 'joined' && this._moveOnClose && !localClose) {
      this._moveOnClose = false;
      this.ws = null;
      this._startReconnect(code, reason);
      this._startRejoin('node_draining', `${this.url} drains: joining the room at another node`);
      return;
    }
    if (this.state === 'joined' && this._resumable(code, localClose)) {
      this.ws = null;
      this._startReconnect(localClose?.code ?? code, reason);
      return;
    }
    this._failWaiters(new ChorusError('socket_closed', `socket closed (${code}${reason ? ` ${reason}` : ''})`));
    this._teardown({ code, reason, wasClean: ev.wasClean });
  }

  /**
   * Whether a joined session whose socket closed with `code` is resumed: not after
   * leave(), `kicked` or `room_closed`, only with a resume token, and not on a close code
   * with which the node ends sessions (TERMINAL_CLOSE_CODES). A close started from this
   * page counts by the code it sent: 1000 or none ends the session on the node, any
   * other code leaves it parked there.
   */
  _resumable(code, localClose) {
    if (this._leaving || this._ended || !this._resumeToken || this.resumeTimeoutMs <= 0) return false;
    if (localClose) return localClose.code !== 1000 && localClose.code !== 1005;
    return !TERMINAL_CLOSE_CODES.has(code);
  }

  _startReconnect(code, reason) {
    if (this._pingTimer) { clearInterval(this._pingTimer); this._pingTimer = null; }
    this._pingsSent.clear();
    this._failWaiters(new ChorusError('socket_closed', `connection lost (${code}${reason ? ` ${reason}` : ''}); reconnecting`));
    this.state = 'reconnecting';
    this._reconnect = {
      since: performance.now(), attempts: 0, code, reason, timer: null, attemptTimer: null,
      opened: false, unreachable: 0, rejoin: null,
    };
    this._emit('reconnecting', { code, reason });
    this._scheduleResume();
  }

  _scheduleResume() {
    const r = this._reconnect;
    if (this.state !== 'reconnecting' || !r || r.timer) return;
    const remaining = this.resumeTimeoutMs - (performance.now() - r.since);
    if (remaining <= 0) {
      this._giveUpResume('resume_timeout', `could not resume the session within ${this.resumeTimeoutMs} ms`);
      return;
    }
    const base = RESUME_BACKOFF_MS[Math.min(r.attempts, RESUME_BACKOFF_MS.length - 1)];
    const delay = Math.min(remaining, base * (0.8 + 0.4 * Math.random()));
    r.timer = setTimeout(() => { r.timer = null; this._attemptResume(r); }, delay);
  }

  _attemptResume(r) {
    if (this.state !== 'reconnecting' || this._reconnect !== r) return;
    const remaining = this.resumeTimeoutMs - (performance.now() - r.since);
    if (remaining <= 0) {
      this._giveUpResume('resume_timeout', `could not resume the session within ${this.resumeTimeoutMs} ms`);
      return;
    }
    r.attempts += 1;
    r.opened = false;
    let ws;
    try { ws = this._connect(); } catch (e) {
      this._giveUpResume('resume_failed', `cannot open ${this.url}: ${e?.message ?? e}`);
      return;
    }
    ws.addEventListener('open', () => {
      if (this.ws !== ws || this._reconnect !== r) return;
      r.opened = true;
      this._send({ type: 'resume', participant_id: this.self.participant_id, resume_token: this._resumeToken });
    }, { once: true });
    // A socket that hangs (connecting, or no answer to `resume`) is dropped. Not with
    // 1000: should the node have taken the session onto it, that would end the session.
    r.attemptTimer = setTimeout(() => {
      r.attemptTimer = null;
      if (this.ws !== ws || this._reconnect !== r) return;
      this.ws = null;
      try { ws.close(CLOSE_RESUME_ATTEMPT_TIMEOUT, 'resume attempt timed out'); } catch { /* ignore */ }
      this._resumeAttemptFailed();
    }, Math.min(remaining, RESUME_ATTEMPT_TIMEOUT_MS));
  }

  /**
   * A resume attempt failed: try again, or, after RESUME_UNREACHABLE_ATTEMPTS in a row
   * that never reached the node (connection refused: the node is gone), join the room
   * again at another node if `joined` named some. Without them, resume until the end.
   */
  _resumeAttemptFailed() {
    const r = this._reconnect;
    if (this.state !== 'reconnecting' || !r) return;
    r.unreachable = r.opened ? 0 : (r.unreachable ?? 0) + 1;
    if (r.unreachable >= RESUME_UNREACHABLE_ATTEMPTS && this._canRejoin()) {
      this._startRejoin('node_unreachable', `${this.url} could not be reached ${r.unreachable} times in a row`);
    } else {
      this._scheduleResume();
    }
  }

  _clearAttemptTimer() {
    const r = this._reconnect;
    if (r?.attemptTimer) { clearTimeout(r.attemptTimer); r.attemptTimer = null; }
  }

  /** The session cannot be resumed: it ends, or, where other nodes are known, the room is joined again at one. */
  _giveUpResume(error, message) {
    const r = this._reconnect;
    if (this.state !== 'reconnecting' || !r) return;
    if (this._canRejoin()) this._startRejoin(error, message);
    else this._teardown({ code: r.code, reason: message, wasClean: false, error });
  }

  /** `resumed`: the session continues on this socket. */
  _onResumed(msg) {
    const r = this._reconnect;
    if (this.state !== 'reconnecting' || !r || r.rejoin) return;
    if (r.timer) clearTimeout(r.timer);
    this._clearAttemptTimer();
    this._reconnect = null;
    this.state = 'joined';
    if (msg.room) this.self.room = String(msg.room);
    // Fresh TURN credentials (a long call outlives the ones `joined` had): used from
    // the next ICE restart on.
    if (Array.isArray(msg.ice_servers) && msg.ice_servers.length) {
      this.iceServers = msg.ice_servers;
      try {
        this.pc?.setConfiguration({ ...this.pc.getConfiguration(), iceServers: this.iceServers });
      } catch { /* a browser that refuses it keeps the old ones */ }
    }

    // Catch up with the room as it is now.
    const now = this._syncRoster(msg.participants);

    this._startPing();
    // What the app changed while the socket was down.
    if (this._unsent.mute && (this.muted || !this.self.server_muted)) this._send({ type: 'mute', muted: this.muted });
    if (this._unsent.deafen) this._send({ type: 'deafen', deafened: this.deafened });
    if (this._unsent.whisper) this._send({ type: 'whisper', to: this.whisperTo });
    if (this._unsent.position && this.position) this._send({ type: 'position', position: this.position });
    // Video: what we send now, and every slot's subscription (the node answers with a
    // fresh `video_slots`; those sent while the socket was down were lost). A slot
    // showing someone who left is cleared.
    if (this._unsent.video) {
      for (const s of VIDEO_SOURCES) {
        if (this._videoTx[s]) this._send({ type: 'video', source: s, enabled: Boolean(this.publishing[s]) });
      }
    }
    for (const s of this.videoSlots) {
      const gone = s.participant_id && !now.has(s.participant_id);
      const id = gone ? null : s.participant_id;
      if (gone) s.participant_id = null;
      if (id || gone) this._send({ type: 'subscribe', slot: s.index, participant_id: id, source: s.source, quality: s.quality });
    }
    this._unsent = { mute: false, deafen: false, whisper: false, position: false, video: false };
    this._autoAssign();
    // Peer to peer: a mode change missed while the socket was down (if the node says),
    // and the peer connections whose signaling was cut off are built again.
    if (msg.mode === 'p2p' || msg.mode === 'sfu') this._setMode(msg.mode, 'resumed');
    this._repairLinks();

    this._emit('resumed', {
      participant_id: this.self.participant_id,
      room: this.self.room,
      participants: [...this.participants.values()],
      attempts: r.attempts,
      downtime_ms: Math.round(performance.now() - r.since),
      mode: this.mode,
    });
    if (this.state !== 'joined') return;
    // The network may have changed under the media too: restart ICE if it failed, if it
    // stayed disconnected past the grace period while the socket was down, or if a
    // restart was cut off after its offer went out (the node may have taken it).
    const pcState = this.pc?.connectionState;
    const pending = this._iceRestartAfterResume;
    this._iceRestartAfterResume = null;
    if (pending?.force) this._autoRestartIce(pending.reason, true);
    else if (pcState === 'failed' || (pcState === 'disconnected' && pending)) this._autoRestartIce(pcState);
  }

  /**
   * The others in the room are now `list` (P objects; `skip` is an id to leave out):
   * `participant_left`, `participant_joined` and `participant_updated` fire for what
   * changed since the roster was last known. Returns the new roster (id → P).
   */
  _syncRoster(list, skip = null) {
    const now = new Map();
    for (const raw of Array.isArray(list) ? list : []) {
      const p = copyParticipant(raw);
      if (p.participant_id !== this.self.participant_id && p.participant_id !== skip) now.set(p.participant_id, p);
    }
    const left = [...this.participants.values()].filter((p) => !now.has(p.participant_id));
    for (const p of left) {
      this.participants.delete(p.participant_id);
      this._closeLink(p.participant_id);
      this._routes.delete(p.participant_id);
      this._emit('participant_left', { participant_id: p.participant_id, participant: p });
    }
    for (const p of now.values()) {
      const previous = this.participants.get(p.participant_id);
      this.participants.set(p.participant_id, p);
      if (!previous) this._emit('participant_joined', { participant: p });
      else if (!sameParticipant(previous, p)) this._emit('participant_updated', { participant: p, previous, self: false });
    }
    const present = new Set([this.self.participant_id, ...now.keys()]);
    this.lastSpeakers = this.lastSpeakers.filter((s) => present.has(s.participant_id));
    for (const p of left) for (const s of VIDEO_SOURCES) this._publishedAt.delete(`${p.participant_id}:${s}`);
    for (const p of now.values()) this._noteVideo(p);
    return now;
  }

  // ------------------------------------------------------------- rejoin (a cluster)

  /** Whether a session that cannot be resumed joins the room again elsewhere: only where `joined` named other nodes. */
  _canRejoin() {
    return this._alternates.length > 0 && this.rejoinTimeoutMs > 0 && !this._leaving && !this._ended && this._joinMsg !== null;
  }

  /**
   * The session cannot be resumed (its node is gone, or has no session for it any
   * more) and other nodes are known: join the room again, as a new participant, at
   * those nodes in `alternates` order and then at this one, one attempt at a time with
   * backoff (`_attemptRejoin`), for up to `rejoinTimeoutMs`. State stays
   * 'reconnecting'; the old node connection goes now, the microphone and what the app
   * set (mute, deafen, whisper, position, video) stay for the new session.
   */
  _startRejoin(reason, message) {
    const r = this._reconnect;
    if (this.state !== 'reconnecting' || !r || r.rejoin) return;
    if (r.timer) { clearTimeout(r.timer); r.timer = null; }
    this._clearAttemptTimer();
    this._abandonSocket(1000, 'rejoining elsewhere');
    r.rejoin = {
      urls: [...new Set([...this._alternates, this.url])],
      attempts: 0,
      since: performance.now(),
      /** This attempt's node answered `joined`: its socket carries the new session. */
      joined: false,
      previous: this.self.participant_id,
      /** What each video slot showed, asked again where that member is still there. */
      subscriptions: this.videoSlots.map((v) => v.participant_id && { participant_id: v.participant_id, source: v.source, quality: v.quality }),
      lastError: null,
    };
    this._dropMedia();
    this.slots = [];
    this.videoSlots = [];
    this._emit('rejoining', { reason, message, urls: r.rejoin.urls.slice() });
    this._scheduleRejoin();
  }

  _scheduleRejoin() {
    const r = this._reconnect;
    const j = r?.rejoin;
    if (this.state !== 'reconnecting' || !j || r.timer) return;
    const remaining = this.rejoinTimeoutMs - (performance.now() - j.since);
    if (remaining <= 0) {
      const last = j.lastError ? `; last: ${j.lastError.message}` : '';
      this._teardown({ code: r.code, reason: `could not join the room again within ${this.rejoinTimeoutMs} ms${last}`, wasClean: false, error: 'rejoin_failed' });
      return;
    }
    const base = REJOIN_BACKOFF_MS[Math.min(j.attempts, REJOIN_BACKOFF_MS.length - 1)];
    const delay = Math.min(remaining, base * (0.8 + 0.4 * Math.random()));
    r.timer = setTimeout(() => { r.timer = null; this._attemptRejoin(r); }, delay);
  }

  /**
   * One rejoin attempt at the next URL of the list: `join` (following redirects),
   * `joined`, a new node connection (offer, answer). It fails within
   * REJOIN_ATTEMPT_TIMEOUT_MS (`_rejoinAttemptFailed`).
   */
  async _attemptRejoin(r) {
    const j = r.rejoin;
    if (this.state !== 'reconnecting' || this._reconnect !== r) return;
    const attempt = {};
    j.current = attempt;
    const current = () => this._reconnect === r && j.current === attempt;
    this.url = j.urls[j.attempts % j.urls.length];
    j.attempts += 1;
    j.joined = false;
    r.attemptTimer = setTimeout(() => {
      r.attemptTimer = null;
      if (current()) this._rejoinAttemptFailed(new ChorusError('timeout', `no session at ${this.url} within ${REJOIN_ATTEMPT_TIMEOUT_MS} ms`));
    }, REJOIN_ATTEMPT_TIMEOUT_MS);
    try {
      const joined = await this._sendJoin(this._joinMsg);
      if (!current()) return;
      j.joined = true;
      this._onJoined(joined, j.previous);
      await this._negotiate();
    } catch (e) {
      if (current()) this._rejoinAttemptFailed(e);
      return;
    }
    if (current()) this._rejoined(r);
  }

  /**
   * The rejoin attempt under way failed (`err`): whatever it awaits fails too, its
   * socket and connection go, and the next attempt is scheduled, unless the node
   * refused the join for a reason any node would (REJOIN_FATAL_CODES): then the
   * session ends.
   */
  _rejoinAttemptFailed(e) {
    const r = this._reconnect;
    const j = r?.rejoin;
    if (this.state !== 'reconnecting' || !j) return;
    const err = e instanceof ChorusError ? e : new ChorusError('webrtc', e?.message ?? String(e));
    j.current = null;
    j.lastError = err;
    this._clearAttemptTimer();
    this._failWaiters(err);
    // Closed with 1000: a session the node made for this attempt ends at once.
    this._abandonSocket(1000, 'rejoin attempt failed');
    this._dropMedia();
    this.slots = [];
    this.videoSlots = [];
    if (REJOIN_FATAL_CODES.has(err.code) || this._ended) {
      this._teardown({ code: r.code, reason: err.message, wasClean: false, error: this._ended ? 'rejoin_failed' : err.code });
    } else {
      this._scheduleRejoin();
    }
  }

  /**
   * The room is joined again on a new node connection: state 'joined', and the new
   * session gets what the app had set on the old one (mute, deafen, a whisper to
   * those still here, video it sends and the video slots' subscriptions; the position
   * went with `joined`).
   */
  _rejoined(r) {
    const j = r.rejoin;
    this._clearAttemptTimer();
    this._reconnect = null;
    this.state = 'joined';
    this._startPing();
    this._unsent = { mute: false, deafen: false, whisper: false, position: false, video: false };
    if (this.muted) this._send({ type: 'mute', muted: true });
    if (this.deafened) this._send({ type: 'deafen', deafened: true });
    if (this.whisperTo) {
      const still = this.whisperTo.filter((id) => this.participants.has(id));
      this.whisperTo = still.length ? still : null;
      this._syncPeerSenders();
      if (this.whisperTo) this._send({ type: 'whisper', to: this.whisperTo });
    }
    for (const s of VIDEO_SOURCES) {
      if (!this.publishing[s]) continue;
      if (this._videoTx[s]) this._send({ type: 'video', source: s, enabled: true });
      else this.stopVideo(s).catch(() => {}); // no video in the room now
    }
    j.subscriptions.forEach((want, index) => {
      if (want && this.videoSlots[index] && this.participants.has(want.participant_id)) {
        this.subscribe(index, want.participant_id, want.source, want.quality);
      }
    });
    this._emit('rejoined', {
      participant_id: this.self.participant_id,
      previous_participant_id: j.previous,
      url: this.url,
      room: this.self.room,
      participants: [...this.participants.values()],
      attempts: j.attempts,
      downtime_ms: Math.round(performance.now() - r.since),
      mode: this.mode,
    });
    this._autoAssign();
    this._kickRoutes();
  }

  /**
   * Closes the node connection and everything that hangs on it: the peer connections
   * (mode p2p), the slots' playback, their timers. The microphone, the playback
   * context and the app's settings stay (a rejoin builds a new connection on them).
   */
  _dropMedia() {
    for (const t of ['_iceRestartTimer', '_disconnectedTimer', '_nodeStopTimer', '_peerCloseTimer', '_signalTimer']) {
      if (this[t]) { clearTimeout(this[t]); this[t] = null; }
    }
    for (const t of ['_routeTimer', '_speakingTimer']) {
      if (this[t]) { clearInterval(this[t]); this[t] = null; }
    }
    this._signalQueue.length = 0;
    for (const id of [...this.peers.keys()]) this._closeLink(id);
    this._routes.clear();
    this._transition = null;
    this._iceRestartAfterResume = null;
    this._pendingCandidates = [];
    this._offerSent = false;
    this._micTx = null;
    this._videoTx = { camera: null, screen: null };
    this.nodeSending = true;
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      try { pc.close(); } catch { /* ignore */ }
      this._emit('connection_state', { state: 'closed', ice_state: 'closed' });
    }
    for (const s of this.slots) if (s) this._detachGraph(s);
  }

  // ------------------------------------------------------------- peer to peer

  /**
   * The room's mode changed (or is first known: at join). To the node (`'sfu'`): the
   * microphone goes back on the node's connection at once, the peer connections play on
   * until the node forwards each peer (`_updateRoutes`), then close. To peer to peer:
   * the peer connections are built, each peer plays directly once its audio arrives,
   * and the node's connection stops sending a second after the last one did.
   */
  _setMode(mode, reason) {
    mode = mode === 'p2p' && this.p2p ? 'p2p' : 'sfu';
    const previous = this.mode;
    if (mode === previous) return;
    this.mode = mode;
    this._transition = { mode, previous, reason: String(reason ?? ''), since: performance.now(), done: false };
    if (this._peerCloseTimer) { clearTimeout(this._peerCloseTimer); this._peerCloseTimer = null; }
    if (mode === 'sfu') {
      this._setNodeSending(true);
      this._stopSpeakingReports();
      // A link kept into a later spell in p2p must prove again that it plays.
      for (const link of this.peers.values()) link.ready = false;
      this._signalQueue.length = 0; // the node refuses p2p_signal now
    } else {
      // Joined in mode p2p, as from mode sfu: the node carries the microphone until
      // the peers play directly (make before break), so the first words are heard at
      // once, and a peer connection that never works (no path, no TURN) costs no
      // silence while the browser finds out.
      this._startSpeakingReports();
      this._openLinks(previous !== null);
    }
    this._emit('mode', { mode, reason: this._transition.reason, previous });
    this._kickRoutes();
  }

  /**
   * Puts the microphone on the node's connection (`on`) or takes it off (replaceTrack
   * null: the node then gets no media, only ICE consent and DTLS). In order; the last
   * call wins, and putting it on cancels a pending take-off (`_nodeStopTimer`).
   */
  _setNodeSending(on) {
    this.nodeSending = Boolean(on);
    if (on && this._nodeStopTimer) { clearTimeout(this._nodeStopTimer); this._nodeStopTimer = null; }
    const tx = this._micTx;
    if (!tx || !this.localTrack) return Promise.resolve();
    const next = this._nodeSendChain.then(() => {
      const want = this.nodeSending ? this.localTrack : null;
      if (this._micTx !== tx || tx.sender.track === want) return undefined;
      return tx.sender.replaceTrack(want);
    }).catch(() => { /* closed */ });
    this._nodeSendChain = next;
    return next;
  }

  /**
   * Mode p2p: a peer connection to every other member; of each pair the larger id
   * offers. A connection still open from an earlier spell in mode p2p is kept. On a
   * mode change (`ask`) the answering side also tells the offering side which
   * connection it still has (`renew`): should the offerer have kept one the answerer
   * already closed, the offerer builds a new one.
   */
  _openLinks(ask = false) {
    if (this.mode !== 'p2p' || !this.self) return;
    for (const id of this.participants.keys()) {
      const link = this.peers.get(id);
      if (offersTo(this.self.participant_id, id)) {
        if (!link || link.dead) this._startLink(id);
      } else if (ask) {
        this._queueSignal(id, { renew: true, have: link && !link.dead ? link.gen : null }, null);
      }
    }
  }

  /** After a resume: the peer connections whose signaling may have been lost are built again. */
  _repairLinks() {
    if (this.mode !== 'p2p' || !this.self) return;
    for (const id of this.participants.keys()) {
      const link = this.peers.get(id);
      // A working link keeps working, whatever signaling was lost meanwhile.
      if (link && !link.dead && link.pc.connectionState === 'connected') continue;
      if (offersTo(this.self.participant_id, id)) this._startLink(id);
      else this._queueSignal(id, { renew: true, have: null }, null); // asks the offerer for a new offer
    }
    this._kickRoutes();
  }

  /** What a peer connection to `id` sends: the microphone, unless muted by the server, whispering to others, or without `publish`. */
  _peerTrackFor(id) {
    if (!this.localTrack) return null;
    if (this.self?.server_muted || this.permissions?.publish === false) return null;
    if (this.whisperTo && !this.whisperTo.includes(id)) return null;
    return this.localTrack;
  }

  _syncPeerSenders() {
    for (const link of this.peers.values()) {
      if (!link.sender || !this.localTrack) continue;
      const want = this._peerTrackFor(link.participant_id);
      if (link.sender.track !== want) link.sender.replaceTrack(want).catch(() => { /* closed */ });
    }
  }

  /** The configuration of every peer connection, the node's and the peers'. */
  _rtcConfig() {
    return {
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
      ...(this.encodedInsertableStreams ? { encodedInsertableStreams: true } : {}),
    };
  }

  /** A new peer connection to `id` (not yet offered or answered). */
  _makeLink(id, offerer, gen) {
    const pc = new RTCPeerConnection(this._rtcConfig());
    const link = {
      kind: 'peer',
      participant_id: id,
      pc,
      offerer,
      /** Names this connection in its signals: a late candidate of a replaced one is ignored. */
      gen: String(gen),
      transceiver: null,
      sender: null,
      receiver: null,
      track: null,
      audio: null,
      source: null,
      gain: null,
      panner: null,
      gainTarget: null,
      duck: 1,
      /** Our description went out (candidates wait for it), and theirs is applied. */
      described: false,
      remoteSet: false,
      localCandidates: [],
      remoteCandidates: [],
      dead: false,
      ready: false,
      failedReported: false,
      signalLost: false,
      answerTimer: null,
      createdAt: performance.now(),
    };
    pc.addEventListener('icecandidate', (ev) => {
      const c = ev.candidate;
      if (!c || !c.candidate || this.peers.get(id) !== link) return; // end-of-candidates: not sent
      const candidate = { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
      if (link.described) this._signal(link, { candidate });
      else link.localCandidates.push(candidate);
    });
    pc.addEventListener('track', (ev) => this._onLinkTrack(link, ev));
    pc.addEventListener('connectionstatechange', () => this._onLinkState(link));
    this.peers.set(id, link);
    this._kickRoutes();
    return link;
  }

  _linkTransceiver(link, tx) {
    link.transceiver = tx;
    link.sender = tx.sender;
    link.receiver = tx.receiver;
    preferOpus(link.pc, [tx]);
    if (this._onTransceiver) this._onTransceiver(tx, 'peer');
  }

  /**
   * We offer: a new connection to `id` (replacing any), its offer sent. Unanswered
   * after 5 s it is offered again (a new connection), the third time it counts as failed.
   */
  async _startLink(id, attempt = 1) {
    this._closeLink(id);
    const gen = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
    const link = this._makeLink(id, true, gen);
    const { pc } = link;
    link.answerTimer = setTimeout(() => {
      link.answerTimer = null;
      if (this.peers.get(id) !== link || link.remoteSet || this.mode !== 'p2p') return;
      if (attempt < LINK_OFFER_ATTEMPTS) this._startLink(id, attempt + 1);
      else this._linkFailed(link, new ChorusError('timeout', `no answer from ${id} to ${attempt} offers`));
    }, LINK_ANSWER_TIMEOUT_MS);
    try {
      const tx = pc.addTransceiver(this.localTrack ?? 'audio', { direction: this.localTrack ? 'sendrecv' : 'recvonly' });
      this._linkTransceiver(link, tx);
      const track = this._peerTrackFor(id);
      if (this.localTrack && track !== this.localTrack) await tx.sender.replaceTrack(track);
      const offer = await pc.createOffer();
      if (this.peers.get(id) !== link) return;
      await pc.setLocalDescription(offer);
      if (this.peers.get(id) !== link) return;
      this._describe(link);
    } catch (e) {
      if (this.peers.get(id) === link) this._linkFailed(link, e);
    }
  }

  /** They offer: a new connection to `id` (replacing any), answered. */
  async _acceptOffer(id, sdp, gen) {
    this._closeLink(id);
    const link = this._makeLink(id, false, gen);
    const { pc } = link;
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp });
      if (this.peers.get(id) !== link) return;
      const tx = pc.getTransceivers().find((t) => t.receiver.track?.kind === 'audio') ?? pc.getTransceivers()[0];
      if (!tx) throw new ChorusError('webrtc', 'the peer offered no audio');
      this._linkTransceiver(link, tx);
      if (this.localTrack) {
        tx.direction = 'sendrecv';
        await tx.sender.replaceTrack(this._peerTrackFor(id));
      } else {
        tx.direction = 'recvonly';
      }
      if (this.peers.get(id) !== link) return;
      await pc.setLocalDescription(await pc.createAnswer());
      if (this.peers.get(id) !== link) return;
      this._describe(link);
      this._flushRemoteCandidates(link);
    } catch (e) {
      if (this.peers.get(id) === link) this._linkFailed(link, e);
    }
  }

  /** Our offer or answer goes out, then the candidates gathered meanwhile. */
  _describe(link) {
    const d = link.pc.localDescription;
    this._signal(link, { sdp: { type: d.type, sdp: d.sdp } });
    link.described = true;
    for (const candidate of link.localCandidates.splice(0)) this._signal(link, { candidate });
  }

  _flushRemoteCandidates(link) {
    link.remoteSet = true;
    for (const c of link.remoteCandidates.splice(0)) link.pc.addIceCandidate(c).catch(() => { /* stale */ });
  }

  /** `p2p_signal` from another member: an offer, an answer, a candidate, or a request to offer anew. */
  _onP2pSignal(msg) {
    const from = String(msg.from ?? '');
    const data = msg.data;
    if (!this.self || !data || typeof data !== 'object' || !from) return;
    if (!this.participants.has(from)) {
      // Perhaps ahead of its `participant_joined`: kept a while for it.
      const now = performance.now();
      this._earlySignals = this._earlySignals.filter((e) => now - e.at < EARLY_SIGNAL_MS).slice(-50);
      if (this.mode === 'p2p') this._earlySignals.push({ msg, at: now });
      return;
    }
    if (data.renew === true) {
      if (this.mode !== 'p2p' || !offersTo(this.self.participant_id, from)) return;
      const mine = this.peers.get(from);
      // Ours is on its way to them (no answer yet), or they have it: nothing to do.
      const inFlight = mine && !mine.dead && !mine.remoteSet;
      const shared = mine && !mine.dead && data.have === mine.gen;
      if (!inFlight && !shared) this._startLink(from);
      return;
    }
    const sdp = data.sdp && typeof data.sdp === 'object' && typeof data.sdp.sdp === 'string' ? data.sdp : null;
    const gen = String(data.gen ?? '');
    const link = this.peers.get(from);
    if (sdp?.type === 'offer') {
      if (this.mode !== 'p2p') return;
      if (link && !link.offerer && link.gen === gen) return; // that offer again
      this._acceptOffer(from, sdp.sdp, gen);
      return;
    }
    // For a connection replaced since (a client that sends no `gen` means the current one).
    if (!link || (data.gen !== undefined && link.gen !== gen)) return;
    if (sdp?.type === 'answer') {
      if (!link.offerer || link.pc.signalingState !== 'have-local-offer') return;
      link.pc.setRemoteDescription({ type: 'answer', sdp: sdp.sdp })
        .then(() => { if (this.peers.get(from) === link) this._flushRemoteCandidates(link); })
        .catch((e) => { if (this.peers.get(from) === link) this._linkFailed(link, e); });
    } else if (data.candidate && typeof data.candidate === 'object') {
      const c = {
        candidate: String(data.candidate.candidate ?? ''),
        sdpMid: data.candidate.sdpMid ?? null,
        sdpMLineIndex: data.candidate.sdpMLineIndex ?? null,
      };
      if (link.remoteSet) link.pc.addIceCandidate(c).catch(() => { /* stale */ });
      else link.remoteCandidates.push(c);
    }
  }

  /** The early `p2p_signal`s of `id` (now in the roster), oldest first. */
  _takeEarlySignals(id) {
    const now = performance.now();
    const mine = this._earlySignals.filter((e) => e.msg.from === id && now - e.at < EARLY_SIGNAL_MS);
    this._earlySignals = this._earlySignals.filter((e) => e.msg.from !== id && now - e.at < EARLY_SIGNAL_MS);
    return mine.map((e) => e.msg);
  }

  _signal(link, data) {
    this._queueSignal(link.participant_id, { ...data, gen: link.gen }, link);
  }

  /** `p2p_signal`s go out in order, paced under the node's rate limit; none outside mode p2p. */
  _queueSignal(to, data, link) {
    if (this.mode !== 'p2p') return;
    this._signalQueue.push({ to, data, link });
    this._pumpSignals();
  }

  _pumpSignals() {
    if (this._signalTimer) return;
    const now = performance.now();
    this._signalTokens = Math.min(SIGNAL_BURST, this._signalTokens + ((now - this._signalRefillAt) / 1000) * SIGNAL_RATE_PER_S);
    this._signalRefillAt = now;
    while (this._signalQueue.length && this._signalTokens >= 1) {
      const { to, data, link } = this._signalQueue.shift();
      if (this.mode !== 'p2p') { this._signalQueue.length = 0; break; }
      if (link && this.peers.get(to) !== link) continue; // replaced since
      this._signalTokens -= 1;
      // Lost while reconnecting: the connection is built again once resumed.
      if (!this._send({ type: 'p2p_signal', to, data }) && link) link.signalLost = true;
    }
    if (this._signalQueue.length) {
      const wait = ((1 - this._signalTokens) / SIGNAL_RATE_PER_S) * 1000;
      this._signalTimer = setTimeout(() => { this._signalTimer = null; this._pumpSignals(); }, Math.max(5, wait));
    }
  }

  _onLinkTrack(link, ev) {
    if (this.peers.get(link.participant_id) !== link || link.track || ev.track?.kind !== 'audio') return;
    link.track = ev.track;
    link.receiver = ev.receiver ?? link.receiver;
    link.audio = this._makeElement(ev.track, 'chorusPeer', link.participant_id);
    this._attachGraph(link, ev.track);
    this._kickRoutes();
  }

  _onLinkState(link) {
    if (this.peers.get(link.participant_id) !== link) return;
    const state = link.pc.connectionState;
    if (state === 'connected') link.connectedAt ??= performance.now();
    if (state === 'disconnected' && this.mode === 'p2p') {
      // The direct path went quiet (its consent checks go unanswered: a network change,
      // a NAT mapping gone): the slots play this peer again and the node carries our
      // microphone, until the path comes back (then it proves again that it plays) or
      // fails (`p2p_failed`: the room moves to the node).
      link.ready = false;
      this._setNodeSending(true);
    }
    this._emit('peer_state', { participant_id: link.participant_id, state });
    if (state === 'failed' || state === 'closed') this._linkFailed(link, null);
    this._kickRoutes();
  }

  /** A peer connection failed (ICE found no path, or its SDP was refused): the node takes the room (`p2p_failed`). */
  _linkFailed(link, err) {
    link.dead = true;
    if (err) console.warn('chorus: peer connection to', link.participant_id, 'failed:', err?.message ?? err);
    if (this.mode === 'p2p' && !link.failedReported) {
      link.failedReported = this._send({ type: 'p2p_failed', peer: link.participant_id });
    }
    this._kickRoutes();
  }

  _closeLink(id) {
    const link = this.peers.get(id);
    if (!link) return;
    this.peers.delete(id);
    link.dead = true;
    if (link.answerTimer) { clearTimeout(link.answerTimer); link.answerTimer = null; }
    try { link.pc.close(); } catch { /* closed */ }
    this._detachGraph(link);
    this._emit('peer_state', { participant_id: id, state: 'closed' });
  }

  /** The RTP sources of a peer connection's receiver (audio level, when the last frame played). */
  _linkSources(link) {
    try { return link.receiver?.getSynchronizationSources?.() ?? []; } catch { return []; }
  }

  /** A peer's audio plays on its connection now. */
  _linkLive(link) {
    return this._linkSources(link).some((c) => ageOf(c.timestamp) < LIVE_MS);
  }

  /**
   * Its audio plays, or the connection is up and the peer sends none: listen only, or
   * nothing for a while (a peer whose whisper leaves us out sends no RTP).
   */
  _linkReady(link) {
    if (link.dead) return false;
    if (this._linkLive(link)) return true;
    if (link.pc.connectionState !== 'connected') return false;
    const dir = link.transceiver?.currentDirection;
    if (dir === 'sendonly' || dir === 'inactive') return true;
    return link.connectedAt !== undefined && performance.now() - link.connectedAt >= SILENT_LINK_READY_MS;
  }

  /**
   * Looks at the playback paths every 20 ms while a switch runs, every 100 ms while
   * there are peer connections otherwise, not at all in mode sfu once they are gone.
   */
  _kickRoutes() {
    if (this.state === 'closed') return;
    const t = this._transition;
    const every = t && !t.done ? ROUTE_INTERVAL_MS : ROUTE_IDLE_INTERVAL_MS;
    if (this._routeTimer && this._routeEvery === every) return;
    if (this._routeTimer) clearInterval(this._routeTimer);
    this._routeEvery = every;
    this._routeTimer = setInterval(() => this._routeTick(), every);
  }

  _routeTick() {
    if (this.state === 'closed') {
      clearInterval(this._routeTimer);
      this._routeTimer = null;
      return;
    }
    this._updateRoutes();
    this._placeSlots(); // the slots' speakers, and every volume
    const t = this._transition;
    if (this.peers.size === 0 && (!t || t.done)) {
      clearInterval(this._routeTimer);
      this._routeTimer = null;
    } else {
      this._kickRoutes(); // slower once the switch is done
    }
  }

  /**
   * Which path each other member is heard on, make before break: toward the node, a
   * member moves to the slots once a slot plays its CSRC (or after 1.5 s, or its peer
   * connection went quiet); toward peer to peer, once its peer connection plays. The
   * path not chosen is silent (`_baseVolume`). When every member has moved: the
   * `mode_switched` event, then the peer connections close (sfu) or the node's
   * connection stops sending (p2p).
   */
  _updateRoutes() {
    const now = performance.now();
    const t = this._transition;
    const target = this.mode === 'p2p' ? 'peer' : 'node';
    const byCsrc = new Map();
    for (const p of this.participants.values()) byCsrc.set(p.csrc, p.participant_id);
    // participant_id → age (ms) of its newest frame on a slot, by CSRC: the evidence
    // that the node forwards it.
    const onSlots = new Map();
    for (const s of this.slots) {
      let list = [];
      try { list = s.receiver.getContributingSources(); } catch { /* closed */ }
      for (const c of list) {
        const id = byCsrc.get(c.source >>> 0);
        const age = ageOf(c.timestamp);
        if (id && age < (onSlots.get(id) ?? Infinity)) onSlots.set(id, age);
      }
    }
    let settled = true;
    for (const id of this.participants.keys()) {
      const link = this.peers.get(id);
      const prev = this._routes.get(id) ?? 'node';
      const slotAge = onSlots.get(id) ?? Infinity;
      let next = prev;
      if (target === 'peer') {
        if (link && !link.dead && (link.ready || this._linkReady(link))) {
          link.ready = true;
          next = 'peer';
        } else {
          // Not playing directly (yet): the slots play whatever the node forwards of it
          // (its direct path is silent until then).
          next = 'node';
          settled = false;
        }
      } else if (prev === 'peer') {
        const waited = now - (t?.since ?? -Infinity);
        if (!link || link.dead || slotAge < LIVE_MS || waited >= UPGRADE_SWITCH_MAX_MS || !this._linkLive(link)) next = 'node';
        else settled = false;
      }
      if (next !== prev) this._routes.set(id, next);
    }
    if (t && !t.done && settled) {
      t.done = true;
      this._emit('mode_switched', { mode: t.mode, duration_ms: Math.round(now - t.since) });
    }
    if (settled && target === 'peer' && this.nodeSending && !this._nodeStopTimer) {
      this._nodeStopTimer = setTimeout(() => {
        this._nodeStopTimer = null;
        if (this.mode === 'p2p' && this.state !== 'closed') this._setNodeSending(false);
      }, NODE_SEND_STOP_DELAY_MS);
    }
    if (settled && target === 'node' && this.peers.size > 0 && !this._peerCloseTimer) {
      this._peerCloseTimer = setTimeout(() => {
        this._peerCloseTimer = null;
        if (this.mode !== 'sfu') return;
        for (const id of [...this.peers.keys()]) this._closeLink(id);
      }, PEER_CLOSE_GRACE_MS);
    }
  }

  _startSpeakingReports() {
    if (this._speakingTimer || !this.localTrack) return;
    this._lastSpeakingReport = 0;
    this._speakingPeak = 0;
    this._speakingSamples = 0;
    // The level is sampled every 50 ms and its peak reported every 200 ms: one ~20 ms
    // snapshot per report would miss the syllables in between.
    this._speakingTimer = setInterval(() => {
      this._speakingPeak = Math.max(this._speakingPeak, this.localLevel() || 0);
      this._speakingSamples += 1;
      if (this._speakingSamples * SPEAKING_SAMPLE_MS >= SPEAKING_REPORT_MS) {
        this._reportSpeaking(this._speakingPeak);
        this._speakingPeak = 0;
        this._speakingSamples = 0;
      }
    }, SPEAKING_SAMPLE_MS);
  }

  _stopSpeakingReports() {
    if (this._speakingTimer) { clearInterval(this._speakingTimer); this._speakingTimer = null; }
    this._lastSpeakingReport = 0;
  }

  /**
   * Mode p2p: the node hears nothing, so the microphone's level goes to it (`speaking`)
   * for `speakers` and the speaking events: every 200 ms while at or above 0.003, one 0
   * when it falls silent, nothing while silent.
   */
  _reportSpeaking(peak) {
    if (this.mode !== 'p2p' || this.state !== 'joined') return;
    const silenced = this.muted || this.self?.server_muted || this.permissions?.publish === false;
    const level = silenced ? 0 : peak;
    const loud = level >= SPEAKING_MIN_LEVEL;
    if (!loud && this._lastSpeakingReport < SPEAKING_MIN_LEVEL) return;
    const value = loud ? Math.min(1, Math.round(level * 1000) / 1000) : 0;
    if (this._send({ type: 'speaking', level: value })) this._lastSpeakingReport = value;
  }

  // ------------------------------------------------------------- ICE restart

  _restartIce(reason) {
    if (this._iceRestart) return this._iceRestart;
    if (this.state !== 'joined' || !this.pc) {
      return Promise.reject(new ChorusError('bad_request', `restartIce() in state ${this.state}`));
    }
    const pc = this.pc;
    this._lastIceRestartAt = performance.now();
    let offered = false;
    const run = async () => {
      this._emit('ice_restarting', { reason, connection_state: pc.connectionState });
      try {
        pc.restartIce();
        await pc.setLocalDescription(await pc.createOffer());
        if (this.pc !== pc) throw new ChorusError('socket_closed', 'closed while restarting ICE');
        const answerP = this._waitFor('answer');
        offered = this._send({ type: 'offer', sdp: pc.localDescription.sdp, sources: this._sources() });
        if (!offered) this._failWaiters(new ChorusError('socket_closed', 'no signaling connection'), 'answer');
        const answer = await answerP;
        if (this.pc !== pc) throw new ChorusError('socket_closed', 'closed while restarting ICE');
        await pc.setRemoteDescription({ type: 'answer', sdp: String(answer.sdp) });
      } catch (e) {
        const err = e instanceof ChorusError ? e : new ChorusError('webrtc', e?.message ?? String(e));
        if (this.pc === pc && pc.signalingState === 'have-local-offer') {
          try { await pc.setLocalDescription({ type: 'rollback' }); } catch { /* ignore */ }
        }
        // Lost the socket meanwhile: do it again once resumed. If the offer went out, the
        // node may have applied it (new credentials on its side): then in any case.
        if (this.state === 'reconnecting') {
          this._iceRestartAfterResume = { reason: offered ? 'resume' : reason, force: offered || this._iceRestartAfterResume?.force === true };
        }
        this._emit('ice_restart_failed', { reason, code: err.code, message: err.message, error: err });
        throw err;
      }
      this._emit('ice_restarted', {
        reason,
        connection_state: pc.connectionState,
        local_ufrag: iceUfrag(pc.localDescription?.sdp),
        remote_ufrag: iceUfrag(pc.remoteDescription?.sdp),
      });
    };
    // Started a microtask later, so that `_iceRestart` is set before any listener runs.
    const p = Promise.resolve().then(run).finally(() => {
      if (this._iceRestart === p) this._iceRestart = null;
      if (reason !== 'manual') this._recheckIce(); // still down later: again
    });
    this._iceRestart = p;
    return p;
  }

  /** The peer connection's state changed: restart ICE when it failed or stays disconnected. */
  _onConnectionState(pc) {
    if (this.pc !== pc) return;
    if (this._disconnectedTimer) { clearTimeout(this._disconnectedTimer); this._disconnectedTimer = null; }
    const s = pc.connectionState;
    if (s === 'failed') {
      this._autoRestartIce('failed');
    } else if (s === 'disconnected') {
      this._disconnectedTimer = setTimeout(() => {
        this._disconnectedTimer = null;
        if (this.pc === pc && pc.connectionState === 'disconnected') this._autoRestartIce('disconnected');
      }, ICE_DISCONNECTED_GRACE_MS);
    }
  }

  /**
   * An automatic ICE restart, at most one per ICE_RESTART_MIN_INTERVAL_MS. `force`: even
   * if the connection is fine by then (credentials may disagree with the node's).
   */
  _autoRestartIce(reason, force = false) {
    if (!this.pc || this.state === 'closed') return;
    if (!force && !this.autoIceRestart) return;
    if (this._iceRestart) {
      if (force) this._recheckIce(ICE_RESTART_MIN_INTERVAL_MS, reason, true);
      return;
    }
    if (this.state === 'reconnecting') {
      this._iceRestartAfterResume = { reason, force: force || this._iceRestartAfterResume?.force === true };
      return;
    }
    if (this.state !== 'joined') return; // still joining: join() reports a failure
    const wait = ICE_RESTART_MIN_INTERVAL_MS - (performance.now() - this._lastIceRestartAt);
    if (wait > 0) {
      this._recheckIce(wait, reason, force);
      return;
    }
    this._restartIce(reason).catch(() => { /* reported by ice_restart_failed */ });
  }

  /** Look at the media connection again later; restart ICE if it is still down (or `force`). */
  _recheckIce(delay = ICE_RESTART_MIN_INTERVAL_MS, reason = null, force = false) {
    if (this._iceRestartTimer) {
      if (!force) return;
      clearTimeout(this._iceRestartTimer);
    }
    this._iceRestartTimer = setTimeout(() => {
      this._iceRestartTimer = null;
      const s = this.pc?.connectionState;
      if (force) this._autoRestartIce(reason ?? s, true);
      else if (s === 'failed' || (s === 'disconnected' && !this._disconnectedTimer)) this._autoRestartIce(s);
    }, Math.max(0, delay));
  }

  /** Wait for a server message of `type`; an `error` frame meanwhile rejects. */
  _waitFor(type, timeoutMs = JOIN_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const w = { type, resolve, reject, timer: null };
      w.timer = setTimeout(() => {
        this._waiters = this._waiters.filter((x) => x !== w);
        reject(new ChorusError('timeout', `no ${type} from the server within ${timeoutMs} ms`));
      }, timeoutMs);
      this._waiters.push(w);
    });
  }

  /** Reject the waiters (only those for `type`, if given). */
  _failWaiters(err, type) {
    const failed = this._waiters.filter((w) => type === undefined || w.type === type);
    this._waiters = this._waiters.filter((w) => !failed.includes(w));
    for (const w of failed) { clearTimeout(w.timer); w.reject(err); }
  }

  /** Resolve the waiters for `type` (the message's own by default) with `msg`. */
  _resolveWaiters(msg, type = msg.type) {
    const keep = [];
    for (const w of this._waiters) {
      if (w.type === type) { clearTimeout(w.timer); w.resolve(msg); } else keep.push(w);
    }
    this._waiters = keep;
  }

  _onMessage(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    try {
      this._handle(msg);
    } catch (e) {
      // A malformed message must never break the session.
      console.warn('chorus: ignoring message', msg.type, e);
    }
  }

  _handle(msg) {
    switch (msg.type) {
      case 'joined':
      case 'answer':
        this._resolveWaiters(msg);
        break;
      case 'redirect': {
        // The answer to a join in a cluster: the room lives on another node, where
        // `_sendJoin` goes next. The node closes this socket: that close is not ours.
        if (!this._waiters.some((w) => w.type === 'joined')) break;
        const url = typeof msg.url === 'string' && /^wss?:\/\//i.test(msg.url) ? msg.url : null;
        this._abandonSocket(1000, 'redirected');
        if (url) this._resolveWaiters({ type: 'redirect', url }, 'joined');
        else this._failWaiters(new ChorusError('internal', `redirect to no valid URL: ${JSON.stringify(msg.url)}`), 'joined');
        break;
      }
      case 'resumed':
        this._onResumed(msg);
        break;
      case 'pong': {
        const sent = this._pingsSent.get(msg.id);
        if (sent !== undefined) {
          this.signalRttMs = performance.now() - sent;
          this._pingsSent.clear();
        }
        break;
      }
      case 'participant_joined': {
        const p = copyParticipant(msg.participant);
        if (this.self && p.participant_id === this.self.participant_id) break;
        this.participants.set(p.participant_id, p);
        this._noteVideo(p);
        this._emit('participant_joined', { participant: p });
        this._autoAssign();
        if (this.mode === 'p2p') {
          // The newcomer hears us through the node until our direct connection to it
          // plays (make before break, as at a mode change).
          this._setNodeSending(true);
          this._openLinks();
          this._kickRoutes();
        }
        // Its signals may have overtaken its `participant_joined`.
        for (const early of this._takeEarlySignals(p.participant_id)) this._onP2pSignal(early);
        break;
      }
      case 'mode':
        this._setMode(msg.mode, msg.reason);
        break;
      case 'p2p_signal':
        this._onP2pSignal(msg);
        break;
      case 'video_slots':
        this._onVideoSlots(msg);
        break;
      case 'participant_updated': {
        const p = copyParticipant(msg.participant);
        if (this.self && p.participant_id === this.self.participant_id) {
          const previous = { ...this.self };
          Object.assign(this.self, {
            name: p.name, muted: p.muted, server_muted: p.server_muted, deafened: p.deafened, csrc: p.csrc || this.self.csrc,
            camera: p.camera, screen: p.screen,
          });
          this._syncPeerSenders(); // a server mute silences the peer connections too
          this._emit('participant_updated', { participant: { ...this.self }, previous, self: true });
          break;
        }
        const previous = this.participants.get(p.participant_id) ?? null;
        this.participants.set(p.participant_id, p);
        this._noteVideo(p);
        this._emit('participant_updated', { participant: p, previous, self: false });
        this._autoAssign();
        break;
      }
      case 'participant_left': {
        const id = String(msg.participant_id);
        const participant = this.participants.get(id) ?? null;
        this.participants.delete(id);
        this._closeLink(id);
        this._routes.delete(id);
        for (const s of VIDEO_SOURCES) this._publishedAt.delete(`${id}:${s}`);
        this._emit('participant_left', { participant_id: id, participant });
        this._autoAssign();
        break;
      }
      case 'speakers': {
        const speakers = Array.isArray(msg.speakers) ? msg.speakers.map((s) => ({
          participant_id: String(s.participant_id),
          level: Number(s.level) || 0,
          slot: typeof s.slot === 'number' ? s.slot : null,
          priority: s.priority === true,
          whisper: s.whisper === true,
          distance: typeof s.distance === 'number' ? s.distance : null,
        })) : [];
        this.lastSpeakers = speakers;
        this._duckForPriority(speakers);
        this._placeSlots();
        this._emit('speakers', { speakers });
        break;
      }
      case 'error': {
        const err = new ChorusError(String(msg.code ?? 'internal'), String(msg.message ?? ''));
        // The node refused a `video` (no video in the room, or the grants exclude the
        // source): stop sending what it will not forward.
        if (err.code === 'forbidden') {
          for (const s of VIDEO_SOURCES) {
            if (this.publishing[s] && (err.serverMessage.includes(`publish ${s}`) || err.serverMessage.includes('no video'))) {
              this.stopVideo(s).catch(() => {});
            }
          }
        }
        // While joining, any error frame fails the join (e.g. unauthorized, room_full).
        if (this.state === 'connecting') this._failWaiters(err);
        else {
          // A refused rejoin: its `joined` will not come.
          if (this._reconnect?.rejoin) this._failWaiters(err, 'joined');
          // A refused offer (ICE restart, rejoin): its answer will not come.
          if (err.code === 'bad_request' && /offer|SDP|Opus/.test(err.serverMessage)) this._failWaiters(err, 'answer');
        }
        this._emit('error', { code: err.code, message: err.serverMessage, error: err });
        // The node has no session to resume (ended, or the window is over): the end.
        if (err.code === 'resume_failed' && this.state === 'reconnecting') {
          this._giveUpResume('resume_failed', `resume failed: ${err.serverMessage}`);
        }
        break;
      }
      case 'room_closed':
        // A draining node of a cluster closing the room: the room goes on at other
        // nodes, and this client joins it again there once the socket closes.
        if (msg.reason === 'node_draining' && this._canRejoin()) {
          this._moveOnClose = true;
          break;
        }
        // The end of the session: the node closes the socket next (`closed` follows).
        this._ended = true;
        this._emit('room_closed', { reason: String(msg.reason ?? '') });
        break;
      case 'kicked':
        // Likewise the end: the node closes the socket next (1000 "kicked").
        this._ended = true;
        this._emit('kicked', { reason: String(msg.reason ?? '') });
        break;
      case 'permissions': {
        const previous = this.permissions;
        this.permissions = {
          publish: Boolean(msg.publish),
          subscribe: Boolean(msg.subscribe),
          priority: Boolean(msg.priority),
        };
        this._syncPeerSenders();
        this._emit('permissions', { ...this.permissions, previous });
        break;
      }
      default:
        break; // unknown types are ignored (forward compatibility)
    }
  }

  /**
   * `joined`: this session's identity, the room's others and its mode. `rejoinOf`:
   * the participant id of the session this one replaces (a rejoin): the roster is
   * caught up with events, as after a resume, without that old self.
   */
  _onJoined(msg, rejoinOf = null) {
    this.self = {
      participant_id: String(msg.participant_id),
      csrc: Number(msg.csrc) >>> 0,
      room: String(msg.room ?? ''),
      name: this._joinName ?? '',
      muted: this.muted,
      server_muted: false,
      deafened: this.deafened,
    };
    this._resumeToken = typeof msg.resume_token === 'string' && msg.resume_token ? msg.resume_token : null;
    this.audioSlots = Math.max(0, Math.floor(Number(msg.audio_slots) || 0));
    this.videoSlotCount = this.video ? Math.max(0, Math.floor(Number(msg.video_slots) || 0)) : 0;
    this.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
    // In a cluster: where to join again should this node go away.
    this._alternates = Array.isArray(msg.alternates)
      ? msg.alternates.filter((u) => typeof u === 'string' && /^wss?:\/\//i.test(u)) : [];
    if (rejoinOf) {
      this.permissions = null; // the token's grants again
      this._syncRoster(msg.participants, rejoinOf);
    } else {
      this.participants.clear();
      for (const raw of Array.isArray(msg.participants) ? msg.participants : []) {
        const p = copyParticipant(raw);
        if (p.participant_id !== this.self.participant_id) {
          this.participants.set(p.participant_id, p);
          this._noteVideo(p);
        }
      }
    }
    // A position set before the join went through.
    if (this.position) this._sendPosition();
    // Peer to peer: in mode p2p the node's connection is built without the microphone
    // on it (`_negotiate`) and the peer connections start now, beside it.
    this.mode = null;
    this._setMode(msg.mode === 'p2p' ? 'p2p' : 'sfu', rejoinOf ? 'rejoined' : 'joined');
  }

  async _negotiate() {
    const hasTurn = this.iceServers.some((srv) => [].concat(srv.urls ?? []).some((u) => /^turns?:/.test(u)));
    if (this.iceTransportPolicy === 'relay' && !hasTurn) {
      throw new ChorusError('no_relay', 'iceTransportPolicy "relay" needs a TURN server, and the node hands out none (start it with --turn-url and --turn-secret)');
    }
    const pc = new RTCPeerConnection(this._rtcConfig());
    this.pc = pc;
    pc.addEventListener('icecandidate', (ev) => {
      const c = ev.candidate;
      if (!c || !c.candidate) return; // end-of-candidates: not sent
      const msg = { type: 'candidate', candidate: c.candidate, sdp_mid: c.sdpMid ?? '0' };
      if (this._offerSent) this._send(msg); else this._pendingCandidates.push(msg);
    });
    pc.addEventListener('connectionstatechange', () => {
      if (this.pc !== pc) return;
      this._emit('connection_state', { state: pc.connectionState, ice_state: pc.iceConnectionState });
      this._onConnectionState(pc);
    });

    const audio = [];
    if (this.localTrack) {
      const mic = pc.addTransceiver(this.localTrack, { direction: 'sendonly' });
      audio.push(mic);
      this._micTx = mic;
      // Mode p2p: a warm standby, the node gets no media (the track goes on again when
      // the room moves to the node). Before the offer: not one packet goes out.
      if (!this.nodeSending) await this._setNodeSending(false);
    }
    const recv = [];
    for (let i = 0; i < this.audioSlots; i++) {
      recv.push(pc.addTransceiver('audio', { direction: 'recvonly' }));
    }
    preferOpus(pc, [...audio, ...recv]);
    // Video (docs/protocol.md §8.3): the camera (simulcast) and screen sections, sending
    // nothing until a track is attached, then the video slots.
    const videoRecv = [];
    if (this.videoSlotCount > 0) {
      // What is published already (a rejoin) goes on at once.
      this._videoTx.camera = pc.addTransceiver(this.publishing.camera ?? 'video', {
        direction: 'sendonly',
        sendEncodings: CAMERA_ENCODINGS.map((e) => ({ ...e })),
      });
      this._videoTx.screen = pc.addTransceiver(this.publishing.screen ?? 'video', { direction: 'sendonly' });
      for (let i = 0; i < this.videoSlotCount; i++) {
        videoRecv.push(pc.addTransceiver('video', { direction: 'recvonly' }));
      }
      preferForwardedVideo([this._videoTx.camera, this._videoTx.screen], this.videoCodec);
      preferForwardedVideo(videoRecv);
    }

    if (this._onTransceiver) {
      const each = (list, kind) => { for (const t of list) if (t) this._onTransceiver(t, kind); };
      each(audio, 'microphone');
      each(recv, 'slot');
      each([this._videoTx.camera], 'camera');
      each([this._videoTx.screen], 'screen');
      each(videoRecv, 'video_slot');
    }

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (!this._send({ type: 'offer', sdp: pc.localDescription.sdp, sources: this._sources() })) {
      throw new ChorusError('socket_closed', 'the socket closed before the offer went out');
    }
    this._offerSent = true;
    for (const c of this._pendingCandidates.splice(0)) this._send(c);

    const answer = await this._waitFor('answer');
    if (this.pc !== pc) throw new ChorusError('socket_closed', 'closed while negotiating');
    await pc.setRemoteDescription({ type: 'answer', sdp: String(answer.sdp) });
    if (this.pc !== pc) throw new ChorusError('socket_closed', 'closed while negotiating');

    // Slot N is the N-th recvonly m-section; the answer lists their mids in slot order.
    const mids = Array.isArray(answer.slots) ? answer.slots.map(String) : recv.map((t) => t.mid);
    this.slots = mids.map((mid, index) => {
      const transceiver = pc.getTransceivers().find((t) => t.mid === mid) ?? recv[index];
      return this._makeSlot(index, mid, transceiver);
    }).filter(Boolean);
    // `_makeSlot` ran before `this.slots` held them: which elements play is set now.
    this._syncElements();
    const videoMids = Array.isArray(answer.video_slots) ? answer.video_slots.map(String) : [];
    this.videoSlots = videoMids.map((mid, index) => {
      const transceiver = pc.getTransceivers().find((t) => t.mid === mid) ?? videoRecv[index];
      if (!transceiver) return null;
      const track = transceiver.receiver.track;
      return {
        index, mid, transceiver, receiver: transceiver.receiver, track,
        stream: new MediaStream([track]),
        participant_id: null, source: 'camera', quality: 'high', layer: null,
      };
    }).filter(Boolean);
  }

  /** The offer's `sources`: which sending video section is the camera, which the screen. */
  _sources() {
    const out = {};
    for (const s of VIDEO_SOURCES) {
      const mid = this._videoTx[s]?.mid;
      if (mid) out[mid] = s;
    }
    return out;
  }

  async _publish(source, track, get) {
    if (this.state !== 'joined' && this.state !== 'reconnecting') {
      throw new ChorusError('bad_request', `cannot publish in state ${this.state}`);
    }
    const tx = this._videoTx[source];
    if (!tx) throw new ChorusError('bad_request', 'this room has no video (video_slots is 0), or video is off');
    let owned = false;
    const pc = this.pc;
    if (!track) {
      try { track = await get(); } catch (e) {
        throw new ChorusError('media', `${source} unavailable: ${e?.message ?? e}`);
      }
      owned = true;
    }
    if (!track) throw new ChorusError('media', `no ${source} track`);
    // The session may have ended (or another publish won) while the browser asked.
    const stale = this.pc !== pc || (this.state !== 'joined' && this.state !== 'reconnecting');
    if (stale) {
      if (owned) track.stop();
      throw new ChorusError('socket_closed', `the session ended before the ${source} started`);
    }
    if ('contentHint' in track && !track.contentHint) track.contentHint = source === 'screen' ? 'detail' : 'motion';
    const previous = this.publishing[source];
    const previousOwned = this._ownsVideo[source];
    try {
      await tx.sender.replaceTrack(track);
    } catch (e) {
      if (owned) track.stop();
      throw new ChorusError('webrtc', `cannot send the ${source}: ${e?.message ?? e}`);
    }
    if (previous && previous !== track && previousOwned) previous.stop();
    this.publishing[source] = track;
    this._ownsVideo[source] = owned;
    track.addEventListener('ended', () => {
      if (this.publishing[source] === track) this.stopVideo(source).catch(() => {});
    }, { once: true });
    if (!this._send({ type: 'video', source, enabled: true }) && this.state === 'reconnecting') this._unsent.video = true;
    this._emit('video', { source, enabled: true });
    return track;
  }

  /** Notes when a participant's camera or screen was first seen on (newest first). */
  _noteVideo(p) {
    for (const s of VIDEO_SOURCES) {
      const key = `${p.participant_id}:${s}`;
      if (p[s] && !this._publishedAt.has(key)) this._publishedAt.set(key, performance.now());
      if (!p[s]) this._publishedAt.delete(key);
    }
  }

  _onVideoSlots(msg) {
    const list = Array.isArray(msg.slots) ? msg.slots : [];
    for (const e of list) {
      const s = this.videoSlots[Number(e.slot)];
      if (!s) continue;
      s.participant_id = e.participant_id == null ? null : String(e.participant_id);
      s.source = VIDEO_SOURCES.includes(e.source) ? e.source : 'camera';
      s.quality = QUALITIES.includes(e.quality) ? e.quality : 'high';
      s.layer = QUALITIES.includes(e.layer) ? e.layer : null;
    }
    this._emit('video_slots', {
      slots: this.videoSlots.map(({ index, mid, participant_id, source, quality, layer, stream }) => ({
        slot: index, mid, participant_id, source, quality, layer, stream,
      })),
    });
  }

  /**
   * Auto-subscription: screen shares first, then cameras, each newest first, as many as
   * there are slots; a video already in a slot stays there (with the quality it has).
   */
  _autoAssign() {
    if (!this._auto || this.videoSlots.length === 0 || this.state !== 'joined') return;
    const wanted = [];
    for (const source of ['screen', 'camera']) {
      const list = [...this.participants.values()]
        .filter((p) => p[source])
        .map((p) => ({ participant_id: p.participant_id, source, at: this._publishedAt.get(`${p.participant_id}:${source}`) ?? 0 }))
        .sort((a, b) => b.at - a.at);
      wanted.push(...list);
    }
    wanted.length = Math.min(wanted.length, this.videoSlots.length);
    const key = (x) => `${x.participant_id}:${x.source}`;
    const wantedKeys = new Set(wanted.map(key));
    const shown = new Set();
    const free = [];
    for (const s of this.videoSlots) {
      if (s.participant_id && wantedKeys.has(key(s)) && !shown.has(key(s))) shown.add(key(s));
      else free.push(s);
    }
    for (const w of wanted) {
      if (shown.has(key(w))) continue;
      const s = free.shift();
      if (!s) break;
      this.subscribe(s.index, w.participant_id, w.source, this._auto.quality);
    }
    for (const s of free) {
      if (s.participant_id) this.subscribe(s.index, null, s.source, s.quality);
    }
  }

  /**
   * An `<audio>` element for a remote track (a slot's or a peer's). Every one must be
   * rendered, or Chromium decodes (and reports) nothing for it, nor plays it into Web
   * Audio; it stays muted while the playback graph plays (`_syncElements`).
   */
  _makeElement(track, key, value) {
    const audio = document.createElement('audio');
    audio.autoplay = true;
    audio.muted = this.deafened;
    audio.dataset[key] = value;
    audio.srcObject = new MediaStream([track]);
    if (this.audioContainer) {
      audio.hidden = true;
      this.audioContainer.appendChild(audio);
    }
    audio.play().catch(() => { /* autoplay blocked: plays on the next user gesture */ });
    return audio;
  }

  _makeSlot(index, mid, transceiver) {
    if (!transceiver) return null;
    const receiver = transceiver.receiver;
    const track = receiver.track;
    const audio = this._makeElement(track, 'chorusSlot', String(index));
    const slot = {
      kind: 'slot', index, mid, transceiver, receiver, track, audio, duck: 1, speaker: null,
      source: null, gain: null, panner: null, gainTarget: null,
    };
    this._attachGraph(slot, track);
    return slot;
  }

  /**
   * The playback graph: one AudioContext for everything remote, a master gain and an
   * analyser on the sum (`outputLevel()`). With `spatial` the master goes to the
   * speakers (the panners place the voices); otherwise the `<audio>` elements play
   * (Chromium's echo canceller only hears media elements and peer-connection playout,
   * not Web Audio) and the graph is a silent tap that mirrors them, gain for volume.
   * Null without Web Audio (the elements play then).
   */
  _ensurePlayback() {
    if (this._playCtx || typeof AudioContext === 'undefined') return this._playCtx;
    try {
      const ctx = new AudioContext();
      const master = ctx.createGain();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = OUTPUT_FFT_SIZE;
      master.connect(analyser);
      if (this.spatial) {
        master.connect(ctx.destination);
      } else {
        // Pulled by the destination (so the analyser runs), heard by no one.
        const silent = ctx.createGain();
        silent.gain.value = 0;
        analyser.connect(silent);
        silent.connect(ctx.destination);
      }
      this._playCtx = ctx;
      this._master = master;
      this._outAnalyser = analyser;
      this._outBuf = new Float32Array(analyser.fftSize);
      // Until the context runs (autoplay policy), the elements play.
      ctx.onstatechange = () => this._syncElements();
      if (ctx.state === 'suspended') ctx.resume().catch(() => {});
      this._placeListener();
    } catch {
      this._playCtx = null;
      this._master = null;
      this._outAnalyser = null;
    }
    return this._playCtx;
  }

  /**
   * Routes a slot's or a peer's track through the playback graph: source → gain
   * (volume, priority ducking, distance, deafen, and which path plays) → panner
   * (spatial playback only) → the master. The `<audio>` element stays, muted while the
   * graph plays: Chromium plays a remote track into Web Audio only while an element
   * renders it.
   */
  _attachGraph(entry, track) {
    const ctx = this._ensurePlayback();
    if (ctx) {
      try {
        const source = ctx.createMediaStreamSource(new MediaStream([track]));
        const gain = ctx.createGain();
        gain.gain.value = 0; // `_applyVolume` sets it below
        source.connect(gain);
        let tail = gain;
        if (this.spatial) {
          const panner = ctx.createPanner();
          panner.panningModel = 'HRTF';
          // Distance is applied by `gain` (the node's curve), the panner only places.
          panner.distanceModel = 'linear';
          panner.rolloffFactor = 0;
          gain.connect(panner);
          tail = panner;
          entry.panner = panner;
          // Speakers change slots between `speakers` messages: follow the CSRCs too.
          this._spatialTimer ??= setInterval(() => this._placeSlots(), 250);
        }
        tail.connect(this._master);
        entry.source = source;
        entry.gain = gain;
      } catch {
        for (const node of [entry.source, entry.gain, entry.panner]) { try { node?.disconnect(); } catch { /* gone */ } }
        entry.source = null;
        entry.gain = null;
        entry.panner = null;
      }
    }
    this._applyVolume(entry, true);
    this._syncElements();
  }

  /** Undoes `_makeElement` and `_attachGraph`. */
  _detachGraph(entry) {
    for (const node of [entry.source, entry.gain, entry.panner]) { try { node?.disconnect(); } catch { /* gone */ } }
    entry.source = null;
    entry.gain = null;
    entry.panner = null;
    if (entry.audio) {
      entry.audio.srcObject = null;
      entry.audio.remove();
      entry.audio = null;
    }
  }

  /**
   * The elements play, except with `spatial` once the graph runs (until then, autoplay
   * policy, they do).
   */
  _syncElements() {
    const graphPlays = Boolean(this.spatial) && this._playCtx?.state === 'running';
    for (const entry of [...this.slots, ...this.peers.values()]) {
      if (!entry?.audio) continue;
      entry.audio.muted = this.deafened || (Boolean(entry.gain) && graphPlays);
    }
  }

  /**
   * How loud a slot or a peer plays, before deafen: priority ducking, (spatial, with a
   * radius) distance, and whether this is the path its speaker is heard on now (a slot
   * whose speaker plays on a peer connection is silent, and the other way round).
   */
  _baseVolume(entry) {
    let volume = entry.duck ?? 1;
    const who = entry.kind === 'peer' ? entry.participant_id : entry.speaker;
    const radius = this.spatial?.radius;
    const at = who && this._peerPositions.get(who);
    const me = this._listenerPose?.position ?? this.position;
    if (radius && at && me) {
      const near = Math.min(1, Math.max(0, 1 - Math.hypot(at[0] - me[0], at[1] - me[1], at[2] - me[2]) / radius));
      volume *= near * near;
    }
    if (entry.kind === 'peer') {
      if (this._routes.get(entry.participant_id) !== 'peer') volume = 0;
    } else if (entry.speaker && this._routes.get(entry.speaker) === 'peer') {
      volume = 0;
    }
    return volume;
  }

  /** Applies `_baseVolume` and deafen to the gain (a 20 ms fade unless `immediate`) and the element. */
  _applyVolume(entry, immediate = false) {
    if (!entry) return;
    const base = this._baseVolume(entry);
    if (entry.audio) entry.audio.volume = Math.min(1, Math.max(0, base));
    if (!entry.gain) return;
    const value = this.deafened ? 0 : base;
    if (entry.gainTarget === value && !immediate) return;
    entry.gainTarget = value;
    const param = entry.gain.gain;
    const ctx = this._playCtx;
    try {
      const t = ctx.currentTime;
      param.cancelScheduledValues(t);
      if (immediate) param.setValueAtTime(value, t);
      else param.setTargetAtTime(value, t, GAIN_TIME_CONSTANT_S);
    } catch {
      param.value = value;
    }
  }

  _placeListener() {
    const l = this._playCtx?.listener;
    if (!l) return;
    const pose = this._listenerPose ?? (this.position && { position: this.position, forward: [0, 0, -1], up: [0, 1, 0] });
    if (!pose) return;
    const [x, y, z] = pose.position;
    const [fx, fy, fz] = pose.forward;
    const [ux, uy, uz] = pose.up;
    // AudioParams where the browser has them, the older setters elsewhere.
    if (l.positionX) {
      l.positionX.value = x; l.positionY.value = y; l.positionZ.value = z;
      l.forwardX.value = fx; l.forwardY.value = fy; l.forwardZ.value = fz;
      l.upX.value = ux; l.upY.value = uy; l.upZ.value = uz;
    } else {
      l.setPosition(x, y, z);
      l.setOrientation(fx, fy, fz, ux, uy, uz);
    }
    this._placeSlots();
  }

  /**
   * Each slot's speaker is the one its freshest CSRC names, else the one `speakers` last
   * put on it; none once it carries nobody. Panners (slots and peers) go where their
   * speaker is, and every volume follows.
   */
  _placeSlots() {
    const byCsrc = new Map([...this.participants.values()].map((p) => [p.csrc, p.participant_id]));
    const listed = new Map(this.lastSpeakers.filter((s) => s.slot != null).map((s) => [s.slot, s.participant_id]));
    for (const slot of this.slots) {
      if (!slot) continue;
      let fresh = null;
      try {
        fresh = (slot.receiver?.getContributingSources?.() ?? [])
          .filter((c) => ageOf(c.timestamp) < CSRC_FRESH_MS)
          .sort((a, b) => b.timestamp - a.timestamp)[0] ?? null;
      } catch { /* no CSRC API: `speakers` only */ }
      slot.speaker = (fresh && byCsrc.get(fresh.source >>> 0)) ?? listed.get(slot.index) ?? null;
    }
    for (const entry of [...this.slots, ...this.peers.values()]) {
      if (!entry) continue;
      const who = entry.kind === 'peer' ? entry.participant_id : entry.speaker;
      const at = entry.panner && who && this._peerPositions.get(who);
      if (at) {
        if (entry.panner.positionX) {
          entry.panner.positionX.value = at[0];
          entry.panner.positionY.value = at[1];
          entry.panner.positionZ.value = at[2];
        } else entry.panner.setPosition(at[0], at[1], at[2]);
      }
      this._applyVolume(entry);
    }
  }

  _sendPosition() {
    if (!this.position) return;
    this._positionSentAt = performance.now();
    // Not joined yet, reconnecting, or the socket is closing: sent once joined or
    // resumed (`_onJoined`, `_onResumed`).
    if (!this.self || !this._send({ type: 'position', position: this.position })) {
      this._unsent.position = true;
    }
  }

  /**
   * While someone else with the `priority` grant speaks, every slot (and peer) that does
   * not carry a priority speaker plays `priorityDuckDb` quieter; full volume again once
   * none does.
   */
  _duckForPriority(speakers) {
    const me = this.self?.participant_id;
    const leaders = speakers.filter((s) => s.priority && s.participant_id !== me);
    const ducked = leaders.length > 0 && this.priorityDuckDb > 0
      ? 10 ** (-this.priorityDuckDb / 20) : 1;
    for (const slot of this.slots) {
      if (!slot.audio) continue;
      const carriesLeader = leaders.some((s) => s.slot === slot.index);
      slot.duck = carriesLeader ? 1 : ducked;
      this._applyVolume(slot);
    }
    for (const link of this.peers.values()) {
      link.duck = leaders.some((s) => s.participant_id === link.participant_id) ? 1 : ducked;
      this._applyVolume(link);
    }
  }

  /** Try to start playback again (e.g. from a click handler if autoplay was blocked). */
  resumeAudio() {
    for (const s of this.slots) s.audio?.play().catch(() => {});
    for (const l of this.peers.values()) l.audio?.play().catch(() => {});
    this._audioCtx?.resume?.().catch(() => {});
    this._playCtx?.resume?.().catch(() => {});
  }

  _setupAnalyser() {
    if (!this.localTrack || typeof AudioContext === 'undefined') return;
    try {
      const ctx = new AudioContext();
      const src = ctx.createMediaStreamSource(new MediaStream([this.localTrack]));
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 1024;
      src.connect(analyser);
      this._audioCtx = ctx;
      this._analyser = analyser;
      this._analyserBuf = new Float32Array(analyser.fftSize);
      if (ctx.state === 'suspended') ctx.resume().catch(() => {});
    } catch {
      this._analyser = null;
    }
  }

  _startPing() {
    const ping = () => {
      const id = ++this._pingId;
      this._pingsSent.set(id, performance.now());
      this._send({ type: 'ping', id });
    };
    ping(); // measure the signaling round trip right away
    this._pingTimer = setInterval(() => {
      if (this._pingsSent.size >= MAX_UNANSWERED_PINGS) {
        // The socket is dead (or the node stopped answering). Drop it with a code other
        // than 1000, so that the node keeps the session should the close reach it, and
        // resume on a new socket; its own close event is stale then.
        const ws = this.ws;
        const resumable = this.state === 'joined' && this._resumable(CLOSE_PING_TIMEOUT, null);
        if (resumable) this.ws = null;
        try { ws?.close(CLOSE_PING_TIMEOUT, 'ping timeout'); } catch { /* ignore */ }
        if (resumable) this._startReconnect(CLOSE_PING_TIMEOUT, 'ping timeout');
        else this._teardown({ code: CLOSE_PING_TIMEOUT, reason: 'ping timeout', wasClean: false });
        return;
      }
      ping();
    }, PING_INTERVAL_MS);
  }

  _teardown({ code, reason, wasClean, error }) {
    if (this._pingTimer) { clearInterval(this._pingTimer); this._pingTimer = null; }
    if (this._reconnect) {
      if (this._reconnect.timer) clearTimeout(this._reconnect.timer);
      this._clearAttemptTimer();
      this._reconnect = null;
    }
    if (this._positionTimer) { clearTimeout(this._positionTimer); this._positionTimer = null; }
    const wasState = this.state;
    this.state = 'closed';
    this._failWaiters(new ChorusError('socket_closed', reason || 'closed'));
    const ws = this.ws;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      try { ws.close(1000); } catch { /* ignore */ }
    }
    // The peer connections, the node's (`connection_state` 'closed') and the slots.
    this._dropMedia();
    if (this._audioCtx) { this._audioCtx.close().catch(() => {}); this._audioCtx = null; this._analyser = null; }
    if (this._spatialTimer) { clearInterval(this._spatialTimer); this._spatialTimer = null; }
    if (this._playCtx) {
      this._playCtx.close().catch(() => {});
      this._playCtx = null;
      this._master = null;
      this._outAnalyser = null;
    }
    if (this._ownsTrack && this.localTrack) this.localTrack.stop();
    for (const s of VIDEO_SOURCES) {
      if (this._ownsVideo[s]) this.publishing[s]?.stop();
      this.publishing[s] = null;
      this._ownsVideo[s] = false;
    }
    if (!this._closedEmitted && wasState !== 'idle') {
      this._closedEmitted = true;
      this._emit('closed', { code, reason: reason ?? '', wasClean: Boolean(wasClean), error: error ?? null });
    }
  }
}
