//! The VP8 payload descriptor (RFC 7741 §4.2): reading it, and keeping a slot's VP8
//! stream continuous across switches of layer or publisher.
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID |  (required)
//!      +-+-+-+-+-+-+-+-+
//! X:   |I|L|T|K| RSV   |  (optional)
//! I:   |M| PictureID   |  (optional; M: a 15-bit id, one more byte)
//! L:   |   TL0PICIDX   |  (optional)
//! T/K: |TID|Y| KEYIDX  |  (optional)
//! ```
//!
//! A receiver's decoder tracks picture ids (loss detection), TL0PICIDX (temporal
//! layer dependencies) and KEYIDX: a slot that switches from one simulcast layer, or
//! one publisher, to another must carry on from the values it last sent, as mediasoup
//! and LiveKit do, or the decoder sees a jump and may wait for another keyframe.

/// A VP8 payload descriptor: where its fields are in one packet's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// The first packet of a frame: start of partition (S) and partition index 0.
    pub frame_start: bool,
    /// The picture id, if present.
    pub picture_id: Option<PictureId>,
    /// TL0PICIDX and its offset, if present.
    pub tl0picidx: Option<(u8, usize)>,
    /// The temporal layer (TID), if present.
    pub tid: Option<u8>,
    /// KEYIDX and the offset of its byte, if present.
    pub keyidx: Option<(u8, usize)>,
    /// The descriptor's length: the VP8 payload header starts here.
    pub len: usize,
    /// A keyframe starts in this packet (its VP8 payload header's P bit is 0).
    pub keyframe: bool,
}

/// A picture id as written: 7 or 15 bits, at an offset in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureId {
    pub value: u16,
    /// 15 bits (M set), two bytes; else 7 bits, one byte.
    pub long: bool,
    pub at: usize,
}

/// Reads the descriptor at the start of a VP8 RTP payload; `None` if it is cut short.
pub fn parse(payload: &[u8]) -> Option<Descriptor> {
    let first = *payload.first()?;
    let frame_start = first & 0x10 != 0 && first & 0x07 == 0;
    let mut at = 1;
    let (mut picture_id, mut tl0picidx, mut tid, mut keyidx) = (None, None, None, None);
    if first & 0x80 != 0 {
        let x = *payload.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            let b = *payload.get(at)?;
            if b & 0x80 != 0 {
                let value = (u16::from(b & 0x7f) << 8) | u16::from(*payload.get(at + 1)?);
                picture_id = Some(PictureId {
                    value,
                    long: true,
                    at,
                });
                at += 2;
            } else {
                picture_id = Some(PictureId {
                    value: u16::from(b),
                    long: false,
                    at,
                });
                at += 1;
            }
        }
        if x & 0x40 != 0 {
            tl0picidx = Some((*payload.get(at)?, at));
            at += 1;
        }
        if x & 0x30 != 0 {
            let b = *payload.get(at)?;
            if x & 0x20 != 0 {
                tid = Some(b >> 6);
            }
            if x & 0x10 != 0 {
                keyidx = Some((b & 0x1f, at));
            }
            at += 1;
        }
    }
    let keyframe = frame_start && payload.get(at).is_some_and(|h| h & 0x01 == 0);
    Some(Descriptor {
        frame_start,
        picture_id,
        tl0picidx,
        tid,
        keyidx,
        len: at,
        keyframe,
    })
}

/// What one packet's descriptor fields become on a slot ([`Continuity::next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewrite {
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
    pub keyidx: Option<u8>,
}

/// Writes `out` into the fields of `d`, the descriptor parsed from `payload` (a copy
/// of the packet's payload in the datagram being written).
pub fn patch(d: &Descriptor, out: &Rewrite, payload: &mut [u8]) {
    if let (Some(p), Some(v)) = (d.picture_id, out.picture_id) {
        if p.long {
            if let Some(b) = payload.get_mut(p.at..p.at + 2) {
                b[0] = 0x80 | (v >> 8) as u8 & 0x7f;
                b[1] = v as u8;
            }
        } else if let Some(b) = payload.get_mut(p.at) {
            *b = v as u8 & 0x7f;
        }
    }
    if let (Some((_, at)), Some(v)) = (d.tl0picidx, out.tl0picidx) {
        if let Some(b) = payload.get_mut(at) {
            *b = v;
        }
    }
    if let (Some((_, at)), Some(v)) = (d.keyidx, out.keyidx) {
        if let Some(b) = payload.get_mut(at) {
            *b = (*b & 0xe0) | (v & 0x1f);
        }
    }
}

/// Keeps one slot's VP8 stream continuous: each source's (layer's or publisher's)
/// picture ids, TL0PICIDX and KEYIDX are offset so that the first frame after a
/// switch follows the last one sent.
#[derive(Debug, Clone, Default)]
pub struct Continuity {
    picture_id: Field,
    tl0picidx: Field,
    keyidx: Field,
    /// A source writing 7-bit picture ids: its ids counted on in 15 bits.
    short_ids: Option<u16>,
}

/// One rewritten field: the offset of the current source, and the newest value sent.
#[derive(Debug, Clone, Copy, Default)]
struct Field {
    offset: u16,
    last: Option<u16>,
    /// A new source began and this field has not been seen in it yet: the next value
    /// continues from the newest sent.
    rebase: bool,
}

impl Field {
    /// The value to write for `value` of a field `bits` wide, continuing from the
    /// newest value sent if a new source just began ([`Field::rebase`]).
    fn map(&mut self, value: u16, bits: u32) -> u16 {
        let mask = ((1u32 << bits) - 1) as u16;
        if std::mem::take(&mut self.rebase) {
            if let Some(last) = self.last {
                self.offset = last.wrapping_add(1).wrapping_sub(value) & mask;
            }
        }
        let out = value.wrapping_add(self.offset) & mask;
        // Newer in modular terms (less than half the space ahead): the newest sent.
        let newer = self
            .last
            .is_none_or(|last| out.wrapping_sub(last) & mask < (mask >> 1) + 1);
        if newer {
            self.last = Some(out);
        }
        out
    }
}

impl Continuity {
    /// Rewrites the descriptor of `payload` (a packet of the slot's current source;
    /// `switched` on the first packet of a new one, a keyframe) in place. Returns
    /// `false`, leaving it as it is, if the payload has no whole descriptor.
    pub fn rewrite(&mut self, payload: &mut [u8], switched: bool) -> bool {
        let Some(d) = parse(payload) else {
            return false;
        };
        let out = self.next(&d, switched);
        patch(&d, &out, payload);
        true
    }

    /// The values the fields of `d` (a packet of the slot's current source;
    /// `switched` on the first packet of a new one) take on the slot: a picture id
    /// within its width (7 or 15 bits), TL0PICIDX, and KEYIDX (5 bits). Each copy's
    /// datagram is patched with them ([`patch`]), so the shared payload is not
    /// copied but once, into the datagram.
    pub fn next(&mut self, d: &Descriptor, switched: bool) -> Rewrite {
        if switched {
            // Each field continues from the newest value sent at its first appearance
            // in the new source (a first packet may lack some of them).
            self.picture_id.rebase = true;
            self.tl0picidx.rebase = true;
            self.keyidx.rebase = true;
            self.short_ids = None;
        }
        let picture_id = d.picture_id.map(|p| {
            let value = if p.long {
                self.short_ids = None;
                p.value
            } else {
                self.count_short_id(p.value)
            };
            // A 7-bit id is written modulo 128 of its 15-bit count.
            let out = self.picture_id.map(value, 15);
            if p.long {
                out
            } else {
                out & 0x7f
            }
        });
        let tl0picidx = d
            .tl0picidx
            .map(|(value, _)| self.tl0picidx.map(u16::from(value), 8) as u8);
        let keyidx = d
            .keyidx
            .map(|(value, _)| self.keyidx.map(u16::from(value), 5) as u8);
        Rewrite {
            picture_id,
            tl0picidx,
            keyidx,
        }
    }

    /// A 7-bit picture id of the current source counted on in 15 bits, so that its
    /// wrap from 127 to 0 moves forward (a late id, within half the space, back).
    fn count_short_id(&mut self, value: u16) -> u16 {
        let count = match self.short_ids {
            None => value,
            Some(count) => {
                let delta = value.wrapping_sub(count) & 0x7f;
                if delta < 64 {
                    count.wrapping_add(delta)
                } else {
                    count.wrapping_sub(128 - delta)
                }
            }
        } & 0x7fff;
        let newer = self
            .short_ids
            .is_none_or(|c| count.wrapping_sub(c) & 0x7fff < 0x4000);
        if newer {
            self.short_ids = Some(count);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A descriptor with a 15-bit picture id, TL0PICIDX, TID and KEYIDX, then a VP8
    /// payload header byte (`key`: a keyframe).
    fn packet(start: bool, picture_id: u16, tl0: u8, tid: u8, keyidx: u8, key: bool) -> Vec<u8> {
        vec![
            0x80 | if start { 0x10 } else { 0 },
            0xf0,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            (tid << 6) | 0x20 | keyidx,
            if key { 0x10 } else { 0x11 },
            0xaa,
        ]
    }

    #[test]
    fn reads_every_field() {
        let d = parse(&packet(true, 0x1234, 7, 2, 5, true)).unwrap();
        assert!(d.frame_start && d.keyframe);
        assert_eq!(
            d.picture_id,
            Some(PictureId {
                value: 0x1234,
                long: true,
                at: 2
            })
        );
        assert_eq!(d.tl0picidx, Some((7, 4)));
        assert_eq!(d.tid, Some(2));
        assert_eq!(d.keyidx, Some((5, 5)));
        assert_eq!(d.len, 6);
        // Not the start of a frame: never a keyframe, whatever the next byte says.
        let d = parse(&packet(false, 1, 0, 0, 0, true)).unwrap();
        assert!(!d.frame_start && !d.keyframe);
        // A delta frame.
        assert!(!parse(&packet(true, 1, 0, 0, 0, false)).unwrap().keyframe);
        // The smallest descriptor: one byte; a 7-bit picture id.
        let d = parse(&[0x10, 0x10]).unwrap();
        assert!(d.keyframe && d.picture_id.is_none() && d.len == 1);
        let d = parse(&[0x90, 0x80, 0x05, 0x10]).unwrap();
        assert_eq!(d.picture_id.map(|p| (p.value, p.long)), Some((5, false)));
        // Cut short anywhere: None, no panic.
        let full = packet(true, 0x1234, 7, 2, 5, true);
        for n in 0..6 {
            assert_eq!(parse(&full[..n]), None, "{n} bytes");
        }
    }

    #[test]
    fn a_switch_continues_from_the_last_values_sent() {
        let mut c = Continuity::default();
        // Source A: picture ids 100, 101; TL0 9; KEYIDX 3.
        for id in [100, 101] {
            let mut p = packet(id == 100, id, 9, 0, 3, id == 100);
            assert!(c.rewrite(&mut p, id == 100));
            assert_eq!(
                parse(&p).unwrap().picture_id.unwrap().value,
                id,
                "first source kept"
            );
        }
        // Source B starts at a keyframe with unrelated values: it continues A's.
        let mut p = packet(true, 30_000, 200, 0, 31, true);
        assert!(c.rewrite(&mut p, true));
        let d = parse(&p).unwrap();
        assert_eq!(d.picture_id.unwrap().value, 102);
        assert_eq!(d.tl0picidx.unwrap().0, 10);
        assert_eq!(d.keyidx.unwrap().0, 4);
        assert_eq!(d.tid, Some(0), "TID untouched");
        // B's next packets keep its own spacing, wrapping where the fields wrap.
        let mut p = packet(false, 30_005, 201, 0, 31, false);
        c.rewrite(&mut p, false);
        let d = parse(&p).unwrap();
        assert_eq!(d.picture_id.unwrap().value, 107);
        assert_eq!(d.tl0picidx.unwrap().0, 11);
        // Near the 15-bit wrap.
        let mut c = Continuity::default();
        let mut p = packet(true, 0x7fff, 255, 0, 31, true);
        c.rewrite(&mut p, true);
        let mut p = packet(true, 50, 0, 0, 0, true);
        c.rewrite(&mut p, true);
        let d = parse(&p).unwrap();
        assert_eq!(d.picture_id.unwrap().value, 0, "0x7fff + 1 wraps to 0");
        assert_eq!(d.tl0picidx.unwrap().0, 0);
        assert_eq!(d.keyidx.unwrap().0, 0);
    }

    #[test]
    fn a_late_packet_does_not_pull_the_newest_value_back() {
        let mut c = Continuity::default();
        for id in [10, 12, 11] {
            let mut p = packet(id == 10, id, 0, 0, 0, id == 10);
            c.rewrite(&mut p, id == 10);
        }
        let mut p = packet(true, 500, 0, 0, 0, true);
        c.rewrite(&mut p, true);
        assert_eq!(parse(&p).unwrap().picture_id.unwrap().value, 13);
    }

    /// A descriptor with a 7-bit picture id only.
    fn short(start: bool, picture_id: u8, key: bool) -> Vec<u8> {
        vec![
            0x80 | if start { 0x10 } else { 0 },
            0x80,
            picture_id & 0x7f,
            if key { 0x10 } else { 0x11 },
        ]
    }

    fn id_of(p: &[u8]) -> u16 {
        parse(p).unwrap().picture_id.unwrap().value
    }

    #[test]
    fn seven_bit_ids_wrap_forward_and_switches_follow_them() {
        let mut c = Continuity::default();
        // Source A counts 120..=127, 0..=50 (wrapping once).
        let ids: Vec<u8> = (120..=127).chain(0..=50).collect();
        for (i, id) in ids.iter().enumerate() {
            let mut p = short(i == 0, *id, i == 0);
            c.rewrite(&mut p, i == 0);
            assert_eq!(id_of(&p), u16::from(*id), "first source kept");
        }
        // Source B continues from 50: 51.
        let mut p = short(true, 9, true);
        c.rewrite(&mut p, true);
        assert_eq!(id_of(&p), 51);
    }

    #[test]
    fn a_field_missing_from_the_first_packet_is_rebased_when_it_appears() {
        let mut c = Continuity::default();
        let mut p = packet(true, 100, 20, 0, 3, true);
        c.rewrite(&mut p, true);
        // B's first packet carries a picture id only (no L, T or K).
        let mut p = vec![0x90, 0x80, 0x80 | 0x10, 0x00, 0x10];
        c.rewrite(&mut p, true);
        assert_eq!(id_of(&p), 101);
        // Its TL0PICIDX first appears later: it continues from 20.
        let mut p = packet(false, 0x1001, 200, 0, 9, false);
        c.rewrite(&mut p, false);
        let d = parse(&p).unwrap();
        assert_eq!(d.tl0picidx.unwrap().0, 21);
        assert_eq!(d.keyidx.unwrap().0, 4);
        assert_eq!(d.picture_id.unwrap().value, 102);
    }

    #[test]
    fn a_payload_without_a_whole_descriptor_is_left_alone() {
        let mut c = Continuity::default();
        let mut p = vec![0x80];
        assert!(!c.rewrite(&mut p, true));
        assert_eq!(p, vec![0x80]);
    }
}
