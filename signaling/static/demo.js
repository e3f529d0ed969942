// The Chorus demo page: join a room, see who is there and who is speaking.
import { ChorusClient } from '/chorus.js';

const $ = (sel) => document.querySelector(sel);
const ui = {
  form: $('#join-form'),
  room: $('#room'),
  name: $('#name'),
  relay: $('#relay'),
  join: $('#join'),
  leave: $('#leave'),
  mute: $('#mute'),
  deafen: $('#deafen'),
  camera: $('#camera'),
  screen: $('#screen'),
  videoGrid: $('#video-grid'),
  videoEmpty: $('#video-empty'),
  list: $('#participants'),
  empty: $('#participants-empty'),
  count: $('#participant-count'),
  stats: $('#stats'),
  status: $('#status'),
  localMeter: $('#local-level'),
  outputMeter: $('#output-level'),
  mode: $('#mode'),
  peers: $('#peers'),
  peersEmpty: $('#peers-empty'),
  peerCount: $('#peer-count'),
  sinks: $('#audio-sinks'),
  world: $('#world'),
  worldMe: $('#world-me'),
  worldReach: $('#world-reach'),
  worldNote: $('#world-note'),
  banner: $('#banner'),
  bannerTitle: $('#banner-title'),
  bannerText: $('#banner-text'),
};

/** Level (linear 0..1) above which someone counts as speaking. */
const SPEAKING_LEVEL = 0.02;
/** Keep the speaking indicator on this long after the last loud moment. */
const SPEAKING_HOLD_MS = 350;

let client = null;
let levelTimer = null;
let statsTimer = null;
let lastStats = null;
const lastLoud = new Map(); // participant_id -> time (ms) when last above SPEAKING_LEVEL
const shownLevel = new Map(); // participant_id -> meter level (peak hold with decay)
/** Per 100 ms tick, a meter falls to this fraction unless the level is higher. */
const METER_DECAY = 0.7;
let localShown = 0;
let outputShown = 0;
const peerShown = new Map(); // participant_id -> meter level of its direct connection
/** Participants this client whispers to (the whisper buttons). */
const whisperSet = new Set();
/** Where you are on the world map (x, z; y is 0). */
let worldAt = [0, 0];

function decayed(prev, level) {
  return Math.max(level, (prev ?? 0) * METER_DECAY);
}

// Prefill from the query string: /?room=lobby&name=Alice
const params = new URLSearchParams(location.search);
if (params.get('room')) ui.room.value = params.get('room');
if (params.get('name')) ui.name.value = params.get('name');

function setStatus(text, kind = 'info') {
  ui.status.textContent = text;
  ui.status.dataset.kind = kind;
}

function setToggle(button, pressed, onText, offText) {
  button.setAttribute('aria-pressed', String(pressed));
  button.textContent = pressed ? onText : offText;
}

/** A lasting message above the page (kicked, room closed); `null` hides it. */
function showBanner(kind, title, text = '') {
  ui.banner.hidden = kind === null;
  ui.banner.dataset.kind = kind ?? '';
  ui.bannerTitle.textContent = title ?? '';
  ui.bannerText.textContent = text;
}

/**
 * The Mute button shows what we asked for; while the server mutes us it shows Unmute
 * and is disabled: only the backend can lift a server mute.
 */
function syncMuteButton(muted) {
  const inCall = Boolean(client) && client.state !== 'closed' && client.state !== 'idle';
  const serverMuted = inCall && Boolean(client.self?.server_muted);
  setToggle(ui.mute, serverMuted || Boolean(muted), 'Unmute', 'Mute');
  ui.mute.disabled = !inCall || serverMuted;
  ui.mute.dataset.serverMuted = String(serverMuted);
  ui.mute.title = serverMuted ? 'Muted by the server: only the room’s backend can unmute you' : '';
}

function setInCall(inCall) {
  ui.room.disabled = inCall;
  ui.name.disabled = inCall;
  ui.relay.disabled = inCall;
  ui.join.disabled = inCall;
  ui.leave.disabled = !inCall;
  ui.mute.disabled = !inCall;
  ui.deafen.disabled = !inCall;
  ui.camera.disabled = !inCall;
  ui.screen.disabled = !inCall;
  if (!inCall) {
    setToggle(ui.mute, false, 'Unmute', 'Mute');
    setToggle(ui.deafen, false, 'Undeafen', 'Deafen');
    setToggle(ui.camera, false, 'Stop camera', 'Camera');
    setToggle(ui.screen, false, 'Stop sharing', 'Share screen');
    ui.mute.dataset.serverMuted = 'false';
    ui.mute.title = '';
  }
}

// ------------------------------------------------------------ level → meter

/** Map a linear level to a 0..100 % meter width on a -60..0 dB scale. */
function meterPercent(level) {
  if (!(level > 0)) return 0;
  const db = 20 * Math.log10(level);
  return Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
}

function setMeter(meter, level) {
  const pct = meterPercent(level);
  meter.firstElementChild.style.width = `${pct.toFixed(1)}%`;
  meter.setAttribute('aria-valuenow', level.toFixed(3));
  meter.dataset.level = level.toFixed(3);
}

// ------------------------------------------------------------ participants

function initials(name) {
  const parts = String(name).trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return '?';
  return (parts[0][0] + (parts.length > 1 ? parts[parts.length - 1][0] : '')).toUpperCase();
}

function hue(id) {
  let h = 0;
  for (const ch of String(id)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return Math.round((h * 137.508) % 360); // golden angle: neighbours get distinct colours
}

function rowFor(p, isSelf) {
  let li = ui.list.querySelector(`[data-participant-id="${CSS.escape(p.participant_id)}"]`);
  if (!li) {
    li = document.createElement('li');
    li.className = 'participant';
    li.dataset.participantId = p.participant_id;
    li.dataset.speaking = 'false';
    li.innerHTML = `
      <span class="avatar" aria-hidden="true"></span>
      <span class="who">
        <span class="name"></span>
        <span class="badges">
          <span class="badge you">you</span>
          <span class="badge muted" title="Microphone muted">muted</span>
          <span class="badge server-muted" title="Muted by the server">muted by server</span>
          <span class="badge deafened" title="Not hearing the room">deafened</span>
          <span class="badge no-publish" title="The server does not forward your audio">listen only</span>
          <span class="badge no-subscribe" title="The server forwards no audio to you">not receiving</span>
          <span class="badge priority" title="Priority speaker: heard by everyone, the others ducked">priority</span>
          <span class="badge whisper" title="Whispers to you: only you (and a few others) hear this">whispers to you</span>
          <span class="badge camera" title="Sends camera video">camera</span>
          <span class="badge screen" title="Shares a screen">screen</span>
        </span>
        <span class="distance"></span>
      </span>
      <button type="button" class="btn whisper-btn" aria-pressed="false" title="Whisper: send your audio only to the people whose button is on">whisper</button>
      <span class="meter small" role="meter" aria-valuemin="0" aria-valuemax="1" aria-valuenow="0"><span class="meter-fill"></span></span>`;
    li.querySelector('.avatar').style.setProperty('--hue', String(hue(p.participant_id)));
    li.querySelector('.whisper-btn').addEventListener('click', (e) => toggleWhisper(p.participant_id, e.currentTarget));
    if (isSelf) ui.list.prepend(li); else ui.list.append(li);
  }
  li.dataset.self = String(isSelf);
  li.dataset.muted = String(Boolean(p.muted));
  li.dataset.serverMuted = String(Boolean(p.server_muted));
  li.dataset.deafened = String(Boolean(p.deafened));
  li.dataset.camera = String(isSelf ? Boolean(client?.publishing?.camera) : Boolean(p.camera));
  li.dataset.screen = String(isSelf ? Boolean(client?.publishing?.screen) : Boolean(p.screen));
  if (isSelf) {
    li.dataset.publish = String(client?.permissions?.publish ?? true);
    li.dataset.subscribe = String(client?.permissions?.subscribe ?? true);
  }
  li.dataset.csrc = String(p.csrc ?? '');
  li.dataset.name = p.name;
  li.querySelector('.name').textContent = p.name;
  li.querySelector('.avatar').textContent = initials(p.name);
  li.querySelector('.meter').setAttribute('aria-label', `${p.name} level`);
  return li;
}

function renderParticipants() {
  if (!client || !client.self || client.state === 'closed') {
    ui.list.replaceChildren();
  } else {
    const keep = new Set([client.self.participant_id, ...client.participants.keys()]);
    for (const li of [...ui.list.children]) {
      if (!keep.has(li.dataset.participantId)) li.remove();
    }
    rowFor(client.self, true);
    for (const p of client.participants.values()) rowFor(p, false);
  }
  const n = ui.list.children.length;
  ui.count.textContent = String(n);
  ui.empty.hidden = n > 0;
}

// ------------------------------------------------------------ speaking + meters (10 Hz)

function updateLevels() {
  if (!client || !client.self) return;
  const now = performance.now();
  const levels = new Map();
  for (const [id, s] of client.speakerLevels()) levels.set(id, s.level);
  const selfId = client.self.participant_id;
  const local = client.localLevel();
  levels.set(selfId, local);
  localShown = decayed(localShown, local);
  setMeter(ui.localMeter, localShown);
  outputShown = decayed(outputShown, client.outputLevel() ?? 0);
  setMeter(ui.outputMeter, outputShown);
  updatePeerMeters();

  // The server's active-speaker set counts as well (it covers us and anyone not in a slot).
  const serverActive = new Map(client.lastSpeakers.map((s) => [s.participant_id, s.level]));
  const priority = new Set(client.lastSpeakers.filter((s) => s.priority).map((s) => s.participant_id));
  const whispering = new Set(client.lastSpeakers.filter((s) => s.whisper).map((s) => s.participant_id));
  const distance = new Map(client.lastSpeakers.filter((s) => s.distance != null).map((s) => [s.participant_id, s.distance]));
  if (client.permissions?.priority) priority.add(selfId);

  for (const li of ui.list.children) {
    const id = li.dataset.participantId;
    const level = levels.get(id) ?? 0;
    if (level >= SPEAKING_LEVEL) lastLoud.set(id, now);
    const muted = li.dataset.muted === 'true' || li.dataset.serverMuted === 'true';
    const speaking = !muted && (serverActive.has(id) || now - (lastLoud.get(id) ?? -Infinity) < SPEAKING_HOLD_MS);
    li.dataset.speaking = String(speaking);
    li.dataset.priority = String(priority.has(id));
    li.dataset.whisper = String(whispering.has(id));
    const d = id === selfId ? null : distance.get(id);
    li.querySelector('.distance').textContent = d == null ? '' : `${d.toFixed(1)} away`;
    // Live levels (our analyser, the slots' CSRC levels) beat the node's last report.
    const live = muted ? 0 : (levels.has(id) ? level : (serverActive.get(id) ?? 0));
    const shown = decayed(shownLevel.get(id), live);
    shownLevel.set(id, shown);
    setMeter(li.querySelector('.meter'), shown);
  }
}

// ------------------------------------------------------------ stats (1 Hz)

function fmt(v, unit, digits = 0) {
  return v === null || v === undefined || Number.isNaN(v) ? '–' : `${v.toFixed(digits)} ${unit}`;
}

async function updateStats() {
  if (!client || client.state !== 'joined') return;
  const s = await client.stats();
  const set = (key, text) => { ui.stats.querySelector(`[data-stat="${key}"]`).textContent = text; };
  const total = s.packets_received + s.packets_lost;
  set('rtt', fmt(s.rtt_ms, 'ms', 1));
  set('loss', total > 0 ? `${((100 * s.packets_lost) / total).toFixed(1)} % (${s.packets_lost})` : '–');
  set('jitter', fmt(s.jitter_ms, 'ms', 1));
  const now = performance.now();
  if (lastStats) {
    const dt = (now - lastStats.at) / 1000;
    set('recv', fmt(((s.bytes_received - lastStats.bytes_received) * 8) / 1000 / dt, 'kbit/s', 1));
    set('send', fmt(((s.bytes_sent - lastStats.bytes_sent) * 8) / 1000 / dt, 'kbit/s', 1));
    const active = s.slots.filter((slot, i) => slot.packets_received > (lastStats.slots[i]?.packets_received ?? 0)).length;
    set('slots', `${active} / ${s.slots.length}`);
  }
  set('ice', s.connection_state ?? '–');
  set('signal', fmt(s.signal_rtt_ms, 'ms', 1));
  // In mode p2p the node's connection is a standby: up, but carrying no audio.
  set('path', `${fmtPair(s.selected_pair)}${s.mode === 'p2p' ? ' (standby)' : ''}`);
  renderMode();
  await updatePeerStats();
  lastStats = { at: now, bytes_received: s.bytes_received, bytes_sent: s.bytes_sent, slots: s.slots };
  ui.stats.dataset.rttMs = s.rtt_ms === null ? '' : String(s.rtt_ms);
  ui.stats.dataset.packetsReceived = String(s.packets_received);
}

function resetStats() {
  lastStats = null;
  for (const dd of ui.stats.querySelectorAll('dd')) dd.textContent = '–';
  renderMode();
  renderPeers();
}

// ------------------------------------------------------------ mode and direct connections

/** `local → remote (host/relay…)` of a selected candidate pair. */
function fmtPair(pair) {
  if (!pair?.local || !pair?.remote) return '–';
  const end = (c) => (String(c.address ?? '?').includes(':') ? `[${c.address}]:${c.port}` : `${c.address ?? '?'}:${c.port}`);
  const tcp = pair.local.protocol === 'tcp' || pair.local.relay_protocol === 'tcp' ? ', tcp' : '';
  return `${end(pair.local)} → ${end(pair.remote)} (${pair.local.candidate_type}/${pair.remote.candidate_type}${tcp})`;
}

const MODE_TEXT = { p2p: 'peer to peer', sfu: 'through the node' };

function renderMode() {
  const mode = client && client.state !== 'closed' ? client.mode : null;
  ui.mode.dataset.mode = mode ?? '';
  ui.mode.textContent = mode ? MODE_TEXT[mode] ?? mode : '–';
}

/** One row per direct connection: name, state, a meter of what it brings, its stats. */
function renderPeers() {
  const links = client && client.state !== 'closed' ? client.peers : new Map();
  for (const li of [...ui.peers.children]) {
    if (!links.has(li.dataset.peerId)) li.remove();
  }
  for (const [id, link] of links) {
    let li = ui.peers.querySelector(`[data-peer-id="${CSS.escape(id)}"]`);
    if (!li) {
      li = document.createElement('li');
      li.className = 'peer';
      li.dataset.peerId = id;
      li.innerHTML = `
        <div class="peer-head">
          <span class="name"></span>
          <span class="peer-state"></span>
        </div>
        <span class="meter" role="meter" aria-valuemin="0" aria-valuemax="1" aria-valuenow="0"><span class="meter-fill"></span></span>
        <dl>
          <div><dt>Round trip</dt><dd data-stat="rtt">–</dd></div>
          <div><dt>Loss</dt><dd data-stat="loss">–</dd></div>
          <div><dt>Jitter</dt><dd data-stat="jitter">–</dd></div>
          <div class="wide"><dt>Path</dt><dd data-stat="pair" class="pair">–</dd></div>
        </dl>`;
      ui.peers.append(li);
    }
    const name = client.participants.get(id)?.name ?? id;
    li.querySelector('.name').textContent = name;
    li.querySelector('.meter').setAttribute('aria-label', `${name}: direct audio level`);
    li.dataset.state = link.pc.connectionState;
    li.querySelector('.peer-state').textContent = link.pc.connectionState;
  }
  const n = ui.peers.children.length;
  ui.peerCount.textContent = String(n);
  ui.peersEmpty.hidden = n > 0;
}

/** The level each direct connection brings now (10 Hz). */
function updatePeerMeters() {
  const now = new Map();
  for (const s of client.contributingSources()) {
    if (s.path === 'p2p' && s.ageMs < 500) now.set(s.participant_id, Math.max(now.get(s.participant_id) ?? 0, s.audioLevel ?? 0));
  }
  for (const li of ui.peers.children) {
    const id = li.dataset.peerId;
    const shown = decayed(peerShown.get(id), now.get(id) ?? 0);
    peerShown.set(id, shown);
    setMeter(li.querySelector('.meter'), shown);
  }
}

/** Round trip, loss, jitter and candidate pair of each direct connection (1 Hz). */
async function updatePeerStats() {
  renderPeers();
  if (!client || client.peers.size === 0) return;
  for (const p of await client.peerStats()) {
    const li = ui.peers.querySelector(`[data-peer-id="${CSS.escape(p.participant_id)}"]`);
    if (!li) continue;
    const set = (key, text) => { li.querySelector(`[data-stat="${key}"]`).textContent = text; };
    set('rtt', fmt(p.rtt_ms, 'ms', 1));
    set('loss', p.loss === null ? '–' : `${(100 * p.loss).toFixed(1)} %`);
    set('jitter', fmt(p.jitter_ms, 'ms', 1));
    set('pair', fmtPair(p.selected_pair));
    li.dataset.route = p.route;
  }
}

// ------------------------------------------------------------ session

function stopTimers() {
  clearInterval(levelTimer);
  clearInterval(statsTimer);
  levelTimer = statsTimer = null;
  localShown = 0;
  outputShown = 0;
  shownLevel.clear();
  peerShown.clear();
  lastLoud.clear();
  setMeter(ui.localMeter, 0);
  setMeter(ui.outputMeter, 0);
}

function wire(c) {
  const rerender = () => { if (c === client) renderParticipants(); };
  c.addEventListener('participant_joined', rerender);
  // The room's audio moved between the node and direct connections (issue 13).
  c.addEventListener('mode', (e) => {
    if (c !== client) return;
    renderMode();
    renderPeers();
    if (e.detail.reason === 'joined' || c.state !== 'joined') return;
    setStatus(e.detail.mode === 'p2p'
      ? 'Small call: talking directly (peer to peer)'
      : `Talking through the node${e.detail.reason ? ` (${e.detail.reason.replace(/_/g, ' ')})` : ''}`, 'info');
  });
  c.addEventListener('peer_state', () => { if (c === client) renderPeers(); });
  c.addEventListener('video_slots', () => { if (c === client) renderTiles(); });
  c.addEventListener('video', (e) => {
    if (c !== client) return;
    if (e.detail.source === 'camera') setToggle(ui.camera, e.detail.enabled, 'Stop camera', 'Camera');
    else setToggle(ui.screen, e.detail.enabled, 'Stop sharing', 'Share screen');
    renderParticipants();
  });
  c.addEventListener('participant_left', (e) => {
    rerender();
    // Whisper to those still here only (the node refuses a whisper naming a stranger).
    if (c === client && whisperSet.delete(e.detail.participant_id)) c.whisper([...whisperSet]);
  });
  c.addEventListener('participant_updated', (e) => {
    rerender();
    if (c === client && e.detail.self) {
      syncMuteButton(e.detail.participant.muted);
      setToggle(ui.deafen, e.detail.participant.deafened, 'Undeafen', 'Deafen');
      const was = Boolean(e.detail.previous?.server_muted);
      if (e.detail.participant.server_muted !== was) {
        setStatus(e.detail.participant.server_muted ? 'You were muted by the server' : 'The server unmuted you', 'warn');
      }
    }
  });
  c.addEventListener('permissions', (e) => {
    if (c !== client) return;
    rerender();
    const { publish, subscribe, priority, previous } = e.detail;
    if (Boolean(priority) !== Boolean(previous?.priority)) {
      setStatus(priority ? 'You are a priority speaker: everyone hears you' : 'You are no longer a priority speaker', 'warn');
      return;
    }
    const lost = [publish ? null : 'your audio is not forwarded', subscribe ? null : 'you receive no audio'].filter(Boolean);
    setStatus(lost.length ? `The server changed your permissions: ${lost.join('; ')}` : 'You may speak and listen again', 'warn');
  });
  c.addEventListener('kicked', (e) => {
    if (c !== client) return;
    c.endedBy = { kind: 'kicked', reason: e.detail.reason };
    showBanner('kicked', 'You were removed from the room.', e.detail.reason ? `Reason: ${e.detail.reason}` : '');
    setStatus(`Kicked${e.detail.reason ? `: ${e.detail.reason}` : ''}`, 'error');
  });
  c.addEventListener('error', (e) => {
    if (c !== client) return;
    // A signal for a direct connection that crossed a mode change: nothing to show.
    if (/^p2p_signal/.test(e.detail.message ?? '')) return;
    if (/position|proximity/.test(e.detail.message ?? '')) {
      ui.worldNote.textContent = `This room does not take your position: ${e.detail.message}`;
      ui.worldNote.dataset.kind = 'error';
      return;
    }
    setStatus(`Server error: ${e.detail.code}${e.detail.message ? ` – ${e.detail.message}` : ''}`, 'error');
  });
  c.addEventListener('room_closed', (e) => {
    if (c !== client) return;
    c.endedBy = { kind: 'room_closed', reason: e.detail.reason };
    const draining = e.detail.reason === 'node_draining';
    showBanner('room_closed', `The room “${c.self?.room ?? ''}” was closed.`,
      draining ? 'The server is shutting down; join again to reach another one.'
        : (e.detail.reason ? `Reason: ${e.detail.reason}` : ''));
    setStatus(`Room closed${e.detail.reason ? `: ${e.detail.reason}` : ''}`, 'warn');
  });
  c.addEventListener('connection_state', (e) => {
    if (c !== client || c.state !== 'joined') return;
    if (e.detail.state === 'connected') setStatus(`In room “${c.self.room}” as ${c.self.name}`, 'ok');
    else if (e.detail.state === 'failed') setStatus('Media connection failed', 'error');
    else if (e.detail.state === 'disconnected') setStatus('Media connection interrupted…', 'warn');
  });
  // The signaling socket dropped: the client resumes the session; audio keeps going.
  c.addEventListener('reconnecting', () => {
    if (c !== client) return;
    setStatus('Reconnecting…', 'warn');
  });
  c.addEventListener('resumed', (e) => {
    if (c !== client) return;
    rerender();
    syncMuteButton(c.muted);
    const secs = (e.detail.downtime_ms / 1000).toFixed(1);
    setStatus(`Reconnected to “${c.self.room}” (connection was lost for ${secs} s)`, 'ok');
  });
  // A cluster: the node is gone, the client joins the room again at another one.
  c.addEventListener('rejoining', () => {
    if (c !== client) return;
    setStatus('The server is gone: joining the room again on another one…', 'warn');
  });
  c.addEventListener('rejoined', (e) => {
    if (c !== client) return;
    rerender();
    syncMuteButton(c.muted);
    renderTiles();
    const secs = (e.detail.downtime_ms / 1000).toFixed(1);
    setStatus(`Back in “${c.self.room}” on another server (connection was lost for ${secs} s)`, 'ok');
  });
  // ICE restarts (a network change, or the media connection failed).
  c.addEventListener('ice_restarting', (e) => {
    if (c !== client || c.state !== 'joined') return;
    setStatus(e.detail.reason === 'manual' ? 'Restarting the media connection…' : 'Restoring the media connection…', 'warn');
  });
  c.addEventListener('ice_restarted', () => {
    if (c !== client || c.state !== 'joined') return;
    if (c.pc?.connectionState === 'connected') setStatus(`In room “${c.self.room}” as ${c.self.name} (media connection restarted)`, 'ok');
  });
  c.addEventListener('ice_restart_failed', (e) => {
    if (c !== client || c.state !== 'joined') return;
    setStatus(`Could not restart the media connection: ${e.detail.message}`, 'warn');
  });
  c.addEventListener('closed', (e) => {
    if (c !== client) return;
    stopTimers();
    setInCall(false);
    resetTiles();
    ui.list.replaceChildren();
    renderParticipants();
    resetStats();
    if (c.leftByUser) setStatus(`Left room “${c.self?.room ?? ''}”`, 'idle');
    else if (c.endedBy) { /* kicked or room closed: the banner and status say so already */ }
    else if (['resume_failed', 'resume_timeout', 'rejoin_failed'].includes(e.detail.error)) {
      setStatus('Connection lost: could not get back into the room. Join again.', 'error');
    }
    else if (ui.status.dataset.kind !== 'error') {
      setStatus(`Disconnected${e.detail.reason ? `: ${e.detail.reason}` : ''}`, 'warn');
    }
  });
}

// ------------------------------------------------------------ video

/** The video shown large and asked for in high quality, `participant_id:source`
 * (null: none): a key, not a slot index, as slots change hands. */
let raisedKey = null;
const videoKey = (s) => (s?.participant_id ? `${s.participant_id}:${s.source}` : null);
/** One tile per video slot index: {el, video, name, info}. */
const tiles = new Map();

function tileFor(slot) {
  let t = tiles.get(slot.slot);
  if (t) return t;
  const el = document.createElement('div');
  el.className = 'tile';
  el.dataset.slot = String(slot.slot);
  el.tabIndex = 0;
  el.setAttribute('role', 'button');
  const video = document.createElement('video');
  video.autoplay = true;
  video.muted = true;
  video.playsInline = true;
  video.srcObject = slot.stream;
  const name = document.createElement('span');
  name.className = 'tile-name';
  const info = document.createElement('span');
  info.className = 'tile-info';
  el.append(video, name, info);
  const raise = () => toggleRaised(slot.slot);
  el.addEventListener('click', raise);
  el.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); raise(); } });
  t = { el, video, name, info };
  tiles.set(slot.slot, t);
  return t;
}

/** A click raises a tile to high quality (and the one raised before back to medium). */
function toggleRaised(index) {
  if (!client) return;
  const clicked = videoKey(client.videoSlots[index]);
  if (!clicked) return;
  const previous = raisedKey;
  raisedKey = raisedKey === clicked ? null : clicked;
  for (const s of client.videoSlots) {
    const k = videoKey(s);
    if (k && (k === previous || k === raisedKey)) {
      client.subscribe(s.index, s.participant_id, s.source, k === raisedKey ? 'high' : 'medium');
    }
  }
  renderTiles();
}

function renderTiles() {
  const slots = client?.videoSlots ?? [];
  // The raised video left its slot (its publisher stopped or left): nothing is raised.
  if (raisedKey && !slots.some((s) => videoKey(s) === raisedKey)) raisedKey = null;
  const shown = [];
  for (const s of slots) {
    if (!s.participant_id) continue;
    const t = tileFor({ slot: s.index, stream: s.stream });
    const who = client.participants.get(s.participant_id)?.name ?? s.participant_id;
    t.name.textContent = `${who} · ${s.source}`;
    t.el.dataset.raised = String(raisedKey !== null && videoKey(s) === raisedKey);
    t.el.dataset.participantId = s.participant_id;
    t.el.dataset.layer = s.layer ?? '';
    if (t.video.srcObject !== s.stream) t.video.srcObject = s.stream;
    t.video.play().catch(() => {});
    shown.push(t.el);
  }
  ui.videoGrid.replaceChildren(...shown);
  ui.videoEmpty.hidden = shown.length > 0;
}

/** Resolution, frame rate and forwarded layer on each tile. */
async function updateTiles() {
  if (!client || client.state !== 'joined' || client.videoSlots.length === 0) return;
  for (const s of await client.videoStats()) {
    const t = tiles.get(s.slot);
    if (!t) continue;
    const size = s.frame_width ? `${s.frame_width}×${s.frame_height}` : 'waiting';
    const fps = s.fps ? ` · ${Math.round(s.fps)} fps` : '';
    t.info.textContent = `${size}${fps} · ${s.layer ?? 'no layer'}`;
    t.el.dataset.width = String(s.frame_width ?? 0);
  }
}

function resetTiles() {
  raisedKey = null;
  tiles.clear();
  ui.videoGrid.replaceChildren();
  ui.videoEmpty.hidden = false;
}

async function toggleVideo(source, button, start, onText, offText) {
  if (!client || client.state !== 'joined') return;
  const on = button.getAttribute('aria-pressed') === 'true';
  button.disabled = true;
  try {
    if (on) await client.stopVideo(source);
    else await start();
  } catch (e) {
    setStatus(`Could not ${on ? 'stop' : 'start'} the ${source}: ${e.serverMessage || e.message}`, 'warn');
  } finally {
    button.disabled = !client || client.state !== 'joined';
    setToggle(button, Boolean(client?.publishing?.[source]), onText, offText);
  }
}

ui.camera.addEventListener('click', () => toggleVideo('camera', ui.camera, () => client.publishCamera(), 'Stop camera', 'Camera'));
ui.screen.addEventListener('click', () => toggleVideo('screen', ui.screen, () => client.shareScreen(), 'Stop sharing', 'Share screen'));

// ------------------------------------------------------------ whisper

function toggleWhisper(id, button) {
  if (!client || client.state === 'closed') return;
  if (whisperSet.has(id)) whisperSet.delete(id); else whisperSet.add(id);
  button.setAttribute('aria-pressed', String(whisperSet.has(id)));
  client.whisper([...whisperSet]);
  setStatus(whisperSet.size ? `Whispering to ${whisperSet.size} participant(s)` : 'Everyone hears you again', 'info');
}

// ------------------------------------------------------------ world map (proximity)

/** The map's ring: the proximity radius to draw (`?radius=`; the node knows the real one). */
const worldRadius = Math.max(1, Math.min(50, Number(params.get('radius')) || 20));
ui.worldReach.setAttribute('r', String(worldRadius));

function moveTo(x, z) {
  worldAt = [Math.max(-50, Math.min(50, x)), Math.max(-50, Math.min(50, z))];
  const [wx, wz] = worldAt.map((v) => Math.round(v * 10) / 10);
  ui.worldMe.setAttribute('cx', String(wx));
  ui.worldMe.setAttribute('cy', String(wz));
  ui.worldReach.setAttribute('cx', String(wx));
  ui.worldReach.setAttribute('cy', String(wz));
  ui.worldMe.setAttribute('aria-valuetext', `${wx}, ${wz}`);
  if (client && client.state === 'joined') client.setPosition([wx, 0, wz]);
}

function mapPoint(e) {
  const m = ui.world.getScreenCTM();
  if (!m) return null;
  const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(m.inverse());
  return [p.x, p.y];
}

let dragging = false;
ui.world.addEventListener('pointerdown', (e) => {
  const p = mapPoint(e);
  if (!p) return;
  dragging = true;
  ui.world.setPointerCapture(e.pointerId);
  moveTo(...p);
});
ui.world.addEventListener('pointermove', (e) => {
  if (!dragging) return;
  const p = mapPoint(e);
  if (p) moveTo(...p);
});
ui.world.addEventListener('pointerup', () => { dragging = false; });
ui.worldMe.addEventListener('keydown', (e) => {
  const step = e.shiftKey ? 10 : 2;
  const d = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[e.key];
  if (!d) return;
  e.preventDefault();
  moveTo(worldAt[0] + d[0], worldAt[1] + d[1]);
});

async function join() {
  const room = ui.room.value.trim() || ui.room.placeholder;
  const name = ui.name.value.trim();
  if (!name) { ui.name.focus(); setStatus('Enter your name first', 'warn'); return; }
  const token = params.get('token') ?? undefined;

  const spatial = params.get('spatial') === '1' ? { radius: Number(params.get('radius')) || undefined } : undefined;
  const relay = ui.relay.checked || params.get('relay') === '1';
  // `?p2p=0`: always through the node, even in rooms that allow peer to peer.
  const p2p = params.get('p2p') !== '0';
  const c = new ChorusClient({
    audioContainer: ui.sinks, spatial, iceTransportPolicy: relay ? 'relay' : 'all', autoSubscribe: { quality: 'medium' }, p2p,
  });
  whisperSet.clear();
  for (const b of ui.list.querySelectorAll('.whisper-btn')) b.setAttribute('aria-pressed', 'false');
  client = c;
  showBanner(null);
  window.chorus = c;
  wire(c);
  setInCall(true);
  setStatus(`Joining “${room}”…`, 'info');
  try {
    // `?processing=off`: the microphone as it is (music, a soundboard), without the
    // browser's echo cancellation, noise suppression and gain control.
    const raw = params.get('processing') === 'off';
    const audioConstraints = raw ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false } : undefined;
    await c.join({ room, name, token, audioConstraints });
  } catch (e) {
    if (c !== client) return;
    setInCall(false);
    setStatus(`Could not join: ${e.code ?? ''} ${e.serverMessage || e.message}`.trim(), 'error');
    return;
  }
  if (c !== client) return;
  renderParticipants();
  setStatus(c.pc?.connectionState === 'connected'
    ? `In room “${room}” as ${name}`
    : `Joined “${room}” as ${name}, connecting audio…`, c.pc?.connectionState === 'connected' ? 'ok' : 'info');
  levelTimer = setInterval(updateLevels, 100);
  updateStats().catch(() => {}); // baseline for the rates shown a second later
  statsTimer = setInterval(() => { updateStats().catch(() => {}); updateTiles().catch(() => {}); }, 1000);
  ui.camera.title = c.videoSlotCount > 0 ? 'Send your camera (simulcast)' : 'This room has no video';
  ui.camera.disabled = ui.screen.disabled = c.videoSlotCount === 0;
  renderTiles();
}

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  join();
});

ui.leave.addEventListener('click', async () => {
  if (!client) return;
  client.leftByUser = true;
  ui.leave.disabled = true;
  setStatus('Leaving…', 'info');
  await client.leave();
});

ui.mute.addEventListener('click', () => {
  if (!client) return;
  const muted = ui.mute.getAttribute('aria-pressed') !== 'true';
  try {
    client.setMuted(muted);
  } catch (e) {
    // `forbidden`: muted by the server (the button is disabled then; this is a race).
    setStatus(`Cannot unmute: ${e.serverMessage || e.message}`, 'warn');
    syncMuteButton(client.muted);
    return;
  }
  syncMuteButton(muted);
  renderParticipants();
});

ui.deafen.addEventListener('click', () => {
  if (!client) return;
  const deafened = ui.deafen.getAttribute('aria-pressed') !== 'true';
  client.setDeafened(deafened);
  client.resumeAudio();
  setToggle(ui.deafen, deafened, 'Undeafen', 'Deafen');
  renderParticipants();
});

window.addEventListener('pagehide', () => {
  if (client && client.state !== 'closed') client.leave();
});

setInCall(false);
renderParticipants();
