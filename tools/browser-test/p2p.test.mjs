// Peer to peer in real Chromium (issue 13): two pages in a `private` room talk
// directly (the node relays their signaling and gets no media), a third page moves
// the room to the node without an audible gap, its leaving moves it back after the
// room's `p2p_downgrade_s`, again without a gap; join-to-first-audio is measured in
// both modes (for BENCHMARKS.md), and the demo page shows the mode and the peer
// connection.
//
// Every page sends a steady tone (an OscillatorNode, a different pitch per page, passed
// to join() as `audioTrack`), so that what a page hears can be measured:
// `chorus.outputLevel()` is the RMS of everything the page plays (slots and peer
// connections, summed in one Web Audio graph). A page samples it every 10 ms; a gap is
// the time from the last sample at or above SILENT_LEVEL to the next one.
//
//   CHORUS_BIN=target/debug/chorus node --test p2p.test.mjs    (see run.sh)
//
// Prints, for BENCHMARKS.md:
//   P2P_JOIN_TO_AUDIO mode=p2p|sfu ms=…   join() called → the other page's tone heard
//   P2P_GAP upgrade|downgrade page=A|B ms=…   longest silence during the switch
//
// Env: CHORUS_BIN, CHORUS_ARGS, CHROMIUM as call.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, freeTcpPort, freeUdpPort, openControl, poll, spawnLogged, stop } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const CHORUS_BIN = process.env.CHORUS_BIN || path.join(REPO, 'target', 'debug', 'chorus');
const CHORUS_ARGS = (process.env.CHORUS_ARGS || '').split(/\s+/).filter(Boolean);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.join(HERE, 'screenshots', 'p2p.png');

/** A page hears the other tones: output RMS at or above this (a tone alone is ~0.2). */
const HEARD_LEVEL = 0.02;
/** Below this the output counts as silent (−40 dBFS). */
const SILENT_LEVEL = 0.01;
/** Longest tolerated silence while the room changes mode. */
const MAX_GAP_MS = 250;
/** The room's p2p_downgrade_s. */
const DOWNGRADE_S = 3;
const TONES = { A: 440, B: 554, C: 659 };

// ------------------------------------------------------------------ the node under test

const node = {
  proc: null, http: 0, udp: 0, dir: null, control: null, log: [],
  get base() { return `http://127.0.0.1:${this.http}`; },
  tail(n = 60) { return this.log.slice(-n).join('\n'); },
};
let browser = null;

before(async () => {
  assert.ok(existsSync(CHORUS_BIN), `chorus binary not found at ${CHORUS_BIN} (cargo build -p chorus-signaling)`);
  node.http = await freeTcpPort();
  node.udp = await freeUdpPort();
  node.dir = mkdtempSync(path.join(os.tmpdir(), 'chorus-p2p-'));
  node.control = path.join(node.dir, 'control.sock');
  node.proc = spawnLogged(CHORUS_BIN, ['serve', '--dev', '--http', `127.0.0.1:${node.http}`, '--udp', `127.0.0.1:${node.udp}`,
    '--control', node.control, '--quality-interval', '1', ...CHORUS_ARGS], node.log);
  try {
    await poll('GET /healthz → 200', async () => {
      if (node.proc.exitCode !== null) {
        throw Object.assign(new Error(`chorus exited early: ${node.proc.exitCode}`), { fatal: true });
      }
      return (await fetch(`${node.base}/healthz`)).status === 200;
    }, { timeout: 30_000, interval: 100 });
    await poll('the control socket answers', async () => {
      const ctl = await openControl(node.control);
      try { return await ctl.call('room.list'); } finally { ctl.close(); }
    }, { timeout: 10_000, interval: 100 });
  } catch (e) {
    console.error(`--- chorus output ---\n${node.tail(80)}`);
    await stop(node.proc);
    throw e;
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close().catch(() => {});
  await stop(node.proc);
  if (node.dir) rmSync(node.dir, { recursive: true, force: true });
});

// Never leave the node running if the test process dies.
process.on('exit', () => { if (node.proc && node.proc.exitCode === null) try { node.proc.kill('SIGKILL'); } catch { /* gone */ } });

// ------------------------------------------------------------------ in-page helpers

/**
 * In-page: the page's tone (`window.__tone`, a steady sine at `freq` Hz from its own
 * AudioContext), chorus.js as `window.ChorusClient`, and the probes below.
 */
async function setupPage(freq) {
  const ctx = new AudioContext();
  const osc = ctx.createOscillator();
  osc.frequency.value = freq;
  const gain = ctx.createGain();
  gain.gain.value = 0.3;
  const dest = ctx.createMediaStreamDestination();
  osc.connect(gain).connect(dest);
  osc.start();
  if (ctx.state === 'suspended') await ctx.resume();
  window.__toneCtx = ctx;
  window.__tone = dest.stream.getAudioTracks()[0];
  const { ChorusClient } = await import('/chorus.js');
  window.ChorusClient = ChorusClient;
  window.__events = [];
}

/**
 * In-page: a new client (`window.chorus`) joins `room` sending the tone; resolves with
 * its mode and identity. From the join() call on it notes when it first hears
 * something (`window.__firstAudioMs`: output at or above `heard`).
 */
async function joinRoom({ room, name, p2p, heard }) {
  const c = new window.ChorusClient(p2p === undefined ? {} : { p2p });
  window.chorus = c;
  for (const type of ['mode', 'mode_switched', 'peer_state', 'error']) {
    c.addEventListener(type, (e) => window.__events.push({ type, t: performance.now(), ...e.detail }));
  }
  window.__firstAudioMs = null;
  const t0 = performance.now();
  const probe = setInterval(() => {
    if (c.state === 'closed') { clearInterval(probe); return; }
    const level = c.outputLevel();
    if (level !== null && level >= heard) {
      window.__firstAudioMs = performance.now() - t0;
      clearInterval(probe);
    }
  }, 5);
  const joined = await c.join({ room, name, audioTrack: window.__tone });
  return { mode: c.mode, joinedMode: joined.mode ?? null, id: c.self.participant_id, csrc: c.self.csrc };
}

/** In-page: sample what the page plays every 10 ms (`stopGapWatch` reads it out). */
function startGapWatch() {
  const c = window.chorus;
  const w = { samples: [] };
  w.timer = setInterval(() => w.samples.push([performance.now(), c.outputLevel() ?? -1]), 10);
  window.__gapWatch = w;
}

/**
 * In-page: stop sampling; the longest run below `silent` (from the last loud sample
 * before it to the first loud one after, or to the end), the number of samples, the
 * longest step between two samples (a stalled timer would hide a gap) and the share of
 * samples the page could not read (-1: no running audio context).
 */
function stopGapWatch(silent) {
  const w = window.__gapWatch;
  clearInterval(w.timer);
  let lastLoud = null;
  let worst = 0;
  let quiet = false;
  let prev = null;
  let maxStep = 0;
  let unreadable = 0;
  for (const [t, level] of w.samples) {
    if (prev !== null) maxStep = Math.max(maxStep, t - prev);
    prev = t;
    if (level < 0) unreadable += 1;
    if (level >= silent) {
      if (quiet) worst = Math.max(worst, t - (lastLoud ?? w.samples[0][0]));
      quiet = false;
      lastLoud = t;
    } else {
      quiet = true;
    }
  }
  if (quiet && w.samples.length) worst = Math.max(worst, prev - (lastLoud ?? w.samples[0][0]));
  return { worstMs: Math.round(worst), samples: w.samples.length, maxStepMs: Math.round(maxStep), unreadable };
}

/** On a failure: every page's state, its console errors, the control events and the node's log. */
async function reportFailure(e, pages, consoleErrors, ctl) {
  console.error(`\n=== FAILURE: ${e.message}`);
  for (const [name, page] of Object.entries(pages)) {
    try {
      console.error(`--- ${name}: ${JSON.stringify(await pageView(page))}`);
    } catch (err) {
      console.error(`--- ${name}: (state unavailable: ${err.message})`);
    }
  }
  if (consoleErrors.length) console.error(`--- page console errors ---\n${consoleErrors.join('\n')}`);
  if (ctl) console.error(`--- control events (tail) ---\n${ctl.events.slice(-30).map((ev) => JSON.stringify(ev)).join('\n')}`);
  console.error(`--- chorus output (tail) ---\n${node.tail(80)}`);
}

/** Stops `page`'s gap watch, prints its longest silence during `phase` and checks it. */
async function assertNoGap(t, page, name, phase) {
  const g = await page.evaluate(stopGapWatch, SILENT_LEVEL);
  console.log(`P2P_GAP ${phase} page=${name} ms=${g.worstMs}`);
  t.diagnostic(`${phase} gap at ${name}: ${JSON.stringify(g)}`);
  assert.equal(g.unreadable, 0, `${name}'s output was readable throughout`);
  assert.ok(g.maxStepMs < 100, `${name} sampled its output at least every 100 ms (longest step ${g.maxStepMs} ms)`);
  assert.ok(g.worstMs <= MAX_GAP_MS, `${name}'s longest silence during the ${phase}: ${g.worstMs} ms (≤ ${MAX_GAP_MS})`);
}

/** What a test needs to know of a page now. */
function pageView(page) {
  return page.evaluate(async () => {
    const c = window.chorus;
    if (!c) return null;
    return {
      state: c.state,
      mode: c.mode,
      nodeSending: c.nodeSending,
      peers: c.peers.size,
      level: c.outputLevel(),
      self: c.self && { id: c.self.participant_id, csrc: c.self.csrc },
      events: window.__events.map((e) => ({ type: e.type, mode: e.mode, reason: e.reason, state: e.state, code: e.code, message: e.message })),
      peerStats: await c.peerStats(),
      fresh: c.contributingSources().filter((s) => s.ageMs < 500)
        .map((s) => ({ slot: s.slot, source: s.source, path: s.path, level: s.audioLevel })),
    };
  });
}

/** `listener` hears `csrc` through the node: a fresh contributing source on a growing slot. */
async function assertHearingOnSlots(listener, csrc, what, timeout) {
  const slotPackets = () => listener.evaluate(async () => (await window.chorus.stats()).slots.map((s) => s.packets_received));
  const base = await slotPackets();
  await poll(what, async () => {
    const fresh = await listener.evaluate(() => window.chorus.contributingSources()
      .filter((s) => s.slot !== null && s.ageMs < 300).map((s) => ({ slot: s.slot, source: s.source })));
    const hit = fresh.find((s) => s.source === csrc);
    const now = await slotPackets();
    return { ok: Boolean(hit) && now[hit.slot] > (base[hit.slot] ?? 0) + 5, fresh, now };
  }, { timeout, interval: 50 });
}

/** Audio (RTP) packets the node has received, all shards. */
async function nodeMediaIn(ctl) {
  const s = await ctl.call('node.stats');
  return (s.totals?.rtp_in ?? 0) + (s.totals?.video_in ?? 0);
}

/**
 * RTP packets (not RTCP, STUN or DTLS) that reach the node's UDP port during `ms`,
 * counted by the kernel (rtpcount.sh: an nftables counter). Media would be ~50 a
 * second per sender.
 */
async function rtpToNode(ms) {
  const script = path.join(HERE, 'rtpcount.sh');
  const run = (cmd) => {
    const r = spawnSync('bash', [script, cmd, String(node.udp)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`rtpcount.sh ${cmd}: ${r.status} ${r.stderr}`);
    return r.stdout.trim();
  };
  run('start');
  try {
    await sleep(ms);
    return Number(run('read'));
  } finally {
    run('stop');
  }
}

async function openPage(name, consoleErrors) {
  const page = await (await browser.newContext()).newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`[${name}] console: ${m.text()}`); });
  page.on('pageerror', (e) => consoleErrors.push(`[${name}] pageerror: ${e.message}`));
  await page.goto(`${node.base}/`);
  await page.evaluate(setupPage, TONES[name] ?? 500);
  return page;
}

// ------------------------------------------------------------------ the tests

test('two pages talk peer to peer; a third moves the room to the node and back, without a gap', { timeout: 90_000 }, async (t) => {
  const room = 'duo';
  const consoleErrors = [];
  const pages = {};
  const who = {};
  let ctl;
  try {
    ctl = await openControl(node.control);
    await ctl.call('events.subscribe', { room });
    const info = await ctl.call('room.create', { room, kind: 'private', p2p_downgrade_s: DOWNGRADE_S });
    assert.equal(info.p2p_max, 2, `a private room carries 2 peer to peer: ${JSON.stringify(info)}`);
    assert.equal(info.p2p_downgrade_s, DOWNGRADE_S);
    for (const name of ['A', 'B', 'C']) pages[name] = await openPage(name, consoleErrors);
    const { A: a, B: b, C: c } = pages;

    // 1. A, then B join (p2p on by default): mode p2p, each hears the other on its peer
    //    connection, and the node gets no media.
    who.A = await a.evaluate(joinRoom, { room, name: 'A', heard: HEARD_LEVEL });
    who.B = await b.evaluate(joinRoom, { room, name: 'B', heard: HEARD_LEVEL });
    assert.equal(who.B.joinedMode, 'p2p', `B's joined says mode p2p: ${JSON.stringify(who.B)}`);
    for (const [name, page] of [['A', a], ['B', b]]) {
      await poll(`${name} is in mode p2p and hears the other page directly`, async () => {
        const v = await pageView(page);
        const peer = v.peerStats[0];
        return { ok: v.mode === 'p2p' && v.level >= HEARD_LEVEL && peer?.connection_state === 'connected'
          && peer.packets_received > 20 && peer.route === 'peer', ...v };
      }, { timeout: 10_000 });
    }
    const p2pJoinMs = await poll("B's first audio", () => b.evaluate(() => window.__firstAudioMs), { timeout: 5_000, interval: 50 });
    console.log(`P2P_JOIN_TO_AUDIO mode=p2p ms=${Math.round(p2pJoinMs)}`);

    // Each page's peer connection goes to the other page, not to the node.
    {
      const pa = (await pageView(a)).peerStats;
      const pb = (await pageView(b)).peerStats;
      assert.equal(pa.length, 1, `A has one peer connection: ${JSON.stringify(pa)}`);
      assert.equal(pb.length, 1, `B has one peer connection: ${JSON.stringify(pb)}`);
      assert.equal(pa[0].participant_id, who.B.id);
      assert.equal(pb[0].participant_id, who.A.id);
      const [sa, sb] = [pa[0].selected_pair, pb[0].selected_pair];
      t.diagnostic(`A's pair: ${JSON.stringify(sa)}; B's pair: ${JSON.stringify(sb)}`);
      assert.ok(sa?.remote && sb?.remote, 'both peer connections selected a candidate pair');
      // The node listens on 127.0.0.1 only: a page's own port on another address may
      // have the same number (it did once, on fd00::2), and is no node.
      const toNode = (c) => ['127.0.0.1', '::ffff:127.0.0.1'].includes(c.address) && c.port === node.udp;
      assert.ok(!toNode(sa.remote), "A's peer connection does not go to the node");
      assert.ok(!toNode(sb.remote), "B's peer connection does not go to the node");
      assert.equal(sa.remote.port, sb.local.port, "A's remote candidate is B's local one");
      assert.equal(sb.remote.port, sa.local.port, "B's remote candidate is A's local one");
      // The peers are named by their CSRC, as on the slots.
      const fresh = (await pageView(a)).fresh;
      assert.ok(fresh.some((s) => s.path === 'p2p' && s.source === who.B.csrc), `A's contributing sources name B: ${JSON.stringify(fresh)}`);
    }
    await poll('neither page sends to the node', async () => {
      const [va, vb] = [await pageView(a), await pageView(b)];
      return { ok: va.nodeSending === false && vb.nodeSending === false, a: va.nodeSending, b: vb.nodeSending };
    }, { timeout: 5_000 });
    {
      await sleep(300); // packets sent just before the track came off have landed
      const m0 = await nodeMediaIn(ctl);
      const captured = await rtpToNode(3_000);
      const m1 = await nodeMediaIn(ctl);
      const [va, vb] = [await pageView(a), await pageView(b)];
      assert.ok(va.level >= HEARD_LEVEL && vb.level >= HEARD_LEVEL, `both still hear each other: ${va.level}, ${vb.level}`);
      assert.equal(m1 - m0, 0, `the node receives no media in mode p2p (rtp_in ${m0} → ${m1})`);
      t.diagnostic(`capture: ${captured} RTP packets to the node's port in 3 s`);
      assert.equal(captured, 0, `the capture sees no RTP to the node's port (${captured} in 3 s)`);
    }
    {
      const r = await ctl.call('room.get', { room });
      assert.equal(r.mode, 'p2p', `room.get shows mode p2p: ${JSON.stringify(r)}`);
    }
    // Speakers, mute and deafen work in mode p2p: the node announces A from A's own
    // reports (and the backend gets speaking_started); A's mute silences A at B and
    // reaches B's roster; B's deafen silences what B plays.
    await poll("B's speakers (from the node) name A", () => b.evaluate(
      (id) => window.chorus.lastSpeakers.some((s) => s.participant_id === id), who.A.id), { timeout: 5_000 });
    await ctl.waitEvent('speaking_started for A', (e) => e.type === 'speaking_started' && e.participant_id === who.A.id);
    await a.evaluate(() => window.chorus.setMuted(true));
    await poll('A muted: B hears silence and sees A muted', async () => {
      const v = await b.evaluate((id) => ({
        muted: window.chorus.participants.get(id)?.muted,
        level: window.chorus.outputLevel(),
        speakers: window.chorus.lastSpeakers.map((s) => s.participant_id),
      }), who.A.id);
      return { ok: v.muted === true && v.level < SILENT_LEVEL && !v.speakers.includes(who.A.id), ...v };
    }, { timeout: 5_000 });
    await a.evaluate(() => window.chorus.setMuted(false));
    await poll('A unmuted: B hears A again', async () => ({ ok: (await pageView(b)).level >= HEARD_LEVEL }), { timeout: 5_000 });
    await b.evaluate(() => window.chorus.setDeafened(true));
    await poll('B deafened: B plays nothing', async () => {
      const level = await b.evaluate(() => window.chorus.outputLevel());
      return { ok: level !== null && level < SILENT_LEVEL, level };
    }, { timeout: 5_000 });
    await b.evaluate(() => window.chorus.setDeafened(false));
    await poll('B undeafened: B hears A again', async () => ({ ok: (await pageView(b)).level >= HEARD_LEVEL }), { timeout: 5_000 });

    // 2. C joins: three members > p2p_max 2, the room moves to the node. A and B keep
    //    hearing throughout; then everyone hears everyone on the slots.
    await Promise.all([a.evaluate(startGapWatch), b.evaluate(startGapWatch)]);
    await sleep(300);
    const upgradeAt = Date.now();
    who.C = await c.evaluate(joinRoom, { room, name: 'C', heard: HEARD_LEVEL });
    await poll('A, B and C are in mode sfu', async () => {
      const modes = await Promise.all([a, b, c].map((p) => p.evaluate(() => window.chorus.mode)));
      return { ok: modes.every((m) => m === 'sfu'), modes };
    }, { timeout: 5_000, interval: 25 });
    const allSfuAt = Date.now();
    const left = () => Math.max(200, 2_000 - (Date.now() - allSfuAt));
    await Promise.all([
      assertHearingOnSlots(a, who.B.csrc, 'A hears B through the node', left()),
      assertHearingOnSlots(a, who.C.csrc, 'A hears C through the node', left()),
      assertHearingOnSlots(b, who.A.csrc, 'B hears A through the node', left()),
      assertHearingOnSlots(b, who.C.csrc, 'B hears C through the node', left()),
      assertHearingOnSlots(c, who.A.csrc, 'C hears A through the node', left()),
      assertHearingOnSlots(c, who.B.csrc, 'C hears B through the node', left()),
    ]);
    t.diagnostic(`upgrade: all in mode sfu ${allSfuAt - upgradeAt} ms after C's join() began; all heard on slots ${Date.now() - allSfuAt} ms later`);
    await sleep(Math.max(0, 3_000 - (Date.now() - upgradeAt)));
    for (const [name, page] of [['A', a], ['B', b]]) await assertNoGap(t, page, name, 'upgrade');
    for (const [name, page] of [['A', a], ['B', b]]) {
      const v = await poll(`${name} closed its peer connection and sends to the node`, async () => {
        const x = await pageView(page);
        return { ok: x.peers === 0 && x.nodeSending === true, ...x };
      }, { timeout: 5_000 });
      const ev = v.events.find((e) => e.type === 'mode' && e.mode === 'sfu');
      assert.equal(ev?.reason, 'capacity', `${name}'s mode event says why: ${JSON.stringify(v.events)}`);
    }
    {
      const r = await ctl.call('room.get', { room });
      assert.equal(r.mode, 'sfu', `room.get shows mode sfu: ${JSON.stringify(r)}`);
      const ev = await ctl.waitEvent('mode_changed to sfu', (e) => e.type === 'mode_changed' && e.mode === 'sfu');
      assert.deepEqual({ room: ev.room, reason: ev.reason }, { room, reason: 'capacity' }, `mode_changed: ${JSON.stringify(ev)}`);
    }

    // 3. C leaves: the room is within p2p_max again; after p2p_downgrade_s it goes back
    //    to peer to peer, again without a gap at A or B, and the node's media stops.
    await Promise.all([a.evaluate(startGapWatch), b.evaluate(startGapWatch)]);
    await sleep(300);
    const leftAt = Date.now();
    await c.evaluate(() => window.chorus.leave());
    await poll('A and B are in mode p2p again', async () => {
      const modes = await Promise.all([a, b].map((p) => p.evaluate(() => window.chorus.mode)));
      return { ok: modes.every((m) => m === 'p2p'), modes };
    }, { timeout: DOWNGRADE_S * 1000 + 5_000, interval: 25 });
    const downgradeMs = Date.now() - leftAt;
    t.diagnostic(`downgrade: mode p2p ${downgradeMs} ms after C left (p2p_downgrade_s ${DOWNGRADE_S})`);
    assert.ok(downgradeMs >= DOWNGRADE_S * 1000 - 500, `the room waited p2p_downgrade_s before going back (${downgradeMs} ms)`);
    await sleep(3_000);
    for (const [name, page] of [['A', a], ['B', b]]) await assertNoGap(t, page, name, 'downgrade');
    for (const [name, page] of [['A', a], ['B', b]]) {
      const v = await poll(`${name} hears the other directly and no longer sends to the node`, async () => {
        const x = await pageView(page);
        return { ok: x.nodeSending === false && x.peerStats[0]?.route === 'peer' && x.level >= HEARD_LEVEL, ...x };
      }, { timeout: 5_000 });
      const ev = v.events.filter((e) => e.type === 'mode').at(-1);
      assert.deepEqual([ev?.mode, ev?.reason], ['p2p', 'within_limit'], `${name}'s last mode event: ${JSON.stringify(v.events)}`);
    }
    {
      const ev = await ctl.waitEvent('mode_changed back to p2p', (e) => e.type === 'mode_changed' && e.mode === 'p2p');
      assert.deepEqual({ room: ev.room, reason: ev.reason }, { room, reason: 'within_limit' }, `mode_changed: ${JSON.stringify(ev)}`);
      assert.equal((await ctl.call('room.get', { room })).mode, 'p2p');
      await sleep(300);
      const m0 = await nodeMediaIn(ctl);
      await sleep(2_000);
      const m1 = await nodeMediaIn(ctl);
      assert.equal(m1 - m0, 0, `the node's media stops again in mode p2p (rtp_in ${m0} → ${m1})`);
    }
    await Promise.all([a, b].map((p) => p.evaluate(() => window.chorus.leave())));

    // 4. The same join in a room that never goes peer to peer (p2p_max 0), to compare.
    {
      const solo = 'solo-sfu';
      await ctl.call('room.create', { room: solo, kind: 'private', p2p_max: 0 });
      const ja = await a.evaluate(joinRoom, { room: solo, name: 'A', heard: HEARD_LEVEL });
      const jb = await b.evaluate(joinRoom, { room: solo, name: 'B', heard: HEARD_LEVEL });
      assert.deepEqual([ja.mode, jb.mode], ['sfu', 'sfu'], 'a room with p2p_max 0 stays on the node');
      const sfuJoinMs = await poll("B's first audio through the node", () => b.evaluate(() => window.__firstAudioMs),
        { timeout: 10_000, interval: 50 });
      console.log(`P2P_JOIN_TO_AUDIO mode=sfu ms=${Math.round(sfuJoinMs)}`);
      await assertHearingOnSlots(b, ja.csrc, 'B hears A through the node', 5_000);
      assert.equal((await pageView(b)).peers, 0, 'no peer connection in mode sfu');
      await Promise.all([a, b].map((p) => p.evaluate(() => window.chorus.leave())));
    }
    const unexpected = consoleErrors.filter((e) => !/favicon/i.test(e));
    if (unexpected.length) t.diagnostic(`page console errors:\n${unexpected.join('\n')}`);
  } catch (e) {
    await reportFailure(e, pages, consoleErrors, ctl);
    throw e;
  } finally {
    ctl?.close();
    for (const page of Object.values(pages)) await page.context().close().catch(() => {});
  }
});

/**
 * In-page: every ICE candidate this page hands its peers (trickled in `p2p_signal`s
 * or written in the SDP) names an address nobody answers at (TEST-NET-1), so a direct
 * connection can never be made: what a call between two players behind strict NATs
 * without TURN looks like.
 */
function breakDirectPaths() {
  const bogus = (line) => line.replace(/^((?:a=)?candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+)/, '$1192.0.2.1$3');
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try {
      const m = JSON.parse(data);
      if (m.type === 'p2p_signal') {
        if (m.data?.candidate?.candidate) m.data.candidate.candidate = bogus(m.data.candidate.candidate);
        if (typeof m.data?.sdp?.sdp === 'string') {
          m.data.sdp.sdp = m.data.sdp.sdp.split('\r\n').map((l) => (l.startsWith('a=candidate:') ? bogus(l) : l)).join('\r\n');
        }
        return send.call(this, JSON.stringify(m));
      }
    } catch { /* not JSON */ }
    return send.call(this, data);
  };
}

test('a peer connection that finds no path moves the room to the node for good', { timeout: 90_000 }, async (t) => {
  const room = 'no-path';
  const consoleErrors = [];
  const pages = {};
  let ctl;
  try {
    ctl = await openControl(node.control);
    await ctl.call('events.subscribe', { room });
    await ctl.call('room.create', { room, kind: 'private', p2p_downgrade_s: 1 });
    for (const name of ['A', 'B']) {
      pages[name] = await openPage(name, consoleErrors);
      await pages[name].evaluate(breakDirectPaths);
    }
    const { A: a, B: b } = pages;
    const ja = await a.evaluate(joinRoom, { room, name: 'A', heard: HEARD_LEVEL });
    const jb = await b.evaluate(joinRoom, { room, name: 'B', heard: HEARD_LEVEL });
    assert.equal(jb.joinedMode, 'p2p', 'the room starts peer to peer');
    const startedAt = Date.now();
    // While the browsers try, the node carries the call: each client keeps its
    // microphone on the node until its peers play directly (make before break).
    await Promise.all([
      assertHearingOnSlots(a, jb.csrc, 'A hears B through the node while the direct path is tried', 5_000),
      assertHearingOnSlots(b, ja.csrc, 'B hears A through the node while the direct path is tried', 5_000),
    ]);
    assert.equal((await ctl.call('room.get', { room })).mode, 'p2p', 'still in mode p2p meanwhile');
    // The direct connection fails; the client says so, and the room moves to the node.
    const ev = await ctl.waitEvent('mode_changed to sfu', (e) => e.type === 'mode_changed' && e.mode === 'sfu', 60_000);
    assert.equal(ev.reason, 'p2p_failed', `mode_changed: ${JSON.stringify(ev)}`);
    t.diagnostic(`the failed peer connection was reported ${Date.now() - startedAt} ms after B joined`);
    await Promise.all([
      assertHearingOnSlots(a, jb.csrc, 'A hears B through the node', 5_000),
      assertHearingOnSlots(b, ja.csrc, 'B hears A through the node', 5_000),
    ]);
    for (const [name, page] of [['A', a], ['B', b]]) {
      const v = await pageView(page);
      assert.equal(v.mode, 'sfu', `${name} is in mode sfu`);
      const failed = v.events.find((e) => e.type === 'peer_state' && e.state === 'failed');
      const mode = v.events.find((e) => e.type === 'mode' && e.mode === 'sfu');
      assert.equal(mode?.reason, 'p2p_failed', `${name}'s mode event: ${JSON.stringify(v.events)}`);
      t.diagnostic(`${name}: ${failed ? 'saw its peer connection fail' : 'was told by the node'}`);
    }
    // For good: within p2p_max and past p2p_downgrade_s, it stays on the node.
    await sleep(2_500);
    assert.equal((await ctl.call('room.get', { room })).mode, 'sfu', 'the room stays sfu');
    assert.deepEqual(await Promise.all([a, b].map((p) => p.evaluate(() => window.chorus.mode))), ['sfu', 'sfu']);
    await Promise.all([a, b].map((p) => p.evaluate(() => window.chorus.leave())));
  } catch (e) {
    await reportFailure(e, pages, consoleErrors, ctl);
    throw e;
  } finally {
    ctl?.close();
    for (const page of Object.values(pages)) await page.context().close().catch(() => {});
  }
});

/** Cuts (`on`) or restores the direct UDP paths between the pages (peerblock.sh). */
function blockDirectPaths(on) {
  const r = spawnSync('bash', [path.join(HERE, 'peerblock.sh'), on ? 'start' : 'stop', String(node.udp)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`peerblock.sh: ${r.status} ${r.stderr}`);
}

test('a direct path lost mid-call falls back to the node, and comes back', { timeout: 120_000 }, async (t) => {
  const room = 'lost-path';
  const consoleErrors = [];
  const pages = {};
  let ctl;
  try {
    ctl = await openControl(node.control);
    await ctl.call('events.subscribe', { room });
    await ctl.call('room.create', { room, kind: 'private', p2p_downgrade_s: 1 });
    for (const name of ['A', 'B']) pages[name] = await openPage(name, consoleErrors);
    const { A: a, B: b } = pages;
    const ja = await a.evaluate(joinRoom, { room, name: 'A', heard: HEARD_LEVEL });
    const jb = await b.evaluate(joinRoom, { room, name: 'B', heard: HEARD_LEVEL });
    for (const [name, page] of [['A', a], ['B', b]]) {
      await poll(`${name} hears the other directly and no longer sends to the node`, async () => {
        const x = await pageView(page);
        return { ok: x.mode === 'p2p' && x.nodeSending === false && x.peerStats[0]?.route === 'peer' && x.level >= HEARD_LEVEL, ...x };
      }, { timeout: 10_000 });
    }
    // The direct path goes (a network change, a NAT mapping dropped): each client sees
    // its peer connection disconnected and plays the peer from the node's slots, its
    // own microphone back on the node.
    await Promise.all([a.evaluate(startGapWatch), b.evaluate(startGapWatch)]);
    const cutAt = Date.now();
    blockDirectPaths(true);
    try {
      await Promise.all([
        assertHearingOnSlots(a, jb.csrc, 'A hears B through the node once the direct path is gone', 20_000),
        assertHearingOnSlots(b, ja.csrc, 'B hears A through the node once the direct path is gone', 20_000),
      ]);
      const fallbackMs = Date.now() - cutAt;
      console.log(`P2P_PATH_LOST fallback_ms=${fallbackMs}`);
      t.diagnostic(`both hear each other through the node ${fallbackMs} ms after the direct path was cut`);
      await sleep(1_000);
      for (const [name, page] of [['A', a], ['B', b]]) {
        const g = await page.evaluate(stopGapWatch, SILENT_LEVEL);
        console.log(`P2P_GAP path_lost page=${name} ms=${g.worstMs}`);
        t.diagnostic(`gap at ${name} while the path was lost: ${JSON.stringify(g)}`);
      }
    } finally {
      blockDirectPaths(false);
    }
    // The path comes back before the browsers give up: the call goes direct again (or,
    // had they given up, the room would be sfu for good: both are fine, it is reported).
    const back = await poll('the call runs again without the node', async () => {
      const xs = await Promise.all([a, b].map(pageView));
      const direct = xs.every((x) => x.mode === 'p2p' && x.nodeSending === false && x.peerStats[0]?.route === 'peer');
      const sfu = xs.every((x) => x.mode === 'sfu');
      return { ok: direct || sfu, direct, sfu, modes: xs.map((x) => x.mode) };
    }, { timeout: 40_000 });
    t.diagnostic(back.direct ? 'the direct path came back' : 'the browsers gave up the direct path: the room is on the node');
    for (const [name, page] of [['A', a], ['B', b]]) {
      const v = await pageView(page);
      assert.ok(v.level >= HEARD_LEVEL, `${name} hears the other after the path came back (${v.level})`);
    }
    await Promise.all([a, b].map((p) => p.evaluate(() => window.chorus.leave())));
  } catch (e) {
    await reportFailure(e, pages, consoleErrors, ctl);
    throw e;
  } finally {
    ctl?.close();
    for (const page of Object.values(pages)) await page.context().close().catch(() => {});
  }
});

test('the demo page shows mode p2p and its peer connection', { timeout: 30_000 }, async () => {
  const room = 'demo-duo';
  const pages = [];
  let ctl;
  try {
    ctl = await openControl(node.control);
    await ctl.call('room.create', { room, kind: 'private' });
    for (const name of ['Dana', 'Eli']) {
      const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
      await page.goto(`${node.base}/`);
      await page.fill('#room', room);
      await page.fill('#name', name);
      await page.click('#join');
      pages.push(page);
    }
    for (const page of pages) {
      await poll('the demo shows mode p2p and a connected peer with its path', () => page.evaluate(() => {
        const mode = document.querySelector('#mode');
        const rows = [...document.querySelectorAll('#peers [data-peer-id]')];
        return {
          ok: mode?.dataset.mode === 'p2p' && rows.length === 1 && rows[0].dataset.state === 'connected'
            && /→/.test(rows[0].querySelector('[data-stat="pair"]')?.textContent ?? '')
            && Number(rows[0].querySelector('.meter')?.dataset.level ?? 0) > 0,
          mode: mode?.textContent,
          rows: rows.map((r) => r.textContent.replace(/\s+/g, ' ').trim()),
        };
      }), { timeout: 15_000 });
    }
    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await pages[0].screenshot({ path: SCREENSHOT, fullPage: true });
    assert.ok(statSync(SCREENSHOT).size > 1000, 'screenshot written');
  } catch (e) {
    console.error(`--- chorus output (tail) ---\n${node.tail(40)}`);
    throw e;
  } finally {
    ctl?.close();
    for (const page of pages) await page.context().close().catch(() => {});
  }
});
