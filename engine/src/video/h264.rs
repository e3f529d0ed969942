//! Keyframes of H.264 over RTP (RFC 6184), packetization mode 1: single NAL unit
//! packets, STAP-A aggregates and FU-A fragments.
//!
//! A slot may switch to a new layer or publisher only at a keyframe: the first packet
//! of an IDR picture, or of the SPS that precedes it (browsers send SPS, PPS and the
//! IDR slice together, in one STAP-A or in consecutive packets).

/// NAL unit types (RFC 6184 §5.2, H.264 Table 7-1).
const IDR: u8 = 5;
const SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Whether an H.264 RTP payload starts a keyframe: an IDR slice or an SPS, alone, in
/// a STAP-A, or as the first fragment of an FU-A.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        IDR | SPS => true,
        STAP_A => stap_a_units(&payload[1..]).any(|t| t == IDR || t == SPS),
        FU_A => payload
            .get(1)
            .is_some_and(|&h| h & 0x80 != 0 && matches!(h & 0x1f, IDR | SPS)),
        _ => false,
    }
}

/// The NAL unit types of a STAP-A's units (RFC 6184 §5.7.1: a 16-bit size, then the
/// unit), up to the first that does not fit.
fn stap_a_units(mut rest: &[u8]) -> impl Iterator<Item = u8> + '_ {
    std::iter::from_fn(move || {
        let size = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
        let unit = rest.get(2..2 + size)?;
        rest = &rest[2 + size..];
        unit.first().map(|h| h & 0x1f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keyframes_in_every_packetization() {
        // Single NAL units: an IDR slice, an SPS; a non-IDR slice (1) is not.
        assert!(starts_keyframe(&[0x65, 0x88]));
        assert!(starts_keyframe(&[0x67, 0x42]));
        assert!(!starts_keyframe(&[0x41, 0x9a]));
        // STAP-A with SPS (3 bytes), PPS (2 bytes): a keyframe; with two slices: not.
        assert!(starts_keyframe(&[0x78, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 1]));
        assert!(!starts_keyframe(&[0x78, 0, 2, 0x41, 1, 0, 2, 0x41, 2]));
        // FU-A: the start fragment of an IDR is; a middle fragment of it is not.
        assert!(starts_keyframe(&[0x7c, 0x85, 0xaa]));
        assert!(!starts_keyframe(&[0x7c, 0x05, 0xaa]));
        assert!(!starts_keyframe(&[0x7c, 0x81, 0xaa]));
        // Truncated or empty input is never a keyframe, and never a panic.
        assert!(!starts_keyframe(&[]));
        assert!(!starts_keyframe(&[0x7c]));
        assert!(!starts_keyframe(&[0x78, 0, 9, 0x67]));
    }
}
