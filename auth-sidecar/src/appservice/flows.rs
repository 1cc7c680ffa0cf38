//! The AS decision flows (as-mode spec §6): C-S `get_token`, S-S `get_token` and C-S
//! `delegate_delayed_leave`, after the gate of [`super::routes`] (method, token, body).
//!
//! Each flow is the spec's table read top to bottom: the first row that matches answers. The I/O goes
//! through [`Homeserver`] and [`Effects`], so the tables are unit-tested row by row with fakes that also
//! record which calls were made (the spec says which rows must not reach the homeserver).

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::homeserver::{DelayedEvent, FedReply, Homeserver, Subject};
use super::token::{self, Grants};
use super::{RoomTracker, TrackedToken};
use crate::config::FullAccess;
use crate::delegation::JobKey;
use crate::livekit::grant::room_alias;
use crate::livekit::keys::KeySet;
use crate::matrix::server_name::ServerName;

/// 6.1 #3.
pub const URL_NOT_OURS: &str = "The url is not an SFU of this server";
/// 6.1 #4, 6.2 #3.
pub const MALFORMED_USER: &str = "Malformed user identifier";
/// 6.1 #4 (ours).
pub const INVALID_SERVER_NAME: &str = "Invalid server_name";
/// 6.1 #5.
pub const UNRESOLVABLE: &str = "Unable to resolve client-server API";
/// 6.1 #6.
pub const MEMBERSHIP_UNKNOWN: &str = "Unable to verify room membership";
/// 6.1 #7.
pub const NOT_A_MEMBER: &str = "The requesting user is not a member of the room";
/// 6.1 #10.
pub const TARGET_NOT_JOINED: &str = "The target server is not joined to the room";
/// 6.2 #4.
pub const FOREIGN_USER: &str = "The user does not belong to the requesting server";
/// 6.2 #6.
pub const SERVER_NOT_JOINED: &str = "This server is not joined to the room";
/// 5.2: anything but a relayed 2xx, 403 or 400.
pub const UNREACHABLE: &str = "Unable to reach the specified homeserver";
/// 6.3 #5.
pub const UNKNOWN_DELAY_ID: &str = "Unknown `delay_id`";
/// 6.3 #6.
pub const LOOKUP_FAILED: &str = "Unable to look up the delayed event";

/// A Matrix error of an AS route. Unlike the standalone errors, texts may come from a remote server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsError {
    pub status: StatusCode,
    pub errcode: Cow<'static, str>,
    pub error: Cow<'static, str>,
}

impl AsError {
    pub fn new(status: StatusCode, errcode: &'static str, error: &'static str) -> Self {
        Self {
            status,
            errcode: Cow::Borrowed(errcode),
            error: Cow::Borrowed(error),
        }
    }

    fn invalid_param(error: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", error)
    }

    fn forbidden(error: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", error)
    }

    fn unknown(status: StatusCode, error: &'static str) -> Self {
        Self::new(status, "M_UNKNOWN", error)
    }

    /// The JSON body, newline-terminated like every other answer of the service.
    pub fn body(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec(&serde_json::json!({
            "errcode": self.errcode,
            "error": self.error,
        }))
        .unwrap_or_default();
        body.push(b'\n');
        body
    }
}

/// What a flow answers with on success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Success {
    /// `{"jwt": …}`.
    Jwt(String),
    /// `{}`.
    Empty,
}

/// The side effects of a successful request other than homeserver calls.
pub trait Effects: Send + Sync {
    /// LiveKit `CreateRoom` (an existing room is fine).
    fn create_room<'a>(&'a self, alias: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Stores a delegation job whose delayed-event calls are made as `user_id` on `server_name`, our own
    /// homeserver (§5.3); `Err` is the finished answer (e.g. shutting down).
    fn delegate<'a>(
        &'a self,
        key: JobKey,
        server_name: &'a str,
        user_id: &'a str,
        delay_id: String,
        delay_timeout: Duration,
    ) -> BoxFuture<'a, Result<(), AsError>>;
}

/// What the flows need from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `LIVEKIT_HS_SERVER_NAME`.
    pub server_name: String,
    /// `LIVEKIT_URL`: the `url` a local request must name.
    pub livekit_url: String,
    pub can_update_own_metadata: bool,
    pub remote_can_publish: FullAccess,
}

/// Everything a flow runs against.
pub struct Context<'a> {
    pub settings: &'a Settings,
    pub homeserver: &'a dyn Homeserver,
    pub effects: &'a dyn Effects,
    pub tracker: &'a dyn RoomTracker,
    pub keys: &'a KeySet,
    /// When the answer must be out (outbound timeouts are capped by it).
    pub deadline: Instant,
}

/// The C-S `get_token` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CsGetToken {
    pub url: Option<String>,
    pub room_id: Option<String>,
    pub slot_id: Option<String>,
    pub member_id: Option<String>,
    pub server_name: Option<String>,
}

/// The S-S `get_token` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SsGetToken {
    pub user_id: Option<String>,
    pub url: Option<String>,
    pub room_id: Option<String>,
    pub slot_id: Option<String>,
    pub member_id: Option<String>,
}

/// The C-S `delegate_delayed_leave` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Delegate {
    pub url: Option<String>,
    pub room_id: Option<String>,
    pub slot_id: Option<String>,
    pub member_id: Option<String>,
    pub delay_id: Option<String>,
}

/// A body's required strings; any empty one is 400 `M_BAD_JSON` (spec §4).
pub trait Required {
    fn required(&self) -> Vec<&Option<String>>;
}

impl Required for CsGetToken {
    fn required(&self) -> Vec<&Option<String>> {
        vec![&self.url, &self.room_id, &self.slot_id, &self.member_id]
    }
}

impl Required for SsGetToken {
    fn required(&self) -> Vec<&Option<String>> {
        vec![
            &self.user_id,
            &self.url,
            &self.room_id,
            &self.slot_id,
            &self.member_id,
        ]
    }
}

impl Required for Delegate {
    fn required(&self) -> Vec<&Option<String>> {
        vec![
            &self.url,
            &self.room_id,
            &self.slot_id,
            &self.member_id,
            &self.delay_id,
        ]
    }
}

fn text(field: &Option<String>) -> &str {
    field.as_deref().unwrap_or_default()
}

/// The server part of a well-formed user ID (`@localpart:server_name`), else `None`.
pub fn user_server(user_id: &str) -> Option<&str> {
    let (localpart, server) = user_id.strip_prefix('@')?.split_once(':')?;
    let valid_localpart = !localpart.is_empty()
        && !localpart
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':');
    (valid_localpart && ServerName::parse(server).is_ok()).then_some(server)
}

/// 6.1 #6/#7 and 6.2 #6/#7: a membership answer as a flow step.
async fn require_joined(
    ctx: &Context<'_>,
    base: &url::Url,
    room_id: &str,
    subject: Subject<'_>,
    not_joined: &'static str,
) -> Result<(), AsError> {
    match ctx
        .homeserver
        .is_joined(base, room_id, subject, ctx.deadline)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(AsError::forbidden(not_joined)),
        Err(error) => {
            tracing::warn!(%room_id, ?subject, %error, "membership check failed");
            Err(AsError::unknown(
                StatusCode::BAD_GATEWAY,
                MEMBERSHIP_UNKNOWN,
            ))
        }
    }
}

/// 6.1 #5 / 6.2 #5.
async fn resolve(ctx: &Context<'_>, errcode: &'static str) -> Result<url::Url, AsError> {
    ctx.homeserver.resolve().await.map_err(|error| {
        tracing::warn!(%error, "client-server API of the own homeserver unknown");
        AsError::new(StatusCode::BAD_REQUEST, errcode, UNRESOLVABLE)
    })
}

/// 6.1 #8–9 and 6.2 #9–10: mint, create the room, track.
async fn issue(
    ctx: &Context<'_>,
    room_id: &str,
    slot_id: &str,
    user_id: &str,
    member_id: &str,
    grants: Grants,
) -> Result<Success, AsError> {
    let alias = room_alias(room_id, slot_id);
    let identity = token::as_identity(user_id, member_id);
    let jwt =
        token::mint(ctx.keys, &identity, &alias, grants, SystemTime::now()).map_err(|error| {
            tracing::error!(%error, "could not mint a participant token");
            AsError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        })?;
    if let Err(error) = ctx.effects.create_room(&alias).await {
        tracing::warn!(room = %alias, %error, "LiveKit CreateRoom failed");
        return Err(AsError::unknown(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unable to create room on SFU",
        ));
    }
    ctx.tracker
        .track(TrackedToken {
            matrix_room_id: room_id,
            matrix_user_id: user_id,
            livekit_room: &alias,
            livekit_identity: &identity,
        })
        .await;
    tracing::debug!(%user_id, room = %alias, "issued an AS-mode LiveKit token");
    Ok(Success::Jwt(jwt))
}

/// §6.1, rows 2 onwards. `user_id` is `X-Matrix-User-Identifier`.
pub async fn cs_get_token(
    ctx: &Context<'_>,
    user_id: &str,
    body: &CsGetToken,
) -> Result<Success, AsError> {
    if user_id.is_empty() {
        return Err(AsError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "Missing request authorization",
        ));
    }
    let target = text(&body.server_name);
    let local = target.is_empty() || target == ctx.settings.server_name;
    if local && text(&body.url) != ctx.settings.livekit_url {
        return Err(AsError::invalid_param(URL_NOT_OURS));
    }
    if user_server(user_id).is_none() {
        return Err(AsError::invalid_param(MALFORMED_USER));
    }
    if !local && ServerName::parse(target).is_err() {
        return Err(AsError::invalid_param(INVALID_SERVER_NAME));
    }
    let base = resolve(ctx, "M_BAD_JSON").await?;
    let room_id = text(&body.room_id);
    require_joined(ctx, &base, room_id, Subject::User(user_id), NOT_A_MEMBER).await?;
    if local {
        let grants = Grants {
            can_publish: true,
            can_update_own_metadata: ctx.settings.can_update_own_metadata,
        };
        return issue(
            ctx,
            room_id,
            text(&body.slot_id),
            user_id,
            text(&body.member_id),
            grants,
        )
        .await;
    }
    require_joined(
        ctx,
        &base,
        room_id,
        Subject::Server(target),
        TARGET_NOT_JOINED,
    )
    .await?;
    let relayed = serde_json::json!({
        "user_id": user_id,
        "url": text(&body.url),
        "room_id": room_id,
        "slot_id": text(&body.slot_id),
        "member_id": text(&body.member_id),
    });
    let reply = ctx
        .homeserver
        .fed_proxy(&base, target, &relayed, ctx.deadline)
        .await;
    if let Err(error) = &reply {
        tracing::warn!(destination = %target, %error, "fed_proxy failed");
    }
    relay(reply.ok())
}

/// §5.2's mapping of a `fed_proxy` outcome (`None`: Synapse refused or did not answer).
pub fn relay(reply: Option<FedReply>) -> Result<Success, AsError> {
    let unreachable = AsError::unknown(StatusCode::BAD_GATEWAY, UNREACHABLE);
    let Some(reply) = reply else {
        return Err(unreachable);
    };
    let field = |name: &str| {
        reply
            .content
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match reply.status {
        200..=299 => match field("jwt") {
            Some(jwt) if !jwt.is_empty() => Ok(Success::Jwt(jwt)),
            _ => Err(unreachable),
        },
        403 | 400 => {
            let (status, errcode, error) = if reply.status == 403 {
                (
                    StatusCode::FORBIDDEN,
                    "M_FORBIDDEN",
                    "Refused by the target homeserver",
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "M_INVALID_PARAM",
                    "Rejected by the target homeserver",
                )
            };
            Err(AsError {
                status,
                errcode: field("errcode").map_or(Cow::Borrowed(errcode), Cow::Owned),
                error: field("error").map_or(Cow::Borrowed(error), Cow::Owned),
            })
        }
        _ => Err(unreachable),
    }
}

/// §6.2, rows 2 onwards. `origin` is `X-Matrix-Origin` (Synapse checked the signature).
pub async fn ss_get_token(
    ctx: &Context<'_>,
    origin: &str,
    body: &SsGetToken,
) -> Result<Success, AsError> {
    if origin.is_empty() {
        return Err(AsError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "Missing request origin",
        ));
    }
    let user_id = text(&body.user_id);
    let Some(user_server) = user_server(user_id) else {
        return Err(AsError::invalid_param(MALFORMED_USER));
    };
    if user_server != origin {
        return Err(AsError::forbidden(FOREIGN_USER));
    }
    let base = resolve(ctx, "M_BAD_JSON").await?;
    let room_id = text(&body.room_id);
    let own = ctx.settings.server_name.as_str();
    require_joined(ctx, &base, room_id, Subject::Server(own), SERVER_NOT_JOINED).await?;
    require_joined(ctx, &base, room_id, Subject::User(user_id), NOT_A_MEMBER).await?;
    if text(&body.url) != ctx.settings.livekit_url {
        return Err(AsError::invalid_param(URL_NOT_OURS));
    }
    let grants = Grants {
        can_publish: ctx.settings.remote_can_publish.allows(origin),
        can_update_own_metadata: ctx.settings.can_update_own_metadata,
    };
    issue(
        ctx,
        room_id,
        text(&body.slot_id),
        user_id,
        text(&body.member_id),
        grants,
    )
    .await
}

/// §6.3, rows 2 onwards.
pub async fn delegate(
    ctx: &Context<'_>,
    user_id: &str,
    body: &Delegate,
) -> Result<Success, AsError> {
    if user_id.is_empty() {
        return Err(AsError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "Missing request authorization",
        ));
    }
    if text(&body.url) != ctx.settings.livekit_url {
        return Err(AsError::invalid_param(URL_NOT_OURS));
    }
    if user_server(user_id).is_none() {
        return Err(AsError::invalid_param(MALFORMED_USER));
    }
    let base = resolve(ctx, "M_BAD_JSON").await?;
    let room_id = text(&body.room_id);
    let delay_id = text(&body.delay_id);
    let delay_timeout = match ctx
        .homeserver
        .delayed_event(&base, delay_id, user_id, ctx.deadline)
        .await
    {
        Ok(DelayedEvent::Found {
            room_id: event_room,
            delay_ms,
        }) if event_room == room_id && delay_ms > 0 => {
            Duration::from_millis(delay_ms.unsigned_abs())
        }
        Ok(_) => return Err(AsError::invalid_param(UNKNOWN_DELAY_ID)),
        Err(error) => {
            tracing::warn!(%error, "delayed event lookup failed");
            return Err(AsError::unknown(
                StatusCode::SERVICE_UNAVAILABLE,
                LOOKUP_FAILED,
            ));
        }
    };
    let key = JobKey {
        room: room_alias(room_id, text(&body.slot_id)),
        identity: token::as_identity(user_id, text(&body.member_id)),
    };
    ctx.effects
        .delegate(
            key,
            &ctx.settings.server_name,
            user_id,
            delay_id.to_owned(),
            delay_timeout,
        )
        .await?;
    Ok(Success::Empty)
}

#[cfg(test)]
mod tests;
