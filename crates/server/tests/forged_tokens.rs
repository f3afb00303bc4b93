//! Forged and wrong tokens against a real server: none is accepted, each gets a typed
//! refusal, and the members already in the room see nothing.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use common::{Client, SECRET, start};
use hmac::{Hmac, Mac};
use holoroom_engine::signaling::SignalingError;
use holoroom_protocol::ErrorCode;
use holoroom_server::auth::unix_now;
use serde_json::{Value, json};
use sha2::{Sha256, Sha384};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256(key: &[u8], input: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    b64(&mac.finalize().into_bytes())
}

fn claims() -> Value {
    let now = unix_now();
    json!({
        "iss": "holoroom", "aud": "holoroom", "sub": "mallory", "name": "Mallory",
        "iat": now, "nbf": now, "exp": now + 3600, "jti": "j1",
        "video": {"room": "r", "roomJoin": true, "canPublish": true, "canSubscribe": true}
    })
}

fn header() -> Value {
    json!({"alg": "HS256", "typ": "JWT", "kid": "k1"})
}

/// A token from raw header and payload bytes, signed with HS256 and `key`.
fn signed_raw(header: &Value, payload: &[u8], key: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload));
    let signature = hs256(key, &input);
    format!("{input}.{signature}")
}

fn signed(header: &Value, claims: &Value) -> String {
    signed_raw(header, claims.to_string().as_bytes(), SECRET)
}

fn with(mut value: Value, path: &[&str], new: Value) -> Value {
    let mut at = &mut value;
    for key in &path[..path.len() - 1] {
        at = &mut at[*key];
    }
    match new {
        Value::Null => {
            at.as_object_mut().expect("object").remove(path[path.len() - 1]);
        }
        new => at[path[path.len() - 1]] = new,
    }
    value
}

#[tokio::test]
async fn forged_and_wrong_tokens_are_all_refused() {
    let mut config = common::config();
    // Every case fails from this one address; the per-address limit has its own test.
    config.per_address.login_failures_per_minute = 1000;
    let server = start(config).await;
    let mut member = Client::join(&server, "r", "alice", true).await;
    member.publish("alice-cam").await.expect("publish");
    let before = server.snapshot();
    let now = unix_now();

    let good = signed(&header(), &claims());
    let (good_input, _) = good.rsplit_once('.').expect("three parts");
    let hs384 = {
        let h = with(header(), &["alg"], json!("HS384"));
        let input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let mut mac = Hmac::<Sha384>::new_from_slice(SECRET).expect("any key length");
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    let tampered = {
        let other = with(claims(), &["video", "room"], json!("r"));
        let other = with(other, &["video", "roomAdmin"], json!(true));
        let (h, _, s) = {
            let mut parts = good.split('.');
            (
                parts.next().expect("h"),
                parts.next().expect("p"),
                parts.next().expect("s"),
            )
        };
        format!("{h}.{}.{s}", b64(other.to_string().as_bytes()))
    };

    let cases: Vec<(&str, String, ErrorCode)> = vec![
        (
            "bad signature",
            signed_raw(
                &header(),
                claims().to_string().as_bytes(),
                b"some-other-secret-entirely",
            ),
            ErrorCode::TokenInvalid,
        ),
        ("tampered payload", tampered, ErrorCode::TokenInvalid),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg":"none","kid":"k1"}).to_string().as_bytes()),
                b64(claims().to_string().as_bytes())
            ),
            ErrorCode::TokenInvalid,
        ),
        ("alg HS384", hs384, ErrorCode::TokenInvalid),
        (
            "alg RS256",
            format!(
                "{}.{}",
                b64(with(header(), &["alg"], json!("RS256")).to_string().as_bytes()),
                &good[good.find('.').expect("dot") + 1..]
            ),
            ErrorCode::TokenInvalid,
        ),
        (
            "alg in lower case",
            signed(&with(header(), &["alg"], json!("hs256")), &claims()),
            ErrorCode::TokenInvalid,
        ),
        (
            "no kid",
            signed(&with(header(), &["kid"], Value::Null), &claims()),
            ErrorCode::TokenInvalid,
        ),
        (
            "unknown kid",
            signed(&with(header(), &["kid"], json!("k9")), &claims()),
            ErrorCode::TokenInvalid,
        ),
        (
            // RFC 7515: extensions listed as critical must be understood, and none are here.
            "critical header extension",
            signed(&with(header(), &["crit"], json!(["exp-policy"])), &claims()),
            ErrorCode::TokenInvalid,
        ),
        (
            "expired",
            signed(&header(), &with(claims(), &["exp"], json!(now - 5))),
            ErrorCode::TokenExpired,
        ),
        (
            "nbf in the future",
            signed(&header(), &with(claims(), &["nbf"], json!(now + 600))),
            ErrorCode::TokenNotYetValid,
        ),
        (
            "iat in the future",
            signed(&header(), &with(claims(), &["iat"], json!(now + 600))),
            ErrorCode::TokenNotYetValid,
        ),
        (
            "wrong audience",
            signed(&header(), &with(claims(), &["aud"], json!("someone-else"))),
            ErrorCode::TokenInvalid,
        ),
        (
            "wrong issuer",
            signed(&header(), &with(claims(), &["iss"], json!("evil"))),
            ErrorCode::TokenInvalid,
        ),
        (
            "room mismatch",
            signed(&header(), &with(claims(), &["video", "room"], json!("other-room"))),
            ErrorCode::TokenRoomMismatch,
        ),
        (
            "sub mismatch",
            signed(&header(), &with(claims(), &["sub"], json!("alice"))),
            ErrorCode::TokenUserMismatch,
        ),
        (
            "no roomJoin",
            signed(&header(), &with(claims(), &["video", "roomJoin"], json!(false))),
            ErrorCode::PermissionDenied,
        ),
        (
            "missing exp",
            signed(&header(), &with(claims(), &["exp"], Value::Null)),
            ErrorCode::TokenInvalid,
        ),
        (
            "claims not UTF-8",
            signed_raw(&header(), &[0xff, 0xfe, 0x7b, 0x80, 0x22], SECRET),
            ErrorCode::TokenInvalid,
        ),
        (
            "header not JSON",
            format!("{}.{}", b64(b"alg=HS256"), good_input.split_once('.').expect("dot").1),
            ErrorCode::TokenInvalid,
        ),
        ("truncated", good[..good.len() - 10].to_owned(), ErrorCode::TokenInvalid),
        ("two parts", good_input.to_owned(), ErrorCode::TokenInvalid),
        ("four parts", format!("{good}.extra"), ErrorCode::TokenInvalid),
        (
            "padded base64",
            format!(
                "{}.{}.{}",
                URL_SAFE.encode(header().to_string()),
                URL_SAFE.encode(claims().to_string()),
                "AAAA"
            ),
            ErrorCode::TokenInvalid,
        ),
        ("huge", format!("{good}{}", "A".repeat(20_000)), ErrorCode::TokenInvalid),
        ("empty", String::new(), ErrorCode::TokenInvalid),
        ("random text", "hello, let me in".to_owned(), ErrorCode::TokenInvalid),
    ];
    assert!(cases.len() >= 15);

    let mut accepted = Vec::new();
    for (name, token, expected) in &cases {
        let mut client = Client::connect(&server).await;
        match client.login_with("r", "mallory", token.clone(), true).await {
            Err(SignalingError::Refused(error)) => {
                assert_eq!(error.code, *expected, "{name}: {}", error.message);
            }
            Ok(_) => accepted.push(*name),
            Err(other) => panic!("{name}: expected a typed refusal, got {other}"),
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
    assert!(
        member.drain(Duration::from_millis(200)).await.is_empty(),
        "the member saw nothing"
    );
    assert_eq!(server.snapshot(), before, "room unchanged");

    // The real token works, proving the cases above failed for their flaw alone.
    let mut client = Client::connect(&server).await;
    client
        .login_with("r", "mallory", good, true)
        .await
        .expect("the unmodified token is accepted");
}
