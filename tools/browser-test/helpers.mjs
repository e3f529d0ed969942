// What the browser tests share: Chromium's flags, free ports, polling, running a
// node (or coturn) as a child process with its output kept, the node's control socket,
// and netns.sh.
import { spawn } from 'node:child_process';
import net from 'node:net';
import dgram from 'node:dgram';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Runs netns.sh (network namespaces, tc, nftables) with `args`; rejects with its stderr. */
export function netns(args) {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [path.join(HERE, 'netns.sh'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`netns.sh ${args.join(' ')}: ${code} ${err}`))));
  });
}

/** Headless Chromium with fake devices, loopback ICE and no mDNS hiding. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
];

export function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    sock.once('error', reject);
    sock.bind(0, '127.0.0.1', () => {
      const { port } = sock.address();
      sock.close(() => resolve(port));
    });
  });
}

/**
 * Poll `fn` until it returns a truthy value (an object counts unless its `ok` is false);
 * throws with `what` and the last value on timeout, at once on an error marked `fatal`.
 */
export async function poll(what, fn, { timeout = 15_000, interval = 200 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      if (last && (typeof last !== 'object' || last.ok !== false)) return last;
    } catch (e) {
      if (e.fatal) throw e;
      lastErr = e;
    }
    if (Date.now() > deadline) {
      const detail = lastErr ? `last error: ${lastErr.message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeout} ms waiting for: ${what} (${detail})`);
    }
    await sleep(interval);
  }
}

/** Runs `bin args`, its output lines pushed to `log` (prefixed with `tag`, if any). */
export function spawnLogged(bin, args, log, tag = '') {
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'info', ...process.env } });
  const collect = (chunk) => {
    for (const line of String(chunk).split('\n')) if (line) log.push(tag ? `${tag} ${line}` : line);
    if (log.length > 4000) log.splice(0, log.length - 4000);
  };
  proc.stdout.on('data', collect);
  proc.stderr.on('data', collect);
  return proc;
}

/** SIGTERM, then SIGKILL after 3 s; resolves once it exited (at once if it has, by a signal too). */
export function stop(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch { /* gone */ } }, 3000);
    proc.once('exit', () => { clearTimeout(t); resolve(); });
    try { proc.kill('SIGTERM'); } catch { clearTimeout(t); resolve(); }
  });
}

/**
 * A JSON-RPC 2.0 client on the node's control socket (one JSON object per line).
 * `call` resolves with `result` or rejects with an Error carrying `rpc` (the error
 * object); event notifications (after `events.subscribe`) collect in `events`.
 */
export function openControl(socketPath) {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    const pending = new Map();
    const events = [];
    let buf = '';
    let nextId = 1;
    let closed = null;
    sock.setEncoding('utf8');
    sock.on('error', (e) => { closed = e; reject(e); });
    sock.on('close', () => {
      closed ??= new Error('control socket closed');
      for (const p of pending.values()) p.reject(closed);
      pending.clear();
    });
    sock.on('data', (chunk) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        let msg;
        try { msg = JSON.parse(line); } catch { events.push({ type: 'unparsable', line }); continue; }
        if (msg.method === 'event' && msg.id === undefined) {
          events.push(msg.params);
        } else if (pending.has(msg.id)) {
          const p = pending.get(msg.id);
          pending.delete(msg.id);
          if (msg.error) {
            p.reject(Object.assign(new Error(`${p.method}: ${msg.error.message} (${msg.error.data?.name ?? msg.error.code})`), { rpc: msg.error }));
          } else {
            p.resolve(msg.result);
          }
        }
      }
    });
    sock.once('connect', () => resolve({
      events,
      call(method, params) {
        if (closed) return Promise.reject(closed);
        const id = nextId++;
        const req = { jsonrpc: '2.0', id, method, ...(params ? { params } : {}) };
        return new Promise((res, rej) => {
          pending.set(id, { method, resolve: res, reject: rej });
          sock.write(`${JSON.stringify(req)}\n`);
        });
      },
      /** The first event so far matching `pred`, polled until it arrives. */
      async waitEvent(what, pred, timeout = 10_000) {
        try {
          return await poll(`event: ${what}`, () => events.find(pred) ?? null, { timeout, interval: 50 });
        } catch (e) {
          const seen = events.slice(-15).map((ev) => JSON.stringify(ev)).join('\n  ');
          throw new Error(`${e.message}; last events:\n  ${seen}`);
        }
      },
      close() { sock.destroy(); },
    }));
  });
}
