//! `ceiling`: the most a `/get_token` endpoint on this stack could do. A bare axum route that parses the
//! same JSON body into plain structs and signs the same HS256 JWT (the same claims, with the same room
//! and identity hashes) with `jsonwebtoken` — no validation, no OpenID check, no metrics, no logging.
//! The service's warm path is compared with this.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use matrixrtc_auth::livekit::grant::{participant_identity, room_alias};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// How long the signed tokens are valid, as the service's.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

#[derive(clap::Args)]
pub struct Args {
    /// Listen address; port 0 picks a free one (printed as `listening=<address>`).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Runtime worker threads (1: a current-thread runtime, as the service runs by default since
    /// `LIVEKIT_WORKER_THREADS`; 0: one per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// API key (the JWT `iss`).
    #[arg(long, default_value = "benchkey")]
    key: String,
    /// API secret (HMAC key). A benchmark value, not a secret.
    #[arg(long, default_value = "bench-secret-bench-secret-bench-secret")]
    secret: String,
    /// Returned as `url`, as the service returns `LIVEKIT_URL`.
    #[arg(long, default_value = "ws://127.0.0.1:9")]
    livekit_url: String,
    /// Exit after this many seconds even if nobody stops it.
    #[arg(long, default_value = "3600", value_parser = crate::seconds)]
    lifetime: Duration,
}

/// Why the ceiling could not start.
#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the LiveKit URL cannot be written as JSON: {0}")]
    Url(#[from] serde_json::Error),
}

// The same body the service reads; every field is parsed, as the service parses it, even those the JWT
// does not need.
#[derive(Deserialize)]
struct GetToken {
    room_id: String,
    slot_id: String,
    #[expect(
        dead_code,
        reason = "parsed as the service parses it; the ceiling checks no token"
    )]
    openid_token: OpenIdToken,
    member: Member,
}

#[derive(Deserialize)]
#[expect(
    dead_code,
    reason = "parsed as the service parses it; the ceiling checks no token"
)]
struct OpenIdToken {
    access_token: String,
    token_type: String,
    matrix_server_name: String,
    expires_in: i64,
}

#[derive(Deserialize)]
struct Member {
    id: String,
    claimed_user_id: String,
    claimed_device_id: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    nbf: u64,
    exp: u64,
    video: Video<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Video<'a> {
    room: &'a str,
    room_join: bool,
    can_publish: bool,
    can_subscribe: bool,
    can_update_own_metadata: bool,
}

struct Ceiling {
    key: String,
    signing: EncodingKey,
    header: Header,
    /// `{"url":<LiveKit URL>,"jwt":"`: the response up to the token.
    prefix: String,
}

pub fn run(args: &Args) -> Result<(), CeilingError> {
    crate::runtime(args.threads)?.block_on(serve(args))
}

async fn serve(args: &Args) -> Result<(), CeilingError> {
    let state = Arc::new(Ceiling {
        key: args.key.clone(),
        signing: EncodingKey::from_secret(args.secret.as_bytes()),
        header: Header::new(Algorithm::HS256),
        prefix: format!(
            "{{\"url\":{},\"jwt\":\"",
            serde_json::to_string(&args.livekit_url)?
        ),
    });
    let app = Router::new()
        .route("/get_token", post(get_token))
        .with_state(state);
    let listener = TcpListener::bind(args.bind).await?;
    println!("listening={}", listener.local_addr()?);
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    tokio::select! {
        served = axum::serve(listener, app) => served?,
        () = crate::lifetime_over(args.lifetime) => {}
    }
    Ok(())
}

async fn get_token(State(state): State<Arc<Ceiling>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<GetToken>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match sign(&state, &request) {
        Some(jwt) => (
            [(CONTENT_TYPE, "application/json")],
            format!("{}{jwt}\"}}\n", state.prefix),
        )
            .into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The service's participant token for the request's member and room.
fn sign(state: &Ceiling, request: &GetToken) -> Option<String> {
    let room = room_alias(&request.room_id, &request.slot_id);
    let identity = participant_identity(
        &request.member.claimed_user_id,
        &request.member.claimed_device_id,
        &request.member.id,
    );
    let nbf = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let claims = Claims {
        iss: &state.key,
        sub: &identity,
        nbf,
        exp: nbf + TOKEN_TTL.as_secs(),
        video: Video {
            room: &room,
            room_join: true,
            can_publish: true,
            can_subscribe: true,
            can_update_own_metadata: true,
        },
    };
    jsonwebtoken::encode(&state.header, &claims, &state.signing).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn signs_the_participant_token_for_the_benchmark_body() {
        let state = Ceiling {
            key: "benchkey".into(),
            signing: EncodingKey::from_secret(b"secret"),
            header: Header::new(Algorithm::HS256),
            prefix: String::new(),
        };
        let mut text = String::new();
        crate::body::write_get_token(&mut text, 3, 1, "127.0.0.1:9");
        let request: GetToken = serde_json::from_str(&text).unwrap();
        let jwt = sign(&state, &request).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &jwt,
            &DecodingKey::from_secret(b"secret"),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["iss"], "benchkey");
        assert_eq!(
            claims["sub"],
            participant_identity("@utok3:127.0.0.1:9", "DEV3", "@utok3:127.0.0.1:9:DEV3")
        );
        assert_eq!(
            claims["video"]["room"],
            room_alias("!room1:127.0.0.1:9", "m.call#ROOM")
        );
        assert_eq!(claims["video"]["canUpdateOwnMetadata"], true);
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
            3600
        );
    }
}
