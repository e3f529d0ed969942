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
// See docs/client.md for the full API, the events and their `detail` payloads.

/** Protocol version spoken by this module (the `/v1/` in the WebSocket path). */
export const PROTOCOL_VERSION = 1;

/** A contributing source older than this (ms) is no longer "current" (speaking now). */
export const CSRC_FRESH_MS = 500;

const PING_INTERVAL_MS = 10_000;
const MAX_UNANSWERED_PINGS = 3;
const JOIN_TIMEOUT_MS = 15_000;

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
function preferOpus(pc) {
  try {
    const caps = RTCRtpReceiver.getCapabilities?.('audio');
    const opus = caps?.codecs?.filter((c) => c.mimeType.toLowerCase() === 'audio/opus') ?? [];
    if (opus.length === 0) return;
    for (const t of pc.getTransceivers()) {
      if (typeof t.setCodecPreferences === 'function') t.setCodecPreferences(opus);
    }
  } catch {
    /* keep the browser's default codec list */
  }
}

function copyParticipant(p) {
  return {
    participant_id: String(p.participant_id),
    name: String(p.name ?? ''),
    muted: Boolean(p.muted),
    server_muted: Boolean(p.server_muted),
    deafened: Boolean(p.deafened),
    csrc: Number(p.csrc) >>> 0,
  };
}

/**
 * A voice-chat session with one Chorus node.
 *
 * Properties (read-only for callers):
 * - `state`: 'idle' | 'connecting' | 'joined' | 'closed'
 * - `self`: `{participant_id, csrc, room, name, muted, server_muted, deafened}` once joined,
 *   else null (`server_muted`: the backend muted you; only it can lift that)
 * - `participants`: Map participant_id → `{participant_id, name, muted, server_muted,
 *   deafened, csrc}` of the *other* participants in the room (yourself is in `self`)
 * - `permissions`: `{publish, subscribe}` as the backend last set them, or null (the join
 *   token's grants apply) until it changes them
 * - `slots`: the receive slots, `[{index, mid, transceiver, receiver, track, audio}]`
 * - `audioSlots`: number of slots the server asked for
 * - `pc`: the RTCPeerConnection (null before join / after close)
 * - `iceServers`: the RTCIceServer list the server sent
 * - `lastSpeakers`: the last `speakers` list received
 * - `signalRttMs`: round-trip time of the last ping/pong over the WebSocket
 *
 * Events (CustomEvent, payload in `event.detail`): `joined`, `participant_joined`,
 * `participant_updated`, `participant_left`, `speakers`, `error`, `room_closed`,
 * `kicked`, `permissions`, `closed`, `connection_state`.
 */
export class ChorusClient extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string} [options.url] WebSocket URL; defaults to `ws(s)://<this origin>/v1/signal`.
   * @param {HTMLElement} [options.audioContainer] where to put the slots' `<audio>` elements
   *   (hidden); by default they are kept detached from the document, which plays just as well.
   */
  constructor({ url, audioContainer } = {}) {
    super();
    this.url = url ?? defaultUrl();
    this.audioContainer = audioContainer ?? null;
    this.state = 'idle';
    this.self = null;
    /** @type {Map<string, {participant_id:string,name:string,muted:boolean,server_muted:boolean,deafened:boolean,csrc:number}>} */
    this.participants = new Map();
    /** @type {{publish:boolean, subscribe:boolean}|null} */
    this.permissions = null;
    this.slots = [];
    this.audioSlots = 0;
    this.pc = null;
    this.ws = null;
    this.iceServers = [];
    this.lastSpeakers = [];
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
   */
  async join({ room, name, token, audioTrack } = {}) {
    if (this.state !== 'idle') throw new ChorusError('bad_request', `join() called in state ${this.state}`);
    this.state = 'connecting';
    try {
      if (audioTrack === undefined) {
        try {
          const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
          audioTrack = stream.getAudioTracks()[0] ?? null;
          this._ownsTrack = true;
        } catch (e) {
          throw new ChorusError('media', `microphone unavailable: ${e?.message ?? e}`);
        }
      }
      this.localTrack = audioTrack ?? null;
      if (this.state === 'closed') throw new ChorusError('socket_closed', 'left while joining');
      this._setupAnalyser();

      await this._openSocket();

      this._joinName = String(name);
      const msg = { type: 'join', room: String(room), name: String(name) };
      if (token) msg.token = String(token);
      this._send(msg);
      const joined = await this._waitFor('joined');
      this._onJoined(joined);
      this._startPing(); // after joined: a strict node may answer a ping before join with not_joined

      await this._negotiate();
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
    if (this.localTrack) this.localTrack.enabled = !muted;
    if (this.self) this.self.muted = muted;
    this._send({ type: 'mute', muted });
  }

  /** Deafen or undeafen: mutes local playback of every slot and tells the server. */
  setDeafened(deafened) {
    deafened = Boolean(deafened);
    this.deafened = deafened;
    for (const s of this.slots) if (s.audio) s.audio.muted = deafened;
    if (this.self) this.self.deafened = deafened;
    this._send({ type: 'deafen', deafened });
  }

  /**
   * Leave the room: sends `leave`, waits (briefly) for the server to close the socket,
   * then closes the peer connection and stops the microphone if this client opened it.
   */
  async leave() {
    if (this.state === 'closed') return;
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      this._send({ type: 'leave' });
      await new Promise((resolve) => {
        const t = setTimeout(resolve, 1500);
        ws.addEventListener('close', () => { clearTimeout(t); resolve(); }, { once: true });
      });
    }
    this._teardown({ code: 1000, reason: 'left', wasClean: true });
  }

  /**
   * Current level of every participant heard in a slot, from the slots' contributing
   * sources (each forwarded packet names its speaker by CSRC and carries its audio level).
   * Only sources fresher than 500 ms count.
   * @returns {Map<string, {level:number, slot:number, csrc:number, ageMs:number}>}
   */
  speakerLevels() {
    const byCsrc = new Map();
    for (const p of this.participants.values()) byCsrc.set(p.csrc, p);
    const out = new Map();
    for (const src of this.contributingSources()) {
      if (src.ageMs > CSRC_FRESH_MS) continue;
      const p = byCsrc.get(src.source);
      if (!p) continue;
      const prev = out.get(p.participant_id);
      if (!prev || src.ageMs < prev.ageMs) {
        out.set(p.participant_id, { level: src.audioLevel ?? 0, slot: src.slot, csrc: src.source, ageMs: src.ageMs });
      }
    }
    return out;
  }

  /**
   * Raw contributing sources of every slot receiver (whatever their age).
   * @returns {Array<{slot:number, source:number, audioLevel:number|undefined, ageMs:number, participant_id:string|null}>}
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
        });
      }
    }
    return out;
  }

  /** Current microphone level, linear 0..1 (0 while muted). */
  localLevel() {
    if (!this.localTrack || this.muted) return 0;
    if (this._analyser) {
      const buf = this._analyserBuf;
      this._analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
      return Math.min(1, Math.sqrt(sum / buf.length));
    }
    return this._statsLocalLevel;
  }

  /**
   * Connection statistics from RTCPeerConnection.getStats().
   * @returns {Promise<{rtt_ms:number|null, packets_lost:number, packets_received:number,
   *   jitter_ms:number|null, bytes_received:number, bytes_sent:number, packets_sent:number,
   *   local_audio_level:number|null, ice_state:string|null, connection_state:string|null,
   *   signal_rtt_ms:number|null,
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
    let selectedPair = null;
    let remoteRtt = null;
    let jitterMax = null;
    report.forEach((r) => {
      switch (r.type) {
        case 'transport':
          if (r.selectedCandidatePairId) selectedPair = report.get(r.selectedCandidatePairId) ?? selectedPair;
          break;
        case 'candidate-pair':
          if (!selectedPair && r.nominated && r.state === 'succeeded') selectedPair = r;
          break;
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
    if (selectedPair && typeof selectedPair.currentRoundTripTime === 'number') {
      out.rtt_ms = selectedPair.currentRoundTripTime * 1000;
    } else if (remoteRtt !== null) {
      out.rtt_ms = remoteRtt * 1000;
    }
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
    try { ws.send(JSON.stringify(msg)); return true; } catch { return false; }
  }

  _openSocket() {
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = new WebSocket(this.url); } catch (e) {
        reject(new ChorusError('socket_closed', `cannot open ${this.url}: ${e?.message ?? e}`));
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.addEventListener('open', () => {
        opened = true;
        resolve();
      }, { once: true });
      ws.addEventListener('message', (ev) => this._onMessage(ev.data));
      ws.addEventListener('close', (ev) => {
        if (!opened) reject(new ChorusError('socket_closed', `cannot connect to ${this.url}`));
        this._failWaiters(new ChorusError('socket_closed', `socket closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`));
        this._teardown({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
      });
    });
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

  _failWaiters(err) {
    const ws = this._waiters;
    this._waiters = [];
    for (const w of ws) { clearTimeout(w.timer); w.reject(err); }
  }

  _resolveWaiters(msg) {
    const keep = [];
    for (const w of this._waiters) {
      if (w.type === msg.type) { clearTimeout(w.timer); w.resolve(msg); } else keep.push(w);
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
        this._emit('participant_joined', { participant: p });
        break;
      }
      case 'participant_updated': {
        const p = copyParticipant(msg.participant);
        if (this.self && p.participant_id === this.self.participant_id) {
          const previous = { ...this.self };
          Object.assign(this.self, {
            name: p.name, muted: p.muted, server_muted: p.server_muted, deafened: p.deafened, csrc: p.csrc || this.self.csrc,
          });
          this._emit('participant_updated', { participant: { ...this.self }, previous, self: true });
          break;
        }
        const previous = this.participants.get(p.participant_id) ?? null;
        this.participants.set(p.participant_id, p);
        this._emit('participant_updated', { participant: p, previous, self: false });
        break;
      }
      case 'participant_left': {
        const id = String(msg.participant_id);
        const participant = this.participants.get(id) ?? null;
        this.participants.delete(id);
        this._emit('participant_left', { participant_id: id, participant });
        break;
      }
      case 'speakers': {
        const speakers = Array.isArray(msg.speakers) ? msg.speakers.map((s) => ({
          participant_id: String(s.participant_id),
          level: Number(s.level) || 0,
          slot: typeof s.slot === 'number' ? s.slot : null,
        })) : [];
        this.lastSpeakers = speakers;
        this._emit('speakers', { speakers });
        break;
      }
      case 'error': {
        const err = new ChorusError(String(msg.code ?? 'internal'), String(msg.message ?? ''));
        // While joining, any error frame fails the join (e.g. unauthorized, room_full).
        if (this.state === 'connecting') this._failWaiters(err);
        this._emit('error', { code: err.code, message: err.serverMessage, error: err });
        break;
      }
      case 'room_closed':
        // The end of the session: the node closes the socket next (`closed` follows).
        this._emit('room_closed', { reason: String(msg.reason ?? '') });
        break;
      case 'kicked':
        // Likewise the end: the node closes the socket next (1000 "kicked").
        this._emit('kicked', { reason: String(msg.reason ?? '') });
        break;
      case 'permissions': {
        const previous = this.permissions;
        this.permissions = { publish: Boolean(msg.publish), subscribe: Boolean(msg.subscribe) };
        this._emit('permissions', { ...this.permissions, previous });
        break;
      }
      default:
        break; // unknown types are ignored (forward compatibility)
    }
  }

  _onJoined(msg) {
    this.self = {
      participant_id: String(msg.participant_id),
      csrc: Number(msg.csrc) >>> 0,
      room: String(msg.room ?? ''),
      name: this._joinName ?? '',
      muted: this.muted,
      server_muted: false,
      deafened: this.deafened,
    };
    this.audioSlots = Math.max(0, Math.floor(Number(msg.audio_slots) || 0));
    this.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
    this.participants.clear();
    for (const raw of Array.isArray(msg.participants) ? msg.participants : []) {
      const p = copyParticipant(raw);
      if (p.participant_id !== this.self.participant_id) this.participants.set(p.participant_id, p);
    }
  }

  async _negotiate() {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc = pc;
    pc.addEventListener('icecandidate', (ev) => {
      const c = ev.candidate;
      if (!c || !c.candidate) return; // end-of-candidates: not sent
      const msg = { type: 'candidate', candidate: c.candidate, sdp_mid: c.sdpMid ?? '0' };
      if (this._offerSent) this._send(msg); else this._pendingCandidates.push(msg);
    });
    pc.addEventListener('connectionstatechange', () => {
      this._emit('connection_state', { state: pc.connectionState, ice_state: pc.iceConnectionState });
    });

    if (this.localTrack) {
      pc.addTransceiver(this.localTrack, { direction: 'sendonly' });
    }
    const recv = [];
    for (let i = 0; i < this.audioSlots; i++) {
      recv.push(pc.addTransceiver('audio', { direction: 'recvonly' }));
    }
    preferOpus(pc);

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this._send({ type: 'offer', sdp: pc.localDescription.sdp });
    this._offerSent = true;
    for (const c of this._pendingCandidates.splice(0)) this._send(c);

    const answer = await this._waitFor('answer');
    if (this.pc !== pc) throw new ChorusError('socket_closed', 'closed while negotiating');
    await pc.setRemoteDescription({ type: 'answer', sdp: String(answer.sdp) });

    // Slot N is the N-th recvonly m-section; the answer lists their mids in slot order.
    const mids = Array.isArray(answer.slots) ? answer.slots.map(String) : recv.map((t) => t.mid);
    this.slots = mids.map((mid, index) => {
      const transceiver = pc.getTransceivers().find((t) => t.mid === mid) ?? recv[index];
      return this._makeSlot(index, mid, transceiver);
    }).filter(Boolean);

    this.state = 'joined';
    this._emit('joined', {
      participant_id: this.self.participant_id,
      csrc: this.self.csrc,
      room: this.self.room,
      audio_slots: this.audioSlots,
      participants: [...this.participants.values()],
    });
  }

  _makeSlot(index, mid, transceiver) {
    if (!transceiver) return null;
    const receiver = transceiver.receiver;
    const track = receiver.track;
    // Every slot must be rendered, or Chromium decodes (and reports) nothing for it.
    const audio = document.createElement('audio');
    audio.autoplay = true;
    audio.muted = this.deafened;
    audio.dataset.chorusSlot = String(index);
    audio.srcObject = new MediaStream([track]);
    if (this.audioContainer) {
      audio.hidden = true;
      this.audioContainer.appendChild(audio);
    }
    audio.play().catch(() => { /* autoplay blocked: plays on the next user gesture */ });
    return { index, mid, transceiver, receiver, track, audio };
  }

  /** Try to start playback again (e.g. from a click handler if autoplay was blocked). */
  resumeAudio() {
    for (const s of this.slots) s.audio?.play().catch(() => {});
    this._audioCtx?.resume?.().catch(() => {});
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
        // The server stopped answering: give up on this session.
        try { this.ws?.close(4000, 'ping timeout'); } catch { /* ignore */ }
        this._teardown({ code: 4000, reason: 'ping timeout', wasClean: false });
        return;
      }
      ping();
    }, PING_INTERVAL_MS);
  }

  _teardown({ code, reason, wasClean, error }) {
    if (this._pingTimer) { clearInterval(this._pingTimer); this._pingTimer = null; }
    const wasState = this.state;
    this.state = 'closed';
    this._failWaiters(new ChorusError('socket_closed', reason || 'closed'));
    const ws = this.ws;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      try { ws.close(1000); } catch { /* ignore */ }
    }
    for (const s of this.slots) {
      if (s.audio) { s.audio.srcObject = null; s.audio.remove(); }
    }
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      try { pc.close(); } catch { /* ignore */ }
      this._emit('connection_state', { state: 'closed', ice_state: 'closed' });
    }
    if (this._audioCtx) { this._audioCtx.close().catch(() => {}); this._audioCtx = null; this._analyser = null; }
    if (this._ownsTrack && this.localTrack) this.localTrack.stop();
    if (!this._closedEmitted && wasState !== 'idle') {
      this._closedEmitted = true;
      this._emit('closed', { code, reason: reason ?? '', wasClean: Boolean(wasClean), error: error ?? null });
    }
  }
}
