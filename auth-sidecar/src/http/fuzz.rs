//! Property tests over hostile input (issue 8): the bodies of the three token endpoints, and the
//! `Authorization` header and body of `/sfu_webhook`. Whatever a client sends, the service does not panic
//! and does not answer 5xx: a token endpoint answers either a success (the request was in fact valid) or a
//! Matrix error with the CORS and JSON headers, and the webhook always answers an empty 200.
//!
//! The cases run in-process against the router with the fakes of [`super::test_support`], so a few
//! hundred take about a second. The generator is seeded, so every run (and CI) sees the same cases; a
//! failure prints the shrunk input.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::limits::MAX_BODY_BYTES;
use super::test_support::{Answer, Harness, SECRET};
use crate::contract::path;
use crate::livekit::fake::Reply;

/// The token endpoints.
const ENDPOINTS: [&str; 3] = [path::GET_TOKEN, path::SFU_GET, path::DELEGATE_DELAYED_LEAVE];

/// Every key a request body may have, at any level, so that generated objects often hit real fields.
const FIELDS: [&str; 16] = [
    "room_id",
    "slot_id",
    "openid_token",
    "access_token",
    "token_type",
    "matrix_server_name",
    "expires_in",
    "member",
    "id",
    "claimed_user_id",
    "claimed_device_id",
    "delay_id",
    "delay_timeout",
    "delay_cs_api_url",
    "room",
    "device_id",
];

/// A multi-threaded runtime (the fake LiveKit and the delegation engine run beside the requests) and
/// the router's harness on it.
fn harness() -> (tokio::runtime::Runtime, Harness) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let harness = runtime.block_on(Harness::start(Reply::Room));
    (runtime, harness)
}

/// A seeded runner of `cases` cases that writes no regression files.
fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// Runs `test` on every generated value; panics with the shrunk failure.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(failure) = runner(cases).run(&strategy, test) {
        panic!("{failure}");
    }
}

/// The answer a token endpoint owes any client input: never 5xx; a success body, or a Matrix error
/// with the CORS and JSON headers.
fn assert_client_answer(answer: &Answer) -> Result<(), TestCaseError> {
    let body = String::from_utf8_lossy(&answer.body);
    prop_assert!(
        !answer.status.is_server_error(),
        "{} for client input: {body}",
        answer.status
    );
    prop_assert_eq!(
        answer.headers.get("content-type"),
        Some(&HeaderValue::from_static("application/json"))
    );
    prop_assert_eq!(
        answer.headers.get("access-control-allow-origin"),
        Some(&HeaderValue::from_static("*"))
    );
    prop_assert!(body.ends_with('\n'), "no trailing newline: {body:?}");
    let json: Value = serde_json::from_str(&body)
        .map_err(|error| TestCaseError::fail(format!("not JSON ({error}): {body:?}")))?;
    if answer.status == StatusCode::OK {
        prop_assert!(
            json == json!({}) || (json["url"].is_string() && json["jwt"].is_string()),
            "unexpected success body {body}"
        );
    } else {
        prop_assert!(
            json["errcode"]
                .as_str()
                .is_some_and(|code| code.starts_with("M_")),
            "no errcode: {body}"
        );
        prop_assert!(
            json["error"].as_str().is_some_and(|text| !text.is_empty()),
            "no error text: {body}"
        );
    }
    Ok(())
}

fn post(endpoint: &str, body: Vec<u8>) -> axum::extract::Request {
    axum::extract::Request::builder()
        .method(Method::POST)
        .uri(endpoint)
        .body(axum::body::Body::from(body))
        .unwrap()
}

fn endpoint() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&ENDPOINTS[..])
}

/// Strings that matter to the fakes (a good token, the full-access server) and arbitrary ones, including
/// control characters, non-BMP characters and what Go's encoder escapes.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(&[
            "good-token", "example.com", "@alice:example.com", "remote-token", "other.org",
            "@bob:other.org", "m.call#ROOM", "", "<&>\u{2028}\u{2029}", "\u{0}", "\u{FFFD}",
        ][..]).prop_map(str::to_owned),
        3 => any::<String>(),
        1 => "[\\x00-\\x7f]{0,8}".prop_map(|s| s.repeat(1000)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&FIELDS[..]).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(key(), inner, 0..6).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A body each endpoint accepts (with the delay fields that make it delegate).
fn valid_body(endpoint: &str) -> Value {
    let openid = json!({
        "access_token": "good-token",
        "token_type": "Bearer",
        "matrix_server_name": "example.com",
        "expires_in": 3600
    });
    if endpoint == path::SFU_GET {
        json!({"room": "!room:example.com", "openid_token": openid, "device_id": "DEV"})
    } else {
        json!({
            "room_id": "!room:example.com",
            "slot_id": "m.call#ROOM",
            "openid_token": openid,
            "member": {"id": "m", "claimed_user_id": "@alice:example.com", "claimed_device_id": "DEV"},
            "delay_id": "syd_abc",
            "delay_timeout": 10000
        })
    }
}

/// A change to a valid body: a field (at the top or one level down) set to anything or removed.
#[derive(Clone, Debug)]
enum Edit {
    Set(Vec<String>, Value),
    Remove(Vec<String>),
}

fn edit() -> impl Strategy<Value = Edit> {
    let path = prop_oneof![
        key().prop_map(|k| vec![k]),
        (
            proptest::sample::select(&["openid_token", "member"][..]),
            key()
        )
            .prop_map(|(outer, inner)| vec![outer.to_owned(), inner]),
    ];
    prop_oneof![
        3 => (path.clone(), json_value()).prop_map(|(p, v)| Edit::Set(p, v)),
        1 => path.prop_map(Edit::Remove),
    ]
}

fn apply(body: &mut Value, edit: &Edit) {
    let (path, value) = match edit {
        Edit::Set(path, value) => (path, Some(value)),
        Edit::Remove(path) => (path, None),
    };
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut target = body;
    for parent in parents {
        match target.get_mut(parent) {
            Some(next) => target = next,
            None => return,
        }
    }
    if let Some(object) = target.as_object_mut() {
        match value {
            Some(value) => {
                object.insert(last.clone(), value.clone());
            }
            None => {
                object.remove(last);
            }
        }
    }
}

/// What happens to the bytes after the JSON is written.
#[derive(Clone, Debug)]
enum Mangle {
    None,
    /// Cut at this fraction (per mille) of the length.
    Truncate(u16),
    /// These bytes (often invalid UTF-8) at this fraction of the length.
    Insert(u16, Vec<u8>),
    /// A second occurrence of a key, first in the object.
    Duplicate(String, Value),
    /// Bytes after the value.
    Append(Vec<u8>),
}

fn mangle() -> impl Strategy<Value = Mangle> {
    let bytes = vec(any::<u8>(), 1..8);
    prop_oneof![
        3 => Just(Mangle::None),
        1 => (0u16..1000).prop_map(Mangle::Truncate),
        1 => (0u16..1000, bytes.clone()).prop_map(|(at, bytes)| Mangle::Insert(at, bytes)),
        1 => (key(), json_value()).prop_map(|(k, v)| Mangle::Duplicate(k, v)),
        1 => bytes.prop_map(Mangle::Append),
    ]
}

fn render(body: &Value, mangle: &Mangle) -> Vec<u8> {
    let mut bytes = body.to_string().into_bytes();
    let at = |per_mille: u16, len: usize| len * usize::from(per_mille) / 1000;
    match mangle {
        Mangle::None => {}
        Mangle::Truncate(per_mille) => bytes.truncate(at(*per_mille, bytes.len())),
        Mangle::Insert(per_mille, inserted) => {
            let at = at(*per_mille, bytes.len());
            bytes.splice(at..at, inserted.iter().copied());
        }
        Mangle::Duplicate(key, value) => {
            if bytes.first() == Some(&b'{') {
                let pair = format!("{}:{},", Value::from(key.as_str()), value);
                let pair = if bytes.get(1) == Some(&b'}') {
                    pair.trim_end_matches(',').to_owned()
                } else {
                    pair
                };
                bytes.splice(1..1, pair.into_bytes());
            }
        }
        Mangle::Append(appended) => bytes.extend_from_slice(appended),
    }
    bytes
}

#[test]
fn arbitrary_bytes_get_a_matrix_error() {
    let (runtime, harness) = harness();
    check(
        300,
        (endpoint(), vec(any::<u8>(), 0..512)),
        |(endpoint, body)| {
            let answer = runtime.block_on(harness.send(post(endpoint, body)));
            assert_client_answer(&answer)
        },
    );
}

#[test]
fn arbitrary_json_gets_a_matrix_error_or_a_token() {
    let (runtime, harness) = harness();
    check(
        300,
        (endpoint(), json_value(), mangle()),
        |(endpoint, body, mangle)| {
            let answer = runtime.block_on(harness.send(post(endpoint, render(&body, &mangle))));
            assert_client_answer(&answer)
        },
    );
}

#[test]
fn edited_valid_bodies_get_a_matrix_error_or_a_token() {
    let (runtime, harness) = harness();
    let strategy = (endpoint(), endpoint(), vec(edit(), 0..4), mangle());
    check(400, strategy, |(endpoint, shape, edits, mangle)| {
        // Usually the endpoint's own shape, sometimes another endpoint's.
        let mut body = valid_body(shape);
        for edit in &edits {
            apply(&mut body, edit);
        }
        let answer = runtime.block_on(harness.send(post(endpoint, render(&body, &mangle))));
        assert_client_answer(&answer)
    });
}

/// Fixed shapes at the edges: deep nesting (past serde_json's recursion limit), huge strings just under
/// and over the body limit, numbers at the edges of their types.
#[test]
fn edge_bodies_get_a_matrix_error_or_a_token() {
    let (runtime, harness) = harness();
    let nested = |open: &str, close: &str, depth: usize| {
        format!("{}{}", open.repeat(depth), close.repeat(depth)).into_bytes()
    };
    let huge = |endpoint: &str, field: &str, len: usize| {
        let mut body = valid_body(endpoint);
        body[field] = Value::from("x".repeat(len));
        body.to_string().into_bytes()
    };
    for endpoint in ENDPOINTS {
        let mut bodies = vec![
            nested("[", "]", 30_000),
            nested("{\"member\":", "}", 5_000),
            nested("{\"openid_token\":", "}", 3_000),
            format!("{{\"room_id\":{}}}", "[".repeat(20_000)).into_bytes(),
            huge(endpoint, "room_id", MAX_BODY_BYTES - 400),
            huge(endpoint, "room", MAX_BODY_BYTES - 400),
            huge(endpoint, "delay_id", MAX_BODY_BYTES - 400),
            huge(endpoint, "room_id", MAX_BODY_BYTES),
            b"\"\\ud800\"".to_vec(),
            b"{\"room_id\":\"\\udfff\\ud800\"}".to_vec(),
            vec![0xff; 100],
        ];
        for timeout in [i64::MAX, i64::MIN, -1, 0, 1, 9_223_372_036_854_776] {
            let mut body = valid_body(endpoint);
            body["delay_timeout"] = json!(timeout);
            bodies.push(body.to_string().into_bytes());
        }
        for timeout in ["1e400", "-0", "1.0", "18446744073709551616"] {
            let body = valid_body(endpoint).to_string().replace("10000", timeout);
            bodies.push(body.into_bytes());
        }
        for body in bodies {
            let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
            let answer = runtime.block_on(harness.send(post(endpoint, body)));
            if let Err(failure) = assert_client_answer(&answer) {
                panic!("{endpoint} {shown}…: {failure}");
            }
        }
    }
}

// --- /sfu_webhook ---

/// The webhook's one answer.
fn assert_empty_ok(answer: &Answer) -> Result<(), TestCaseError> {
    prop_assert_eq!(answer.status, StatusCode::OK);
    prop_assert!(answer.body.is_empty(), "webhook body {:?}", answer.body);
    Ok(())
}

fn webhook(authorization: Option<&[u8]>, body: Vec<u8>) -> axum::extract::Request {
    let mut request = axum::extract::Request::builder()
        .method(Method::POST)
        .uri(path::SFU_WEBHOOK);
    if let Some(value) = authorization.and_then(|value| HeaderValue::from_bytes(value).ok()) {
        request = request.header(AUTHORIZATION, value);
    }
    request.body(axum::body::Body::from(body)).unwrap()
}

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX)
}

/// A webhook token: LiveKit's claims for `body` (or `claims` instead), under `alg`, signed with `secret`.
fn token(body: &[u8], claims: Option<&Value>, alg: Algorithm, secret: &[u8]) -> String {
    let default = json!({
        "iss": "test-key",
        "nbf": now() - 1,
        "exp": now() + 300,
        "sha256": STANDARD.encode(Sha256::digest(body)),
        "video": {},
    });
    jsonwebtoken::encode(
        &Header::new(alg),
        claims.unwrap_or(&default),
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// An unsigned token (`alg: none`), which must never pass.
fn unsigned(body: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = json!({"iss": "test-key", "sha256": STANDARD.encode(Sha256::digest(body))});
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// How the `Authorization` value is made.
#[derive(Clone, Debug)]
enum Auth {
    Missing,
    Raw(Vec<u8>),
    /// Correctly signed for the body.
    Signed,
    /// Signed with these claims instead of LiveKit's.
    Claims(Value),
    /// A correct token cut at this fraction (per mille).
    Truncated(u16),
    /// Another algorithm, or another secret.
    WrongAlg(Algorithm),
    WrongSecret,
    Unsigned,
    /// A correct token with `Bearer ` before it, or junk after it.
    Bearer,
    Suffixed(String),
}

fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        1 => Just(Auth::Missing),
        2 => vec(any::<u8>(), 0..300).prop_map(Auth::Raw),
        1 => "[A-Za-z0-9_.=-]{0,4000}".prop_map(|s| Auth::Raw(s.into_bytes())),
        4 => Just(Auth::Signed),
        2 => json_value().prop_map(Auth::Claims),
        1 => (0u16..1000).prop_map(Auth::Truncated),
        1 => proptest::sample::select(&[Algorithm::HS384, Algorithm::HS512][..]).prop_map(Auth::WrongAlg),
        1 => Just(Auth::WrongSecret),
        1 => Just(Auth::Unsigned),
        1 => Just(Auth::Bearer),
        1 => "[ -~]{1,20}".prop_map(Auth::Suffixed),
    ]
}

fn authorization(auth: &Auth, body: &[u8]) -> Option<Vec<u8>> {
    let signed = || token(body, None, Algorithm::HS256, SECRET.as_bytes());
    let value = match auth {
        Auth::Missing => return None,
        Auth::Raw(bytes) => return Some(bytes.clone()),
        Auth::Signed => signed(),
        Auth::Claims(claims) => token(body, Some(claims), Algorithm::HS256, SECRET.as_bytes()),
        Auth::Truncated(per_mille) => {
            let mut token = signed();
            token.truncate(token.len() * usize::from(*per_mille) / 1000);
            token
        }
        Auth::WrongAlg(alg) => token(body, None, *alg, SECRET.as_bytes()),
        Auth::WrongSecret => token(body, None, Algorithm::HS256, b"not-the-secret"),
        Auth::Unsigned => unsigned(body),
        Auth::Bearer => format!("Bearer {}", signed()),
        Auth::Suffixed(suffix) => format!("{}{suffix}", signed()),
    };
    Some(value.into_bytes())
}

/// Webhook bodies: LiveKit's participant events with fields replaced, any JSON, any bytes.
fn webhook_body() -> impl Strategy<Value = Vec<u8>> {
    let event = (
        prop_oneof![
            proptest::sample::select(
                &[
                    "participant_joined",
                    "participant_left",
                    "participant_connection_aborted",
                    "room_finished",
                ][..]
            )
            .prop_map(Value::from),
            json_value(),
        ],
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(event, room, identity, reason)| {
            let mut object = Map::new();
            object.insert("event".into(), event);
            object.insert("room".into(), json!({"name": room, "sid": "RM_x"}));
            object.insert(
                "participant".into(),
                json!({"identity": identity, "disconnectReason": reason}),
            );
            Value::Object(object).to_string().into_bytes()
        });
    prop_oneof![
        3 => event,
        2 => json_value().prop_map(|value| value.to_string().into_bytes()),
        1 => vec(any::<u8>(), 0..512),
        1 => Just(vec![b'{'; 100_000]),
    ]
}

#[test]
fn any_webhook_gets_an_empty_200() {
    let (runtime, harness) = harness();
    check(400, (auth(), webhook_body()), |(auth, body)| {
        let authorization = authorization(&auth, &body);
        let request = webhook(authorization.as_deref(), body);
        let answer = runtime.block_on(harness.send(request));
        assert_empty_ok(&answer)
    });
}

/// Only correctly signed webhooks get past verification: everything else is counted as rejected.
#[test]
fn only_signed_webhooks_pass_verification() {
    let (runtime, harness) = harness();
    let forged = prop_oneof![
        vec(any::<u8>(), 0..300).prop_map(Auth::Raw),
        (0u16..1000).prop_map(Auth::Truncated),
        proptest::sample::select(&[Algorithm::HS384, Algorithm::HS512][..])
            .prop_map(Auth::WrongAlg),
        Just(Auth::WrongSecret),
        Just(Auth::Unsigned),
        Just(Auth::Bearer),
        "[ -~]{1,20}".prop_map(Auth::Suffixed),
    ];
    let rejected = || {
        let metrics = harness.state.metrics.encode();
        metrics
            .lines()
            .find(|line| line.starts_with(r#"matrixrtc_auth_webhooks_total{outcome="rejected"}"#))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|count| count.parse::<u64>().ok())
            .unwrap_or(0)
    };
    check(200, (forged, webhook_body()), |(auth, body)| {
        let before = rejected();
        let authorization = authorization(&auth, &body);
        let answer = runtime.block_on(harness.send(webhook(authorization.as_deref(), body)));
        assert_empty_ok(&answer)?;
        prop_assert_eq!(rejected(), before + 1, "{:?} passed verification", auth);
        Ok(())
    });
}
