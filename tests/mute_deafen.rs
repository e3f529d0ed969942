//! Mute stops forwarding a participant's audio, deafen stops forwarding audio to it;
//! both are announced to the whole room, the participant included.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_engine::Command;
use chorus_protocol::signal::ServerMessage;
use chorus_tests::sim::Sim;

fn updates(sim: &Sim, idx: usize) -> Vec<(bool, bool)> {
    sim.clients[idx]
        .messages("participant_updated")
        .into_iter()
        .map(|m| match m {
            ServerMessage::ParticipantUpdated { participant } => {
                (participant.muted, participant.deafened)
            }
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn mute_stops_a_speaker_and_unmute_resumes() {
    let mut sim = Sim::new();
    let (a, b, c) = sim.three_talking("r");
    let id = sim.clients[a].id;
    sim.command(Command::SetMuted {
        participant: id,
        muted: true,
    });
    for i in [a, b, c] {
        assert_eq!(
            updates(&sim, i),
            vec![(true, false)],
            "everyone is told, a included"
        );
    }
    let heard_b = sim.clients[b].from(a).count();
    let heard_c = sim.clients[c].from(a).count();
    let b_from_c = sim.clients[b].from(c).count();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.clients[b].from(a).count(),
        heard_b,
        "nothing of a after mute"
    );
    assert_eq!(sim.clients[c].from(a).count(), heard_c);
    assert!(
        sim.clients[b].from(c).count() >= b_from_c + 49,
        "others unaffected"
    );
    assert!(sim.shards[0].stats().dropped_muted >= 49);
    // a is no longer among the speakers.
    let last = sim.clients[b]
        .messages("speakers")
        .last()
        .cloned()
        .cloned()
        .unwrap();
    let ServerMessage::Speakers { speakers } = last else {
        unreachable!()
    };
    assert!(speakers.iter().all(|s| s.participant_id != id));

    sim.command(Command::SetMuted {
        participant: id,
        muted: false,
    });
    assert_eq!(updates(&sim, c), vec![(true, false), (false, false)]);
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.clients[b].from(a).count() >= heard_b + 49,
        "unmute resumes"
    );
}

#[test]
fn deafen_stops_audio_to_a_participant_only() {
    let mut sim = Sim::new();
    let (a, b, c) = sim.three_talking("r");
    let id = sim.clients[b].id;
    sim.command(Command::SetDeafened {
        participant: id,
        deafened: true,
    });
    for i in [a, b, c] {
        assert_eq!(updates(&sim, i), vec![(false, true)]);
    }
    let b_total = sim.clients[b].received.len();
    let a_from_b = sim.clients[a].from(b).count();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.clients[b].received.len(),
        b_total,
        "a deafened participant gets nothing"
    );
    assert!(
        sim.clients[a].from(b).count() >= a_from_b + 49,
        "but is still heard"
    );
    sim.command(Command::SetDeafened {
        participant: id,
        deafened: false,
    });
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.clients[b].received.len() >= b_total + 98,
        "undeafen resumes both streams"
    );
}
