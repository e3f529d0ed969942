//! The ICE servers handed to clients (`joined.ice_servers`, `token.create`): the STUN
//! URLs, and the TURN URLs with time-limited credentials in coturn's REST scheme
//! (`use-auth-secret` / `static-auth-secret`): username `"<expiry unix seconds>:<user>"`,
//! credential base64(HMAC-SHA1(secret, username)). The node never talks to the TURN
//! server; it only signs what the client shows it.

use std::time::Duration;

use base64::Engine as _;
use chorus_protocol::signal::IceServer;
use sha1::{Digest, Sha1};

/// Most URLs of each kind the node takes.
pub const MAX_URLS: usize = 16;

/// What the node tells clients about STUN and TURN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceConfig {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`; required with TURN URLs.
    pub turn_secret: Option<String>,
    /// How long a TURN credential is valid from when it is handed out.
    pub turn_ttl: Duration,
}

/// Why the STUN/TURN settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceConfigError {
    #[error("{flag} {url:?}: {why}")]
    Url {
        flag: &'static str,
        url: String,
        why: &'static str,
    },
    #[error("--turn-url needs --turn-secret (coturn's static-auth-secret)")]
    NoSecret,
    #[error("at most {MAX_URLS} URLs per flag")]
    TooMany,
    #[error("--turn-ttl must be 60 seconds to 7 days")]
    Ttl,
}

impl IceConfig {
    /// Checks the URLs (RFC 7064 `stun:`/`stuns:`, RFC 7065 `turn:`/`turns:`) and that
    /// TURN has a secret.
    pub fn check(&self) -> Result<(), IceConfigError> {
        if self.stun_urls.len() > MAX_URLS || self.turn_urls.len() > MAX_URLS {
            return Err(IceConfigError::TooMany);
        }
        for url in &self.stun_urls {
            check_url("--stun-url", url, &["stun:", "stuns:"])?;
        }
        for url in &self.turn_urls {
            check_url("--turn-url", url, &["turn:", "turns:"])?;
        }
        if !self.turn_urls.is_empty() && self.turn_secret.as_deref().is_none_or(str::is_empty) {
            return Err(IceConfigError::NoSecret);
        }
        if !self.turn_urls.is_empty()
            && !(Duration::from_secs(60)..=Duration::from_secs(7 * 86_400)).contains(&self.turn_ttl)
        {
            return Err(IceConfigError::Ttl);
        }
        Ok(())
    }

    /// The `RTCIceServer` list for `user` (a participant id, or a token's identity) at
    /// `now_unix`: the STUN URLs, then the TURN URLs with a credential that expires
    /// `turn_ttl` later. Empty when nothing is configured.
    pub fn servers_for(&self, user: &str, now_unix: u64) -> Vec<IceServer> {
        let mut servers = Vec::new();
        if !self.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let (false, Some(secret)) = (self.turn_urls.is_empty(), &self.turn_secret) {
            let expiry = now_unix.saturating_add(self.turn_ttl.as_secs());
            let username = format!("{expiry}:{user}");
            let credential = turn_credential(secret.as_bytes(), &username);
            servers.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }
}

fn check_url(flag: &'static str, url: &str, schemes: &[&str]) -> Result<(), IceConfigError> {
    let bad = |why| {
        Err(IceConfigError::Url {
            flag,
            url: url.to_owned(),
            why,
        })
    };
    let Some(rest) = schemes.iter().find_map(|s| url.strip_prefix(s)) else {
        return bad(if flag == "--turn-url" {
            "must start with turn: or turns:"
        } else {
            "must start with stun: or stuns:"
        });
    };
    let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
    if host_port.is_empty() || host_port.starts_with("//") {
        return bad("needs a host (turn:host:3478, no //)");
    }
    if url.len() > 512
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return bad("must be at most 512 characters without spaces or commas");
    }
    if !query.is_empty() {
        if flag == "--stun-url" {
            return bad("takes no ?query");
        }
        if query != "transport=udp" && query != "transport=tcp" {
            return bad("the only query is ?transport=udp or ?transport=tcp");
        }
    }
    Ok(())
}

/// base64(HMAC-SHA1(secret, username)): the password coturn derives for a username
/// when it runs with `use-auth-secret`.
pub fn turn_credential(secret: &[u8], username: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha1(secret, username.as_bytes()))
}

/// HMAC (RFC 2104) over SHA-1, block size 64.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha1::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha1::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex(&hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn credentials_follow_coturns_rest_scheme() {
        let ice = IceConfig {
            stun_urls: vec!["stun:stun.example.org:3478".into()],
            turn_urls: vec![
                "turn:turn.example.org:3478?transport=udp".into(),
                "turns:turn.example.org:5349?transport=tcp".into(),
            ],
            turn_secret: Some("north".into()),
            turn_ttl: Duration::from_secs(86_400),
        };
        ice.check().unwrap();
        let servers = ice.servers_for("p1f", 1_767_225_600);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, vec!["stun:stun.example.org:3478"]);
        assert_eq!(servers[0].username, None);
        let turn = &servers[1];
        assert_eq!(turn.username.as_deref(), Some("1767312000:p1f"));
        // What coturn computes for it: base64(HMAC-SHA1("north", username)).
        let expected = base64::engine::general_purpose::STANDARD
            .encode(hmac_sha1(b"north", b"1767312000:p1f"));
        assert_eq!(turn.credential.as_deref(), Some(expected.as_str()));
        assert_eq!(turn.credential.as_ref().unwrap().len(), 28);
        assert!(IceConfig::default().servers_for("p1", 0).is_empty());
    }

    #[test]
    fn bad_settings_are_refused() {
        let with = |stun: &[&str], turn: &[&str], secret: Option<&str>| IceConfig {
            stun_urls: stun.iter().map(|s| s.to_string()).collect(),
            turn_urls: turn.iter().map(|s| s.to_string()).collect(),
            turn_secret: secret.map(str::to_owned),
            turn_ttl: Duration::from_secs(3600),
        };
        assert_eq!(
            with(&[], &["turn:h:3478"], None).check(),
            Err(IceConfigError::NoSecret)
        );
        for (stun, turn) in [
            (&["http://h"][..], &[][..]),
            (&["stun:"][..], &[][..]),
            (&["stun:h?transport=udp"][..], &[][..]),
            (&[][..], &["stun:h:3478"][..]),
            (&[][..], &["turn://h:3478"][..]),
            (&[][..], &["turn:h:3478?transport=sctp"][..]),
            (&[][..], &["turn:h 1:3478"][..]),
            (&[][..], &["turn:a,turn:b"][..]),
        ] {
            assert!(
                matches!(
                    with(stun, turn, Some("s")).check(),
                    Err(IceConfigError::Url { .. })
                ),
                "{stun:?} {turn:?}"
            );
        }
        let mut ice = with(&[], &["turns:h:5349?transport=tcp"], Some("s"));
        assert_eq!(ice.check(), Ok(()));
        ice.turn_ttl = Duration::from_secs(10);
        assert_eq!(ice.check(), Err(IceConfigError::Ttl));
    }
}
