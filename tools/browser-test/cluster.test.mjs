// A cluster in real Chromium: a real redis-server and three chorus nodes (processes
// from CHORUS_BIN, each with its own HTTP, UDP, relay and control socket) in one
// cluster, and pages running chorus.js against them.
//
//  1. A `raid` room (it spans the nodes): two pages joined at different nodes hear
//     each other, and each one's `joined.alternates` names the other two nodes.
//  2. A `guild` room (it does not span) lives on one node: a page joining it at
//     another node is redirected (`redirect`, chorus.js's `redirected` event), ends up
//     on the room's node and hears a page there.
//  3. The node answers a resume `resume_failed` (a session it no longer has): the page
//     joins the room again at another node; a join redirected a fourth time in a row
//     fails with `too_many_redirects` (both through Playwright's routeWebSocket).
//  4. SIGKILL of a node two pages are on, in a raid room with a page on another node:
//     they rejoin at another node (`alternates`; events `rejoining`, `rejoined`), the
//     pages hear each other again, and a mute set before the kill holds on the new
//     session.
//
// Every page sends a steady tone (an OscillatorNode passed to join() as `audioTrack`);
// "A hears B" means a fresh contributing source with B's CSRC on one of A's slots and
// A's output (`outputLevel()`) at or above HEARD_LEVEL.
//
//   CHORUS_BIN=target/debug/chorus node --test cluster.test.mjs    (see run.sh)
//
// Prints, for BENCHMARKS.md:
//   CLUSTER_REDIRECT hop_ms=… join_ms=…   join() called → the `redirected` event (the
//     detour: a socket to the wrong node, its `join` placed and answered `redirect`),
//     and → join() resolved (answer applied, at the room's node)
//   CLUSTER_REJOIN detect_ms=… rejoined_ms=… heard_ms=…   from the SIGKILL to: the
//     client giving the node up (`rejoining`), the new session (`rejoined`), and both
//     pages hearing each other again
//
// Env: CHORUS_BIN, CHORUS_ARGS, CHROMIUM as call.test.mjs; REDIS_SERVER (default
// redis-server on the PATH); CHORUS_CLUSTER_KILL=home to SIGKILL the room's home node
// instead of another one (the room then moves to a live node as well).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, freeTcpPort, freeUdpPort, openControl, poll, spawnLogged, stop } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const CHORUS_BIN = process.env.CHORUS_BIN || path.join(REPO, 'target', 'debug', 'chorus');
const CHORUS_ARGS = (process.env.CHORUS_ARGS || '').split(/\s+/).filter(Boolean);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';
const KILL_HOME = process.env.CHORUS_CLUSTER_KILL === 'home';
const SECRET = 'browser-test-cluster-secret';

/** A page hears the others: output RMS at or above this (a tone alone is ~0.2). */
const HEARD_LEVEL = 0.02;
const TONES = { P: 440, Q: 554, M: 659, R: 494, S: 587 };

// ------------------------------------------------------------------ the cluster under test

const redis = { proc: null, port: 0, log: [] };
/** The nodes by name: {name, proc, http, udp, control, url, index, log}. */
const nodes = {};
let dir = null;
let browser = null;

const base = (n) => `http://127.0.0.1:${n.http}`;
const tail = (n = 40) => [redis, ...Object.values(nodes)].flatMap((x) => x.log.slice(-n)).join('\n');

function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = net.createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

async function startNode(name) {
  const n = { name, proc: null, http: await freeTcpPort(), udp: await freeUdpPort(), log: [], index: null };
  n.control = path.join(dir, `${name}.sock`);
  n.url = `ws://127.0.0.1:${n.http}/v1/signal`;
  n.proc = spawnLogged(CHORUS_BIN, ['serve', '--dev', '--http', `127.0.0.1:${n.http}`, '--udp', `127.0.0.1:${n.udp}`,
    '--control', n.control, '--relay', '127.0.0.1:0', '--redis', `redis://127.0.0.1:${redis.port}`,
    '--cluster-secret', SECRET, '--quality-interval', '1', ...CHORUS_ARGS], n.log, `[${name}]`);
  nodes[name] = n;
  await poll(`node ${name}: GET /healthz → 200`, async () => {
    if (n.proc.exitCode !== null) throw Object.assign(new Error(`node ${name} exited early: ${n.proc.exitCode}`), { fatal: true });
    return (await fetch(`${base(n)}/healthz`)).status === 200;
  }, { timeout: 30_000, interval: 100 });
}

/** A control call at node `n` (a fresh connection, closed again). */
async function rpc(n, method, params) {
  const ctl = await openControl(n.control);
  try { return await ctl.call(method, params); } finally { ctl.close(); }
}

/** The node (ours) a room lives on, from room.get's `home_node` and node.list. */
async function homeOf(room) {
  const info = await rpc(nodes.A, 'room.get', { room });
  assert.equal(typeof info.home_node, 'number', `room.get shows home_node in a cluster: ${JSON.stringify(info)}`);
  const home = Object.values(nodes).find((n) => n.index === info.home_node);
  assert.ok(home, `home_node ${info.home_node} is one of ours: ${JSON.stringify(Object.values(nodes).map((n) => [n.name, n.index]))}`);
  return home;
}

before(async () => {
  assert.ok(existsSync(CHORUS_BIN), `chorus binary not found at ${CHORUS_BIN} (cargo build -p chorus-signaling)`);
  dir = mkdtempSync(path.join(os.tmpdir(), 'chorus-cluster-'));
  redis.port = await freeTcpPort();
  redis.proc = spawnLogged(REDIS_SERVER, ['--port', String(redis.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    redis.log, '[redis]');
  try {
    await poll('redis-server accepts connections', async () => {
      if (redis.proc.exitCode !== null) throw Object.assign(new Error(`redis-server exited: ${redis.proc.exitCode}`), { fatal: true });
      return tcpOpen(redis.port);
    }, { timeout: 10_000, interval: 50 });
    for (const name of ['A', 'B', 'C']) await startNode(name);
    // Every node sees all three (its `joined.alternates` come from that view).
    for (const n of Object.values(nodes)) {
      const list = await poll(`node ${n.name}'s node.list shows 3 nodes`, async () => {
        const l = await rpc(n, 'node.list');
        return { ok: Array.isArray(l) && l.length === 3, list: l };
      }, { timeout: 15_000, interval: 100 });
      const self = list.list.find((x) => x.self);
      assert.equal(self?.url, n.url, `node ${n.name} advertises its signaling URL: ${JSON.stringify(list.list)}`);
      n.index = self.index;
    }
  } catch (e) {
    console.error(`--- output ---\n${tail(60)}`);
    throw e;
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close().catch(() => {});
  await Promise.all(Object.values(nodes).map((n) => stop(n.proc)));
  await stop(redis.proc);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// Never leave a node or redis-server running if the test process dies.
process.on('exit', () => {
  for (const p of [redis.proc, ...Object.values(nodes).map((n) => n.proc)]) {
    if (p && p.exitCode === null) try { p.kill('SIGKILL'); } catch { /* gone */ }
  }
});

// ------------------------------------------------------------------ in-page helpers

/** In-page: the page's tone (`window.__tone`), chorus.js as `window.ChorusClient`. */
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
 * In-page: a new client (`window.chorus`) joins `room` at `url` sending the tone; its
 * events are noted in `window.__events` (with Date.now(), comparable with the test's
 * clock). Resolves with who it is, where it ended up and how long join() took.
 */
async function joinAt({ url, room, name }) {
  const c = new window.ChorusClient({ url });
  window.chorus = c;
  const types = ['redirected', 'reconnecting', 'rejoining', 'rejoined', 'resumed', 'closed', 'error', 'participant_joined', 'participant_left'];
  for (const type of types) {
    c.addEventListener(type, (e) => {
      const d = e.detail ?? {};
      window.__events.push({
        type, t: Date.now(), state: c.state, url: d.url, reason: d.reason, code: d.code, message: d.message, error: d.error,
        participant_id: d.participant_id ?? d.participant?.participant_id, previous_participant_id: d.previous_participant_id,
        attempts: d.attempts, downtime_ms: d.downtime_ms, urls: d.urls,
      });
    });
  }
  const startedAt = Date.now();
  const joined = await c.join({ room, name, audioTrack: window.__tone });
  return {
    id: c.self.participant_id, csrc: c.self.csrc, url: c.url, alternates: joined.alternates ?? null,
    startedAt, joinMs: Date.now() - startedAt,
  };
}

/** In-page: what a test needs to know of the page now. */
function view() {
  const c = window.chorus;
  if (!c) return null;
  return {
    state: c.state,
    url: c.url,
    self: c.self && { id: c.self.participant_id, csrc: c.self.csrc, muted: c.self.muted },
    muted: c.muted,
    level: c.outputLevel(),
    fresh: c.contributingSources().filter((s) => s.slot !== null && s.ageMs < 300).map((s) => s.source),
    participants: [...c.participants.values()].map((p) => ({ id: p.participant_id, csrc: p.csrc, muted: p.muted })),
    connection: c.pc?.connectionState ?? null,
    events: window.__events.filter((e) => !e.type.startsWith('participant_')),
  };
}

/** Whether `v` (a page's view) hears the participant with `csrc` now. */
const hearing = (v, csrc) => Boolean(v) && v.state === 'joined' && v.fresh.includes(csrc) && v.level !== null && v.level >= HEARD_LEVEL;

async function assertHears(listener, csrc, what, timeout = 10_000) {
  await poll(what, async () => {
    const v = await listener.evaluate(view);
    return { ok: hearing(v, csrc), ...v };
  }, { timeout, interval: 50 });
}

async function openPage(name, origin, consoleErrors) {
  const page = await (await browser.newContext()).newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`[${name}] console: ${m.text()}`); });
  page.on('pageerror', (e) => consoleErrors.push(`[${name}] pageerror: ${e.message}`));
  await page.goto(`${base(origin)}/`);
  await page.evaluate(setupPage, TONES[name] ?? 500);
  return page;
}

/** On a failure: every page's state, its console errors and the processes' output. */
async function reportFailure(e, pages, consoleErrors) {
  console.error(`\n=== FAILURE: ${e.message}`);
  for (const [name, page] of Object.entries(pages)) {
    try {
      console.error(`--- ${name}: ${JSON.stringify(await page.evaluate(view))}`);
    } catch (err) {
      console.error(`--- ${name}: (state unavailable: ${err.message})`);
    }
  }
  if (consoleErrors.length) console.error(`--- page console errors ---\n${consoleErrors.join('\n')}`);
  console.error(`--- output (tail) ---\n${tail(40)}`);
}

async function closePages(pages) {
  for (const page of Object.values(pages)) {
    await page.evaluate(() => window.chorus?.leave()).catch(() => {});
    await page.context().close().catch(() => {});
  }
}

// ------------------------------------------------------------------ the tests

test('a raid room spans the nodes: pages joined at different nodes hear each other', { timeout: 60_000 }, async () => {
  const room = 'raid-span';
  const consoleErrors = [];
  const pages = {};
  try {
    await rpc(nodes.A, 'room.create', { room, kind: 'raid' });
    pages.P = await openPage('P', nodes.A, consoleErrors);
    pages.Q = await openPage('Q', nodes.A, consoleErrors);
    const p = await pages.P.evaluate(joinAt, { url: nodes.A.url, room, name: 'P' });
    const q = await pages.Q.evaluate(joinAt, { url: nodes.B.url, room, name: 'Q' });
    assert.equal(p.url, nodes.A.url, 'P stays at node A');
    assert.equal(q.url, nodes.B.url, 'Q stays at node B');
    assert.deepEqual([...p.alternates].sort(), [nodes.B.url, nodes.C.url].sort(), `P's joined names the other nodes: ${JSON.stringify(p.alternates)}`);
    assert.deepEqual([...q.alternates].sort(), [nodes.A.url, nodes.C.url].sort(), `Q's joined names the other nodes: ${JSON.stringify(q.alternates)}`);
    assert.notEqual(p.csrc, q.csrc, 'CSRCs are unique room-wide');
    await Promise.all([
      assertHears(pages.P, q.csrc, 'P (node A) hears Q (node B)'),
      assertHears(pages.Q, p.csrc, 'Q (node B) hears P (node A)'),
    ]);
    const roster = await pages.P.evaluate(view);
    assert.ok(roster.participants.some((x) => x.id === q.id), `P's roster lists Q: ${JSON.stringify(roster.participants)}`);
  } catch (e) {
    await reportFailure(e, pages, consoleErrors);
    throw e;
  } finally {
    await closePages(pages);
  }
});

test('a guild room does not span: a join at another node follows its redirect to the room', { timeout: 60_000 }, async () => {
  const room = 'guild-home';
  const consoleErrors = [];
  const pages = {};
  try {
    await rpc(nodes.A, 'room.create', { room, kind: 'guild' });
    const home = await homeOf(room);
    const other = Object.values(nodes).find((n) => n !== home);
    pages.S = await openPage('S', home, consoleErrors);
    pages.R = await openPage('R', other, consoleErrors);
    const s = await pages.S.evaluate(joinAt, { url: home.url, room, name: 'S' });
    const r = await pages.R.evaluate(joinAt, { url: other.url, room, name: 'R' });
    assert.equal(r.url, home.url, `R ended up on the room's node ${home.name}, not ${other.name}`);
    const events = (await pages.R.evaluate(view)).events;
    const redirects = events.filter((e) => e.type === 'redirected');
    assert.deepEqual(redirects.map((e) => e.url), [home.url], `R was redirected once, to the home: ${JSON.stringify(events)}`);
    console.log(`CLUSTER_REDIRECT hop_ms=${redirects[0].t - r.startedAt} join_ms=${r.joinMs}`);
    assert.ok(!events.some((e) => e.type === 'error' || e.type === 'closed'), `no error on R's way: ${JSON.stringify(events)}`);
    await Promise.all([
      assertHears(pages.R, s.csrc, `R (redirected to ${home.name}) hears S`),
      assertHears(pages.S, r.csrc, `S hears R (redirected to ${home.name})`),
    ]);
    const list = await rpc(nodes.A, 'participant.list', { room });
    const ids = list.map((x) => x.participant_id);
    assert.deepEqual(ids.sort(), [r.id, s.id].sort(), `participant.list (asked at node A) lists both: ${JSON.stringify(list)}`);
  } catch (e) {
    await reportFailure(e, pages, consoleErrors);
    throw e;
  } finally {
    await closePages(pages);
  }
});

test('resume_failed: the page joins the room again elsewhere; a redirect loop fails the join', { timeout: 60_000 }, async () => {
  const room = 'raid-refused';
  const consoleErrors = [];
  const pages = {};
  try {
    await rpc(nodes.A, 'room.create', { room, kind: 'raid' });
    pages.P = await openPage('P', nodes.C, consoleErrors);
    pages.Q = await openPage('Q', nodes.C, consoleErrors);
    // P's sockets to node A go through a route: the first one passes through; later
    // ones (the resume) are answered resume_failed by the route itself.
    let routed = 0;
    let first = null;
    await pages.P.routeWebSocket(nodes.A.url, (ws) => {
      routed += 1;
      if (routed === 1) {
        first = ws;
        ws.connectToServer();
        return;
      }
      ws.onMessage((m) => {
        if (JSON.parse(String(m)).type === 'resume') {
          ws.send(JSON.stringify({ type: 'error', code: 'resume_failed', message: 'no session to resume (test)' }));
        }
      });
    });
    const q = await pages.Q.evaluate(joinAt, { url: nodes.B.url, room, name: 'Q' });
    const p = await pages.P.evaluate(joinAt, { url: nodes.A.url, room, name: 'P' });
    await assertHears(pages.P, q.csrc, 'P hears Q');
    // P's socket drops (page side only: the node keeps the session on its end).
    await first.close({ code: 4005, reason: 'test drop' });
    const v = await poll('P rejoined at another node and hears Q', async () => {
      const x = await pages.P.evaluate(view);
      return { ok: x.self?.id !== p.id && hearing(x, q.csrc), ...x };
    }, { timeout: 15_000, interval: 50 });
    const rejoining = v.events.find((e) => e.type === 'rejoining');
    assert.equal(rejoining?.reason, 'resume_failed', `P rejoined because the resume failed: ${JSON.stringify(v.events)}`);
    assert.equal(v.url, p.alternates[0], 'at the first alternate');
    await assertHears(pages.Q, v.self.csrc, "Q hears P's new session");

    // A redirect loop (a route answering every join with a redirect to the next URL).
    await pages.P.routeWebSocket(/^ws:\/\/loop\.invalid\//, (ws) => {
      ws.onMessage(() => {
        const n = Number(new URL(ws.url()).pathname.slice(1)) + 1;
        ws.send(JSON.stringify({ type: 'redirect', url: `ws://loop.invalid/${n}` }));
        ws.close({ code: 1000, reason: 'redirect' });
      });
    });
    const loop = await pages.P.evaluate(async () => {
      const c = new window.ChorusClient({ url: 'ws://loop.invalid/0' });
      const urls = [];
      c.addEventListener('redirected', (e) => urls.push(e.detail.url));
      try {
        await c.join({ room: 'anywhere', name: 'L', audioTrack: null });
        return { joined: true };
      } catch (e) {
        return { code: e.code, message: e.message, urls, state: c.state };
      }
    });
    assert.equal(loop.code, 'too_many_redirects', `a fourth redirect fails the join: ${JSON.stringify(loop)}`);
    assert.deepEqual(loop.urls, ['ws://loop.invalid/1', 'ws://loop.invalid/2', 'ws://loop.invalid/3'], 'three redirects were followed');
    assert.equal(loop.state, 'closed');
  } catch (e) {
    await reportFailure(e, pages, consoleErrors);
    throw e;
  } finally {
    await closePages(pages);
  }
});

test('SIGKILL of a node: its pages rejoin at another node and hear the room again', { timeout: 90_000 }, async (t) => {
  const room = 'raid-kill';
  const consoleErrors = [];
  const pages = {};
  try {
    await rpc(nodes.A, 'room.create', { room, kind: 'raid' });
    const home = await homeOf(room);
    // The node to kill, and a survivor for Q: by default not the room's home, so that
    // the room itself stays put (CHORUS_CLUSTER_KILL=home: the home, the room moves).
    const victim = KILL_HOME ? home : Object.values(nodes).find((n) => n !== home);
    const survivor = Object.values(nodes).find((n) => n !== victim);
    t.diagnostic(`room home ${home.name}; killing ${victim.name}; Q stays on ${survivor.name}`);
    pages.P = await openPage('P', survivor, consoleErrors);
    pages.M = await openPage('M', survivor, consoleErrors);
    pages.Q = await openPage('Q', survivor, consoleErrors);
    const q = await pages.Q.evaluate(joinAt, { url: survivor.url, room, name: 'Q' });
    const p = await pages.P.evaluate(joinAt, { url: victim.url, room, name: 'P' });
    const m = await pages.M.evaluate(joinAt, { url: victim.url, room, name: 'M' });
    assert.ok(p.alternates?.length === 2, `P knows the two other nodes: ${JSON.stringify(p.alternates)}`);
    await pages.M.evaluate(() => window.chorus.setMuted(true));
    await Promise.all([
      assertHears(pages.P, q.csrc, 'P hears Q before the kill'),
      assertHears(pages.Q, p.csrc, 'Q hears P before the kill'),
      poll('Q sees M muted', async () => (await pages.Q.evaluate(view)).participants.some((x) => x.id === m.id && x.muted), { timeout: 5_000 }),
    ]);

    const killedAt = Date.now();
    victim.proc.kill('SIGKILL');
    // P and M: reconnecting, then (their node refuses connections) rejoining at another
    // node; P and Q hear each other again.
    const heard = await poll('P and Q hear each other again after the kill', async () => {
      const [vp, vq] = await Promise.all([pages.P.evaluate(view), pages.Q.evaluate(view)]);
      const pNow = vp?.self;
      return { ok: Boolean(pNow) && pNow.id !== p.id && hearing(vp, q.csrc) && hearing(vq, pNow.csrc), p: vp, q: vq };
    }, { timeout: 30_000, interval: 50 });
    const heardMs = Date.now() - killedAt;
    const vp = heard.p;
    const at = (type) => vp.events.find((e) => e.type === type && e.t >= killedAt);
    const [reconnecting, rejoining, rejoined] = [at('reconnecting'), at('rejoining'), at('rejoined')];
    assert.ok(reconnecting && rejoining && rejoined, `P went reconnecting → rejoining → rejoined: ${JSON.stringify(vp.events)}`);
    assert.ok(reconnecting.t <= rejoining.t && rejoining.t <= rejoined.t, `in that order: ${JSON.stringify(vp.events)}`);
    assert.equal(rejoining.reason, 'node_unreachable', `P gave the node up as unreachable: ${JSON.stringify(rejoining)}`);
    assert.deepEqual(rejoining.urls, [...p.alternates, victim.url], 'P tries the alternates, then its old node');
    assert.equal(rejoined.previous_participant_id, p.id);
    assert.equal(rejoined.participant_id, vp.self.id);
    assert.ok(p.alternates.includes(vp.url) && vp.url !== victim.url, `P is on a live node now: ${vp.url}`);
    assert.ok(!vp.events.some((e) => e.type === 'closed'), 'P\'s session never closed');
    console.log(`CLUSTER_REJOIN detect_ms=${rejoining.t - killedAt} rejoined_ms=${rejoined.t - killedAt} heard_ms=${heardMs}`);
    t.diagnostic(`P: rejoined at ${vp.url} after ${rejoined.attempts} attempt(s), ${rejoined.downtime_ms} ms after its socket dropped`);

    // M rejoined too, still muted: on the client and for the room.
    const vm = await poll('M rejoined, still muted', async () => {
      const v = await pages.M.evaluate(view);
      return { ok: v.state === 'joined' && v.self.id !== m.id && v.muted === true && v.self.muted === true, ...v };
    }, { timeout: 10_000 });
    await poll("Q sees M's new session muted, and P's and M's old sessions gone", async () => {
      const v = await pages.Q.evaluate(view);
      const ids = v.participants.map((x) => x.id);
      const newM = v.participants.find((x) => x.id === vm.self.id);
      return { ok: newM?.muted === true && !ids.includes(p.id) && !ids.includes(m.id) && ids.includes(vp.self.id), participants: v.participants };
    }, { timeout: 15_000 });
    // P's roster: Q and M's new session, not the old ones (nor P's old self).
    const pv = await pages.P.evaluate(view);
    const pIds = pv.participants.map((x) => x.id);
    assert.ok(pIds.includes(q.id) && !pIds.includes(p.id), `P's roster after the rejoin: ${JSON.stringify(pv.participants)}`);
  } catch (e) {
    await reportFailure(e, pages, consoleErrors);
    throw e;
  } finally {
    await closePages(pages);
  }
});

test('a node drains: its rooms move, and its pages join the room again at another node', { timeout: 60_000 }, async (t) => {
  const room = 'raid-drain';
  const consoleErrors = [];
  const pages = {};
  try {
    const live = Object.values(nodes).filter((n) => n.proc.exitCode === null && n.proc.signalCode === null);
    assert.ok(live.length >= 2, `two live nodes left: ${live.map((n) => n.name)}`);
    const [draining, staying] = live;
    await rpc(staying, 'room.create', { room, kind: 'raid' });
    pages.R = await openPage('R', staying, consoleErrors);
    pages.S = await openPage('S', staying, consoleErrors);
    const s = await pages.S.evaluate(joinAt, { url: staying.url, room, name: 'S' });
    const r = await pages.R.evaluate(joinAt, { url: draining.url, room, name: 'R' });
    await Promise.all([
      assertHears(pages.R, s.csrc, 'R hears S before the drain'),
      assertHears(pages.S, r.csrc, 'S hears R before the drain'),
    ]);
    const drainedAt = Date.now();
    await rpc(draining, 'node.drain', { deadline_s: 2 });
    const heard = await poll('R and S hear each other again after the drain', async () => {
      const [vr, vs] = await Promise.all([pages.R.evaluate(view), pages.S.evaluate(view)]);
      const rNow = vr?.self;
      return { ok: Boolean(rNow) && rNow.id !== r.id && hearing(vr, s.csrc) && hearing(vs, rNow.csrc), r: vr };
    }, { timeout: 30_000, interval: 50 });
    const vr = heard.r;
    const rejoining = vr.events.find((e) => e.type === 'rejoining' && e.t >= drainedAt);
    assert.equal(rejoining?.reason, 'node_draining', `R moved because its node drains: ${JSON.stringify(vr.events)}`);
    assert.ok(!vr.events.some((e) => e.type === 'closed' || e.type === 'room_closed'), 'R\'s session never ended');
    assert.equal(vr.url, staying.url, 'R is on the node that stays');
    console.log(`CLUSTER_DRAIN moved_ms=${Date.now() - drainedAt} (deadline 2000 ms)`);
    t.diagnostic(`R rejoined at ${vr.url}`);
    await poll(`node ${draining.name} exits after its drain`, async () => draining.proc.exitCode !== null, { timeout: 15_000, interval: 100 });
  } catch (e) {
    await reportFailure(e, pages, consoleErrors);
    throw e;
  } finally {
    await closePages(pages);
  }
});
