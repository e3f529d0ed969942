// Real-browser end-to-end test of a Chorus node: three headless Chromium pages use the
// demo page (/) as people would, while a backend drives the node through its control
// socket (JSON-RPC 2.0, docs/control.md); pages relayed through a real coturn, and a
// page whose UDP is blocked reaching the node over ICE-TCP (voice and a camera both
// ways over each); plus a raw-WebSocket test of protocol error handling.
//
//   CHORUS_BIN=target/debug/chorus node --test call.test.mjs    (see run.sh)
//
// Env: CHORUS_BIN (default <repo>/target/debug/chorus), CHORUS_ARGS (extra `serve` args;
//      the test passes --control and --quality-interval itself), CHROMIUM (default
//      /usr/bin/chromium), CHORUS_GAME_VOICE=0 (skip the game-voice test).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, existsSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, freeTcpPort, freeUdpPort, netns, openControl, poll, spawnLogged, stop } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const CHORUS_BIN = process.env.CHORUS_BIN || path.join(REPO, 'target', 'debug', 'chorus');
const CHORUS_ARGS = (process.env.CHORUS_ARGS || '').split(/\s+/).filter(Boolean);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.join(HERE, 'screenshots', 'call.png');
const SCREENSHOT_SERVER_MUTED = path.join(HERE, 'screenshots', 'server-muted.png');
const SCREENSHOT_KICKED = path.join(HERE, 'screenshots', 'kicked.png');

// ------------------------------------------------------------------ the node under test

const node = {
  proc: null,
  http: 0,
  udp: 0,
  dir: null,
  control: null, // the control socket's path
  log: [],
  exited: null,
  get base() { return `http://127.0.0.1:${this.http}`; },
  tail(n = 60) { return this.log.slice(-n).join('\n'); },
};

function killNode() {
  const p = node.proc;
  if (!p || node.exited) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => { try { p.kill('SIGKILL'); } catch { /* gone */ } }, 3000);
    p.once('exit', () => { clearTimeout(t); resolve(); });
    try { p.kill('SIGTERM'); } catch { clearTimeout(t); resolve(); }
  });
}

// Last resort: never leave the node running if the test process dies.
process.on('exit', () => { if (node.proc && !node.exited) try { node.proc.kill('SIGKILL'); } catch { /* gone */ } });

before(async () => {
  assert.ok(existsSync(CHORUS_BIN), `chorus binary not found at ${CHORUS_BIN} (cargo build -p chorus-signaling)`);
  node.http = await freeTcpPort();
  node.udp = await freeUdpPort();
  // A private control socket: runs in parallel (or a node left over) never collide.
  node.dir = mkdtempSync(path.join(os.tmpdir(), 'chorus-e2e-'));
  node.control = path.join(node.dir, 'control.sock');
  const args = ['serve', '--dev', '--http', `127.0.0.1:${node.http}`, '--udp', `127.0.0.1:${node.udp}`,
    '--control', node.control, '--quality-interval', '1', ...CHORUS_ARGS];
  node.log.push(`$ ${CHORUS_BIN} ${args.join(' ')}`);
  node.proc = spawn(CHORUS_BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { RUST_LOG: 'info', ...process.env },
  });
  const collect = (tag) => (chunk) => {
    for (const line of String(chunk).split('\n')) {
      if (line) node.log.push(`${tag} ${line}`);
    }
    if (node.log.length > 2000) node.log.splice(0, node.log.length - 2000);
  };
  node.proc.stdout.on('data', collect('[out]'));
  node.proc.stderr.on('data', collect('[err]'));
  node.proc.on('exit', (code, signal) => { node.exited = { code, signal }; });
  node.proc.on('error', (e) => { node.exited = { error: e.message }; });

  try {
    await poll('GET /healthz → 200', async () => {
      if (node.exited) {
        throw Object.assign(new Error(`chorus exited early: ${JSON.stringify(node.exited)}`), { fatal: true });
      }
      const r = await fetch(`${node.base}/healthz`);
      return r.status === 200;
    }, { timeout: 30_000, interval: 100 });
    await poll('the control socket answers', async () => {
      const ctl = await openControl(node.control);
      try { return await ctl.call('room.list'); } finally { ctl.close(); }
    }, { timeout: 10_000, interval: 100 });
    const mode = statSync(node.control).mode & 0o777;
    assert.equal(mode, 0o600, `control socket mode is 0600, got ${mode.toString(8)}`);
  } catch (e) {
    console.error(`--- chorus output ---\n${node.tail(80)}`);
    await killNode();
    throw e;
  }
});

after(async () => {
  await killNode();
  if (node.dir) rmSync(node.dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ browser call

/** In-page helpers, installed after load. */
function installPageProbes() {
  window.__spoke = new Set();
  const list = document.querySelector('#participants');
  const scan = () => {
    for (const li of list.querySelectorAll('[data-participant-id]')) {
      if (li.dataset.speaking === 'true') window.__spoke.add(li.dataset.participantId);
    }
  };
  new MutationObserver(scan).observe(list, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-speaking'] });
}

async function pageState(page) {
  return page.evaluate(async () => {
    const rows = [...document.querySelectorAll('#participants [data-participant-id]')].map((li) => ({
      id: li.dataset.participantId,
      name: li.dataset.name ?? li.querySelector('.name')?.textContent,
      self: li.dataset.self,
      muted: li.dataset.muted,
      serverMuted: li.dataset.serverMuted,
      deafened: li.dataset.deafened,
      speaking: li.dataset.speaking,
    }));
    const c = window.chorus;
    const stats = c && c.state === 'joined' ? await c.stats() : null;
    return {
      status: document.querySelector('#status')?.textContent,
      banner: document.querySelector('#banner')?.hidden === false
        ? { kind: document.querySelector('#banner').dataset.kind, text: document.querySelector('#banner').textContent.replace(/\s+/g, ' ').trim() }
        : null,
      state: c?.state ?? null,
      self: c?.self ?? null,
      rows,
      spoke: window.__spoke ? [...window.__spoke] : [],
      csrcs: c ? c.contributingSources().map((s) => ({ slot: s.slot, source: s.source, ageMs: Math.round(s.ageMs), level: s.audioLevel })) : [],
      speakers: c?.lastSpeakers ?? [],
      stats,
    };
  });
}

/** Fresh (< 500 ms) contributing sources on a page: [{slot, source}]. */
function freshSources(page) {
  return page.evaluate(() => window.chorus.contributingSources()
    .filter((s) => s.ageMs < 500)
    .map((s) => ({ slot: s.slot, source: s.source })));
}

function slotPackets(page) {
  return page.evaluate(async () => (await window.chorus.stats()).slots.map((s) => s.packets_received));
}

function totalInbound(page) {
  return page.evaluate(async () => (await window.chorus.stats()).packets_received);
}

/** How `viewer`'s participant list shows `id`: its row's data and the visible badges. */
function rowView(viewer, id) {
  return viewer.evaluate((pid) => {
    const li = document.querySelector(`#participants [data-participant-id="${pid}"]`);
    if (!li) return null;
    const badges = [...li.querySelectorAll('.badge')]
      .filter((b) => getComputedStyle(b).display !== 'none').map((b) => b.textContent.trim());
    return { muted: li.dataset.muted, serverMuted: li.dataset.serverMuted, badges };
  }, id);
}

/**
 * `listener` gets no audio from `csrc`: its contributing source goes stale and the slot
 * that carried it stops growing (unless the slot was handed to another speaker).
 */
async function assertNotHearing(listener, csrc, who) {
  const slot = await poll(`${who} was heard in a slot`, async () => {
    const hit = (await listener.evaluate(() => window.chorus.contributingSources()))
      .filter((s) => s.source === csrc).sort((a, b) => a.ageMs - b.ageMs)[0];
    return hit ? hit.slot + 1 : 0; // +1 keeps slot 0 truthy
  }, { timeout: 5_000 }) - 1;
  await poll(`${who}'s csrc goes stale`, async () => {
    const fresh = await freshSources(listener);
    return { ok: !fresh.some((s) => s.source === csrc), fresh };
  }, { timeout: 10_000 });
  const p0 = (await slotPackets(listener))[slot];
  await sleep(1000);
  const p1 = (await slotPackets(listener))[slot];
  const onSlot = (await freshSources(listener)).filter((s) => s.slot === slot).map((s) => s.source);
  const reassigned = onSlot.length > 0 && !onSlot.includes(csrc);
  assert.ok(p1 - p0 <= 3 || reassigned,
    `slot ${slot} (${who}'s) stops growing: ${p0} → ${p1}, fresh csrcs there: ${onSlot}`);
}

/**
 * In-page: record the client's session events (`window.__ev`) and every status text the
 * page shows (`window.__statuses`), for the resume and ICE restart checks.
 */
function installClientRecorder() {
  const c = window.chorus;
  window.__ev = [];
  const types = ['reconnecting', 'resumed', 'participant_joined', 'participant_left', 'closed',
    'ice_restarting', 'ice_restarted', 'ice_restart_failed', 'connection_state'];
  for (const type of types) {
    c.addEventListener(type, (e) => window.__ev.push({
      type, t: performance.now(), clientState: c.state,
      code: e.detail?.code ?? null, reason: e.detail?.reason ?? null,
      id: e.detail?.participant_id ?? e.detail?.participant?.participant_id ?? null,
      state: e.detail?.state ?? null,
      attempts: e.detail?.attempts ?? null,
      downtime: e.detail?.downtime_ms ?? null,
    }));
  }
  window.__statuses = [];
  const status = document.querySelector('#status');
  new MutationObserver(() => window.__statuses.push(status.textContent))
    .observe(status, { childList: true, characterData: true, subtree: true });
}

/**
 * In-page: every 50 ms, note how old the newest contributing source of each of `csrcs`
 * is; `stopAudioWatch` returns the largest age seen per csrc (a gap in that audio).
 */
function startAudioWatch(csrcs) {
  const c = window.chorus;
  const w = { maxAge: Object.fromEntries(csrcs.map((x) => [x, 0])), samples: 0 };
  w.timer = setInterval(() => {
    const newest = new Map();
    for (const s of c.contributingSources()) newest.set(s.source, Math.min(newest.get(s.source) ?? 1e9, s.ageMs));
    for (const x of csrcs) w.maxAge[x] = Math.max(w.maxAge[x], Math.round(newest.get(x) ?? 1e9));
    w.samples += 1;
  }, 50);
  window.__watch = w;
}

function stopAudioWatch() {
  clearInterval(window.__watch.timer);
  return { maxAge: window.__watch.maxAge, samples: window.__watch.samples };
}

/** The ICE ufrags of a page's current local and remote descriptions. */
function iceUfrags(page) {
  return page.evaluate(() => {
    const ufrag = (d) => /^a=ice-ufrag:(\S+)/m.exec(d?.sdp ?? '')?.[1] ?? null;
    return { local: ufrag(window.chorus.pc.localDescription), remote: ufrag(window.chorus.pc.remoteDescription) };
  });
}

/** Longest tolerated gap (ms) in a speaker's contributing source while its audio flows. */
const MAX_AUDIO_GAP_MS = 400;

/** A WebSocket URL nothing answers at (Chromium refuses port 1 at once). */
const UNREACHABLE_WS = 'ws://127.0.0.1:1/v1/signal';

/** `listener` gets `csrc`'s audio: a fresh contributing source on a growing slot. */
async function assertHearing(listener, csrc, what) {
  const base = await slotPackets(listener);
  await poll(what, async () => {
    const fresh = await freshSources(listener);
    const hit = fresh.find((s) => s.source === csrc);
    const now = await slotPackets(listener);
    return { ok: Boolean(hit) && now[hit.slot] > (base[hit.slot] ?? 0) + 5, fresh, now };
  }, { timeout: 10_000 });
}

test('three browsers talk through the demo page', { timeout: 110_000 }, async (t) => {
  const room = `e2e-${process.pid}-${Date.now().toString(36)}`;
  const names = ['Alice', 'Bob', 'Carol'];
  const consoleErrors = [];
  let browser;
  let ctl;
  const pages = {};
  try {
    // The backend follows the room from before anyone joins.
    ctl = await openControl(node.control);
    const sub = await ctl.call('events.subscribe', { room });
    assert.equal(sub.subscribed, true, `events.subscribe: ${JSON.stringify(sub)}`);

    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });

    for (const name of names) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const page = await context.newPage();
      page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`[${name}] console: ${m.text()}`); });
      page.on('pageerror', (e) => consoleErrors.push(`[${name}] pageerror: ${e.message}`));
      pages[name] = page;
    }
    const { Alice: alice, Bob: bob, Carol: carol } = pages;

    // Everyone opens the page, types room and name, clicks Join.
    await Promise.all(names.map(async (name) => {
      const page = pages[name];
      await page.goto(`${node.base}/`);
      await page.evaluate(installPageProbes);
      await page.fill('#room', room);
      await page.fill('#name', name);
      await page.click('#join');
    }));

    // 1. Everyone's list shows all three, themselves marked.
    const who = {};
    for (const name of names) {
      const st = await poll(`${name}'s list shows Alice, Bob and Carol`, async () => {
        const s = await pageState(pages[name]);
        const listed = s.rows.map((r) => r.name).sort();
        const selfRows = s.rows.filter((r) => r.self === 'true');
        return { ok: s.state === 'joined' && JSON.stringify(listed) === JSON.stringify(names)
          && selfRows.length === 1 && selfRows[0].name === name, ...s };
      }, { timeout: 25_000 });
      who[name] = { id: st.self.participant_id, csrc: st.self.csrc };
      assert.ok(st.self.csrc > 0, `${name} has a non-zero csrc`);
    }
    const csrcs = names.map((n) => who[n].csrc);
    assert.equal(new Set(csrcs).size, 3, `csrcs are unique: ${csrcs}`);

    // The control plane saw the three join, and lists them as the pages know themselves.
    for (const name of names) {
      const ev = await ctl.waitEvent(`participant_joined ${name}`,
        (e) => e.type === 'participant_joined' && e.participant?.participant_id === who[name].id);
      assert.equal(ev.participant.name, name, `participant_joined names ${name}: ${JSON.stringify(ev)}`);
      assert.equal(ev.room, room);
    }
    {
      const listed = await ctl.call('participant.list', { room });
      const byName = Object.fromEntries(listed.map((p) => [p.name, p]));
      for (const name of names) {
        assert.equal(byName[name]?.participant_id, who[name].id, `participant.list maps ${name}: ${JSON.stringify(listed)}`);
        assert.equal(byName[name].csrc, who[name].csrc, `participant.list csrc of ${name}`);
      }
    }

    // 2. Everyone receives Opus from the two others: ≥2 slots growing, both csrcs present.
    for (const name of names) {
      const page = pages[name];
      const others = names.filter((n) => n !== name);
      const base = await slotPackets(page);
      await poll(`${name} receives audio from ${others.join(' and ')}`, async () => {
        const now = await slotPackets(page);
        const growing = now.filter((p, i) => p > (base[i] ?? 0) + 5).length;
        const sources = new Set((await freshSources(page)).map((s) => s.source));
        const heard = others.filter((o) => sources.has(who[o].csrc));
        return { ok: growing >= 2 && heard.length === 2, growing, heard, now };
      }, { timeout: 25_000 });
    }

    // 2b. The slot streams are Chorus's own SRTP: the browser decrypts them with the
    //     profile DTLS negotiated (the node's default: AES-256-GCM; or the one
    //     --srtp-profiles holds it to), and reads the speaker's audio level (RFC 6464,
    //     written by Chorus) next to its CSRC in getContributingSources.
    {
      const held = CHORUS_ARGS.includes('--srtp-profiles')
        ? CHORUS_ARGS[CHORUS_ARGS.indexOf('--srtp-profiles') + 1].split(',')[0].toUpperCase()
        : null;
      for (const name of names) {
        const cipher = await pages[name].evaluate(async () => {
          const report = await window.chorus.pc.getStats();
          for (const s of report.values()) {
            if (s.type === 'transport' && s.srtpCipher) return s.srtpCipher;
          }
          return null;
        });
        // RFC names (AEAD_AES_256_GCM, AES_CM_128_HMAC_SHA1_80); Chromium 156.0.8078.114
        // reports the IANA ones (SRTP_AEAD_AES_256_GCM, SRTP_AES128_CM_HMAC_SHA1_80).
        const rfcName = (c) => c && c.replace(/^SRTP_/, '').replace('AES128_CM_HMAC', 'AES_CM_128_HMAC');
        const want = held ? [rfcName(held)] : ['AEAD_AES_256_GCM'];
        assert.ok(want.includes(rfcName(cipher)), `${name}'s transport uses ${cipher}, expected ${want}`);
        t.diagnostic(`${name}: srtpCipher ${cipher}`);
        const others = names.filter((n) => n !== name);
        await poll(`${name} reads audio levels with the others' CSRCs`, async () => {
          const levels = await pages[name].evaluate(() => window.chorus.contributingSources()
            .filter((s) => s.ageMs < 500).map((s) => ({ source: s.source, level: s.audioLevel })));
          const loud = others.filter((o) => levels.some((l) => l.source === who[o].csrc && l.level > 0));
          return { ok: loud.length === others.length, levels };
        }, { timeout: 10_000 });
      }
    }

    // 3. Speaking indicators: the fake microphone beeps, so the others light up.
    for (const name of names) {
      const others = names.filter((n) => n !== name);
      await poll(`${name} sees ${others.join(' and ')} speaking`, async () => {
        const spoke = await pages[name].evaluate(() => [...window.__spoke]);
        return { ok: others.every((o) => spoke.includes(who[o].id)), spoke };
      }, { timeout: 15_000 });
    }

    // The event stream reports the beeping pages speaking, as the pages saw.
    for (const name of names) {
      await ctl.waitEvent(`speaking_started ${name}`,
        (e) => e.type === 'speaking_started' && e.participant_id === who[name].id, 5_000);
    }

    // 6. Screenshot mid-call (once the stats panel shows rates).
    await poll("Alice's stats panel filled in", () => alice.evaluate(
      () => !['–', ''].includes(document.querySelector('#stats [data-stat="recv"]')?.textContent ?? '')), { timeout: 5_000 });
    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await alice.screenshot({ path: SCREENSHOT, fullPage: true });
    assert.ok(existsSync(SCREENSHOT) && statSync(SCREENSHOT).size > 1000, 'screenshot written');

    // 4. Mute: Alice mutes; everyone sees it; Bob stops getting her audio; unmute restores it.
    const aliceSlot = await poll("Bob hears Alice in a slot", async () => {
      const hit = (await freshSources(bob)).find((s) => s.source === who.Alice.csrc);
      return hit ? hit.slot + 1 : 0; // +1 keeps slot 0 truthy
    }) - 1;
    await alice.click('#mute');
    assert.equal(await alice.getAttribute('#mute', 'aria-pressed'), 'true');
    for (const name of names) {
      await poll(`${name} shows Alice muted`, () => pages[name].evaluate(
        (id) => document.querySelector(`#participants [data-participant-id="${id}"]`)?.dataset.muted === 'true', who.Alice.id));
    }
    await poll("Alice's csrc goes stale on Bob's page", async () => {
      const fresh = await freshSources(bob);
      return { ok: !fresh.some((s) => s.source === who.Alice.csrc), fresh };
    }, { timeout: 10_000 });
    {
      const p0 = (await slotPackets(bob))[aliceSlot];
      await sleep(1500);
      const p1 = (await slotPackets(bob))[aliceSlot];
      const onSlot = (await freshSources(bob)).filter((s) => s.slot === aliceSlot).map((s) => s.source);
      // A slot may legitimately be handed to another speaker; then it carries them, not Alice.
      const reassigned = onSlot.length > 0 && !onSlot.includes(who.Alice.csrc);
      assert.ok(p1 - p0 <= 3 || reassigned,
        `slot ${aliceSlot} (Alice's) on Bob's page stops growing while Alice is muted: ${p0} → ${p1}, fresh csrcs there: ${onSlot}`);
    }
    await alice.click('#mute');
    assert.equal(await alice.getAttribute('#mute', 'aria-pressed'), 'false');
    for (const name of names) {
      await poll(`${name} shows Alice unmuted`, () => pages[name].evaluate(
        (id) => document.querySelector(`#participants [data-participant-id="${id}"]`)?.dataset.muted === 'false', who.Alice.id));
    }
    {
      const base = await slotPackets(bob);
      await poll("Bob hears Alice again", async () => {
        const fresh = await freshSources(bob);
        const hit = fresh.find((s) => s.source === who.Alice.csrc);
        const now = await slotPackets(bob);
        return { ok: Boolean(hit) && now[hit.slot] > (base[hit.slot] ?? 0) + 5, fresh, now };
      }, { timeout: 10_000 });
    }

    // 5. Deafen: Bob deafens; his inbound audio stops; everyone sees it; undeafen resumes.
    await bob.click('#deafen');
    assert.equal(await bob.getAttribute('#deafen', 'aria-pressed'), 'true');
    for (const name of names) {
      await poll(`${name} shows Bob deafened`, () => pages[name].evaluate(
        (id) => document.querySelector(`#participants [data-participant-id="${id}"]`)?.dataset.deafened === 'true', who.Bob.id));
    }
    await sleep(300); // let in-flight packets land
    {
      const p0 = await totalInbound(bob);
      await sleep(1500);
      const p1 = await totalInbound(bob);
      assert.ok(p1 - p0 <= 5, `Bob (deafened) receives no audio: inbound packets ${p0} → ${p1}`);
      // Deafened is not muted: the others still hear Bob.
      await poll('Alice still hears deafened Bob', async () =>
        (await freshSources(alice)).some((s) => s.source === who.Bob.csrc), { timeout: 5_000 });
    }
    await bob.click('#deafen');
    assert.equal(await bob.getAttribute('#deafen', 'aria-pressed'), 'false');
    for (const name of names) {
      await poll(`${name} shows Bob undeafened`, () => pages[name].evaluate(
        (id) => document.querySelector(`#participants [data-participant-id="${id}"]`)?.dataset.deafened === 'false', who.Bob.id));
    }
    {
      const base = await totalInbound(bob);
      await poll('Bob receives audio again', async () => (await totalInbound(bob)) > base + 20, { timeout: 10_000 });
    }

    // 11. Resume: Bob's signaling socket drops (closed from his page with 4100, which the
    //     node treats as a vanished client: it parks the session). His first attempt to
    //     get back cannot reach the node (signaling stays down for over 0.5 s); then his
    //     client resumes the session. Nobody sees him leave, and audio flows both ways
    //     throughout (the media connection is not touched).
    {
      const t0 = Date.now();
      for (const name of names) await pages[name].evaluate(installClientRecorder);
      await Promise.all(names.map((name) => pages[name].evaluate(startAudioWatch,
        names.filter((n) => n !== name).map((n) => who[n].csrc))));
      await sleep(250);
      await bob.evaluate((blackhole) => {
        const c = window.chorus;
        const url = c.url;
        window.__oldWs = c.ws;
        c.url = blackhole;
        setTimeout(() => { c.url = url; }, 500);
        c.ws.close(4100, 'e2e: drop the socket');
      }, UNREACHABLE_WS);
      const r = await poll("Bob's client resumes its session", () => bob.evaluate(() => {
        const c = window.chorus;
        const types = window.__ev.map((e) => e.type);
        return { ok: c.state === 'joined' && types.includes('resumed'), state: c.state, ev: window.__ev,
          id: c.self.participant_id, newSocket: c.ws !== window.__oldWs && c.ws?.readyState === 1,
          statuses: window.__statuses, status: document.querySelector('#status').textContent };
      }), { timeout: 10_000, interval: 50 });
      const [reconnecting, resumed, ...more] = r.ev.filter((e) => e.type !== 'connection_state');
      assert.deepEqual([reconnecting?.type, resumed?.type, more.length], ['reconnecting', 'resumed', 0],
        `Bob's client: reconnecting, then resumed: ${JSON.stringify(r.ev)}`);
      assert.equal(reconnecting.code, 4100, `reconnecting carries the close code: ${JSON.stringify(reconnecting)}`);
      assert.equal(reconnecting.clientState, 'reconnecting');
      assert.equal(resumed.clientState, 'joined', 'state is joined again when resumed fires');
      assert.ok(resumed.attempts >= 2 && resumed.downtime >= 500,
        `resumed after a failed attempt, signaling down for over 0.5 s: ${JSON.stringify(resumed)}`);
      assert.equal(r.id, who.Bob.id, 'same participant after the resume');
      assert.ok(r.newSocket, 'the session runs on a new, open socket');
      assert.ok(r.statuses.some((x) => /Reconnecting/.test(x)), `the page showed Reconnecting…: ${JSON.stringify(r.statuses)}`);
      assert.match(r.status, /Reconnected/, 'the page notes the resume');
      const resumeMs = Date.now() - t0;

      await sleep(500); // and audio keeps flowing on the resumed session
      await Promise.all([
        assertHearing(alice, who.Bob.csrc, 'Alice hears Bob after his resume'),
        assertHearing(carol, who.Bob.csrc, 'Carol hears Bob after his resume'),
        assertHearing(bob, who.Alice.csrc, 'Bob hears Alice after his resume'),
        assertHearing(bob, who.Carol.csrc, 'Bob hears Carol after his resume'),
      ]);
      const gaps = {};
      for (const name of names) {
        const w = await pages[name].evaluate(stopAudioWatch);
        gaps[name] = w.maxAge;
        for (const [csrc, age] of Object.entries(w.maxAge)) {
          assert.ok(age < MAX_AUDIO_GAP_MS, `${name}'s audio from csrc ${csrc} never paused during Bob's resume: longest gap ${age} ms (${w.samples} samples)`);
        }
      }
      for (const name of ['Alice', 'Carol']) {
        const seen = await pages[name].evaluate(() => ({ ev: window.__ev.filter((e) => e.type !== 'connection_state'),
          rows: [...document.querySelectorAll('#participants [data-participant-id]')].map((li) => li.dataset.participantId) }));
        assert.deepEqual(seen.ev, [], `${name}'s client saw no membership change: ${JSON.stringify(seen.ev)}`);
        assert.ok(seen.rows.includes(who.Bob.id) && seen.rows.length === 3, `${name}'s list still shows Bob: ${seen.rows}`);
      }
      assert.ok(!ctl.events.some((e) => e.type === 'participant_left' && e.participant_id === who.Bob.id),
        'the backend saw no participant_left for Bob');
      const listed = await ctl.call('participant.list', { room });
      assert.ok(listed.some((p) => p.participant_id === who.Bob.id), `participant.list still has Bob: ${JSON.stringify(listed)}`);
      t.diagnostic(`resume: back after ${resumed.downtime} ms and ${resumed.attempts} attempts; step took ${Date.now() - t0} ms (${resumeMs} ms to resumed); longest audio gaps (ms) per listener and csrc: ${JSON.stringify(gaps)}`);
    }

    // 12. ICE restart: Carol's client restarts ICE (new credentials both ways); the
    //     connection comes back to 'connected' and audio flows both ways.
    {
      const t0 = Date.now();
      await Promise.all(names.map((name) => pages[name].evaluate(startAudioWatch,
        names.filter((n) => n !== name).map((n) => who[n].csrc))));
      const before = await iceUfrags(carol);
      const done = await carol.evaluate(async () => {
        const c = window.chorus;
        window.__ev.length = 0;
        try { await c.restartIce(); } catch (e) { return { error: String(e) }; }
        return { state: c.state };
      });
      assert.equal(done.error, undefined, `restartIce() resolves: ${JSON.stringify(done)}`);
      const after = await iceUfrags(carol);
      assert.ok(after.local && after.local !== before.local, `new local ICE credentials: ${JSON.stringify({ before, after })}`);
      assert.ok(after.remote && after.remote !== before.remote, `the node answered new ICE credentials: ${JSON.stringify({ before, after })}`);
      const r = await poll("Carol's media connection is connected after the ICE restart", () => carol.evaluate(() => ({
        ok: window.chorus.pc.connectionState === 'connected' && window.chorus.state === 'joined',
        pc: window.chorus.pc.connectionState, ev: window.__ev,
      })), { timeout: 10_000, interval: 100 });
      const types = r.ev.filter((e) => e.type.startsWith('ice_')).map((e) => `${e.type}:${e.reason}`);
      assert.deepEqual(types, ['ice_restarting:manual', 'ice_restarted:manual'], `ICE restart events: ${JSON.stringify(r.ev)}`);
      await Promise.all([
        assertHearing(alice, who.Carol.csrc, 'Alice hears Carol after her ICE restart'),
        assertHearing(bob, who.Carol.csrc, 'Bob hears Carol after her ICE restart'),
        assertHearing(carol, who.Alice.csrc, 'Carol hears Alice after her ICE restart'),
        assertHearing(carol, who.Bob.csrc, 'Carol hears Bob after her ICE restart'),
      ]);
      const gaps = {};
      for (const name of names) {
        gaps[name] = (await pages[name].evaluate(stopAudioWatch)).maxAge;
        for (const [csrc, age] of Object.entries(gaps[name])) {
          assert.ok(age < MAX_AUDIO_GAP_MS, `${name}'s audio from csrc ${csrc} never paused during Carol's ICE restart: longest gap ${age} ms`);
        }
      }
      for (const name of ['Alice', 'Bob']) {
        const ev = await pages[name].evaluate(() => window.__ev.filter((e) => e.type === 'participant_left'));
        assert.deepEqual(ev, [], `${name} saw nobody leave`);
      }
      assert.ok(!ctl.events.some((e) => e.type === 'participant_left' && e.participant_id === who.Carol.id),
        'the backend saw no participant_left for Carol');
      t.diagnostic(`ICE restart: ${Date.now() - t0} ms; longest audio gaps (ms) per listener and csrc: ${JSON.stringify(gaps)}`);
    }

    // 8. Server mute (control plane): the backend mutes Carol. Everyone's list says "muted
    //    by server", Alice and Bob stop getting her audio, and Carol cannot unmute herself.
    {
      const r = await ctl.call('participant.mute', { room, participant_id: who.Carol.id, muted: true });
      assert.equal(r.server_muted, true, `participant.mute result: ${JSON.stringify(r)}`);
      await ctl.waitEvent('participant_updated Carol server-muted', (e) => e.type === 'participant_updated'
        && e.participant?.participant_id === who.Carol.id && e.participant.server_muted === true);
      for (const name of names) {
        await poll(`${name} shows Carol muted by server`, async () => {
          const row = await rowView(pages[name], who.Carol.id);
          return { ok: row?.serverMuted === 'true' && row.badges.includes('muted by server'), row };
        }, { timeout: 5_000 });
      }
      await poll("Carol's Mute button is pressed and disabled", () => carol.evaluate(() => {
        const b = document.querySelector('#mute');
        return b.disabled && b.getAttribute('aria-pressed') === 'true' && window.chorus.self.server_muted === true;
      }), { timeout: 5_000 });
      await carol.screenshot({ path: SCREENSHOT_SERVER_MUTED, fullPage: true });
      await Promise.all([assertNotHearing(alice, who.Carol.csrc, 'Carol on Alice\'s page'),
        assertNotHearing(bob, who.Carol.csrc, 'Carol on Bob\'s page')]);

      // Carol tries to unmute: the client refuses (forbidden), and so does the node when
      // the message goes out anyway.
      const tried = await carol.evaluate(async () => {
        const c = window.chorus;
        let thrown = null;
        try { c.setMuted(false); } catch (e) { thrown = e.code; }
        const got = new Promise((resolve) => {
          c.addEventListener('error', (e) => resolve(e.detail.code), { once: true });
          setTimeout(() => resolve('no error event'), 3000);
        });
        c.ws.send(JSON.stringify({ type: 'mute', muted: false }));
        const wire = await got;
        return { thrown, wire, state: c.state, serverMuted: c.self.server_muted, status: document.querySelector('#status').textContent };
      });
      assert.equal(tried.thrown, 'forbidden', `setMuted(false) while server-muted throws forbidden: ${JSON.stringify(tried)}`);
      assert.equal(tried.wire, 'forbidden', `the node answers an unmute with forbidden: ${JSON.stringify(tried)}`);
      assert.equal(tried.state, 'joined', 'the session survives forbidden');
      assert.equal(tried.serverMuted, true, 'Carol is still muted by the server');
      const still = await ctl.call('participant.get', { room, participant_id: who.Carol.id });
      assert.equal(still.server_muted, true, `participant.get after the refused unmute: ${JSON.stringify(still)}`);
      await sleep(300);
      assert.ok(!(await freshSources(alice)).some((s) => s.source === who.Carol.csrc), 'Alice still does not hear Carol');

      // The backend lifts it: the badge goes, Carol may use her button, audio flows again.
      const u = await ctl.call('participant.mute', { room, participant_id: who.Carol.id, muted: false });
      assert.equal(u.server_muted, false, `participant.mute false result: ${JSON.stringify(u)}`);
      for (const name of names) {
        await poll(`${name} shows Carol no longer muted by server`, async () => {
          const row = await rowView(pages[name], who.Carol.id);
          return { ok: row?.serverMuted === 'false' && !row.badges.includes('muted by server') && !row.badges.includes('muted'), row };
        }, { timeout: 5_000 });
      }
      assert.equal(await carol.isDisabled('#mute'), false, "Carol's Mute button is enabled again");
      assert.equal(await carol.getAttribute('#mute', 'aria-pressed'), 'false');
      await Promise.all([assertHearing(alice, who.Carol.csrc, 'Alice hears Carol again'),
        assertHearing(bob, who.Carol.csrc, 'Bob hears Carol again')]);
    }

    // Permissions (control plane): Alice loses publish; her client learns it, her row says
    // "listen only"; then she gets it back.
    {
      const r = await ctl.call('participant.set_permissions', { room, participant_id: who.Alice.id, publish: false });
      assert.equal(r.publish, false, `set_permissions result: ${JSON.stringify(r)}`);
      assert.equal(r.subscribe, true, 'subscribe stays as it was');
      await poll("Alice's page shows her listen only", async () => {
        const row = await rowView(alice, who.Alice.id);
        const perms = await alice.evaluate(() => window.chorus.permissions);
        return { ok: perms?.publish === false && perms.subscribe === true && row.badges.includes('listen only'), row, perms };
      }, { timeout: 5_000 });
      await ctl.call('participant.set_permissions', { room, participant_id: who.Alice.id, publish: true });
      await poll("Alice's page drops the listen-only badge", async () => {
        const row = await rowView(alice, who.Alice.id);
        return { ok: !row.badges.includes('listen only'), row };
      }, { timeout: 5_000 });
    }

    // Priority (control plane): Alice becomes a priority speaker. Her client learns it,
    // Bob's `speakers` marks her `priority: true` while she speaks, and Bob's other slots
    // play ducked (12 dB: volume 0.25) while hers plays at full volume; lifted, all are
    // back at full volume.
    {
      const r = await ctl.call('participant.set_permissions', { room, participant_id: who.Alice.id, priority: true });
      assert.equal(r.priority, true, `set_permissions result: ${JSON.stringify(r)}`);
      await poll("Bob's page ducks the others while Alice (priority) speaks", async () => {
        const perms = await alice.evaluate(() => window.chorus.permissions);
        const v = await bob.evaluate((aliceId) => {
          const c = window.chorus;
          const entry = c.lastSpeakers.find((s) => s.participant_id === aliceId);
          return {
            entry,
            volumes: c.slots.map((s) => ({ index: s.index, volume: s.audio?.volume })),
          };
        }, who.Alice.id);
        const aliceSlot = v.entry?.slot;
        const ok = perms?.priority === true && v.entry?.priority === true && typeof aliceSlot === 'number'
          && v.volumes.every((x) => (x.index === aliceSlot ? x.volume === 1 : Math.abs(x.volume - 0.251) < 0.01));
        return { ok, perms, v };
      }, { timeout: 10_000 });
      await ctl.call('participant.set_permissions', { room, participant_id: who.Alice.id, priority: false });
      await poll("Bob's slots are back at full volume", async () => {
        const v = await bob.evaluate(() => window.chorus.slots.map((s) => s.audio?.volume));
        return { ok: v.every((x) => x === 1), v };
      }, { timeout: 10_000 });
    }

    // Whisper: the room (a --dev "public" room) refuses it until the backend turns the
    // policy on; then Alice whispers to Bob: Bob keeps hearing her and his `speakers`
    // marks her `whisper: true`, Carol stops hearing her; `null` ends it.
    {
      const refused = await alice.evaluate(async (bobId) => {
        const c = window.chorus;
        const got = new Promise((resolve) => {
          c.addEventListener('error', (e) => resolve(e.detail.code), { once: true });
          setTimeout(() => resolve('no error event'), 3000);
        });
        c.whisper([bobId]);
        return got;
      }, who.Bob.id);
      assert.equal(refused, 'forbidden', 'whisper is off in a public room');
      const r = await ctl.call('room.update', { room, whisper: true });
      assert.equal(r.whisper, true, `room.update: ${JSON.stringify(r)}`);
      await alice.evaluate((bobId) => window.chorus.whisper([bobId]), who.Bob.id);
      await assertNotHearing(carol, who.Alice.csrc, "Alice (whispering to Bob) on Carol's page");
      await assertHearing(bob, who.Alice.csrc, 'Bob hears Alice whisper');
      await poll("Bob's speakers mark Alice's whisper", async () => {
        const entry = await bob.evaluate((aliceId) =>
          window.chorus.lastSpeakers.find((x) => x.participant_id === aliceId), who.Alice.id);
        return { ok: entry?.whisper === true, entry };
      }, { timeout: 10_000 });
      await alice.evaluate(() => window.chorus.whisper(null));
      await assertHearing(carol, who.Alice.csrc, 'Carol hears Alice again');
    }

    // The client survives what it does not expect: a bad_request from the node is
    // surfaced as an `error` event without ending the session; unknown types are ignored.
    {
      const r = await carol.evaluate(async () => {
        const c = window.chorus;
        const got = new Promise((resolve) => {
          c.addEventListener('error', (e) => resolve(e.detail.code), { once: true });
          setTimeout(() => resolve('no error event'), 3000);
        });
        c.ws.send('not json');
        const code = await got;
        c._onMessage('{"type":"from_the_future","x":1}');
        c._onMessage('not json either');
        c._onMessage('{"type":"participant_left"}');
        await new Promise((res) => setTimeout(res, 300));
        return { code, state: c.state, ws: c.ws.readyState, status: document.querySelector('#status').textContent };
      });
      assert.equal(r.code, 'bad_request', `bad frame → error event bad_request: ${JSON.stringify(r)}`);
      assert.equal(r.state, 'joined', `session survives a bad_request: ${JSON.stringify(r)}`);
      assert.equal(r.ws, 1, 'socket still open');
      assert.match(r.status, /bad_request/, 'the page shows the error');
    }

    // 7. Leave: Carol leaves; Alice and Bob drop her; Carol's page says so.
    await carol.click('#leave');
    for (const name of ['Alice', 'Bob']) {
      await poll(`${name}'s list drops Carol`, async () => {
        const s = await pageState(pages[name]);
        return { ok: s.rows.length === 2 && !s.rows.some((r) => r.id === who.Carol.id), rows: s.rows };
      }, { timeout: 10_000 });
    }
    await poll("Carol's page shows she left", async () => {
      const s = await pageState(carol);
      return { ok: s.state === 'closed' && /left/i.test(s.status) && s.rows.length === 0, status: s.status, state: s.state };
    }, { timeout: 10_000 });
    await ctl.waitEvent('participant_left Carol (left)', (e) => e.type === 'participant_left'
      && e.participant_id === who.Carol.id && e.reason === 'left');

    // 7b. A listener without a microphone (chorus.js `audioTrack: null`: its offer has
    //     only receive slots, so the node answers ICE and DTLS in a slot section it
    //     writes itself). Dave hears Alice and Bob by their CSRCs, then leaves.
    {
      const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
      const dave = await context.newPage();
      dave.on('pageerror', (e) => consoleErrors.push(`[Dave] pageerror: ${e.message}`));
      await dave.goto(`${node.base}/`);
      const joined = await dave.evaluate(async (room) => {
        const { ChorusClient } = await import('/chorus.js');
        const c = new ChorusClient();
        window.chorus = c;
        const j = await c.join({ room, name: 'Dave', audioTrack: null });
        return { slots: j.audio_slots, state: c.state };
      }, room);
      assert.equal(joined.state, 'joined', `Dave joined listen-only: ${JSON.stringify(joined)}`);
      await poll('Dave (no microphone) hears Alice and Bob', async () => {
        const sources = new Set((await freshSources(dave)).map((s) => s.source));
        return { ok: sources.has(who.Alice.csrc) && sources.has(who.Bob.csrc), sources: [...sources] };
      }, { timeout: 20_000 });
      await dave.evaluate(() => window.chorus.leave());
      await poll("Alice's list drops Dave", async () => {
        const s = await pageState(alice);
        return { ok: s.rows.length === 2, rows: s.rows };
      }, { timeout: 10_000 });
      await context.close();
    }

    // 9. Kick (control plane): the backend removes Bob. His page says why; Alice sees him go.
    {
      const reason = 'e2e: removed by the test backend';
      const r = await ctl.call('participant.kick', { room, participant_id: who.Bob.id, reason });
      assert.equal(r.participant_id, who.Bob.id, `participant.kick result: ${JSON.stringify(r)}`);
      await poll("Bob's page shows he was kicked, with the reason", async () => {
        const s = await pageState(bob);
        return { ok: s.state === 'closed' && s.banner?.kind === 'kicked' && s.banner.text.includes(reason)
          && /kicked/i.test(s.status) && s.rows.length === 0, banner: s.banner, status: s.status, state: s.state };
      }, { timeout: 10_000 });
      assert.equal(await bob.isDisabled('#join'), false, 'Bob may join again by hand');
      await bob.screenshot({ path: SCREENSHOT_KICKED, fullPage: true });
      await poll("Alice's list drops Bob", async () => {
        const s = await pageState(alice);
        return { ok: s.rows.length === 1 && s.rows[0].id === who.Alice.id && s.banner === null, rows: s.rows, banner: s.banner };
      }, { timeout: 10_000 });
      await ctl.waitEvent('participant_left Bob (kicked)', (e) => e.type === 'participant_left'
        && e.participant_id === who.Bob.id && e.reason === 'kicked');
      const left = await ctl.call('participant.list', { room });
      assert.deepEqual(left.map((p) => p.participant_id), [who.Alice.id], `participant.list after the kick: ${JSON.stringify(left)}`);
    }

    // `quality` events (--quality-interval 1) came for everyone with media.
    for (const name of names) {
      await ctl.waitEvent(`quality for ${name}`, (e) => e.type === 'quality'
        && e.participant_id === who[name].id && e.bitrate_in > 0, 3_000);
    }

    // 10. room.delete: Alice, the last one in, is told the room closed and why.
    {
      const reason = 'e2e: room deleted by the test backend';
      await ctl.call('room.delete', { room, reason });
      await poll("Alice's page shows the room closed, with the reason", async () => {
        const s = await pageState(alice);
        return { ok: s.state === 'closed' && s.banner?.kind === 'room_closed' && s.banner.text.includes(reason)
          && s.rows.length === 0, banner: s.banner, status: s.status, state: s.state };
      }, { timeout: 10_000 });
      await ctl.waitEvent('participant_left Alice (room_closed)', (e) => e.type === 'participant_left'
        && e.participant_id === who.Alice.id && e.reason === 'room_closed');
      await ctl.waitEvent('room_closed', (e) => e.type === 'room_closed' && e.reason === reason);
    }

    // The resume step's deliberately failing attempts log connection errors.
    const unexpected = consoleErrors.filter((e) => !/favicon/i.test(e) && !e.includes(UNREACHABLE_WS));
    if (unexpected.length) t.diagnostic(`page console errors:\n${unexpected.join('\n')}`);
  } catch (e) {
    console.error(`\n=== FAILURE: ${e.message}`);
    for (const [name, page] of Object.entries(pages)) {
      try {
        const s = await pageState(page);
        console.error(`--- ${name}: ${JSON.stringify({ ...s, stats: s.stats && { ...s.stats } }, null, 1)}`);
      } catch (err) {
        console.error(`--- ${name}: (state unavailable: ${err.message})`);
      }
    }
    if (consoleErrors.length) console.error(`--- page console errors ---\n${consoleErrors.join('\n')}`);
    if (ctl) console.error(`--- control events (tail) ---\n${ctl.events.slice(-30).map((ev) => JSON.stringify(ev)).join('\n')}`);
    console.error(`--- chorus output (tail) ---\n${node.tail(80)}`);
    throw e;
  } finally {
    ctl?.close();
    if (browser) await browser.close().catch(() => {});
  }
});

// ------------------------------------------------------------------ raw protocol errors

async function openRawSocket(url) {
  const WS = typeof WebSocket === 'function' ? WebSocket : (await import('ws')).WebSocket;
  const ws = new WS(url);
  const queue = [];
  const waiters = [];
  let closed = null;
  ws.addEventListener('message', (ev) => {
    const text = typeof ev.data === 'string' ? ev.data : String(ev.data);
    let msg;
    try { msg = JSON.parse(text); } catch { msg = { unparsable: text }; }
    const w = waiters.shift();
    if (w) w(msg); else queue.push(msg);
  });
  ws.addEventListener('close', (ev) => {
    closed = { code: ev.code, reason: ev.reason };
    for (const w of waiters.splice(0)) w(null);
  });
  await new Promise((resolve, reject) => {
    ws.addEventListener('open', resolve, { once: true });
    ws.addEventListener('error', () => reject(new Error(`cannot open ${url}`)), { once: true });
  });
  return {
    ws,
    get closed() { return closed; },
    send: (x) => ws.send(typeof x === 'string' ? x : JSON.stringify(x)),
    next(timeout = 5000) {
      if (queue.length) return Promise.resolve(queue.shift());
      if (closed) return Promise.resolve(null);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no message within ${timeout} ms`)), timeout);
        waiters.push((m) => { clearTimeout(t); resolve(m); });
      });
    },
    /** Next message, skipping the given broadcast types. */
    async nextOf(types, timeout = 5000) {
      const deadline = Date.now() + timeout;
      for (;;) {
        const m = await this.next(Math.max(1, deadline - Date.now()));
        if (!m || types.includes(m.type)) return m;
      }
    },
    closedPromise: () => new Promise((resolve) => {
      if (closed) resolve(closed);
      else ws.addEventListener('close', (ev) => resolve({ code: ev.code, reason: ev.reason }), { once: true });
    }),
  };
}

/**
 * A 16-bit mono WAV of a 1 kHz sine at full scale, for
 * `--use-file-for-fake-audio-capture` (Chromium loops it): a tone held to the mic.
 */
function writeToneWav(file, seconds = 5, rate = 48_000) {
  const n = seconds * rate;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write('WAVE', 8);
  buf.write('fmt ', 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28); buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34);
  buf.write('data', 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(32_000 * Math.sin(2 * Math.PI * 1000 * i / rate)), 44 + i * 2);
  writeFileSync(file, buf);
}

/** `listener` has no fresh contributing source from `csrc` for all of `ms`. */
async function assertSilentFor(listener, csrc, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const fresh = await freshSources(listener);
    assert.ok(!fresh.some((s) => s.source === csrc), `${what}: fresh sources ${JSON.stringify(fresh)}`);
    await sleep(100);
  }
}

// Once per CI run (tools/test.sh sets CHORUS_GAME_VOICE=0 on the other runs): its 60 s
// of normal speech dominate.
const GAME_VOICE = process.env.CHORUS_GAME_VOICE !== '0';

test('game voice in Chromium: proximity, priority, whisper and the spam guard', { timeout: 150_000, skip: !GAME_VOICE && 'CHORUS_GAME_VOICE=0' }, async (t) => {
  const room = `world-${process.pid}-${Date.now().toString(36)}`;
  const names = ['Ann', 'Ben', 'Cid', 'Dee'];
  const consoleErrors = [];
  const browsers = [];
  let ctl;
  const pages = {};
  const openPage = async (browser, name, query = '') => {
    const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`[${name}] console: ${m.text()}`); });
    page.on('pageerror', (e) => consoleErrors.push(`[${name}] pageerror: ${e.message}`));
    await page.goto(`${node.base}/${query}`);
    await page.fill('#room', room);
    await page.fill('#name', name);
    await page.click('#join');
    pages[name] = page;
    return page;
  };
  const joined = async (name) => {
    const st = await poll(`${name} joined with media up`, async () => {
      const s = await pageState(pages[name]);
      return { ok: s.state === 'joined' && s.stats?.connection_state === 'connected', ...s };
    }, { timeout: 25_000 });
    return { id: st.self.participant_id, csrc: st.self.csrc };
  };
  try {
    ctl = await openControl(node.control);
    await ctl.call('events.subscribe', { room });
    const info = await ctl.call('room.create', { room, kind: 'raid', proximity: { radius: 10 }, spam_guard: { action: 'mute' } });
    assert.deepEqual(info.proximity, { radius: 10, positions: 'backend' });

    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    browsers.push(browser);
    await Promise.all(names.map((n) => openPage(browser, n)));
    const who = {};
    for (const n of names) who[n] = await joined(n);
    const started = Date.now();
    const { Ann: ann, Ben: ben, Cid: cid, Dee: dee } = pages;

    // Before any position, no one hears anyone.
    await assertSilentFor(ann, who.Ben.csrc, 1000, 'Ann hears no one before positions');

    // 1. Ann hears Ben (5 away), not Cid (40 away); Dee is far from everyone.
    const place = (positions) => ctl.call('room.set_positions', {
      room, positions: Object.fromEntries(Object.entries(positions).map(([n, p]) => [who[n].id, p])),
    });
    const placed = await place({ Ann: [0, 0, 0], Ben: [5, 0, 0], Cid: [40, 0, 0], Dee: [0, 0, 200] });
    assert.deepEqual(placed, { room, updated: 4, unknown: [] });
    await assertHearing(ann, who.Ben.csrc, 'Ann hears Ben (near)');
    await assertSilentFor(ann, who.Cid.csrc, 2000, 'Ann does not hear Cid (far)');
    await poll('Ann is told Ben is 5 away', async () => {
      const s = (await pageState(ann)).speakers.find((x) => x.participant_id === who.Ben.id);
      return s?.distance === 5;
    }, { timeout: 10_000 });

    // 2. Cid walks up: Ann hears him within a second.
    const moved = Date.now();
    await place({ Cid: [0, 6, 0] });
    await poll('Ann hears Cid once he is near', async () => (await freshSources(ann)).some((s) => s.source === who.Cid.csrc),
      { timeout: 5_000, interval: 25 });
    const heardAfter = Date.now() - moved;
    t.diagnostic(`Ann heard Cid ${heardAfter} ms after room.set_positions`);
    assert.ok(heardAfter < 1000, `Ann heard Cid ${heardAfter} ms after he came near`);

    // 3. A priority speaker is heard by everyone, 200 units away.
    await ctl.call('participant.set_permissions', { room, participant_id: who.Dee.id, priority: true });
    for (const n of ['Ann', 'Ben', 'Cid']) await assertHearing(pages[n], who.Dee.csrc, `${n} hears Dee (priority, far away)`);
    await ctl.call('participant.set_permissions', { room, participant_id: who.Dee.id, priority: false });
    await assertNotHearing(ben, who.Dee.csrc, 'Dee, no longer priority, far from Ben');

    // 4. A whisper reaches only its targets: Ben whispers to Cid; Ann (near) stops
    //    hearing him. Dee, far away, whispers to Ann: she hears her.
    await ben.evaluate((id) => window.chorus.whisper([id]), who.Cid.id);
    await dee.evaluate((id) => window.chorus.whisper([id]), who.Ann.id);
    await assertNotHearing(ann, who.Ben.csrc, 'Ben, whispering to Cid, at Ann');
    await assertHearing(cid, who.Ben.csrc, 'Cid hears Ben whisper');
    await assertHearing(ann, who.Dee.csrc, 'Ann hears Dee whisper from 200 away');
    await assertSilentFor(cid, who.Dee.csrc, 1500, 'Cid does not hear Dee\'s whisper to Ann');
    await poll('Ann sees Dee whispering to her, with no distance (200 away would tell where she is)', async () => {
      const s = (await pageState(ann)).speakers.find((x) => x.participant_id === who.Dee.id);
      return s?.whisper === true && s.distance === null;
    }, { timeout: 10_000 });
    await ben.evaluate(() => window.chorus.whisper(null));
    await dee.evaluate(() => window.chorus.whisper(null));

    // 5. A page whose mic plays a full-scale tone is flagged and server-muted within
    //    6 s of its media coming up (its own browser: the tone is a browser flag). The
    //    page turns the browser's audio processing off, as a soundboard or music user
    //    does: with it on, Chromium's noise suppression fades a steady tone by itself
    //    (-4 dBov to -19 in 2 s, measured), so what reaches the node is no blast.
    const tone = path.join(node.dir, 'tone.wav');
    writeToneWav(tone);
    const toneBrowser = await chromium.launch({
      executablePath: CHROMIUM, headless: true,
      args: [...CHROMIUM_ARGS, `--use-file-for-fake-audio-capture=${tone}`],
    });
    browsers.push(toneBrowser);
    await openPage(toneBrowser, 'Tone', '?processing=off');
    who.Tone = await joined('Tone');
    const connected = Date.now();
    const flagged = await ctl.waitEvent('spam_detected for the tone',
      (e) => e.type === 'spam_detected' && e.participant_id === who.Tone.id, 15_000);
    await ctl.waitEvent('the tone is server-muted',
      (e) => e.type === 'participant_updated' && e.participant?.participant_id === who.Tone.id && e.participant.server_muted, 10_000);
    const mutedAfter = Date.now() - connected;
    t.diagnostic(`tone flagged ${JSON.stringify(flagged)}; server-muted ${mutedAfter} ms after its media came up`);
    assert.equal(flagged.reason, 'loud');
    assert.ok(mutedAfter <= 6000, `server-muted ${mutedAfter} ms after connecting`);
    await poll('the tone page shows it was muted by the server', async () => (await pageState(pages.Tone)).self?.server_muted === true);

    // 6. The normal fake microphones are never flagged in a 60 s run.
    const left = 60_000 - (Date.now() - started);
    if (left > 0) await sleep(left);
    const normal = new Set(names.map((n) => who[n].id));
    const wrong = ctl.events.filter((e) => e.type === 'spam_detected' && normal.has(e.participant_id));
    assert.deepEqual(wrong, [], 'normal speech is never flagged');
    t.diagnostic(`normal pages unflagged for ${Math.round((Date.now() - started) / 1000)} s`);
    assert.deepEqual(consoleErrors, [], 'no console errors');
  } catch (e) {
    console.error(`--- chorus output ---\n${node.tail(60)}`);
    throw e;
  } finally {
    ctl?.close();
    for (const b of browsers) await b.close().catch(() => {});
  }
});

// Once per CI run too (tools/test.sh sets CHORUS_TURN=0 on the other runs).
const TURN = process.env.CHORUS_TURN !== '0';

/** Spawns a process, collecting its output lines into `log`; resolves once it runs. */
test('three browsers talk through a real coturn (relay only)', { timeout: 90_000, skip: !TURN && 'CHORUS_TURN=0' }, async (t) => {
  const secret = `turn-secret-${process.pid}`;
  const turnPort = await freeUdpPort();
  const turnLog = [];
  const nodeLog = [];
  let turn;
  let chorus;
  let browser;
  try {
    // coturn on loopback with REST credentials (use-auth-secret), as deployments run it.
    turn = spawnLogged('turnserver', ['-n', '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1',
      `--listening-port=${turnPort}`, '--use-auth-secret', `--static-auth-secret=${secret}`,
      '--realm=chorus.test', '--allow-loopback-peers', '--no-cli', '--no-tls', '--no-dtls',
      '--min-port=49152', '--max-port=65535', '--log-file=stdout', '--verbose', '--no-stdout-log=false'], turnLog, '[turn]');
    await poll('coturn listens', () => turnLog.some((l) => /listener opened|Total (UDP|General) servers/i.test(l)) || turnLog.length > 20, { timeout: 10_000 });

    // A node of its own that hands out the TURN server with per-participant credentials.
    const http = await freeTcpPort();
    const udp = await freeUdpPort();
    chorus = spawnLogged(CHORUS_BIN, ['serve', '--dev', '--http', `127.0.0.1:${http}`, '--udp', `127.0.0.1:${udp}`,
      '--control', 'none', '--turn-url', `turn:127.0.0.1:${turnPort}?transport=udp`, '--turn-secret', secret,
      '--stun-url', `stun:127.0.0.1:${turnPort}`], nodeLog, '[node]');
    const base = `http://127.0.0.1:${http}`;
    await poll('the TURN node answers /healthz', async () => (await fetch(`${base}/healthz`)).status === 200, { timeout: 30_000, interval: 100 });

    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const room = `turn-${process.pid}`;
    const names = ['Una', 'Vic', 'Wes'];
    const pages = {};
    await Promise.all(names.map(async (name) => {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${base}/?relay=1`);
      await page.fill('#room', room);
      await page.fill('#name', name);
      await page.click('#join');
      pages[name] = page;
    }));
    const who = {};
    for (const name of names) {
      const st = await poll(`${name} joined through TURN`, async () => {
        const s = await pageState(pages[name]);
        return { ok: s.state === 'joined' && s.stats?.connection_state === 'connected', ...s };
      }, { timeout: 30_000 });
      who[name] = { id: st.self.participant_id, csrc: st.self.csrc };
      const servers = await pages[name].evaluate(() => window.chorus.iceServers);
      const turnServer = servers.find((s) => s.urls.some((u) => u.startsWith('turn:')));
      assert.ok(turnServer, `${name} got a TURN server: ${JSON.stringify(servers)}`);
      assert.match(turnServer.username, new RegExp(`^\\d+:${st.self.participant_id}$`));
    }
    // Every page's media goes through a relay candidate, and each hears the two others.
    for (const name of names) {
      const pair = await pages[name].evaluate(async () => {
        const stats = await window.chorus.pc.getStats();
        const all = [...stats.values()];
        const transport = all.find((s) => s.type === 'transport');
        const p = all.find((s) => s.id === transport?.selectedCandidatePairId);
        const local = p && all.find((s) => s.id === p.localCandidateId);
        return { local: local?.candidateType, protocol: local?.relayProtocol ?? local?.protocol };
      });
      assert.equal(pair.local, 'relay', `${name}'s selected pair is relayed: ${JSON.stringify(pair)}`);
      for (const other of names.filter((n) => n !== name)) await assertHearing(pages[name], who[other].csrc, `${name} hears ${other} through TURN`);
    }
    // Video through the relay too: Una starts her camera on the demo page; Vic's page
    // subscribes by itself and decodes her frames, his bandwidth estimate measuring the
    // relayed path.
    await pages.Una.click('#camera');
    const tileInfo = await poll('Vic decodes Una\'s camera through TURN', async () => {
      const s = await pages.Vic.evaluate(async (id) => (await window.chorus.videoStats())
        .find((v) => v.participant_id === id), who.Una.id);
      return s && s.frames_decoded > 30 && s.frame_width >= 300 ? s : { ok: false, ...s };
    }, { timeout: 30_000 });
    t.diagnostic(`video through TURN: ${tileInfo.frame_width}×${tileInfo.frame_height}, layer ${tileInfo.layer}, ${tileInfo.frames_decoded} frames`);
    await pages.Una.click('#camera');
    // coturn itself saw the allocations, under the participants' REST usernames.
    for (const name of names) {
      assert.ok(turnLog.some((l) => l.includes(`:${who[name].id}`)),
        `coturn's log names ${name}'s username (…:${who[name].id}); last lines:\n${turnLog.slice(-15).join('\n')}`);
    }
    // Relay only on a node that hands out no TURN server: a clear refusal, not a silent
    // connection that never comes up.
    {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${node.base}/?relay=1`);
      await page.fill('#room', `${room}-noturn`);
      await page.fill('#name', 'Nia');
      await page.click('#join');
      await poll('relay without TURN is refused with no_relay', async () =>
        /no_relay/.test(await page.evaluate(() => document.querySelector('#status').textContent)), { timeout: 10_000 });
      await page.close();
    }
    const allocations = turnLog.filter((l) => /ALLOCATE processed, success/.test(l)).length;
    t.diagnostic(`coturn: ${allocations} successful allocations`);
    assert.ok(allocations >= 3, `coturn allocated for every page (${allocations})`);
  } catch (e) {
    console.error(`--- node ---\n${nodeLog.slice(-30).join('\n')}\n--- coturn ---\n${turnLog.slice(-30).join('\n')}`);
    throw e;
  } finally {
    await browser?.close().catch(() => {});
    await stop(chorus);
    await stop(turn);
  }
});

// Once per CI run too (tools/test.sh sets CHORUS_ICE_TCP=0 on the other runs).
const ICE_TCP = process.env.CHORUS_ICE_TCP !== '0';

test('a browser whose UDP is blocked joins over ICE-TCP', { timeout: 90_000, skip: !ICE_TCP && 'CHORUS_ICE_TCP=0' }, async (t) => {
  const n = 20 + (process.pid % 200);
  const ns = `chorus-tcp-${n}`;
  const host = `10.77.${n}.1`;
  const nodeLog = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'chorus-tcp-'));
  const wrapper = path.join(dir, 'chromium-in-netns.sh');
  let chorus;
  const browsers = [];
  await netns(['down', ns, String(n)]);
  await netns(['up', ns, String(n)]);
  try {
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
    // A node on every address, advertising the host side of the namespace's link.
    const http = await freeTcpPort();
    const media = await freeUdpPort();
    chorus = spawnLogged(CHORUS_BIN, ['serve', '--dev', '--http', `0.0.0.0:${http}`, '--udp', `0.0.0.0:${media}`,
      '--public-ip', host, '--control', 'none', '--log', 'info,chorus_engine::tcp=debug'], nodeLog, '[node]');
    const base = `http://${host}:${http}`;
    await poll('the node answers /healthz', async () => (await fetch(`${base}/healthz`)).status === 200, { timeout: 30_000, interval: 100 });
    // The page is not on localhost: let the microphone work on it anyway.
    const args = [...CHROMIUM_ARGS, `--unsafely-treat-insecure-origin-as-secure=${base}`];
    const caged = await chromium.launch({ executablePath: wrapper, headless: true, args });
    browsers.push(caged);
    const free = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
    browsers.push(free);
    const room = `tcp-${process.pid}`;
    const open = async (browser, name) => {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${base}/`);
      await page.fill('#room', room);
      await page.fill('#name', name);
      await page.click('#join');
      return page;
    };
    const tcp = await open(caged, 'Tess');
    const udp = await open(free, 'Ulf');
    const who = {};
    for (const [name, page] of [['Tess', tcp], ['Ulf', udp]]) {
      const st = await poll(`${name} joined with media up`, async () => {
        const s = await pageState(page);
        return { ok: s.state === 'joined' && s.stats?.connection_state === 'connected', ...s };
      }, { timeout: 30_000 });
      who[name] = { id: st.self.participant_id, csrc: st.self.csrc };
    }
    const pair = (page) => page.evaluate(async () => {
      const all = [...(await window.chorus.pc.getStats()).values()];
      const tr = all.find((s) => s.type === 'transport');
      const p = all.find((s) => s.id === tr?.selectedCandidatePairId);
      const remote = p && all.find((s) => s.id === p.remoteCandidateId);
      return { protocol: remote?.protocol, type: remote?.candidateType, tcpType: remote?.tcpType };
    });
    const tessPair = await pair(tcp);
    t.diagnostic(`Tess (UDP blocked): ${JSON.stringify(tessPair)}; Ulf: ${JSON.stringify(await pair(udp))}`);
    assert.equal(tessPair.protocol, 'tcp', `Tess reaches the node over TCP: ${JSON.stringify(tessPair)}`);
    assert.equal((await pair(udp)).protocol, 'udp', 'Ulf stays on UDP');
    await assertHearing(tcp, who.Ulf.csrc, 'Tess (TCP) hears Ulf (UDP)');
    await assertHearing(udp, who.Tess.csrc, 'Ulf hears Tess (TCP)');
    assert.ok(nodeLog.some((l) => l.includes('ICE-TCP connection bound') && l.includes(who.Tess.id)),
      'the node bound a TCP connection to Tess');
    // Video both ways over the TCP connection: Tess's camera to Ulf, Ulf's to Tess
    // (each page subscribes by itself).
    await tcp.click('#camera');
    await udp.click('#camera');
    for (const [page, from, what] of [[udp, who.Tess.id, 'Ulf decodes Tess\'s camera (sent over TCP)'],
      [tcp, who.Ulf.id, 'Tess decodes Ulf\'s camera (received over TCP)']]) {
      const s = await poll(what, async () => {
        const v = await page.evaluate(async (id) => (await window.chorus.videoStats())
          .find((x) => x.participant_id === id), from);
        return v && v.frames_decoded > 30 && v.frame_width >= 300 ? v : { ok: false, ...v };
      }, { timeout: 30_000 });
      t.diagnostic(`${what}: ${s.frame_width}×${s.frame_height}, layer ${s.layer}`);
    }
    await tcp.click('#camera');
    await udp.click('#camera');
    // Mute, deafen and leave work over TCP as over UDP.
    await tcp.click('#mute');
    await assertNotHearing(udp, who.Tess.csrc, 'Tess, muted');
    await tcp.click('#mute');
    await assertHearing(udp, who.Tess.csrc, 'Tess, unmuted');
    await tcp.click('#deafen');
    await poll('Ulf sees Tess deafened', async () => (await rowView(udp, who.Tess.id))?.badges.includes('deafened'));
    await tcp.click('#leave');
    await poll('Ulf sees Tess leave', async () => !(await pageState(udp)).rows.some((r) => r.id === who.Tess.id));
  } catch (e) {
    console.error(`--- node ---\n${nodeLog.slice(-40).join('\n')}`);
    throw e;
  } finally {
    for (const b of browsers) await b.close().catch(() => {});
    await stop(chorus);
    await netns(['down', ns, String(n)]).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
});

test('signaling rejects bad messages without closing the socket', { timeout: 30_000 }, async () => {
  const url = `ws://127.0.0.1:${node.http}/v1/signal`;
  const s = await openRawSocket(url);
  try {
    s.send('not json');
    let m = await s.next();
    assert.equal(m?.type, 'error', `"not json" → error, got ${JSON.stringify(m)}`);
    assert.equal(m.code, 'bad_request', `"not json" → bad_request, got ${JSON.stringify(m)}`);

    s.send({ type: 'nope' });
    m = await s.next();
    assert.equal(m?.type, 'error', `{"type":"nope"} → error, got ${JSON.stringify(m)}`);
    assert.equal(m.code, 'bad_request', `{"type":"nope"} → bad_request, got ${JSON.stringify(m)}`);

    s.send({ type: 'mute', muted: true });
    m = await s.next();
    assert.equal(m?.type, 'error', `mute before join → error, got ${JSON.stringify(m)}`);
    assert.equal(m.code, 'not_joined', `mute before join → not_joined, got ${JSON.stringify(m)}`);

    assert.equal(s.closed, null, 'socket still open after errors');
    // The socket still answers. A ping before join is "another valid message before
    // join" (docs/protocol.md): not_joined, and the socket stays open.
    s.send({ type: 'ping', id: 7 });
    m = await s.next();
    assert.equal(m?.code, 'not_joined', `ping before join → not_joined, got ${JSON.stringify(m)}`);

    // Still usable: join, ping, leave → closed with 1000.
    s.send({ type: 'join', room: `raw-${process.pid}`, name: 'Raw' });
    m = await s.next();
    assert.equal(m?.type, 'joined', `join → joined, got ${JSON.stringify(m)}`);
    assert.ok(m.csrc > 0 && typeof m.participant_id === 'string' && m.audio_slots > 0, `joined fields: ${JSON.stringify(m)}`);
    assert.deepEqual(m.participants, [], 'alone in a fresh room');
    s.send({ type: 'ping', id: 8 });
    m = await s.nextOf(['pong']);
    assert.deepEqual(m, { type: 'pong', id: 8 });
    s.send({ type: 'leave' });
    const closed = await Promise.race([s.closedPromise(), sleep(5000).then(() => null)]);
    assert.equal(closed?.code, 1000, `leave → close 1000, got ${JSON.stringify(closed)}`);
  } catch (e) {
    console.error(`--- chorus output (tail) ---\n${node.tail(40)}`);
    throw e;
  } finally {
    try { s.ws.close(); } catch { /* closed */ }
  }
});
