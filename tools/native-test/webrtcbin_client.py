#!/usr/bin/python3 -u
"""Two native WebRTC clients (GStreamer webrtcbin) talk through one Chorus room.

What it tests: that a non-browser WebRTC stack can use Chorus as docs/protocol.md
describes it. Each of two clients, alice (a 440 Hz tone) and bob (660 Hz),

  1. opens ws://…/v1/signal and sends `join` (a --dev node needs no token, §1, §4);
  2. builds one webrtcbin with one sendonly audio transceiver (its "microphone": the
     tone, Opus) and `audio_slots` recvonly transceivers (§8.2), offers, applies the
     node's `answer` (§5), and trickles its candidates as `candidate` messages (§4);
  3. connects ICE (the node is ICE-lite, the client controls) and DTLS-SRTP (§8.1);
  4. decodes what arrives on its slots to S16 PCM and checks that it hears the OTHER
     client: the dominant frequency is the other's tone (zero crossings, and a
     Goertzel filter at both tones: its own must be absent), the stream came on a slot
     the answer named, and its RTP packets carry exactly one CSRC, the other
     participant's `csrc` (§8.4).

Why: browsers are not the only clients (game engines embed libwebrtc or GStreamer),
and webrtcbin differs from Chromium: in its SDP (no `/2` on Opus unless the caps say
encoding-params=2; port 0 + a=bundle-only under max-bundle, its default; no a=ssrc
for a source whose caps have not arrived yet; no MID header extension unless asked),
in its DTLS certificate (RSA-2048, not ECDSA) and in its ICE agent
(libnice). A pure tone makes "heard the other one" checkable, which "some energy" is not.

Usage: webrtcbin_client.py --url ws://127.0.0.1:7880/v1/signal [--room R] [--timeout 60]
           [--bundle-policy max-bundle|max-compat|balanced] [--mid-extension]
           [--wait-for-caps]
Logs every signaling message and webrtcbin state change (seconds since start), then
PASS or FAIL with the furthest stage each client reached; exits 0 only on PASS.
Needs Debian's python3-gi, gir1.2-gst-plugins-{base,bad}-1.0, gstreamer1.0-plugins-
{base,good,bad}, gstreamer1.0-nice and python3-websockets (see run.sh next to it).
"""

import argparse
import array
import asyncio
import faulthandler
import json
import math
import os
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstRtp", "1.0")
from gi.repository import Gst, GstRtp, GstSdp, GstWebRTC  # noqa: E402

import websockets  # noqa: E402

RATE = 48000
# Analyse this much decoded audio per client, after skipping the start (decoder and
# jitter buffer settling, Opus's fade-in).
SKIP_SECONDS = 0.3
ANALYSE_SECONDS = 1.0
OPUS_PT = 111
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"

# webrtcbin's max-bundle (its default; balanced too, with one media type) offers every
# m-section after the first with port 0 and a=bundle-only (JSEP, RFC 8829; RFC 8843),
# which the node takes as open and bundled; max-compat writes port 9 everywhere plus a
# BUNDLE group.
BUNDLE_POLICIES = {
    "max-compat": GstWebRTC.WebRTCBundlePolicy.MAX_COMPAT,
    "max-bundle": GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE,
    "balanced": GstWebRTC.WebRTCBundlePolicy.BALANCED,
}

T0 = time.monotonic()


def log(who, what):
    print(f"[{time.monotonic() - T0:7.3f}] {who:>5}: {what}", flush=True)


# ---------------------------------------------------------------- tone analysis


def goertzel_power(samples, freq):
    """Power of `samples` (floats) at `freq` Hz: one DFT bin, computed directly."""
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def zero_crossing_freq(samples):
    """Frequency estimated from sign changes: a sine crosses zero twice per period."""
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings * RATE / (2.0 * len(samples))


def analyse(pcm_bytes, own_freq, other_freq):
    """Is decoded S16LE mono PCM the other client's tone? Returns (ok, description)."""
    pcm = array.array("h")
    pcm.frombytes(pcm_bytes)
    samples = [s / 32768.0 for s in pcm]
    rms = math.sqrt(sum(x * x for x in samples) / len(samples))
    zcr = zero_crossing_freq(samples)
    ratio = goertzel_power(samples, other_freq) / max(goertzel_power(samples, own_freq), 1e-12)
    text = (f"rms {rms:.3f}, zero-crossing frequency {zcr:.1f} Hz, power at "
            f"{other_freq} Hz / {own_freq} Hz = {ratio:.3g}")
    ok = rms > 0.01 and abs(zcr - other_freq) < 0.05 * other_freq and ratio > 100
    return ok, text


# ---------------------------------------------------------------- GStreamer glue


async def await_promise(loop, emit):
    """Calls `emit(promise)` (a webrtcbin action signal) and awaits the promise's reply."""
    fut = loop.create_future()

    def done(promise):
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(promise.get_reply()))

    emit(Gst.Promise.new_with_change_func(done))
    return await fut


def opus_caps(extra=""):
    """RTP caps for Opus as the node wants them: 48 kHz, two channels named (`/2`)."""
    return Gst.Caps.from_string(
        "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,"
        f"payload={OPUS_PT},encoding-params=(string)2{extra}")


def header_extension(uri, ext_id):
    ext = GstRtp.RTPHeaderExtension.create_from_uri(uri)
    ext.set_id(ext_id)
    return ext


def enum_name(value):
    return value.value_nick if hasattr(value, "value_nick") else str(value)


def show_dtls_errors():
    """Logs GStreamer's DTLS errors, which carry OpenSSL's reason (e.g. the alert the
    node sent); webrtcbin's states only say "failed". Other GStreamer logging goes to
    stderr as GST_DEBUG says, if set."""
    Gst.debug_set_threshold_for_name("dtlsconnection", Gst.DebugLevel.ERROR)
    if not os.environ.get("GST_DEBUG"):
        Gst.debug_remove_log_function(None)  # the default one, which would repeat them

    def on_log(category, level, _file, _function, _line, obj, message, *_user):
        if category.get_name() == "dtlsconnection" and level == Gst.DebugLevel.ERROR:
            name = obj.get_name() if isinstance(obj, Gst.Object) else "?"
            log("dtls", f"{name}: {message.get()}")

    Gst.debug_add_log_function(on_log, None)


# ---------------------------------------------------------------- one client


class Client:
    """One participant: a signaling WebSocket and one webrtcbin."""

    STAGES = ["connect", "joined", "offer sent", "answer applied", "ICE connected",
              "DTLS connected", "media on a slot", "heard the other's tone"]

    def __init__(self, name, freq, other_freq, args):
        self.name, self.freq, self.other_freq = name, freq, other_freq
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.stage = -1
        self.failure = None  # why this client got no further
        self.heard = self.loop.create_future()  # (ok, description): the verdict
        self.ws = self.reader = None
        self.waiters = {}  # message type -> future of the next such message
        self.joined = None
        self.slots = []  # the answer's slot mids, in slot order
        self.peer_csrcs = {}  # csrc -> name, from `joined` and `participant_joined`
        self.pipe = self.webrtc = self.mid_ext = None
        self.mids = []  # the offer's mids by m-line index
        self.lock = threading.Lock()  # guards what streaming threads fill in below
        self.pcm = bytearray()  # decoded audio of the first slot that delivers any
        self.pcm_mid = None
        self.csrcs_seen = set()
        self.stopping = False

    def reached(self, index, detail=""):
        if index > self.stage:
            self.stage = index
            log(self.name, f"stage: {self.STAGES[index]}{' (' + detail + ')' if detail else ''}")

    def fail(self, why):
        if self.failure is None and not self.heard.done():
            self.failure = why
            log(self.name, f"FAILURE: {why}")
            self.heard.set_result((False, why))

    def fail_threadsafe(self, why):
        self.loop.call_soon_threadsafe(self.fail, why)

    # ------------------------------------------------------------ signaling

    async def send(self, msg):
        shown = {k: (f"<{len(v)} bytes>" if k == "sdp" else v) for k, v in msg.items()}
        log(self.name, f"-> {json.dumps(shown)}")
        await self.ws.send(json.dumps(msg))

    def send_threadsafe(self, msg):
        asyncio.run_coroutine_threadsafe(self.send(msg), self.loop)

    async def expect(self, mtype):
        """The next message of `mtype`; an `error` or a closed socket raises instead."""
        fut = self.loop.create_future()
        self.waiters[mtype] = fut
        return await fut

    def wake_waiters(self, why):
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(RuntimeError(why))
        self.waiters.clear()

    async def read_messages(self):
        """Logs every message from the node and hands it to whoever waits for its type."""
        try:
            async for raw in self.ws:
                self.on_message(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        why = f"signaling closed: {self.ws.close_code} {self.ws.close_reason!r}"
        log(self.name, why)
        self.fail(why)
        self.wake_waiters(why)

    def on_message(self, msg):
        mtype = msg.get("type")
        if mtype == "answer":
            log(self.name, f"<- answer: slots {msg.get('slots')}, {len(msg.get('sdp', ''))} bytes of SDP")
        elif mtype == "speakers":
            log(self.name, "<- speakers " + json.dumps(
                [(s["participant_id"], s["level"], s["slot"]) for s in msg["speakers"]]))
        else:
            log(self.name, f"<- {json.dumps(msg)}")
        if mtype == "participant_joined":
            p = msg["participant"]
            self.peer_csrcs[p["csrc"]] = p["name"]
        if mtype == "error":
            why = f"the node sent error {msg.get('code')}: {msg.get('message')}"
            self.fail(why)
            self.wake_waiters(why)
            return
        fut = self.waiters.pop(mtype, None)
        if fut and not fut.done():
            fut.set_result(msg)

    async def join(self):
        """Opens the socket and joins the room (§4 `join`; a --dev node needs no token)."""
        self.ws = await websockets.connect(self.args.url, max_size=2**20)
        self.reached(0, self.args.url)
        self.reader = asyncio.create_task(self.read_messages())
        await self.send({"type": "join", "room": self.args.room, "name": self.name})
        self.joined = await self.expect("joined")
        for p in self.joined["participants"]:
            self.peer_csrcs[p["csrc"]] = p["name"]
        self.reached(1, f"{self.joined['participant_id']}, csrc {self.joined['csrc']}, "
                        f"{self.joined['audio_slots']} slots")

    # ------------------------------------------------------------ media pipeline

    def build_pipeline(self):
        """webrtcbin fed by a sine tone: sendonly mic + `audio_slots` recvonly slots (§8.2)."""
        self.pipe = Gst.Pipeline.new(f"pipe-{self.name}")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", BUNDLE_POLICIES[self.args.bundle_policy])
        self.webrtc.set_property("latency", 50)
        self.pipe.add(self.webrtc)
        mic = self.build_mic()
        self.pipe.add(mic)
        mic.link(self.webrtc)  # requests sink_0: the first transceiver, m-line 0

        mic_tx = self.webrtc.emit("get-transceiver", 0)
        mic_tx.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        for _ in range(self.joined["audio_slots"]):
            self.webrtc.emit("add-transceiver",
                             GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, opus_caps())

        self.webrtc.connect("on-ice-candidate", self.on_ice_candidate)
        self.webrtc.connect("pad-added", self.on_pad_added)
        for prop in ("signaling-state", "ice-gathering-state", "ice-connection-state",
                     "connection-state"):
            self.webrtc.connect(f"notify::{prop}", self.on_state)
        bus = self.pipe.get_bus()
        bus.enable_sync_message_emission()
        bus.connect("sync-message", self.on_bus_message)

    def build_mic(self):
        """The tone, Opus-encoded and payloaded with the header extensions to offer.

        RFC 6464 audio levels (from `level`'s GstAudioLevelMeta): without them the node
        never counts this client as speaking (§8.2). The RFC 8843 MID extension only
        with --mid-extension: by default the node must find the microphone's stream by
        its SSRC (the offer's a=ssrc, or, without one, the RTP that arrives), which
        browsers (always sending MID) never make it do.
        webrtcbin offers the extmaps it finds in the caps it queries, so the capsfilter
        names them in the very form the payloader writes.
        """
        mic = Gst.parse_bin_from_description(
            f"audiotestsrc is-live=true wave=sine freq={self.freq} volume=0.3 ! "
            "audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 ! "
            "level audio-level-meta=true post-messages=false ! "
            "opusenc bitrate=32000 frame-size=20 ! "
            f"rtpopuspay name=pay pt={OPUS_PT} ! capsfilter name=rtpcaps", True)
        pay = mic.get_by_name("pay")
        extmaps = f',extmap-1=(string)< "", {AUDIO_LEVEL_URI}, "vad\\=on" >'
        pay.emit("add-extension", header_extension(AUDIO_LEVEL_URI, 1))
        if self.args.mid_extension:
            extmaps += f",extmap-2=(string){MID_URI}"
            self.mid_ext = header_extension(MID_URI, 2)  # its mid is set once offered
            pay.emit("add-extension", self.mid_ext)
        mic.get_by_name("rtpcaps").set_property("caps", opus_caps(extmaps))
        return mic

    def on_state(self, webrtc, pspec):
        if self.stopping:
            return
        value = enum_name(webrtc.get_property(pspec.name))
        self.loop.call_soon_threadsafe(self.state_changed, pspec.name, value)

    def state_changed(self, prop, value):
        log(self.name, f"webrtcbin {prop} = {value}")
        if prop == "ice-connection-state" and value in ("connected", "completed"):
            self.reached(4)
        elif prop == "connection-state" and value == "connected":
            self.reached(5)
        elif value == "failed" and prop in ("ice-connection-state", "connection-state"):
            if self.stage >= 4:
                self.fail("the DTLS handshake failed after ICE connected (see the dtls lines)")
            else:
                self.fail(f"webrtcbin {prop} failed before ICE connected")

    def on_dtls_state(self, transport, _pspec):
        if self.stopping:
            return
        value = enum_name(transport.get_property("state"))
        self.loop.call_soon_threadsafe(log, self.name, f"DTLS transport state = {value}")

    def on_bus_message(self, _bus, message):
        if message.type == Gst.MessageType.ERROR:
            err, debug = message.parse_error()
            self.fail_threadsafe(f"GStreamer error from {message.src.get_name()}: {err.message} ({debug})")
        elif message.type == Gst.MessageType.WARNING:
            err, _debug = message.parse_warning()
            self.loop.call_soon_threadsafe(
                log, self.name, f"GStreamer warning from {message.src.get_name()}: {err.message}")

    def on_ice_candidate(self, _webrtc, mline, candidate):
        """Trickles each local candidate (§4 `candidate`; harmless to an ICE-lite node)."""
        mid = self.mids[mline] if mline < len(self.mids) else None
        self.send_threadsafe({"type": "candidate", "candidate": candidate, "sdp_mid": mid})

    # ------------------------------------------------------------ offer / answer

    async def mic_caps(self):
        """Waits for the microphone's caps to reach webrtcbin (--wait-for-caps). An offer
        created before then has no a=ssrc for the microphone (a race in webrtcbin); the
        node then maps the microphone's stream by the SSRC of the RTP that arrives."""
        pad = self.webrtc.get_static_pad("sink_0")
        for _ in range(500):
            caps = pad.get_current_caps()
            if caps is not None:
                return caps
            await asyncio.sleep(0.01)
        raise RuntimeError("the microphone's caps did not reach webrtcbin within 5 s")

    async def negotiate(self):
        """Offers, applies the node's answer (§2 steps 3–4), then watches DTLS."""
        if self.args.wait_for_caps:
            await self.mic_caps()
        reply = await await_promise(self.loop, lambda p: self.webrtc.emit("create-offer", None, p))
        offer = reply.get_value("offer")
        sdp = offer.sdp.as_text()
        lines = sdp.split("\r\n")
        self.mids = [l[len("a=mid:"):] for l in lines if l.startswith("a=mid:")]
        log(self.name, "offer: " + " | ".join(l for l in lines if l.startswith(
            ("m=", "a=sendonly", "a=recvonly", "a=sendrecv", "a=mid", "a=extmap", "a=bundle-only"))))
        if self.mid_ext is not None:
            self.mid_ext.set_property("mid", self.mids[0])
        await await_promise(self.loop, lambda p: self.webrtc.emit("set-local-description", offer, p))
        await self.send({"type": "offer", "sdp": sdp})
        self.reached(2)
        answer = await self.expect("answer")
        self.slots = answer["slots"]
        result, parsed = GstSdp.SDPMessage.new_from_text(answer["sdp"])
        if result != GstSdp.SDPResult.OK:
            raise RuntimeError(f"cannot parse the answer's SDP: {result}")
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, parsed)
        await await_promise(self.loop, lambda p: self.webrtc.emit("set-remote-description", desc, p))
        self.reached(3, f"slots {self.slots}")
        if not self.slots:
            self.fail("the answer names no slots: the node will send this client nothing")
        self.watch_dtls()

    def watch_dtls(self):
        """Follows the (bundled) DTLS transport's state, which webrtcbin's states hide."""
        tx = self.webrtc.emit("get-transceiver", 0)
        transport = tx.get_property("receiver").get_property("transport")
        if transport is not None:
            transport.connect("notify::state", self.on_dtls_state)

    # ------------------------------------------------------------ receiving

    def on_pad_added(self, _webrtc, pad):
        """A slot started to deliver RTP: depayload, decode, collect PCM and CSRCs."""
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        tx = pad.get_property("transceiver")
        mid = tx.get_property("mid") if tx else None
        decode = Gst.parse_bin_from_description(
            "queue ! rtpopusdepay name=depay ! opusdec ! audioconvert ! audioresample ! "
            "audio/x-raw,format=S16LE,channels=1,rate=48000 ! "
            "appsink name=sink emit-signals=true sync=false", True)
        decode.get_by_name("depay").get_static_pad("sink").add_probe(
            Gst.PadProbeType.BUFFER, self.on_rtp_buffer)
        decode.get_by_name("sink").connect("new-sample", self.on_sample, mid)
        self.pipe.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))
        self.loop.call_soon_threadsafe(self.slot_started, pad.get_name(), mid)

    def slot_started(self, pad_name, mid):
        log(self.name, f"receiving on {pad_name}, mid {mid}")
        if mid in self.slots:
            self.reached(6, f"slot {self.slots.index(mid)}, mid {mid}")
        else:
            self.fail(f"audio arrived on mid {mid}, which the answer's slots {self.slots} do not name")

    def on_rtp_buffer(self, _pad, info):
        """Records the CSRC lists of received RTP packets (§8.4: one, the speaker's)."""
        ok, rtp = GstRtp.RTPBuffer.map(info.get_buffer(), Gst.MapFlags.READ)
        if ok:
            csrcs = tuple(rtp.get_csrc(i) for i in range(rtp.get_csrc_count()))
            rtp.unmap()
            with self.lock:
                self.csrcs_seen.add(csrcs)
        return Gst.PadProbeReturn.OK

    def on_sample(self, sink, mid):
        """Collects the first slot's PCM; hands it to check_tone once there is enough."""
        buf = sink.emit("pull-sample").get_buffer()
        data = buf.extract_dup(0, buf.get_size())
        need = int((SKIP_SECONDS + ANALYSE_SECONDS) * RATE) * 2
        with self.lock:
            if self.pcm_mid is None:
                self.pcm_mid = mid
            if mid == self.pcm_mid and len(self.pcm) < need:
                self.pcm.extend(data)
                if len(self.pcm) >= need:
                    pcm = bytes(self.pcm[int(SKIP_SECONDS * RATE) * 2:need])
                    self.loop.call_soon_threadsafe(self.check_tone, pcm)
        return Gst.FlowReturn.OK

    def check_tone(self, pcm):
        """The verdict: the other's tone, from the other participant (its CSRC)."""
        ok, text = analyse(pcm, self.freq, self.other_freq)
        with self.lock:
            seen = sorted(self.csrcs_seen)
        others = set(self.peer_csrcs)
        csrc_ok = bool(seen) and all(len(c) == 1 and c[0] in others for c in seen)
        text += f"; CSRC lists seen {seen}, the other's csrc {sorted(others)}"
        log(self.name, f"heard on mid {self.pcm_mid}: {text}")
        if not ok:
            self.fail(f"the decoded audio is not the other's {self.other_freq} Hz tone: {text}")
        elif not csrc_ok:
            self.fail(f"the tone is right but the CSRCs are not the other participant's: {text}")
        else:
            self.reached(7, f"{self.other_freq} Hz")
            if not self.heard.done():
                self.heard.set_result((True, text))

    # ------------------------------------------------------------ lifecycle

    async def start(self):
        """Join, set up media and negotiate; media then flows on its own."""
        await self.join()
        self.build_pipeline()
        if self.pipe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError("the pipeline refused to start")
        await self.negotiate()

    async def stop(self):
        """Leaves (§4 `leave`) and stops the pipeline."""
        self.stopping = True  # its state changes from here on are no news
        if self.ws is not None and self.ws.open:
            try:
                await self.send({"type": "leave"})
                await asyncio.wait_for(self.ws.wait_closed(), 2)
            except Exception as e:  # noqa: BLE001 - best effort at the end
                log(self.name, f"leave: {e!r}")
        if self.pipe is not None:
            self.pipe.set_state(Gst.State.NULL)


# ---------------------------------------------------------------- the test


async def run(args):
    """Both clients join (alice first), then each must hear the other; True on PASS."""
    clients = [Client("alice", 440, 660, args), Client("bob", 660, 440, args)]
    deadline = time.monotonic() + args.timeout

    async def start_all():
        for c in clients:  # in turn: bob's `joined` lists alice, alice gets participant_joined
            try:
                await c.start()
            except Exception as e:  # noqa: BLE001 - reported as the client's failure
                c.fail(f"{type(e).__name__}: {e}")

    try:
        try:
            await asyncio.wait_for(start_all(), args.timeout)
        except asyncio.TimeoutError:
            pass
        # Unlike wait_for, wait leaves the verdicts alone when the time is up.
        await asyncio.wait([c.heard for c in clients], timeout=max(deadline - time.monotonic(), 0))
        for c in clients:
            if not c.heard.done():
                c.fail(f"timed out after {args.timeout:.0f} s waiting for: {c.STAGES[c.stage + 1]}")
    finally:
        for c in clients:
            await c.stop()

    print("", flush=True)
    for c in clients:
        ok, text = c.heard.result()
        stage = c.STAGES[c.stage] if c.stage >= 0 else "none"
        print(f"{c.name} ({c.freq} Hz, expects {c.other_freq} Hz): {'ok' if ok else 'FAILED'}; "
              f"furthest stage: {stage}; {text}", flush=True)
    passed = all(c.heard.result()[0] for c in clients)
    print(f"{'PASS' if passed else 'FAIL'} ({time.monotonic() - T0:.1f} s)", flush=True)
    return passed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="ws://host:port/v1/signal")
    ap.add_argument("--room", default="native-test")
    ap.add_argument("--timeout", type=float, default=60.0, help="overall limit, seconds")
    ap.add_argument("--bundle-policy", default="max-bundle", choices=list(BUNDLE_POLICIES),
                    help="webrtcbin's bundle-policy (max-bundle, its default: port 0 and "
                         "a=bundle-only on every section but the first)")
    ap.add_argument("--wait-for-caps", action="store_true",
                    help="offer only once the microphone's caps reached webrtcbin (the "
                         "offer then has a=ssrc for it; without, it usually has none)")
    ap.add_argument("--mid-extension", action="store_true",
                    help="also send the RFC 8843 MID header extension on the microphone "
                         "(browsers do; webrtcbin does not unless asked)")
    args = ap.parse_args()
    # A hard stop even if GStreamer wedges the interpreter: dump the stacks and exit 1.
    faulthandler.dump_traceback_later(args.timeout + 15, exit=True)
    Gst.init(None)
    show_dtls_errors()
    sys.exit(0 if asyncio.run(run(args)) else 1)


if __name__ == "__main__":
    main()
