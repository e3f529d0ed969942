//! Join tokens with real JWTs: every way a token can be wrong gets `unauthorized` and
//! the socket closed (1008); a valid one joins with its grants and name.
#![allow(clippy::unwrap_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use chorus_signaling::token::{Claims, Grants};
use chorus_signaling::NodeConfig;
use chorus_tests::ws::{connect, expect_close, expect_error, node_with, recv, send};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(room: &str) -> Claims {
    Claims {
        sub: "user-42".into(),
        name: Some("Token Name".into()),
        room: room.into(),
        exp: now() + 600,
        nbf: None,
        grants: Grants {
            publish: true,
            subscribe: true,
            admin: false,
            priority: false,
            sources: None,
        },
    }
}

/// A well-signed token for room "r" that expired an hour ago.
fn expired_token() -> String {
    let mut expired = claims("r");
    expired.exp = now() - 3600;
    sign(&expired, Algorithm::HS256, SECRET)
}

fn sign(claims: &Claims, alg: Algorithm, secret: &str) -> String {
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn secured(dev: bool) -> chorus_signaling::RunningNode {
    node_with(NodeConfig {
        dev,
        auto_create_rooms: true,
        token_secret: Some(SECRET.into()),
        ..NodeConfig::default()
    })
    .await
}

/// Joins room "r" with `token` and expects `unauthorized` with `why` in the message.
async fn refused(node: &chorus_signaling::RunningNode, token: Option<String>, why: &str) {
    let mut ws = connect(node).await;
    let mut join = json!({"type":"join","room":"r","name":"A"});
    if let Some(t) = token {
        join["token"] = json!(t);
    }
    send(&mut ws, join).await;
    let e = expect_error(&mut ws, "unauthorized").await;
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(why), "{why:?} not in {message:?}");
    assert_eq!(expect_close(&mut ws).await, CloseCode::Policy);
}

#[tokio::test]
async fn every_bad_token_is_refused() {
    let node = secured(false).await;
    refused(&node, None, "requires a token").await;
    refused(&node, Some("not.a.jwt".into()), "malformed").await;
    refused(&node, Some(String::new()), "malformed").await;

    refused(&node, Some(expired_token()), "expired").await;

    let mut early = claims("r");
    early.nbf = Some(now() + 3600);
    refused(
        &node,
        Some(sign(&early, Algorithm::HS256, SECRET)),
        "not valid yet",
    )
    .await;

    refused(
        &node,
        Some(sign(&claims("other"), Algorithm::HS256, SECRET)),
        "another room",
    )
    .await;
    refused(
        &node,
        Some(sign(&claims("r"), Algorithm::HS512, SECRET)),
        "HS256",
    )
    .await;
    refused(
        &node,
        Some(sign(
            &claims("r"),
            Algorithm::HS256,
            "another-secret-of-enough-length!!",
        )),
        "signature",
    )
    .await;

    // alg: none, unsigned.
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(serde_json::to_string(&claims("r")).unwrap().as_bytes());
    refused(&node, Some(format!("{header}.{payload}.")), "").await;

    // A token whose claims lack what is required (no grants, no sub).
    let bare = json!({"room":"r","exp": now() + 600});
    let t = encode(
        &Header::new(Algorithm::HS256),
        &bare,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    refused(&node, Some(t), "malformed").await;
    node.stop().await;
}

#[tokio::test]
async fn a_valid_token_joins_with_its_name() {
    let node = secured(false).await;
    let mut ws = connect(&node).await;
    let token = sign(&claims("r"), Algorithm::HS256, SECRET);
    send(
        &mut ws,
        json!({"type":"join","room":"r","name":"Ignored","token":token}),
    )
    .await;
    let joined = recv(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let mut other = connect(&node).await;
    let token = sign(&claims("r"), Algorithm::HS256, SECRET);
    send(
        &mut other,
        json!({"type":"join","room":"r","name":"B","token":token}),
    )
    .await;
    let joined = recv(&mut other).await;
    assert_eq!(
        joined["participants"][0]["name"], "Token Name",
        "the token's name claim"
    );
    node.stop().await;
}

#[tokio::test]
async fn dev_mode_needs_no_token_but_checks_one_that_is_given() {
    let node = secured(true).await;
    let mut ws = connect(&node).await;
    send(&mut ws, json!({"type":"join","room":"r","name":"A"})).await;
    assert_eq!(recv(&mut ws).await["type"], "joined");
    refused(&node, Some(expired_token()), "expired").await;
    node.stop().await;
}
