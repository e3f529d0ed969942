//! The engine's outputs as wire messages: client events as protocol v1 messages
//! (docs/protocol.md §5), and control-plane replies and notices as the control
//! socket's JSON-RPC types (docs/control.md).
//!
//! The engine says what happened in its own terms ([`ClientEvent`],
//! [`chorus_engine::report`]); this is the one place that knows how the wire writes
//! it. What only signaling knows — a resume
//! token, ICE servers with this participant's TURN credentials — is filled in by the
//! session before `joined` goes out ([`joined`]).

use chorus_engine::p2p::{ModeReason, RoomMode};
use chorus_engine::report::{MemberDetails, Notice, PositionsApplied, RoomSummary, ShardCounters};
use chorus_engine::{
    ClientEvent, Joined, MemberInfo, Refusal, Speaker, VideoQuality, VideoSlotState, VideoSource,
};
use chorus_protocol::control::{
    NodeEvent, ParticipantDetails, PositionsSet, RoomInfo, ShardReport,
};
use chorus_protocol::signal::{
    ErrorCode, IceServer, ModeReason as WireReason, ParticipantInfo, RoomMode as WireMode,
    ServerMessage, Source, SpeakerInfo, VideoQuality as WireQuality, VideoSlotInfo,
};

/// `event` as the message protocol v1 sends; `joined` without a resume token or ICE
/// servers (see [`joined`]).
pub fn server_message(event: ClientEvent) -> ServerMessage {
    match event {
        ClientEvent::Joined(j) => joined(j, Vec::new(), None, Vec::new()),
        ClientEvent::Answer {
            sdp,
            slots,
            video_slots,
        } => ServerMessage::Answer {
            sdp,
            slots,
            video_slots,
        },
        ClientEvent::VideoSlots(slots) => ServerMessage::VideoSlots {
            slots: slots.into_iter().map(video_slot).collect(),
        },
        ClientEvent::MemberJoined(m) => ServerMessage::ParticipantJoined {
            participant: participant(m),
        },
        ClientEvent::MemberUpdated(m) => ServerMessage::ParticipantUpdated {
            participant: participant(m),
        },
        ClientEvent::MemberLeft(id) => ServerMessage::ParticipantLeft { participant_id: id },
        ClientEvent::Speakers(list) => ServerMessage::Speakers {
            speakers: list.into_iter().map(speaker).collect(),
        },
        ClientEvent::Refused { why, message } => ServerMessage::Error {
            code: error_code(why),
            message,
        },
        ClientEvent::RoomClosed { reason } => ServerMessage::RoomClosed { reason },
        ClientEvent::Kicked { reason } => ServerMessage::Kicked { reason },
        ClientEvent::Permissions(p) => ServerMessage::Permissions {
            publish: p.publish,
            subscribe: p.subscribe,
            priority: p.priority,
            sources: p.sources.to_list(),
        },
        ClientEvent::Mode { mode, reason } => ServerMessage::Mode {
            mode: room_mode(mode),
            reason: mode_reason(reason),
        },
        ClientEvent::P2pSignal { from, data } => ServerMessage::P2pSignal {
            from,
            // The node checked it was a JSON object when it came in.
            data: serde_json::from_str(&data).unwrap_or_default(),
        },
    }
}

/// A room's mode on the wire.
pub fn room_mode(m: RoomMode) -> WireMode {
    match m {
        RoomMode::P2p => WireMode::P2p,
        RoomMode::Sfu => WireMode::Sfu,
    }
}

/// Why a room's mode changed, on the wire.
pub fn mode_reason(r: ModeReason) -> WireReason {
    match r {
        ModeReason::Capacity => WireReason::Capacity,
        ModeReason::NotP2p => WireReason::NotP2p,
        ModeReason::ServerMuted => WireReason::ServerMuted,
        ModeReason::Grants => WireReason::Grants,
        ModeReason::Video => WireReason::Video,
        ModeReason::Whisper => WireReason::Whisper,
        ModeReason::P2pFailed => WireReason::P2pFailed,
        ModeReason::Policy => WireReason::Policy,
        ModeReason::WithinLimit => WireReason::WithinLimit,
    }
}

/// `joined`, with the ICE servers and resume token signaling hands this participant.
pub fn joined(
    j: Joined,
    ice_servers: Vec<IceServer>,
    resume_token: Option<String>,
    alternates: Vec<String>,
) -> ServerMessage {
    ServerMessage::Joined {
        participant_id: j.participant,
        csrc: j.csrc,
        room: j.room,
        audio_slots: j.audio_slots,
        video_slots: j.video_slots,
        participants: j.members.into_iter().map(participant).collect(),
        ice_servers,
        resume_token,
        mode: room_mode(j.mode),
        alternates,
    }
}

/// A member as `participants` entries and `participant_*` messages write it.
pub fn participant(m: MemberInfo) -> ParticipantInfo {
    ParticipantInfo {
        participant_id: m.id,
        name: m.name,
        muted: m.muted,
        server_muted: m.server_muted,
        deafened: m.deafened,
        csrc: m.csrc,
        camera: m.camera,
        screen: m.screen,
    }
}

fn video_slot(s: VideoSlotState) -> VideoSlotInfo {
    VideoSlotInfo {
        slot: s.slot,
        participant_id: s.publisher,
        source: source(s.source),
        quality: quality(s.quality),
        layer: s.layer.map(quality),
    }
}

/// A video source on the wire.
pub fn source(s: VideoSource) -> Source {
    match s {
        VideoSource::Camera => Source::Camera,
        VideoSource::Screen => Source::Screen,
    }
}

/// A wire source that is a video source (`None`: the microphone).
pub fn video_source(s: Source) -> Option<VideoSource> {
    match s {
        Source::Camera => Some(VideoSource::Camera),
        Source::Screen => Some(VideoSource::Screen),
        Source::Microphone => None,
    }
}

fn quality(q: VideoQuality) -> WireQuality {
    match q {
        VideoQuality::Low => WireQuality::Low,
        VideoQuality::Medium => WireQuality::Medium,
        VideoQuality::High => WireQuality::High,
    }
}

/// A quality as the engine names it.
pub fn video_quality(q: WireQuality) -> VideoQuality {
    match q {
        WireQuality::Low => VideoQuality::Low,
        WireQuality::Medium => VideoQuality::Medium,
        WireQuality::High => VideoQuality::High,
    }
}

fn speaker(s: Speaker) -> SpeakerInfo {
    SpeakerInfo {
        participant_id: s.id,
        level: s.level,
        slot: s.slot,
        priority: s.priority,
        whisper: s.whisper,
        distance: s.distance,
    }
}

/// The error code of a refusal (§6).
pub fn error_code(why: Refusal) -> ErrorCode {
    match why {
        Refusal::BadRequest => ErrorCode::BadRequest,
        Refusal::Forbidden => ErrorCode::Forbidden,
        Refusal::RoomNotFound => ErrorCode::RoomNotFound,
        Refusal::RoomFull => ErrorCode::RoomFull,
        Refusal::Internal => ErrorCode::Internal,
    }
}

/// A notice as the control socket's event stream writes it.
pub fn node_event(notice: Notice) -> NodeEvent {
    match notice {
        Notice::RoomCreated {
            room,
            kind,
            auto_created,
        } => NodeEvent::RoomCreated {
            room,
            kind,
            auto_created,
        },
        Notice::RoomClosed { room, reason } => NodeEvent::RoomClosed { room, reason },
        Notice::ParticipantJoined { room, participant } => NodeEvent::ParticipantJoined {
            room,
            participant: participant_details(participant),
        },
        Notice::ParticipantLeft {
            room,
            participant_id,
            reason,
        } => NodeEvent::ParticipantLeft {
            room,
            participant_id,
            reason,
        },
        Notice::ParticipantUpdated { room, participant } => NodeEvent::ParticipantUpdated {
            room,
            participant: participant_details(participant),
        },
        Notice::SpeakingStarted {
            room,
            participant_id,
        } => NodeEvent::SpeakingStarted {
            room,
            participant_id,
        },
        Notice::SpeakingStopped {
            room,
            participant_id,
        } => NodeEvent::SpeakingStopped {
            room,
            participant_id,
        },
        Notice::Quality {
            room,
            participant_id,
            loss_in,
            loss_out,
            jitter_ms,
            rtt_ms,
            bitrate_in,
            bitrate_out,
        } => NodeEvent::Quality {
            room,
            participant_id,
            loss_in,
            loss_out,
            jitter_ms,
            rtt_ms,
            bitrate_in,
            bitrate_out,
        },
        Notice::SpamDetected {
            room,
            participant_id,
            reason,
            level,
        } => NodeEvent::SpamDetected {
            room,
            participant_id,
            reason,
            level,
        },
        Notice::TrackPublished {
            room,
            participant_id,
            source: s,
        } => NodeEvent::TrackPublished {
            room,
            participant_id,
            source: source(s),
        },
        Notice::TrackUnpublished {
            room,
            participant_id,
            source: s,
        } => NodeEvent::TrackUnpublished {
            room,
            participant_id,
            source: source(s),
        },
        Notice::ModeChanged { room, mode, reason } => NodeEvent::ModeChanged {
            room,
            mode: room_mode(mode),
            reason: mode_reason(reason),
        },
    }
}

/// A room as `room.*` results write it.
pub fn room_info(r: RoomSummary) -> RoomInfo {
    RoomInfo {
        room: r.room,
        kind: r.kind,
        max_participants: r.max_participants,
        audio_slots: r.audio_slots,
        video_slots: r.video_slots,
        empty_timeout_s: r.empty_timeout_s,
        metadata: r.metadata,
        whisper: r.whisper,
        spam_guard: r.spam_guard,
        proximity: r.proximity,
        p2p_max: r.p2p_max,
        p2p_downgrade_s: r.p2p_downgrade_s,
        mode: room_mode(r.mode),
        participants: r.participants,
        auto_created: r.auto_created,
        home_shard: r.home_shard,
        home_node: None,
    }
}

/// A member as `participant.*` results and events write it.
pub fn participant_details(m: MemberDetails) -> ParticipantDetails {
    ParticipantDetails {
        participant_id: m.participant_id,
        room: m.room,
        identity: m.identity,
        name: m.name,
        muted: m.muted,
        server_muted: m.server_muted,
        deafened: m.deafened,
        publish: m.publish,
        subscribe: m.subscribe,
        priority: m.priority,
        whisper_to: m.whisper_to,
        sources: m.sources,
        camera: m.camera,
        screen: m.screen,
        p2p: m.p2p,
        csrc: m.csrc,
        shard: m.shard,
    }
}

/// A shard's counters as `node.stats` writes them.
pub fn shard_report(c: ShardCounters) -> ShardReport {
    ShardReport {
        shard: c.shard,
        participants: c.participants,
        rooms: c.rooms,
        counters: c.counters,
    }
}

/// The result of `room.set_positions`.
pub fn positions_set(p: PositionsApplied) -> PositionsSet {
    PositionsSet {
        room: p.room,
        updated: p.updated,
        unknown: p.unknown,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chorus_engine::Permissions;
    use chorus_protocol::signal::{DisplayName, ParticipantId, RoomId};
    use serde_json::{json, Value};

    use super::*;

    fn wire(event: ClientEvent) -> Value {
        serde_json::from_str(&server_message(event).to_json()).unwrap()
    }

    fn member() -> MemberInfo {
        MemberInfo {
            id: ParticipantId(0x1f),
            name: DisplayName::new("Ann").unwrap(),
            muted: true,
            server_muted: false,
            deafened: false,
            csrc: 7,
            camera: true,
            screen: false,
        }
    }

    #[test]
    fn engine_events_are_written_as_protocol_v1() {
        let joined = joined(
            Joined {
                participant: ParticipantId(0x2f),
                csrc: 8,
                room: RoomId::new("r").unwrap(),
                audio_slots: 4,
                video_slots: 2,
                members: vec![member()],
                mode: chorus_engine::p2p::RoomMode::P2p,
            },
            vec![IceServer {
                urls: vec!["stun:s:3478".into()],
                username: None,
                credential: None,
            }],
            Some("tok".into()),
            Vec::new(),
        );
        let v: Value = serde_json::from_str(&joined.to_json()).unwrap();
        assert!(v.get("alternates").is_none(), "absent on a node alone");
        assert_eq!(v["type"], "joined");
        assert_eq!(v["participant_id"], "p2f");
        assert_eq!(v["participants"][0]["participant_id"], "p1f");
        assert_eq!(v["participants"][0]["muted"], true);
        assert_eq!(v["ice_servers"][0]["urls"][0], "stun:s:3478");
        assert_eq!(v["resume_token"], "tok");
        assert_eq!(v["video_slots"], 2);
        assert_eq!(v["participants"][0]["camera"], true);
        assert_eq!(v["mode"], "p2p");

        let mode = wire(ClientEvent::Mode {
            mode: chorus_engine::p2p::RoomMode::Sfu,
            reason: chorus_engine::p2p::ModeReason::Capacity,
        });
        assert_eq!(
            mode,
            serde_json::json!({"type":"mode","mode":"sfu","reason":"capacity"})
        );
        let relayed = wire(ClientEvent::P2pSignal {
            from: ParticipantId(0x1f),
            data: r#"{"sdp":{"type":"offer","sdp":"v=0"}}"#.into(),
        });
        assert_eq!(
            relayed,
            serde_json::json!({"type":"p2p_signal","from":"p1f","data":{"sdp":{"type":"offer","sdp":"v=0"}}})
        );

        let slots = wire(ClientEvent::VideoSlots(vec![VideoSlotState {
            slot: 1,
            publisher: Some(ParticipantId(0x1f)),
            source: VideoSource::Screen,
            quality: VideoQuality::High,
            layer: Some(VideoQuality::Medium),
        }]));
        assert_eq!(
            slots,
            json!({"type": "video_slots", "slots": [{"slot": 1, "participant_id": "p1f",
                "source": "screen", "quality": "high", "layer": "medium"}]})
        );

        let left = wire(ClientEvent::MemberLeft(ParticipantId(0x1f)));
        assert_eq!(
            left,
            json!({"type": "participant_left", "participant_id": "p1f"})
        );
        let refused = wire(ClientEvent::Refused {
            why: Refusal::RoomFull,
            message: "room is full".into(),
        });
        assert_eq!(
            refused,
            json!({"type": "error", "code": "room_full", "message": "room is full"})
        );
        let permissions = wire(ClientEvent::Permissions(Permissions {
            publish: false,
            subscribe: true,
            priority: false,
            sources: chorus_engine::Sources {
                microphone: false,
                ..chorus_engine::Sources::ALL
            },
        }));
        assert_eq!(
            permissions,
            json!({"type": "permissions", "publish": false, "subscribe": true, "priority": false,
                   "sources": ["camera", "screen"]})
        );
        let speakers = wire(ClientEvent::Speakers(vec![Speaker {
            id: ParticipantId(0x1f),
            level: 0.5,
            slot: Some(2),
            priority: false,
            whisper: true,
            distance: None,
        }]));
        assert_eq!(speakers["speakers"][0]["slot"], 2);
        assert_eq!(speakers["speakers"][0]["whisper"], true);
        let updated = wire(ClientEvent::MemberUpdated(member()));
        assert_eq!(updated["type"], "participant_updated");
        assert_eq!(updated["participant"]["csrc"], 7);
    }
}
