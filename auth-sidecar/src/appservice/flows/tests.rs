//! The decision tables of §6, row by row, with fakes that record every call.

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::appservice::homeserver::HomeserverError;
use crate::livekit::grant;

const OWN: &str = "own.example";
const SFU: &str = "wss://sfu.own.example";
const ALICE: &str = "@alice:own.example";
const BOB: &str = "@bob:remote.example";
const ROOM: &str = "!room:own.example";

#[derive(Clone, Debug, PartialEq)]
enum Call {
    Resolve,
    IsJoined(String),
    FedProxy(String, Value),
    Lookup(String, String),
    CreateRoom(String),
    /// Key, server name, asserted user, delay ID, timeout.
    Delegate(JobKey, String, String, String, Duration),
    Track(String, String, String, String),
}

/// One fake for the homeserver, the side effects and the tracker; `calls` in order.
struct Fake {
    resolvable: bool,
    /// `/is_joined` answers by subject (`@user` or server name); missing = error.
    joined: Vec<(&'static str, bool)>,
    fed_reply: Option<FedReply>,
    lookup: Result<DelayedEvent, ()>,
    create_room_fails: bool,
    delegate_error: Option<AsError>,
    calls: Mutex<Vec<Call>>,
}

impl Default for Fake {
    fn default() -> Self {
        Self {
            resolvable: true,
            joined: vec![
                (ALICE, true),
                (BOB, true),
                (OWN, true),
                ("remote.example", true),
            ],
            fed_reply: Some(FedReply {
                status: 200,
                content: json!({"jwt": "remote-jwt"}),
            }),
            lookup: Ok(DelayedEvent::Found {
                room_id: ROOM.into(),
                delay_ms: 10_000,
            }),
            create_room_fails: false,
            delegate_error: None,
            calls: Mutex::new(Vec::new()),
        }
    }
}

impl Fake {
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn joined(mut self, subject: &'static str, answer: Option<bool>) -> Self {
        self.joined.retain(|(s, _)| *s != subject);
        if let Some(answer) = answer {
            self.joined.push((subject, answer));
        }
        self
    }
}

impl Homeserver for Fake {
    fn resolve(&self) -> BoxFuture<'_, Result<url::Url, String>> {
        self.record(Call::Resolve);
        let result = if self.resolvable {
            Ok(url::Url::parse("http://hs.own.example").unwrap())
        } else {
            Err("no well-known".into())
        };
        Box::pin(async move { result })
    }

    fn is_joined<'a>(
        &'a self,
        _base: &'a url::Url,
        room_id: &'a str,
        subject: Subject<'a>,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>> {
        assert_eq!(room_id, ROOM);
        let who = match subject {
            Subject::User(user) => user,
            Subject::Server(server) => server,
        };
        self.record(Call::IsJoined(who.to_owned()));
        let answer = self
            .joined
            .iter()
            .find(|(s, _)| *s == who)
            .map(|(_, joined)| *joined)
            .ok_or(HomeserverError::Status(StatusCode::FORBIDDEN));
        Box::pin(async move { answer })
    }

    fn fed_proxy<'a>(
        &'a self,
        _base: &'a url::Url,
        destination: &'a str,
        body: &'a Value,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<FedReply, HomeserverError>> {
        self.record(Call::FedProxy(destination.to_owned(), body.clone()));
        let reply = self
            .fed_reply
            .clone()
            .ok_or(HomeserverError::Status(StatusCode::BAD_GATEWAY));
        Box::pin(async move { reply })
    }

    fn delayed_event<'a>(
        &'a self,
        _base: &'a url::Url,
        delay_id: &'a str,
        user_id: &'a str,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<DelayedEvent, HomeserverError>> {
        self.record(Call::Lookup(delay_id.to_owned(), user_id.to_owned()));
        let lookup = self
            .lookup
            .clone()
            .map_err(|()| HomeserverError::Status(StatusCode::INTERNAL_SERVER_ERROR));
        Box::pin(async move { lookup })
    }
}

impl Effects for Fake {
    fn create_room<'a>(&'a self, alias: &'a str) -> BoxFuture<'a, Result<(), String>> {
        self.record(Call::CreateRoom(alias.to_owned()));
        let fails = self.create_room_fails;
        Box::pin(async move { if fails { Err("down".into()) } else { Ok(()) } })
    }

    fn delegate<'a>(
        &'a self,
        key: JobKey,
        server_name: &'a str,
        user_id: &'a str,
        delay_id: String,
        delay_timeout: Duration,
    ) -> BoxFuture<'a, Result<(), AsError>> {
        self.record(Call::Delegate(
            key,
            server_name.to_owned(),
            user_id.to_owned(),
            delay_id,
            delay_timeout,
        ));
        let result = self.delegate_error.clone().map_or(Ok(()), Err);
        Box::pin(async move { result })
    }
}

impl RoomTracker for Fake {
    fn track<'a>(&'a self, token: TrackedToken<'a>) -> BoxFuture<'a, ()> {
        self.record(Call::Track(
            token.matrix_room_id.to_owned(),
            token.matrix_user_id.to_owned(),
            token.livekit_room.to_owned(),
            token.livekit_identity.to_owned(),
        ));
        Box::pin(async {})
    }
}

fn settings() -> Settings {
    Settings {
        server_name: OWN.into(),
        livekit_url: SFU.into(),
        can_update_own_metadata: false,
        remote_can_publish: FullAccess::Only(vec![]),
    }
}

fn keys() -> KeySet {
    KeySet::single("key".into(), "secret".into()).unwrap()
}

async fn run<T>(
    fake: &Fake,
    settings: &Settings,
    flow: impl AsyncFnOnce(&Context<'_>) -> Result<T, AsError>,
) -> Result<T, AsError> {
    let keys = keys();
    let ctx = Context {
        settings,
        homeserver: fake,
        effects: fake,
        tracker: fake,
        keys: &keys,
        deadline: Instant::now() + Duration::from_secs(25),
    };
    flow(&ctx).await
}

fn cs_body(server_name: Option<&str>, url: &str) -> CsGetToken {
    CsGetToken {
        url: Some(url.into()),
        room_id: Some(ROOM.into()),
        slot_id: Some("slot".into()),
        member_id: Some("member".into()),
        server_name: server_name.map(str::to_owned),
    }
}

async fn cs(fake: &Fake, user: &str, body: CsGetToken) -> Result<Success, AsError> {
    run(fake, &settings(), async |ctx| {
        cs_get_token(ctx, user, &body).await
    })
    .await
}

fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn assert_error(result: Result<Success, AsError>, status: u16, errcode: &str, error: &str) {
    let got = result.expect_err("an error");
    assert_eq!(
        (
            got.status.as_u16(),
            got.errcode.as_ref(),
            got.error.as_ref()
        ),
        (status, errcode, error)
    );
}

// --- 6.1 C-S get_token -------------------------------------------------------------------------

#[tokio::test]
async fn cs_local_member_gets_a_token_room_and_tracking() {
    let fake = Fake::default();
    let Success::Jwt(jwt) = cs(&fake, ALICE, cs_body(None, SFU)).await.unwrap() else {
        panic!("no jwt");
    };
    let alias = grant::room_alias(ROOM, "slot");
    let identity = token::as_identity(ALICE, "member");
    let claims = claims(&jwt);
    assert_eq!(claims["sub"], identity.as_str());
    assert_eq!(claims["video"]["room"], alias.as_str());
    assert_eq!(claims["video"]["canPublish"], true);
    assert_eq!(claims["video"]["canUpdateOwnMetadata"], false);
    assert_eq!(
        fake.calls(),
        vec![
            Call::Resolve,
            Call::IsJoined(ALICE.into()),
            Call::CreateRoom(alias.clone()),
            Call::Track(ROOM.into(), ALICE.into(), alias, identity),
        ]
    );
    // server_name naming ourselves is local too.
    let fake = Fake::default();
    assert!(cs(&fake, ALICE, cs_body(Some(OWN), SFU)).await.is_ok());
    assert!(
        fake.calls()
            .contains(&Call::CreateRoom(grant::room_alias(ROOM, "slot")))
    );
}

#[tokio::test]
async fn cs_rows_in_order() {
    // #2 before everything (even a wrong url).
    let fake = Fake::default();
    assert_error(
        cs(&fake, "", cs_body(None, "wss://elsewhere")).await,
        401,
        "M_UNAUTHORIZED",
        "Missing request authorization",
    );
    // #3: local url mismatch, before the malformed user (#4) and without any homeserver call.
    assert_error(
        cs(&fake, "not-a-user", cs_body(None, "wss://elsewhere")).await,
        400,
        "M_INVALID_PARAM",
        URL_NOT_OURS,
    );
    assert_error(
        cs(&fake, ALICE, cs_body(Some(""), "wss://elsewhere")).await,
        400,
        "M_INVALID_PARAM",
        URL_NOT_OURS,
    );
    // #4.
    for user in [
        "alice",
        "@alice",
        "@:own.example",
        "@alice:bad host",
        "@alice:",
    ] {
        assert_error(
            cs(&fake, user, cs_body(None, SFU)).await,
            400,
            "M_INVALID_PARAM",
            MALFORMED_USER,
        );
    }
    assert_error(
        cs(&fake, ALICE, cs_body(Some("bad/server"), "wss://any")).await,
        400,
        "M_INVALID_PARAM",
        INVALID_SERVER_NAME,
    );
    assert!(
        fake.calls().is_empty(),
        "no homeserver call before #5: {:?}",
        fake.calls()
    );

    // #5.
    let fake = Fake {
        resolvable: false,
        ..Fake::default()
    };
    assert_error(
        cs(&fake, ALICE, cs_body(None, SFU)).await,
        400,
        "M_BAD_JSON",
        UNRESOLVABLE,
    );
    assert_eq!(fake.calls(), vec![Call::Resolve]);
    // #6: error; #7: not joined; both also for a remote target, before anything else.
    for server_name in [None, Some("remote.example")] {
        let fake = Fake::default().joined(ALICE, None);
        assert_error(
            cs(&fake, ALICE, cs_body(server_name, SFU)).await,
            502,
            "M_UNKNOWN",
            MEMBERSHIP_UNKNOWN,
        );
        let fake = Fake::default().joined(ALICE, Some(false));
        assert_error(
            cs(&fake, ALICE, cs_body(server_name, SFU)).await,
            403,
            "M_FORBIDDEN",
            NOT_A_MEMBER,
        );
        assert_eq!(
            fake.calls(),
            vec![Call::Resolve, Call::IsJoined(ALICE.into())]
        );
    }
    // #8.
    let fake = Fake {
        create_room_fails: true,
        ..Fake::default()
    };
    assert_error(
        cs(&fake, ALICE, cs_body(None, SFU)).await,
        500,
        "M_UNKNOWN",
        "Unable to create room on SFU",
    );
    assert!(
        !fake.calls().iter().any(|c| matches!(c, Call::Track(..))),
        "not tracked"
    );
}

#[tokio::test]
async fn cs_remote_target_is_relayed() {
    let fake = Fake::default();
    // The url is the remote SFU's: not checked here.
    let result = cs(
        &fake,
        ALICE,
        cs_body(Some("remote.example"), "wss://sfu.remote.example"),
    )
    .await;
    assert_eq!(result.unwrap(), Success::Jwt("remote-jwt".into()));
    assert_eq!(
        fake.calls(),
        vec![
            Call::Resolve,
            Call::IsJoined(ALICE.into()),
            Call::IsJoined("remote.example".into()),
            Call::FedProxy(
                "remote.example".into(),
                json!({"user_id": ALICE, "url": "wss://sfu.remote.example", "room_id": ROOM, "slot_id": "slot", "member_id": "member"})
            ),
        ],
        "no local room, no tracking"
    );
    // #10.
    let fake = Fake::default().joined("remote.example", None);
    assert_error(
        cs(&fake, ALICE, cs_body(Some("remote.example"), SFU)).await,
        502,
        "M_UNKNOWN",
        MEMBERSHIP_UNKNOWN,
    );
    let fake = Fake::default().joined("remote.example", Some(false));
    assert_error(
        cs(&fake, ALICE, cs_body(Some("remote.example"), SFU)).await,
        403,
        "M_FORBIDDEN",
        TARGET_NOT_JOINED,
    );
    assert!(!fake.calls().iter().any(|c| matches!(c, Call::FedProxy(..))));
    // #11: a Synapse refusal.
    let fake = Fake {
        fed_reply: None,
        ..Fake::default()
    };
    assert_error(
        cs(&fake, ALICE, cs_body(Some("remote.example"), SFU)).await,
        502,
        "M_UNKNOWN",
        UNREACHABLE,
    );
}

#[test]
fn relay_mapping() {
    let reply = |status, content| Some(FedReply { status, content });
    assert_eq!(
        relay(reply(200, json!({"jwt": "x"}))),
        Ok(Success::Jwt("x".into()))
    );
    let unreachable = AsError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", UNREACHABLE);
    for bad in [
        reply(200, json!({"jwt": ""})),
        reply(200, json!({"jwt": 5})),
        reply(201, json!({})),
        reply(200, Value::Null),
        reply(
            429,
            json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow down"}),
        ),
        reply(500, json!({"errcode": "M_UNKNOWN"})),
        reply(401, json!({"errcode": "M_UNAUTHORIZED"})),
        reply(404, Value::Null),
        None,
    ] {
        assert_eq!(relay(bad.clone()), Err(unreachable.clone()), "{bad:?}");
    }
    let relayed = relay(reply(403, json!({"errcode": "M_FORBIDDEN", "error": "The requesting user is not a member of the room"}))).unwrap_err();
    assert_eq!(relayed.status, StatusCode::FORBIDDEN);
    assert_eq!(
        relayed.error,
        "The requesting user is not a member of the room"
    );
    let relayed = relay(reply(
        400,
        json!({"errcode": "M_INVALID_PARAM", "error": "The url is not an SFU of this server"}),
    ))
    .unwrap_err();
    assert_eq!(
        (relayed.status, relayed.errcode.as_ref()),
        (StatusCode::BAD_REQUEST, "M_INVALID_PARAM")
    );
    // Without strings in `content`, the defaults.
    let relayed = relay(reply(403, Value::Null)).unwrap_err();
    assert_eq!(relayed.errcode, "M_FORBIDDEN");
    let relayed = relay(reply(400, json!({"errcode": 7}))).unwrap_err();
    assert_eq!(relayed.errcode, "M_INVALID_PARAM");
}

// --- 6.2 S-S get_token -------------------------------------------------------------------------

fn ss_body(user_id: &str, url: &str) -> SsGetToken {
    SsGetToken {
        user_id: Some(user_id.into()),
        url: Some(url.into()),
        room_id: Some(ROOM.into()),
        slot_id: Some("slot".into()),
        member_id: Some("member".into()),
    }
}

async fn ss(
    fake: &Fake,
    settings: &Settings,
    origin: &str,
    body: SsGetToken,
) -> Result<Success, AsError> {
    run(fake, settings, async |ctx| {
        ss_get_token(ctx, origin, &body).await
    })
    .await
}

#[tokio::test]
async fn ss_member_gets_a_token_without_publishing_unless_listed() {
    let fake = Fake::default();
    let Success::Jwt(jwt) = ss(&fake, &settings(), "remote.example", ss_body(BOB, SFU))
        .await
        .unwrap()
    else {
        panic!("no jwt");
    };
    let alias = grant::room_alias(ROOM, "slot");
    let identity = token::as_identity(BOB, "member");
    assert_eq!(claims(&jwt)["sub"], identity.as_str());
    assert_eq!(claims(&jwt)["video"]["canPublish"], false);
    assert_eq!(
        fake.calls(),
        vec![
            Call::Resolve,
            Call::IsJoined(OWN.into()),
            Call::IsJoined(BOB.into()),
            Call::CreateRoom(alias.clone()),
            Call::Track(ROOM.into(), BOB.into(), alias, identity),
        ]
    );
    let listed = Settings {
        remote_can_publish: FullAccess::parse("remote.example"),
        can_update_own_metadata: true,
        ..settings()
    };
    let Success::Jwt(jwt) = ss(
        &Fake::default(),
        &listed,
        "remote.example",
        ss_body(BOB, SFU),
    )
    .await
    .unwrap() else {
        panic!("no jwt");
    };
    assert_eq!(claims(&jwt)["video"]["canPublish"], true);
    assert_eq!(claims(&jwt)["video"]["canUpdateOwnMetadata"], true);
}

#[tokio::test]
async fn ss_rows_in_order() {
    let s = settings();
    let fake = Fake::default();
    assert_error(
        ss(&fake, &s, "", ss_body(BOB, SFU)).await,
        401,
        "M_UNAUTHORIZED",
        "Missing request origin",
    );
    assert_error(
        ss(&fake, &s, "remote.example", ss_body("bob", SFU)).await,
        400,
        "M_INVALID_PARAM",
        MALFORMED_USER,
    );
    assert_error(
        ss(&fake, &s, "evil.example", ss_body(BOB, SFU)).await,
        403,
        "M_FORBIDDEN",
        FOREIGN_USER,
    );
    assert!(fake.calls().is_empty(), "#4 makes no homeserver call");

    let fake = Fake {
        resolvable: false,
        ..Fake::default()
    };
    assert_error(
        ss(&fake, &s, "remote.example", ss_body(BOB, SFU)).await,
        400,
        "M_BAD_JSON",
        UNRESOLVABLE,
    );
    // #6.
    let fake = Fake::default().joined(OWN, None);
    assert_error(
        ss(&fake, &s, "remote.example", ss_body(BOB, SFU)).await,
        502,
        "M_UNKNOWN",
        MEMBERSHIP_UNKNOWN,
    );
    let fake = Fake::default().joined(OWN, Some(false));
    assert_error(
        ss(&fake, &s, "remote.example", ss_body(BOB, SFU)).await,
        403,
        "M_FORBIDDEN",
        SERVER_NOT_JOINED,
    );
    assert_eq!(
        fake.calls(),
        vec![Call::Resolve, Call::IsJoined(OWN.into())]
    );
    // #7.
    let fake = Fake::default().joined(BOB, None);
    assert_error(
        ss(&fake, &s, "remote.example", ss_body(BOB, SFU)).await,
        502,
        "M_UNKNOWN",
        MEMBERSHIP_UNKNOWN,
    );
    let fake = Fake::default().joined(BOB, Some(false));
    assert_error(
        ss(&fake, &s, "remote.example", ss_body(BOB, SFU)).await,
        403,
        "M_FORBIDDEN",
        NOT_A_MEMBER,
    );
    // #8: the url is checked after membership.
    let fake = Fake::default();
    assert_error(
        ss(&fake, &s, "remote.example", ss_body(BOB, "wss://other")).await,
        400,
        "M_INVALID_PARAM",
        URL_NOT_OURS,
    );
    assert_eq!(
        fake.calls(),
        vec![
            Call::Resolve,
            Call::IsJoined(OWN.into()),
            Call::IsJoined(BOB.into())
        ]
    );
    // #9.
    let fake = Fake {
        create_room_fails: true,
        ..Fake::default()
    };
    assert_error(
        ss(&fake, &s, "remote.example", ss_body(BOB, SFU)).await,
        500,
        "M_UNKNOWN",
        "Unable to create room on SFU",
    );
}

// --- 6.3 C-S delegate_delayed_leave ------------------------------------------------------------

fn delegate_body(url: &str, delay_id: &str) -> Delegate {
    Delegate {
        url: Some(url.into()),
        room_id: Some(ROOM.into()),
        slot_id: Some("slot".into()),
        member_id: Some("member".into()),
        delay_id: Some(delay_id.into()),
    }
}

async fn dl(fake: &Fake, user: &str, body: Delegate) -> Result<Success, AsError> {
    run(fake, &settings(), async |ctx| {
        delegate(ctx, user, &body).await
    })
    .await
}

#[tokio::test]
async fn delegation_stores_a_job_keyed_by_alias_and_as_identity() {
    let fake = Fake::default();
    assert_eq!(
        dl(&fake, ALICE, delegate_body(SFU, "syd_1")).await,
        Ok(Success::Empty)
    );
    assert_eq!(
        fake.calls(),
        vec![
            Call::Resolve,
            Call::Lookup("syd_1".into(), ALICE.into()),
            Call::Delegate(
                JobKey {
                    room: grant::room_alias(ROOM, "slot"),
                    identity: token::as_identity(ALICE, "member"),
                },
                OWN.into(),
                ALICE.into(),
                "syd_1".into(),
                Duration::from_secs(10),
            ),
        ],
        "no membership check, no room"
    );
}

#[tokio::test]
async fn delegation_rows_in_order() {
    let fake = Fake::default();
    assert_error(
        dl(&fake, "", delegate_body(SFU, "d")).await,
        401,
        "M_UNAUTHORIZED",
        "Missing request authorization",
    );
    assert_error(
        dl(&fake, "bad", delegate_body("wss://other", "d")).await,
        400,
        "M_INVALID_PARAM",
        URL_NOT_OURS,
    );
    assert_error(
        dl(&fake, "bad", delegate_body(SFU, "d")).await,
        400,
        "M_INVALID_PARAM",
        MALFORMED_USER,
    );
    assert!(fake.calls().is_empty());
    let fake = Fake {
        resolvable: false,
        ..Fake::default()
    };
    assert_error(
        dl(&fake, ALICE, delegate_body(SFU, "d")).await,
        400,
        "M_BAD_JSON",
        UNRESOLVABLE,
    );
    for lookup in [
        DelayedEvent::NotFound,
        DelayedEvent::Found {
            room_id: "!other:own.example".into(),
            delay_ms: 1000,
        },
        DelayedEvent::Found {
            room_id: ROOM.into(),
            delay_ms: 0,
        },
        DelayedEvent::Found {
            room_id: ROOM.into(),
            delay_ms: -5,
        },
    ] {
        let fake = Fake {
            lookup: Ok(lookup.clone()),
            ..Fake::default()
        };
        assert_error(
            dl(&fake, ALICE, delegate_body(SFU, "d")).await,
            400,
            "M_INVALID_PARAM",
            UNKNOWN_DELAY_ID,
        );
        assert!(
            !fake.calls().iter().any(|c| matches!(c, Call::Delegate(..))),
            "{lookup:?}"
        );
    }
    let fake = Fake {
        lookup: Err(()),
        ..Fake::default()
    };
    assert_error(
        dl(&fake, ALICE, delegate_body(SFU, "d")).await,
        503,
        "M_UNKNOWN",
        LOOKUP_FAILED,
    );
    let shutting_down = AsError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "M_UNKNOWN",
        "Service is shutting down",
    );
    let fake = Fake {
        delegate_error: Some(shutting_down.clone()),
        ..Fake::default()
    };
    assert_eq!(
        dl(&fake, ALICE, delegate_body(SFU, "d")).await,
        Err(shutting_down)
    );
}

#[test]
fn user_ids() {
    assert_eq!(user_server("@alice:example.com"), Some("example.com"));
    assert_eq!(user_server("@alice:127.0.0.1:8448"), Some("127.0.0.1:8448"));
    assert_eq!(user_server("@a:[::1]:8448"), Some("[::1]:8448"));
    for bad in [
        "",
        "alice:example.com",
        "@alice",
        "@:example.com",
        "@al ice:example.com",
        "@alice:",
    ] {
        assert_eq!(user_server(bad), None, "{bad:?}");
    }
}
