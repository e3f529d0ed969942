//! Offers as native WebRTC clients write them, not as browsers do (issue 11, item 4:
//! GStreamer's webrtcbin, whose end-to-end test is `tools/native-test/run.sh`):
//! - the `max-bundle` policy: every section after the first offered with port 0 and
//!   `a=bundle-only` (RFC 8843 §6), which is open, not closed;
//! - a microphone section without `a=ssrc` and without the MID header extension (what
//!   webrtcbin offers before its first buffer): the node maps the stream by the SSRC
//!   of the RTP that arrives, where str0m alone would drop it all.
//!
//! The clients are str0m ones whose offers are rewritten so on the way.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_engine::Command;
use chorus_tests::sim::Sim;

const SECOND: Duration = Duration::from_secs(1);

/// Joins, offers (rewritten by `rewrite`) and runs until media is up.
fn connect_rewritten(sim: &mut Sim, name: &str, room: &str, rewrite: fn(&str) -> String) -> usize {
    let idx = sim.join(name, room);
    let slots = sim.clients[idx].audio_slots as usize;
    let sdp = rewrite(&sim.make_offer(idx, slots));
    let participant = sim.clients[idx].id;
    sim.command(Command::Offer {
        participant,
        sdp,
        sources: Vec::new(),
    });
    sim.accept_answer(idx);
    sim.run_until(Duration::from_secs(5), |s| s.clients[idx].connected);
    assert!(sim.clients[idx].connected, "{name} did not connect");
    idx
}

/// Every m-section after the first: port 0 and `a=bundle-only`.
fn max_bundle(sdp: &str) -> String {
    let mut out = String::new();
    let mut sections = 0;
    for line in sdp.split_inclusive("\r\n") {
        if let Some(rest) = line.strip_prefix("m=audio 9 ") {
            sections += 1;
            if sections > 1 {
                out.push_str("m=audio 0 ");
                out.push_str(rest);
                out.push_str("a=bundle-only\r\n");
                continue;
            }
        }
        out.push_str(line);
    }
    assert!(sections > 1, "{sdp}");
    out
}

/// No `a=ssrc` lines and no MID header extension.
fn no_ssrc_no_mid(sdp: &str) -> String {
    let out: String = sdp
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("a=ssrc") && !l.contains("sdes:mid"))
        .collect();
    assert!(out.len() < sdp.len());
    out
}

#[test]
fn a_max_bundle_offer_gets_its_slots() {
    let mut sim = Sim::new();
    let a = connect_rewritten(&mut sim, "native", "bundle", max_bundle);
    let b = sim.connect("browser", "bundle");
    assert_eq!(
        sim.last_answer(a).unwrap().1.len(),
        sim.clients[a].audio_slots as usize
    );
    sim.clients[a].speaking = Some(20);
    sim.clients[b].speaking = Some(20);
    assert!(sim.heard_over(a, b, SECOND) >= 45, "native hears browser");
    assert!(sim.heard_over(b, a, SECOND) >= 45, "browser hears native");
}

#[test]
fn a_microphone_without_ssrc_or_mid_is_heard() {
    let mut sim = Sim::with_shards(2, |_| {});
    let a = connect_rewritten(&mut sim, "native", "ssrc", no_ssrc_no_mid);
    let b = sim.connect("browser", "ssrc");
    let c = connect_rewritten(&mut sim, "native2", "ssrc", no_ssrc_no_mid);
    for x in [a, b, c] {
        sim.clients[x].speaking = Some(20);
    }
    for (to, from) in [(b, a), (c, a), (a, c), (a, b)] {
        assert!(sim.heard_over(to, from, SECOND) >= 45, "{to} hears {from}");
    }
}

#[test]
fn packets_that_only_look_like_rtp_do_not_use_up_the_microphone() {
    // Ten "RTP" packets with ten SSRCs from the client's address, before its real
    // audio: each fails SRTP and gives its place back; the real stream is still found.
    let mut sim = Sim::new();
    let a = connect_rewritten(&mut sim, "native", "junk", no_ssrc_no_mid);
    let b = sim.connect("browser", "junk");
    let from = sim.clients[a].addr;
    let shard = sim.clients[a].shard;
    for ssrc in 1..=10u32 {
        let mut junk = vec![0x80, 111, 0, 1, 0, 0, 0, 160];
        junk.extend(ssrc.to_be_bytes());
        junk.extend([0u8; 40]);
        let now = sim.now;
        sim.shards[shard].handle_datagram(now, from, &junk);
    }
    sim.pump();
    sim.clients[a].speaking = Some(20);
    assert!(sim.heard_over(b, a, SECOND) >= 45, "browser hears native");
}
