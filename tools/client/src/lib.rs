//! The client side of a Chorus call, as str0m sees it: what the tests (`tests/sim.rs`,
//! `tests/live.rs`) and the load generator (`tools/load`) all need before they differ
//! (simulated network, tokio, mio).
//!
//! A browser offers Opus only, in rtp mode here (the clients write and read RTP
//! packets themselves), with one send-only microphone section and `slots` receive-only
//! sections, the slots of the client protocol (`docs/protocol.md` §8.2).

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt, Simulcast, SimulcastLayer};
use str0m::{Rtc, RtcConfig};

/// Chromium's Opus payload type.
pub const OPUS_PT: u8 = 111;

/// A client configuration with Opus at payload type `opus_pt` (48 kHz stereo,
/// minptime 10, in-band FEC, as browsers offer it) and nothing else, in rtp mode,
/// without periodic stats.
pub fn config(opus_pt: u8) -> RtcConfig {
    let mut config = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .set_stats_interval(None);
    config.codec_config().add_config(
        opus_pt.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            ..Default::default()
        },
    );
    config
}

/// [`config`] with what a browser offers for video as well: VP8 and H.264 (with
/// RTX, str0m's payload types) and str0m's standard header extensions
/// (transport-cc, the simulcast RIDs).
pub fn video_config(opus_pt: u8) -> RtcConfig {
    config(opus_pt).enable_vp8(true).enable_h264(true)
}

/// What a client publishes and receives of video (`docs/protocol.md` §8.3).
#[derive(Debug, Clone, Default)]
pub struct VideoSections<'a> {
    /// A camera section: its simulcast rids, lowest first (empty: one layer).
    pub camera: Option<&'a [&'a str]>,
    /// A screen section (one layer).
    pub screen: bool,
    /// Receive-only video sections: the video slots.
    pub slots: usize,
}

/// An offer for a call, not yet answered.
pub struct Offer {
    /// The SDP to send in `offer`.
    pub sdp: String,
    /// To apply the `answer` with (`rtc.sdp_api().accept_answer(pending, answer)`).
    pub pending: SdpPendingOffer,
    /// The microphone's section.
    pub mic: Mid,
    /// The receive sections, in order.
    pub slots: Vec<Mid>,
    /// The camera's and the screen's sections, if offered.
    pub camera: Option<Mid>,
    pub screen: Option<Mid>,
    /// The video slots' sections, in order.
    pub video_slots: Vec<Mid>,
}

/// Adds a send-only microphone and `slots` receive-only sections and makes the offer
/// (`None` if str0m has nothing to offer, which it always has here).
pub fn offer(rtc: &mut Rtc, slots: usize) -> Option<Offer> {
    offer_with_video(rtc, slots, &VideoSections::default())
}

/// [`offer`], then the video sections: camera (simulcast if it has rids), screen,
/// then the video slots, as the protocol orders them.
pub fn offer_with_video(rtc: &mut Rtc, slots: usize, video: &VideoSections<'_>) -> Option<Offer> {
    let mut api = rtc.sdp_api();
    let mic = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let slots = (0..slots)
        .map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
        .collect();
    let camera = video.camera.map(|rids| {
        let simulcast = (!rids.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for rid in rids {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast)
    });
    let screen = video
        .screen
        .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
    let video_slots = (0..video.slots)
        .map(|_| api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None))
        .collect();
    let (offer, pending) = api.apply()?;
    Some(Offer {
        sdp: offer.to_sdp_string(),
        pending,
        mic,
        slots,
        camera,
        screen,
        video_slots,
    })
}

/// Applies the node's `answer` to the offer `pending`; returns the Opus payload type
/// negotiated (what the microphone's packets must carry), if any.
pub fn accept_answer(
    rtc: &mut Rtc,
    pending: SdpPendingOffer,
    sdp: &str,
) -> Result<Option<Pt>, String> {
    let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("answer SDP: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("accept answer: {e}"))?;
    Ok(rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt()))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn offers_opus_a_microphone_and_the_slots() {
        let mut rtc = config(OPUS_PT).build(Instant::now());
        let offer = offer(&mut rtc, 3).expect("an offer");
        assert_eq!(offer.slots.len(), 3);
        assert_eq!(offer.sdp.matches("m=audio").count(), 4);
        assert!(offer.sdp.contains("a=rtpmap:111 opus/48000/2"));
        assert_eq!(offer.sdp.matches("a=sendonly").count(), 1);
        assert_eq!(offer.sdp.matches("a=recvonly").count(), 3);
    }
}
