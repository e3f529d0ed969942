// The small real room: PAGES headless Chromium pages join one room through the node's
// demo page, each publishing the fake microphone and hearing the others; once every
// page hears all the others, it measures the node's CPU time (/proc/PID/stat utime +
// stime, all threads) and the UDP datagrams sent in the node's network namespace
// (/proc/PID/net/snmp `Udp: OutDatagrams`, i.e. the namespace of NODE_PID) over
// WINDOW seconds, and prints one JSON line. Run by tools/bench/small-room.sh, which
// puts the node alone in its own network namespace and this script (and Chromium) in
// another.
//
// Env: BASE (http://IP:PORT of the node), NODE_PID, PAGES (6), WINDOW (30), WARMUP (5),
//      CHROMIUM (/usr/bin/chromium), ROOM.
import { createRequire } from 'node:module';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// playwright-core lives in tools/browser-test/node_modules (npm ci there).
const require = createRequire(path.join(HERE, '..', 'browser-test', 'package.json'));
const { chromium } = require('playwright-core');

const BASE = process.env.BASE;
const NODE_PID = Number(process.env.NODE_PID);
const PAGES = Number(process.env.PAGES || 6);
const WINDOW = Number(process.env.WINDOW || 30);
const WARMUP = Number(process.env.WARMUP || 5);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ROOM = process.env.ROOM || `small-${process.pid}`;
if (!BASE || !NODE_PID) throw new Error('BASE and NODE_PID are required');

const ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
  // getUserMedia needs a secure context; the node's origin is plain http off localhost.
  `--unsafely-treat-insecure-origin-as-secure=${BASE}`,
];

const TICK = 100; // CLK_TCK (getconf CLK_TCK) on Linux x86-64
function nodeCpuSeconds() {
  const s = readFileSync(`/proc/${NODE_PID}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // fields after the comm: state(3) ... utime(14) stime(15) → index 11, 12 here
  return { user: Number(f[11]) / TICK, sys: Number(f[12]) / TICK };
}
function udpCounters() {
  const lines = readFileSync(`/proc/${NODE_PID}/net/snmp`, 'utf8').split('\n').filter((l) => l.startsWith('Udp:'));
  const keys = lines[0].split(/\s+/).slice(1);
  const vals = lines[1].split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(keys.map((k, i) => [k, vals[i]]));
}
const slotPackets = (page) => page.evaluate(async () => (await window.chorus.stats()).slots.map((s) => s.packets_received));
const heardCsrcs = (page) => page.evaluate(() => window.chorus.contributingSources()
  .filter((s) => s.ageMs < 1000).map((s) => s.source));

async function poll(what, fn, timeout) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn().catch((e) => ({ ok: false, error: String(e) }));
    if (last.ok) return last;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}: ${JSON.stringify(last)}`);
    await sleep(250);
  }
}

const profile = mkdtempSync(path.join(os.tmpdir(), 'small-room-'));
let browser;
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const pages = [];
  for (let i = 0; i < PAGES; i++) {
    const ctx = await browser.newContext({ viewport: { width: 800, height: 600 } });
    pages.push(await ctx.newPage());
  }
  const t0 = Date.now();
  // Join via the demo page UI, as call.test.mjs does (one after the other: a join-rate
  // limit of 10/s per IP holds all pages, which share one address).
  const csrc = [];
  for (let i = 0; i < PAGES; i++) {
    const p = pages[i];
    await p.goto(`${BASE}/`);
    await p.fill('#room', ROOM);
    await p.fill('#name', `p${i}`);
    await p.click('#join');
  }
  for (let i = 0; i < PAGES; i++) {
    const st = await poll(`page ${i} joined`, async () => {
      const s = await pages[i].evaluate(() => ({ state: window.chorus?.state, self: window.chorus?.self ?? null,
        csrc: window.chorus?.csrc ?? window.chorus?.self?.csrc ?? null }));
      return { ok: s.state === 'joined', ...s };
    }, 30_000);
    csrc.push(st.csrc);
  }
  // Every page hears every other: PAGES-1 slots growing and (when the client exposes
  // its own csrc) the others' CSRCs present.
  for (let i = 0; i < PAGES; i++) {
    const base = await slotPackets(pages[i]);
    await poll(`page ${i} hears the ${PAGES - 1} others`, async () => {
      const now = await slotPackets(pages[i]);
      const growing = now.filter((n, k) => n > (base[k] ?? 0) + 5).length;
      const heard = new Set(await heardCsrcs(pages[i]));
      const others = csrc.filter((c, k) => k !== i && c != null);
      const missing = others.filter((c) => !heard.has(c));
      return { ok: growing >= PAGES - 1 && missing.length === 0, growing, missing, now };
    }, 40_000);
  }
  const setupS = (Date.now() - t0) / 1000;
  await sleep(WARMUP * 1000);

  const before = { cpu: nodeCpuSeconds(), udp: udpCounters(), slots: await Promise.all(pages.map(slotPackets)), t: process.hrtime.bigint() };
  await sleep(WINDOW * 1000);
  const after = { cpu: nodeCpuSeconds(), udp: udpCounters(), slots: await Promise.all(pages.map(slotPackets)), t: process.hrtime.bigint() };

  const secs = Number(after.t - before.t) / 1e9;
  const user = after.cpu.user - before.cpu.user;
  const sys = after.cpu.sys - before.cpu.sys;
  const out = after.udp.OutDatagrams - before.udp.OutDatagrams;
  const inn = after.udp.InDatagrams - before.udp.InDatagrams;
  const received = after.slots.map((s, i) => s.reduce((a, b) => a + b, 0) - before.slots[i].reduce((a, b) => a + b, 0));
  const sum = received.reduce((a, b) => a + b, 0);
  console.log(JSON.stringify({
    pages: PAGES, window_s: Number(secs.toFixed(2)), setup_s: setupS,
    node_cpu_s: Number((user + sys).toFixed(2)), node_user_s: Number(user.toFixed(2)), node_sys_s: Number(sys.toFixed(2)),
    node_cpu_pct: Number((100 * (user + sys) / secs).toFixed(2)),
    udp_out_datagrams: out, udp_in_datagrams: inn,
    udp_out_per_s: Number((out / secs).toFixed(1)), udp_in_per_s: Number((inn / secs).toFixed(1)),
    cpu_us_per_sent_datagram: Number((1e6 * (user + sys) / out).toFixed(2)),
    cpu_us_per_datagram_in_or_out: Number((1e6 * (user + sys) / (out + inn)).toFixed(2)),
    browsers_slot_packets_received: sum, browsers_slot_pps: Number((sum / secs).toFixed(1)),
    per_page_slot_pps: received.map((r) => Number((r / secs).toFixed(1))),
    udp_errors: { RcvbufErrors: after.udp.RcvbufErrors - before.udp.RcvbufErrors, SndbufErrors: after.udp.SndbufErrors - before.udp.SndbufErrors },
  }));
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
