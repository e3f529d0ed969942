//! Join tokens: HS256 JWTs minted by the app's backend with the node's secret.
//!
//! Claims: `sub` (the identity), `name` (optional display name, overrides the one in
//! `join`), `room` (the only room it admits to), `exp`, `nbf` (optional), and
//! `grants` {`publish`, `subscribe`, `admin`} (missing booleans are false). Only HS256
//! is accepted: any other algorithm, `alg: none` included, is refused, as are a wrong
//! signature, an expired or not-yet-valid token, and a token for another room.

use chorus_protocol::signal::RoomId;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_S: u64 = 5;

/// What a participant may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub admin: bool,
    /// A priority speaker (heard at every listener while speaking, ahead of loudest-N).
    #[serde(default)]
    pub priority: bool,
    /// What it may publish from, with `publish`: `"microphone"`, `"camera"`,
    /// `"screen"` (absent: all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<chorus_protocol::signal::Source>>,
}

/// The claims of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub room: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub grants: Grants,
}

/// Why a token was refused (the message the client gets with `unauthorized`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token algorithm must be HS256")]
    WrongAlgorithm,
    #[error("token is for another room")]
    WrongRoom,
    #[error("malformed token: {0}")]
    Malformed(String),
}

/// Checks join tokens against one secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The token's claims, if it is valid for `room`.
    pub fn verify(&self, token: &str, room: &RoomId) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let claims = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::WrongAlgorithm
                }
                _ => TokenError::Malformed(e.to_string()),
            })?
            .claims;
        if claims.room != room.as_str() {
            return Err(TokenError::WrongRoom);
        }
        Ok(claims)
    }
}

/// Signs `claims` with `secret` (HS256): what `token.create` returns.
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grants_sources_are_optional() {
        let g: Grants = serde_json::from_str(r#"{"publish":true,"subscribe":true}"#).unwrap();
        assert_eq!(g.sources, None);
        let g: Grants =
            serde_json::from_str(r#"{"publish":true,"sources":["microphone","screen"]}"#).unwrap();
        assert_eq!(
            g.sources,
            Some(vec![
                chorus_protocol::signal::Source::Microphone,
                chorus_protocol::signal::Source::Screen
            ])
        );
        assert!(serde_json::from_str::<Grants>(r#"{"sources":["mic"]}"#).is_err());
    }

    #[test]
    fn minted_tokens_verify() {
        let room = RoomId::new("g1").unwrap();
        let claims = Claims {
            sub: "u1".into(),
            name: Some("Ann".into()),
            room: "g1".into(),
            exp: 4_000_000_000,
            nbf: None,
            grants: Grants {
                publish: true,
                subscribe: false,
                admin: false,
                priority: true,
                sources: None,
            },
        };
        let token = mint(b"secret-secret-secret-secret-0123", &claims).unwrap();
        let v = TokenVerifier::new(b"secret-secret-secret-secret-0123");
        assert_eq!(v.verify(&token, &room).unwrap(), claims);
        let other = TokenVerifier::new(b"another-secret-another-secret-01");
        assert_eq!(other.verify(&token, &room), Err(TokenError::BadSignature));
    }
}
