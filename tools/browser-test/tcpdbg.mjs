import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
const node = spawn('/work/main/target/debug/chorus', ['serve','--dev','--http','0.0.0.0:18999','--udp','0.0.0.0:18998','--public-ip','10.77.9.1','--control','none','--log','info,chorus_engine=debug'], {stdio:['ignore','ignore','pipe']});
let log=''; node.stderr.on('data', d => { log += d; });
await sleep(1500);
const args = ['--no-sandbox','--use-fake-ui-for-media-stream','--use-fake-device-for-media-stream','--allow-loopback-in-peer-connection','--disable-features=WebRtcHideLocalIpsWithMdns','--autoplay-policy=no-user-gesture-required','--unsafely-treat-insecure-origin-as-secure=http://10.77.9.1:18999'];
const b1 = await chromium.launch({ executablePath: '/tmp/chromium-ns.sh', headless: true, args });
const b2 = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args });
const t = await b1.newPage(); const l = await b2.newPage();
t.on('console', m => console.log('[tcp page]', m.text()));
for (const [p, n] of [[t,'Tcp'],[l,'Udp']]) { await p.goto('http://10.77.9.1:18999/'); await p.fill('#room','dbg'); await p.fill('#name', n); await p.click('#join'); }
await sleep(8000);
for (const p of [t, l]) {
  const r = await p.evaluate(async () => {
    const c = window.chorus; if (!c.pc) return { state: c.state, status: document.querySelector('#status').textContent };
    const stats = await c.pc.getStats(); const all=[...stats.values()];
    const tr = all.find(s => s.type==='transport'); const pair = all.find(s => s.id === tr?.selectedCandidatePairId);
    const loc = pair && all.find(s => s.id === pair.localCandidateId); const rem = pair && all.find(s => s.id === pair.remoteCandidateId);
    return { state: c.pc.connectionState, local: loc && [loc.candidateType, loc.protocol], remote: rem && [rem.candidateType, rem.protocol, rem.port], csrc: c.contributingSources().map(s => [s.source, Math.round(s.ageMs)]) };
  });
  console.log(JSON.stringify(r));
}
await b1.close(); await b2.close(); node.kill();
console.log(log.split('\n').filter(l => /TCP|tcp|nominated|WARN|ERROR/.test(l)).slice(0, 14).join('\n'));
