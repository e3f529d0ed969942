//! A connected participant's ICE consent checks, answered by Chorus.
//!
//! A client checks its nominated pair every few seconds (RFC 7675: Chromium every
//! ~2.5 s, str0m clients ~2 s); at idle those checks are most of a node's work (5,000
//! idle participants send ~2,700 a second). str0m (ice-lite) answers the checks that
//! set a connection up, and its agent lets a pair go after 15 s without one. Once the
//! client has nominated a pair ([`crate::egress::Egress::remote`]) and str0m answered
//! a check on it, the shard answers the checks on that pair itself: one HMAC-SHA1 to
//! verify the request, one to sign the answer, written into a pooled buffer, without
//! waking str0m. The HMAC is keyed once per learnt password (~140 bytes kept; keying
//! it per check cost a quarter of a check). One check goes to str0m at least every
//! [`STR0M_EVERY`], so its pair stays alive; so does anything the fast path does not
//! expect: another USERNAME (an ICE restart), another source, a role conflict, a bad
//! integrity or fingerprint.
//!
//! The answer is what str0m writes (RFC 8489 §6.3.1: XOR-MAPPED-ADDRESS,
//! MESSAGE-INTEGRITY with the node's ICE password, FINGERPRINT), so a client cannot tell
//! who answered. The proof that keeps a participant alive is unchanged: a request that
//! passes the integrity check of its ICE password (see `Shard::receive`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_protocol::stun::{self, attr, StunMessage};
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The longest the shard answers checks without letting str0m see one: str0m's
/// ice-lite agent drops a pair 15 s after the last request it saw, so this leaves two
/// of Chromium's checks (2.5 s apart) to be lost before that.
pub(crate) const STR0M_EVERY: Duration = Duration::from_secs(7);

/// What the shard learnt from the check str0m last answered on the nominated pair.
#[derive(Debug, Default)]
pub(crate) struct Consent {
    /// The USERNAME of that check and the node's ICE password (as an HMAC key); `None`
    /// until str0m has answered one on the nominated pair.
    learnt: Option<Box<Learnt>>,
    /// When str0m answered it.
    str0m_at: Option<Instant>,
}

struct Learnt {
    username: Box<[u8]>,
    /// HMAC-SHA1 keyed with the node's ICE password, cloned for each MAC (the
    /// password itself is not kept: this holds what the MACs need of it).
    keyed: Hmac<Sha1>,
}

impl std::fmt::Debug for Learnt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keyed state (what stands for the password) stays out of logs.
        f.debug_struct("Learnt")
            .field("username", &String::from_utf8_lossy(&self.username))
            .finish_non_exhaustive()
    }
}

impl Consent {
    /// A check on the nominated pair: answers it into `out` (cleared first) and
    /// returns `true`, or returns `false` for str0m to handle it (`out` is then
    /// unspecified). `source` is where it came from (the nominated pair's remote).
    pub fn answer(
        &self,
        now: Instant,
        check: &StunMessage<'_>,
        source: SocketAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        let (Some(learnt), Some(at)) = (&self.learnt, self.str0m_at) else {
            return false;
        };
        if !check.is_binding_request() || now.saturating_duration_since(at) >= STR0M_EVERY {
            return false;
        }
        // What str0m would look at besides the credentials: its PRIORITY, and whether
        // the client claims our role (ice-lite is always controlled).
        if check.attribute(attr::USERNAME) != Some(&learnt.username[..])
            || check.attribute(attr::PRIORITY).is_none()
            || check.attribute(attr::ICE_CONTROLLED).is_some()
            || check.fingerprint_valid() == Some(false)
        {
            return false;
        }
        let sign = |parts: &[&[u8]]| {
            let mut context = learnt.keyed.clone();
            for part in parts {
                context.update(part);
            }
            context.finalize().into_bytes().into()
        };
        if check.integrity_valid(sign) != Some(true) {
            return false;
        }
        stun::write_binding_success(out, check.transaction_id(), source, sign);
        true
    }

    /// str0m answered `check` on the nominated pair at `now`: from now on the shard
    /// answers checks like it. `password` gives the node's ICE password when the
    /// USERNAME is new (the first check, or after an ICE restart).
    pub fn str0m_answered(
        &mut self,
        now: Instant,
        check: &StunMessage<'_>,
        password: impl FnOnce() -> String,
    ) {
        let Some(username) = check.attribute(attr::USERNAME) else {
            return;
        };
        if self
            .learnt
            .as_ref()
            .is_none_or(|l| l.username[..] != *username)
        {
            // HMAC takes a key of any length (RFC 2104): this cannot fail.
            let Ok(keyed) = Hmac::<Sha1>::new_from_slice(password().as_bytes()) else {
                return;
            };
            self.learnt = Some(Box::new(Learnt {
                username: username.into(),
                keyed,
            }));
        }
        self.str0m_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyed_hmac_kept_per_participant_is_small() {
        assert!(std::mem::size_of::<Hmac<Sha1>>() <= 160);
    }

    #[test]
    fn the_kept_hmac_gives_rfc_2202s_mac() {
        // RFC 2202 §3, test case 2: key "Jefe".
        let mut mac = Hmac::<Sha1>::new_from_slice(b"Jefe").unwrap_or_else(|_| unreachable!());
        let parts: [&[u8]; 2] = [b"what do ya want ", b"for nothing?"];
        for part in parts {
            mac.update(part);
        }
        let expected = [
            0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
            0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79,
        ];
        assert_eq!(mac.finalize().into_bytes()[..], expected);
    }
}
