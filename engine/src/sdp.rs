//! Reads a client's offer before str0m does, to apply the slot contract (see
//! `docs/protocol.md`): at most one sending audio m-section (the microphone), slot N
//! is the N-th recvonly audio m-section, slots beyond the room's count are made
//! inactive, video is rejected. The offer text is rewritten so that str0m's answer
//! says exactly that; str0m then negotiates codecs, ICE and DTLS as usual.

/// RFC 3264 §5.1 / RFC 8866 §6.7: the media direction of an m-section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// The result of [`prepare_offer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedOffer {
    /// The offer as str0m should see it.
    pub sdp: String,
    /// The microphone's mid, if the client sends audio.
    pub mic_mid: Option<String>,
    /// The slots' mids, in slot order (at most `audio_slots`).
    pub slot_mids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("offer has no m-sections")]
    NoMedia,
    #[error("m-section {0} has no a=mid (BUNDLE needs one per section)")]
    NoMid(usize),
    #[error("offer sends audio in more than one m-section; send the microphone in one")]
    SeveralMicrophones,
    #[error("offer is larger than {0} bytes")]
    TooLarge(usize),
}

/// Largest offer accepted: room for well over a hundred m-sections.
pub(crate) const MAX_OFFER_BYTES: usize = 60 * 1024;

struct Section {
    kind: String,
    /// Index of the `m=` line in `lines`.
    m_line: usize,
    mid: Option<String>,
    direction: Direction,
    /// Index of the direction attribute line, if present.
    direction_line: Option<usize>,
}

pub(crate) fn prepare_offer(sdp: &str, audio_slots: usize) -> Result<PreparedOffer, OfferError> {
    if sdp.len() > MAX_OFFER_BYTES {
        return Err(OfferError::TooLarge(MAX_OFFER_BYTES));
    }
    let mut lines: Vec<String> = sdp.lines().map(|l| l.trim_end().to_owned()).collect();
    let mut sections: Vec<Section> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("m=") {
            sections.push(Section {
                kind: rest.split(' ').next().unwrap_or_default().to_owned(),
                m_line: i,
                mid: None,
                direction: Direction::SendRecv,
                direction_line: None,
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.trim().to_owned());
        }
        let direction = match line.as_str() {
            "a=sendrecv" => Some(Direction::SendRecv),
            "a=sendonly" => Some(Direction::SendOnly),
            "a=recvonly" => Some(Direction::RecvOnly),
            "a=inactive" => Some(Direction::Inactive),
            _ => None,
        };
        if let Some(d) = direction {
            section.direction = d;
            section.direction_line = Some(i);
        }
    }
    if sections.is_empty() {
        return Err(OfferError::NoMedia);
    }

    // Edits are collected as (line index, replacement or insertion) and applied
    // last to first, so indices stay valid.
    let mut edits: Vec<(usize, Edit)> = Vec::new();
    let mut mic_mid = None;
    let mut slot_mids = Vec::new();
    for (n, s) in sections.iter().enumerate() {
        let Some(mid) = s.mid.clone() else {
            return Err(OfferError::NoMid(n));
        };
        let set_direction = |value: &str| match s.direction_line {
            Some(i) => (i, Edit::Replace(value.to_owned())),
            None => (s.m_line, Edit::InsertAfter(value.to_owned())),
        };
        match (s.kind.as_str(), s.direction) {
            ("audio", Direction::SendRecv | Direction::SendOnly) => {
                if mic_mid.is_some() {
                    return Err(OfferError::SeveralMicrophones);
                }
                mic_mid = Some(mid);
                // We never send on the microphone's section: answer recvonly.
                if s.direction == Direction::SendRecv {
                    edits.push(set_direction("a=sendonly"));
                }
            }
            ("audio", Direction::RecvOnly) => {
                if slot_mids.len() < audio_slots {
                    slot_mids.push(mid);
                } else {
                    edits.push(set_direction("a=inactive"));
                }
            }
            ("audio", Direction::Inactive) | ("application", _) => {}
            // Video (and anything else) is rejected for now: RFC 3264 §6, port 0.
            _ => {
                let mut parts: Vec<&str> = lines[s.m_line].splitn(3, ' ').collect();
                if parts.len() == 3 {
                    parts[1] = "0";
                    edits.push((s.m_line, Edit::Replace(parts.join(" "))));
                }
                edits.push(set_direction("a=inactive"));
            }
        }
    }
    // Stable sort, then reverse: for one index, a replacement of the m-line is
    // applied after the insertion below it, which is what we want.
    edits.sort_by_key(|(i, _)| *i);
    for (i, edit) in edits.into_iter().rev() {
        match edit {
            Edit::Replace(line) => lines[i] = line,
            Edit::InsertAfter(line) => lines.insert(i + 1, line),
        }
    }
    Ok(PreparedOffer {
        sdp: join(&lines),
        mic_mid,
        slot_mids,
    })
}

enum Edit {
    Replace(String),
    InsertAfter(String),
}

/// Copies the answer's ICE candidates into every m-section that has none.
///
/// str0m writes them into the first section only, which is enough under BUNDLE, but
/// some clients (aiortc) read them from the last one: the protocol promises them in
/// every section.
pub(crate) fn candidates_in_every_section(answer: &str) -> String {
    let lines: Vec<&str> = answer.lines().map(str::trim_end).collect();
    let candidates: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=candidate:") || *l == "a=end-of-candidates")
        .collect();
    // Only the first section's set: later sections would repeat them.
    let mut seen = std::collections::HashSet::new();
    let candidates: Vec<&str> = candidates.into_iter().filter(|c| seen.insert(*c)).collect();
    let mut out: Vec<&str> = Vec::with_capacity(lines.len() + candidates.len() * 8);
    let mut in_section = false;
    let mut section_has = false;
    for line in lines {
        if line.starts_with("m=") {
            if in_section && !section_has {
                out.extend(&candidates);
            }
            in_section = true;
            section_has = false;
        }
        if line.starts_with("a=candidate:") {
            section_has = true;
        }
        out.push(line);
    }
    if in_section && !section_has {
        out.extend(&candidates);
    }
    let mut s = out.join("\r\n");
    s.push_str("\r\n");
    s
}

fn join(lines: &[String]) -> String {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn offer(sections: &[(&str, &str, Option<&str>)]) -> String {
        let mut s = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for (kind, mid, dir) in sections {
            s +=
                &format!("m={kind} 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n");
            if let Some(d) = dir {
                s += &format!("a={d}\r\n");
            }
            s += "a=rtpmap:111 opus/48000/2\r\n";
        }
        s
    }

    #[test]
    fn finds_microphone_and_slots_in_order() {
        let sdp = offer(&[
            ("audio", "0", Some("sendonly")),
            ("audio", "1", Some("recvonly")),
            ("audio", "2", Some("recvonly")),
            ("audio", "3", Some("recvonly")),
        ]);
        let p = prepare_offer(&sdp, 2).unwrap();
        assert_eq!(p.mic_mid.as_deref(), Some("0"));
        assert_eq!(p.slot_mids, vec!["1", "2"]);
        assert!(p.sdp.contains("a=mid:3\r\na=inactive"), "{}", p.sdp);
    }

    #[test]
    fn sendrecv_microphone_is_answered_as_receive_only() {
        let sdp = offer(&[("audio", "a", None), ("audio", "b", Some("recvonly"))]);
        let p = prepare_offer(&sdp, 8).unwrap();
        assert_eq!(p.mic_mid.as_deref(), Some("a"));
        assert_eq!(p.slot_mids, vec!["b"]);
        let mic = p.sdp.split("m=audio").nth(1).unwrap_or_default();
        assert!(
            mic.contains("a=sendonly\r\n") && mic.contains("a=mid:a"),
            "{}",
            p.sdp
        );
        assert!(p.sdp.contains("a=mid:b\r\na=recvonly"), "{}", p.sdp);
    }

    #[test]
    fn video_is_rejected_with_port_zero() {
        let sdp = offer(&[
            ("video", "v", Some("sendrecv")),
            ("audio", "1", Some("recvonly")),
        ]);
        let p = prepare_offer(&sdp, 8).unwrap();
        assert!(
            p.sdp.contains("m=video 0 UDP/TLS/RTP/SAVPF 111"),
            "{}",
            p.sdp
        );
        assert_eq!(p.slot_mids, vec!["1"]);
    }

    #[test]
    fn candidates_are_copied_to_every_section() {
        let answer = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=candidate:1 1 udp 9 1.2.3.4 5 typ host\r\na=end-of-candidates\r\nm=audio 9 X 111\r\na=mid:1\r\nm=audio 0 X 111\r\na=mid:2\r\n";
        let out = candidates_in_every_section(answer);
        let sections: Vec<&str> = out.split("m=audio").skip(1).collect();
        assert_eq!(sections.len(), 3);
        for s in sections {
            assert_eq!(
                s.matches("a=candidate:1 1 udp 9 1.2.3.4 5 typ host\r\n")
                    .count(),
                1,
                "{s}"
            );
            assert_eq!(s.matches("a=end-of-candidates").count(), 1, "{s}");
        }
    }

    #[test]
    fn rejects_what_breaks_the_contract() {
        assert_eq!(prepare_offer("v=0\r\n", 8), Err(OfferError::NoMedia));
        assert_eq!(prepare_offer("garbage", 8), Err(OfferError::NoMedia));
        let two = offer(&[("audio", "0", Some("sendonly")), ("audio", "1", None)]);
        assert_eq!(prepare_offer(&two, 8), Err(OfferError::SeveralMicrophones));
        let nomid = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(prepare_offer(nomid, 8), Err(OfferError::NoMid(0)));
        let huge = "a".repeat(MAX_OFFER_BYTES + 1);
        assert!(matches!(
            prepare_offer(&huge, 8),
            Err(OfferError::TooLarge(_))
        ));
    }
}
