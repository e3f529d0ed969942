//! Human output: tables for lists, key/value tables for single objects, one line per
//! event. Pure functions of the node's answer (and of the time, where one is shown),
//! so they are tested without a node. `--json` bypasses all of this.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chorus_protocol::control::{
    NodeEvent, NodeStats, ParticipantDetails, PositionSource, RoomInfo, SpamAction, SpamGuard,
    TokenCreated,
};
use comfy_table::{presets, CellAlignment, Table};
use serde_json::Value;

/// A table without borders: columns two spaces apart, no trailing spaces.
fn table(header: Option<&[&str]>, rows: Vec<Vec<String>>, right_from: usize) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    if let Some(header) = header {
        t.set_header(header.to_vec());
    }
    for row in rows {
        t.add_row(row);
    }
    let columns = t.column_count();
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i + 1 == columns { 0 } else { 2 }));
        if i >= right_from {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut s = t.trim_fmt();
    s.push('\n');
    s
}

/// Two columns, key and value.
fn key_values(rows: Vec<(&str, String)>) -> String {
    table(
        None,
        rows.into_iter()
            .map(|(k, v)| vec![k.to_owned(), v])
            .collect(),
        usize::MAX,
    )
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// `300s`, or `never` for 0 (a room that is never closed for being empty).
pub fn empty_timeout(s: u64) -> String {
    if s == 0 {
        "never".to_owned()
    } else {
        format!("{s}s")
    }
}

/// `45s`, `3m 05s`, `2h 03m 05s`, `1d 02h 03m 05s`.
pub fn duration(s: u64) -> String {
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `HH:MM:SS` (UTC) of a Unix time.
pub fn clock(unix_s: u64) -> String {
    let s = unix_s % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time.
pub fn datetime(unix_s: u64) -> String {
    let (y, m, d) = civil((unix_s / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02} {} UTC", clock(unix_s))
}

/// Bits per second as `950bps`, `32.1kbps`, `1.25Mbps`.
pub fn bitrate(bps: u64) -> String {
    if bps < 1000 {
        format!("{bps}bps")
    } else if bps < 1_000_000 {
        format!("{:.1}kbps", bps as f64 / 1e3)
    } else {
        format!("{:.2}Mbps", bps as f64 / 1e6)
    }
}

/// `room list`.
pub fn rooms(rooms: &[RoomInfo]) -> String {
    let rows = rooms
        .iter()
        .map(|r| {
            vec![
                r.room.to_string(),
                r.kind.as_str().to_owned(),
                r.participants.to_string(),
                r.max_participants.to_string(),
                r.audio_slots.to_string(),
                empty_timeout(r.empty_timeout_s),
                r.home_shard.to_string(),
            ]
        })
        .collect();
    table(
        Some(&[
            "ROOM",
            "KIND",
            "PARTICIPANTS",
            "MAX",
            "SLOTS",
            "EMPTY_TIMEOUT",
            "HOME_SHARD",
        ]),
        rows,
        2,
    )
}

/// One room (`room get`, `create`, `update`, `delete`).
pub fn room(r: &RoomInfo) -> String {
    key_values(vec![
        ("room", r.room.to_string()),
        ("kind", r.kind.as_str().to_owned()),
        ("participants", r.participants.to_string()),
        ("max_participants", r.max_participants.to_string()),
        ("audio_slots", r.audio_slots.to_string()),
        ("video_slots", r.video_slots.to_string()),
        ("empty_timeout", empty_timeout(r.empty_timeout_s)),
        ("auto_created", yes_no(r.auto_created)),
        ("home_shard", r.home_shard.to_string()),
        ("metadata", or_dash(&r.metadata)),
        ("whisper", yes_no(r.whisper)),
        ("spam_guard", spam_guard(&r.spam_guard)),
        (
            "proximity",
            r.proximity.map_or_else(
                || "off".to_owned(),
                |p| {
                    let from = match p.positions {
                        PositionSource::Backend => "backend",
                        PositionSource::Client => "client",
                    };
                    format!("radius {}, positions from {from}", p.radius)
                },
            ),
        ),
        ("mode", r.mode.as_str().to_owned()),
        (
            "p2p_max",
            if r.p2p_max == 0 {
                "0 (never p2p)".to_owned()
            } else {
                format!("{} (back to p2p after {} s)", r.p2p_max, r.p2p_downgrade_s)
            },
        ),
    ])
}

/// The guard's action, and its thresholds when they are not the defaults.
fn spam_guard(g: &SpamGuard) -> String {
    let action = match g.action {
        SpamAction::Event => "event",
        SpamAction::Mute => "mute",
    };
    let d = SpamGuard::default();
    if (g.loud_dbov, g.loud_percent, g.loud_window_s, g.continuous_s)
        == (d.loud_dbov, d.loud_percent, d.loud_window_s, d.continuous_s)
    {
        return action.to_owned();
    }
    format!(
        "{action} (loud: {} dBov {} % of {} s; continuous: {} s)",
        g.loud_dbov, g.loud_percent, g.loud_window_s, g.continuous_s
    )
}

/// `participant list`.
pub fn participants(list: &[ParticipantDetails]) -> String {
    let rows = list
        .iter()
        .map(|p| {
            vec![
                p.participant_id.to_string(),
                or_dash(p.identity.as_deref().unwrap_or("")),
                p.name.as_str().to_owned(),
                yes_no(p.muted),
                yes_no(p.server_muted),
                yes_no(p.deafened),
                yes_no(p.publish),
                yes_no(p.subscribe),
                p.shard.to_string(),
            ]
        })
        .collect();
    table(
        Some(&[
            "ID",
            "IDENTITY",
            "NAME",
            "MUTED",
            "SERVER_MUTED",
            "DEAFENED",
            "PUBLISH",
            "SUBSCRIBE",
            "SHARD",
        ]),
        rows,
        8,
    )
}

/// One participant (`participant get`, and the participant commands that return one).
pub fn participant(p: &ParticipantDetails) -> String {
    key_values(vec![
        ("participant_id", p.participant_id.to_string()),
        ("room", p.room.to_string()),
        ("identity", or_dash(p.identity.as_deref().unwrap_or(""))),
        ("name", p.name.as_str().to_owned()),
        ("muted", yes_no(p.muted)),
        ("server_muted", yes_no(p.server_muted)),
        ("deafened", yes_no(p.deafened)),
        ("publish", yes_no(p.publish)),
        ("subscribe", yes_no(p.subscribe)),
        ("priority", yes_no(p.priority)),
        (
            "sources",
            or_dash(
                &p.sources
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ),
        (
            "whisper_to",
            p.whisper_to.as_ref().map_or_else(
                || "-".to_owned(),
                |to| {
                    to.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ),
        ),
        ("csrc", p.csrc.to_string()),
        ("shard", p.shard.to_string()),
    ])
}

/// A JSON value as a table cell: strings bare, everything else as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Any single result: a room or a participant when it is one, else the object's
/// fields; `done` when there is nothing to show (`null`, `true`, `{}`).
pub fn single(result: &Value, done: &str) -> String {
    if let Ok(r) = serde_json::from_value::<RoomInfo>(result.clone()) {
        return room(&r);
    }
    if let Ok(p) = serde_json::from_value::<ParticipantDetails>(result.clone()) {
        return participant(&p);
    }
    match result {
        Value::Null | Value::Bool(true) => format!("{done}\n"),
        Value::Object(o) if o.is_empty() => format!("{done}\n"),
        Value::Object(o) => key_values(o.iter().map(|(k, v)| (k.as_str(), cell(v))).collect()),
        other => format!("{}\n", cell(other)),
    }
}

/// `node drain`: `node draining: the rooms left close in 30s (or when empty)`.
pub fn drain(result: &Value) -> String {
    match result.get("deadline_s").and_then(Value::as_u64) {
        Some(s) => format!(
            "node draining: new joins are refused; the rooms left close in {} \
             (or once everyone has left), then the node exits\n",
            duration(s)
        ),
        None => single(result, "node draining"),
    }
}

/// `node stats`: the node's totals, then a table of counters by shard.
pub fn node_stats(s: &NodeStats) -> String {
    let mut summary = vec![
        ("rooms", s.rooms.to_string()),
        ("participants", s.participants.to_string()),
        ("draining", yes_no(s.draining)),
        ("uptime", duration(s.uptime_s)),
    ];
    let driver: Vec<(String, String)> = s
        .driver
        .iter()
        .map(|(k, v)| (format!("driver.{k}"), v.to_string()))
        .collect();
    summary.extend(driver.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let mut out = key_values(summary);

    let mut names: BTreeSet<&str> = s.totals.keys().map(String::as_str).collect();
    for shard in &s.shards {
        names.extend(shard.counters.keys().map(String::as_str));
    }
    let mut header = vec!["COUNTER".to_owned(), "TOTAL".to_owned()];
    header.extend(s.shards.iter().map(|r| format!("SHARD {}", r.shard)));
    let mut rows = vec![
        std::iter::once("rooms".to_owned())
            .chain(std::iter::once(s.rooms.to_string()))
            .chain(s.shards.iter().map(|r| r.rooms.to_string()))
            .collect::<Vec<_>>(),
        std::iter::once("participants".to_owned())
            .chain(std::iter::once(s.participants.to_string()))
            .chain(s.shards.iter().map(|r| r.participants.to_string()))
            .collect(),
    ];
    for name in names {
        let mut row = vec![name.to_owned()];
        row.push(s.totals.get(name).map_or("-".to_owned(), u64::to_string));
        row.extend(
            s.shards
                .iter()
                .map(|r| r.counters.get(name).map_or("-".to_owned(), u64::to_string)),
        );
        rows.push(row);
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    out.push('\n');
    out.push_str(&table(Some(&header), rows, 1));
    out
}

/// `token create`'s note on stderr: `expires 2026-11-23 17:00:00 UTC (in 1h 00m 00s)`.
pub fn token_expiry(t: &TokenCreated, now_unix_s: u64) -> String {
    let when = datetime(t.expires_at);
    match t.expires_at.checked_sub(now_unix_s) {
        Some(left) if left > 0 => format!("expires {when} (in {})", duration(left)),
        _ => format!("expires {when} (already expired)"),
    }
}

/// The ICE servers of a `token.create` result, one per line (empty without any).
pub fn ice_servers(t: &TokenCreated) -> String {
    t.ice_servers
        .iter()
        .map(|s| match (&s.username, &s.credential) {
            (Some(u), Some(c)) => format!(
                "ice server {} username {u} credential {c}\n",
                s.urls.join(" ")
            ),
            _ => format!("ice server {}\n", s.urls.join(" ")),
        })
        .collect()
}

fn pct(f: Option<f32>) -> String {
    f.map_or("-".to_owned(), |f| format!("{:.1}%", f * 100.0))
}

fn ms(f: Option<f32>) -> String {
    f.map_or("-".to_owned(), |f| format!("{f:.1}ms"))
}

/// One event as one line: `<HH:MM:SS> <type> <room> <participant or details>`, the
/// time being when it was received (UTC). Events this build does not know are shown
/// by their fields.
pub fn event_line(params: &Value, now_unix_s: u64) -> String {
    let time = clock(now_unix_s);
    let line = match serde_json::from_value::<NodeEvent>(params.clone()) {
        Ok(event) => {
            let room = event.room().map_or("-".to_owned(), ToString::to_string);
            let detail = event_detail(&event);
            format!("{time} {:<19} {room} {detail}", event.kind())
        }
        Err(_) => {
            let kind = params.get("type").and_then(Value::as_str).unwrap_or("?");
            let room = params.get("room").map_or("-".to_owned(), cell);
            let mut detail = String::new();
            if let Value::Object(o) = params {
                for (k, v) in o.iter().filter(|(k, _)| *k != "type" && *k != "room") {
                    let _ = write!(detail, "{k}={} ", cell(v));
                }
            }
            format!("{time} {kind:<19} {room} {detail}")
        }
    };
    line.trim_end().to_owned()
}

fn event_detail(e: &NodeEvent) -> String {
    match e {
        NodeEvent::RoomCreated {
            kind, auto_created, ..
        } => {
            let auto = if *auto_created { " auto_created" } else { "" };
            format!("kind={}{auto}", kind.as_str())
        }
        NodeEvent::RoomClosed { reason, .. } => format!("reason={reason}"),
        NodeEvent::ParticipantJoined { participant: p, .. } => {
            let identity = p.identity.as_deref().unwrap_or("-");
            format!(
                "{} name={:?} identity={identity} shard={}",
                p.participant_id,
                p.name.as_str(),
                p.shard
            )
        }
        NodeEvent::ParticipantLeft {
            participant_id,
            reason,
            ..
        } => format!("{participant_id} reason={reason}"),
        NodeEvent::ParticipantUpdated { participant: p, .. } => format!(
            "{} muted={} server_muted={} deafened={} publish={} subscribe={} priority={}",
            p.participant_id,
            yes_no(p.muted),
            yes_no(p.server_muted),
            yes_no(p.deafened),
            yes_no(p.publish),
            yes_no(p.subscribe),
            yes_no(p.priority)
        ),
        NodeEvent::SpeakingStarted { participant_id, .. }
        | NodeEvent::SpeakingStopped { participant_id, .. } => participant_id.to_string(),
        NodeEvent::Quality {
            participant_id,
            loss_in,
            loss_out,
            jitter_ms,
            rtt_ms,
            bitrate_in,
            bitrate_out,
            ..
        } => format!(
            "{participant_id} loss_in={} loss_out={} jitter={} rtt={} in={} out={}",
            pct(*loss_in),
            pct(*loss_out),
            ms(*jitter_ms),
            ms(*rtt_ms),
            bitrate(*bitrate_in),
            bitrate(*bitrate_out)
        ),
        NodeEvent::SpamDetected {
            participant_id,
            reason,
            level,
            ..
        } => format!("{participant_id} reason={reason} level={level:.3}"),
        NodeEvent::ModeChanged { mode, reason, .. } => {
            format!("mode={} reason={}", mode.as_str(), reason.as_str())
        }
        NodeEvent::TrackPublished {
            participant_id,
            source,
            ..
        }
        | NodeEvent::TrackUnpublished {
            participant_id,
            source,
            ..
        } => format!("{participant_id} source={}", source.as_str()),
        NodeEvent::EventsLost { count } => {
            format!("{count} events dropped (this subscriber fell behind)")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn room_info(name: &str, participants: usize) -> RoomInfo {
        serde_json::from_value(json!({
            "room": name, "kind": "guild", "max_participants": 100, "audio_slots": 8,
            "empty_timeout_s": 300, "metadata": "", "participants": participants,
            "auto_created": false, "home_shard": 1
        }))
        .unwrap()
    }

    fn ann() -> Value {
        json!({
            "participant_id": "p1f", "room": "g1", "identity": "u1", "name": "Ann Lee",
            "muted": false, "server_muted": true, "deafened": false, "publish": true,
            "subscribe": true, "csrc": 31, "shard": 0
        })
    }

    #[test]
    fn room_list_is_a_borderless_table() {
        let out = rooms(&[room_info("g1", 3), room_info("raid:night-12", 240)]);
        assert_eq!(
            out,
            "\
ROOM           KIND   PARTICIPANTS  MAX  SLOTS  EMPTY_TIMEOUT  HOME_SHARD
g1             guild             3  100      8           300s           1
raid:night-12  guild           240  100      8           300s           1
"
        );
        assert_eq!(
            rooms(&[]),
            "ROOM  KIND  PARTICIPANTS  MAX  SLOTS  EMPTY_TIMEOUT  HOME_SHARD\n"
        );
    }

    #[test]
    fn a_room_is_key_values() {
        let mut r = room_info("g1", 3);
        r.empty_timeout_s = 0;
        r.metadata = r#"{"guild":42}"#.into();
        assert_eq!(
            room(&r),
            "\
room              g1
kind              guild
participants      3
max_participants  100
audio_slots       8
video_slots       0
empty_timeout     never
auto_created      no
home_shard        1
metadata          {\"guild\":42}
whisper           no
spam_guard        event
proximity         off
mode              sfu
p2p_max           0 (never p2p)
"
        );
    }

    #[test]
    fn participant_list_and_details() {
        let p: ParticipantDetails = serde_json::from_value(ann()).unwrap();
        let mut q = p.clone();
        q.identity = None;
        q.participant_id = chorus_protocol::signal::ParticipantId(0x100);
        assert_eq!(
            participants(&[p.clone(), q]),
            "\
ID    IDENTITY  NAME     MUTED  SERVER_MUTED  DEAFENED  PUBLISH  SUBSCRIBE  SHARD
p1f   u1        Ann Lee  no     yes           no        yes      yes            0
p100  -         Ann Lee  no     yes           no        yes      yes            0
"
        );
        let out = participant(&p);
        assert!(
            out.starts_with("participant_id  p1f\nroom            g1\n"),
            "{out}"
        );
        assert!(out.contains("server_muted    yes\n"), "{out}");
    }

    #[test]
    fn single_results_pick_their_shape() {
        assert!(single(&ann(), "ok").starts_with("participant_id  p1f"));
        let r = serde_json::to_value(room_info("g1", 0)).unwrap();
        assert!(single(&r, "ok").starts_with("room              g1"));
        assert_eq!(single(&Value::Null, "room g1 deleted"), "room g1 deleted\n");
        assert_eq!(single(&json!({}), "done"), "done\n");
        assert_eq!(single(&json!(true), "done"), "done\n");
        assert_eq!(
            single(&json!({"draining": true, "rooms": 3}), "done"),
            "draining  true\nrooms     3\n"
        );
    }

    #[test]
    fn drain_says_when() {
        assert_eq!(
            drain(&json!({"draining": true, "deadline_s": 90})),
            "node draining: new joins are refused; the rooms left close in 1m 30s \
             (or once everyone has left), then the node exits\n"
        );
        assert_eq!(drain(&json!({})), "node draining\n");
    }

    #[test]
    fn node_stats_shows_totals_and_shards() {
        let s: NodeStats = serde_json::from_value(json!({
            "rooms": 3, "participants": 40, "draining": false, "uptime_s": 3725,
            "totals": {"packets_in": 1500, "drops_no_route": 2},
            "driver": {"handoff_full": 0},
            "shards": [
                {"shard": 0, "participants": 25, "rooms": 2, "counters": {"packets_in": 1000, "drops_no_route": 2}},
                {"shard": 1, "participants": 15, "rooms": 1, "counters": {"packets_in": 500}}
            ]
        }))
        .unwrap();
        assert_eq!(
            node_stats(&s),
            "\
rooms                3
participants         40
draining             no
uptime               1h 02m 05s
driver.handoff_full  0

COUNTER         TOTAL  SHARD 0  SHARD 1
rooms               3        2        1
participants       40       25       15
drops_no_route      2        2        -
packets_in       1500     1000      500
"
        );
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(datetime(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(datetime(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(datetime(1_795_455_322), "2026-11-23 17:35:22 UTC");
        assert!(datetime(u64::MAX).len() > 10);
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(185), "3m 05s");
        assert_eq!(duration(90_061), "1d 01h 01m 01s");
        assert_eq!(empty_timeout(0), "never");
        assert_eq!(bitrate(950), "950bps");
        assert_eq!(bitrate(32_100), "32.1kbps");
        assert_eq!(bitrate(1_250_000), "1.25Mbps");
    }

    #[test]
    fn token_expiry_note() {
        let t = TokenCreated {
            token: "x".into(),
            expires_at: 1_795_455_322,
            ice_servers: Vec::new(),
        };
        assert_eq!(
            token_expiry(&t, 1_795_455_322 - 3600),
            "expires 2026-11-23 17:35:22 UTC (in 1h 00m 00s)"
        );
        assert_eq!(
            token_expiry(&t, 1_795_455_322),
            "expires 2026-11-23 17:35:22 UTC (already expired)"
        );
    }

    #[test]
    fn ice_servers_are_listed() {
        use chorus_protocol::signal::IceServer;
        let t = TokenCreated {
            token: "x".into(),
            expires_at: 1,
            ice_servers: vec![
                IceServer {
                    urls: vec!["stun:s:3478".into()],
                    username: None,
                    credential: None,
                },
                IceServer {
                    urls: vec![
                        "turn:t:3478?transport=udp".into(),
                        "turns:t:5349?transport=tcp".into(),
                    ],
                    username: Some("86400:u1".into()),
                    credential: Some("c2VjcmV0".into()),
                },
            ],
        };
        assert_eq!(
            ice_servers(&t),
            "ice server stun:s:3478\nice server turn:t:3478?transport=udp turns:t:5349?transport=tcp username 86400:u1 credential c2VjcmV0\n"
        );
    }

    #[test]
    fn events_are_one_compact_line() {
        let at = 1_795_455_322;
        let line = |v: Value| event_line(&v, at);
        assert_eq!(
            line(json!({"type":"room_created","room":"g1","kind":"party","auto_created":true})),
            "17:35:22 room_created        g1 kind=party auto_created"
        );
        assert_eq!(
            line(json!({"type":"room_closed","room":"g1","reason":"empty_timeout"})),
            "17:35:22 room_closed         g1 reason=empty_timeout"
        );
        let mut joined = json!({"type":"participant_joined","room":"g1"});
        joined["participant"] = ann();
        assert_eq!(
            line(joined),
            "17:35:22 participant_joined  g1 p1f name=\"Ann Lee\" identity=u1 shard=0"
        );
        let mut updated = json!({"type":"participant_updated","room":"g1"});
        updated["participant"] = ann();
        assert_eq!(
            line(updated),
            "17:35:22 participant_updated g1 p1f muted=no server_muted=yes deafened=no publish=yes subscribe=yes priority=no"
        );
        assert_eq!(
            line(
                json!({"type":"participant_left","room":"g1","participant_id":"p1f","reason":"kicked"})
            ),
            "17:35:22 participant_left    g1 p1f reason=kicked"
        );
        assert_eq!(
            line(json!({"type":"speaking_started","room":"g1","participant_id":"p1f"})),
            "17:35:22 speaking_started    g1 p1f"
        );
        assert_eq!(
            line(json!({"type":"quality","room":"g1","participant_id":"p1f","loss_in":0.012,
                        "jitter_ms":3.06,"rtt_ms":42.0,"bitrate_in":32100,"bitrate_out":128000})),
            "17:35:22 quality             g1 p1f loss_in=1.2% loss_out=- jitter=3.1ms rtt=42.0ms in=32.1kbps out=128.0kbps"
        );
        assert_eq!(
            line(json!({"type":"events_lost","count":12})),
            "17:35:22 events_lost         - 12 events dropped (this subscriber fell behind)"
        );
        assert_eq!(
            line(json!({"type":"room_renamed","room":"g1","to":"g2","n":1})),
            "17:35:22 room_renamed        g1 n=1 to=g2"
        );
        assert_eq!(line(json!({})), "17:35:22 ?                   -");
    }
}
