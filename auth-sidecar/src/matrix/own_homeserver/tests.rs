//! [`OwnHomeserver`] against a fake homeserver on loopback: the answers, the `/is_joined` negotiation,
//! the AS token, redirects, and the asserted delayed-event calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::json;

use super::*;

#[test]
fn joined_answers() {
    assert!(joined_from(StatusCode::OK, &json!({"joined": true})).unwrap());
    assert!(!joined_from(StatusCode::OK, &json!({"joined": false})).unwrap());
    assert!(
        !joined_from(StatusCode::OK, &json!({})).unwrap(),
        "missing = not joined"
    );
    for (status, body) in [
        (StatusCode::OK, json!({"joined": "yes"})),
        (StatusCode::OK, Value::Null),
        (StatusCode::FORBIDDEN, json!({"errcode": "M_FORBIDDEN"})),
        (StatusCode::NOT_FOUND, json!({"errcode": "M_UNRECOGNIZED"})),
        (StatusCode::INTERNAL_SERVER_ERROR, json!({"joined": true})),
    ] {
        assert!(joined_from(status, &body).is_err(), "{status} {body}");
    }
}

#[test]
fn unrecognized_is_only_a_404_with_that_errcode() {
    assert!(is_unrecognized(
        StatusCode::NOT_FOUND,
        &json!({"errcode": "M_UNRECOGNIZED"})
    ));
    assert!(!is_unrecognized(
        StatusCode::NOT_FOUND,
        &json!({"errcode": "M_NOT_FOUND"})
    ));
    assert!(!is_unrecognized(
        StatusCode::BAD_REQUEST,
        &json!({"errcode": "M_UNRECOGNIZED"})
    ));
}

#[test]
fn paths_escape_one_segment() {
    let mut url = Url::parse("http://hs:8008/base/").unwrap();
    extend(&mut url, &["_matrix", "client"]);
    push_segment(&mut url, "!room/x:example.com").unwrap();
    assert_eq!(url.path(), "/base/_matrix/client/!room%2Fx:example.com");
    assert!(push_segment(&mut url, "..").is_err());
}

#[derive(Default)]
struct FakeHs {
    /// What `/versions` says about the stable `/is_joined`.
    stable: AtomicBool,
    /// Whether the stable path exists.
    serves_stable: AtomicBool,
    /// Whether `/is_joined` answers with a redirect.
    redirect: AtomicBool,
    seen: Mutex<Vec<(String, Option<String>)>>,
}

async fn handle(State(fake): State<Arc<FakeHs>>, request: Request) -> Response {
    let target = request.uri().to_string();
    let auth = request
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_owned());
    fake.seen.lock().unwrap().push((target.clone(), auth));
    let path = request.uri().path();
    if path == "/_matrix/client/versions" {
        let stable = fake.stable.load(Ordering::SeqCst);
        return json_answer(
            StatusCode::OK,
            json!({"versions": ["v1.11"], "unstable_features": {STABLE_FLAG: stable}}),
        );
    }
    if fake.redirect.load(Ordering::SeqCst) {
        return (
            StatusCode::FOUND,
            [(http::header::LOCATION, "http://127.0.0.1:1/elsewhere")],
        )
            .into_response();
    }
    if path.contains("/delayed_events/") {
        return json_answer(StatusCode::OK, json!({}));
    }
    if path.starts_with("/_matrix/client/v3/") && !fake.serves_stable.load(Ordering::SeqCst) {
        return json_answer(StatusCode::NOT_FOUND, json!({"errcode": "M_UNRECOGNIZED"}));
    }
    json_answer(
        StatusCode::OK,
        json!({"joined": request.uri().query() == Some("mxid=%40alice%3Ahs")}),
    )
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn start() -> (Arc<FakeHs>, OwnHomeserver, Url) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = Arc::new(FakeHs::default());
    let app = Router::new()
        .fallback(any(handle))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let own = OwnHomeserver::new(reqwest::Client::builder(), "as-secret", "hs").unwrap();
    (fake, own, base)
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn paths(fake: &FakeHs) -> Vec<String> {
    fake.seen
        .lock()
        .unwrap()
        .drain(..)
        .map(|(path, _)| path)
        .collect()
}

#[tokio::test]
async fn unstable_unless_versions_says_stable_and_the_as_token_goes_along() {
    let (fake, own, base) = start().await;
    assert!(
        own.is_joined(&base, "!r:hs", Subject::User("@alice:hs"), deadline())
            .await
            .unwrap()
    );
    assert!(
        !own.is_joined(&base, "!r:hs", Subject::Server("other"), deadline())
            .await
            .unwrap()
    );
    let seen: Vec<_> = fake.seen.lock().unwrap().drain(..).collect();
    assert_eq!(
        seen,
        vec![
            ("/_matrix/client/versions".to_owned(), None),
            (
                "/_matrix/client/unstable/io.element.msc4502/rooms/!r:hs/is_joined?mxid=%40alice%3Ahs"
                    .to_owned(),
                Some("Bearer as-secret".to_owned())
            ),
            // The negotiated path is remembered; membership is not.
            (
                "/_matrix/client/unstable/io.element.msc4502/rooms/!r:hs/is_joined?server_name=other"
                    .to_owned(),
                Some("Bearer as-secret".to_owned())
            ),
        ]
    );
}

#[tokio::test]
async fn stable_when_listed_and_renegotiated_on_unrecognized() {
    let (fake, own, base) = start().await;
    fake.stable.store(true, Ordering::SeqCst);
    fake.serves_stable.store(true, Ordering::SeqCst);
    assert!(
        own.is_joined(&base, "!r:hs", Subject::User("@alice:hs"), deadline())
            .await
            .unwrap()
    );
    assert_eq!(
        paths(&fake),
        vec![
            "/_matrix/client/versions",
            "/_matrix/client/v3/rooms/!r:hs/is_joined?mxid=%40alice%3Ahs"
        ]
    );
    // The homeserver drops the stable path: one 404 M_UNRECOGNIZED, then /versions again, then unstable.
    fake.stable.store(false, Ordering::SeqCst);
    fake.serves_stable.store(false, Ordering::SeqCst);
    assert!(
        own.is_joined(&base, "!r:hs", Subject::User("@alice:hs"), deadline())
            .await
            .unwrap()
    );
    assert_eq!(
        paths(&fake),
        vec![
            "/_matrix/client/v3/rooms/!r:hs/is_joined?mxid=%40alice%3Ahs",
            "/_matrix/client/versions",
            "/_matrix/client/unstable/io.element.msc4502/rooms/!r:hs/is_joined?mxid=%40alice%3Ahs"
        ]
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_the_budget_is_respected() {
    let (fake, own, base) = start().await;
    fake.redirect.store(true, Ordering::SeqCst);
    let error = own
        .is_joined(&base, "!r:hs", Subject::User("@alice:hs"), deadline())
        .await
        .unwrap_err();
    assert!(
        matches!(error, HomeserverError::Status(StatusCode::FOUND)),
        "{error}"
    );
    let _ = paths(&fake);
    let error = own
        .is_joined(&base, "!r:hs", Subject::User("@alice:hs"), Instant::now())
        .await
        .unwrap_err();
    assert!(matches!(error, HomeserverError::OutOfTime), "{error}");
    assert!(paths(&fake).is_empty(), "no call without time left");
}

#[tokio::test]
async fn delayed_events_are_restarted_and_sent_as_the_user() {
    let (fake, own, base) = start().await;
    for action in [Action::Restart, Action::Send] {
        let reply = own
            .delayed_event_as(&base, "syd/1", "@alice:hs", action)
            .await
            .unwrap();
        assert_eq!(reply, Reply::Success);
    }
    let seen: Vec<_> = fake.seen.lock().unwrap().drain(..).collect();
    assert_eq!(
        seen,
        vec![
            (
                "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd%2F1/restart?user_id=%40alice%3Ahs"
                    .to_owned(),
                Some("Bearer as-secret".to_owned())
            ),
            (
                "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd%2F1/send?user_id=%40alice%3Ahs"
                    .to_owned(),
                Some("Bearer as-secret".to_owned())
            ),
        ]
    );
    assert!(matches!(
        own.delayed_event_as(&base, "..", "@alice:hs", Action::Send)
            .await,
        Err(ClientApiError::UnaddressableDelayId)
    ));
}
