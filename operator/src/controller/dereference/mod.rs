//! The step between validation and building: read from the cluster what the spec refers to, so that the
//! builders stay pure.
//!
//! - [`credentials`]: the LiveKit API key and secret (the user's Secret, or the operator's, generated once),
//!   and the versions of the other Secrets the pods reference by name (metadata only);
//! - [`app_service`]: in application-service mode, the registration tokens (read back, or generated once)
//!   and whether the registration copy is the operator's to write.
//!
//! A missing or damaged Secret fails here, before anything is applied.

pub mod app_service;
pub mod credentials;

use rand::Rng as _;

use crate::build::BuildInput;
use crate::build::appservice::AppServiceTokens;
use crate::build::credentials::ApiCredentials;
use crate::build::secret_refs::{self, SecretVersions};
use crate::defaults::OperatorDefaults;
use crate::plan::Validated;

use super::{Context, ReconcileError};

/// `N` bytes from the thread-local CSPRNG (ChaCha, seeded from the OS): the seed of generated credentials
/// and tokens.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// What the builders need from the cluster besides the plan.
pub struct Dereferenced {
    pub credentials: ApiCredentials,
    /// The observed version of every Secret in [`secret_refs::all`].
    pub secrets: SecretVersions,
    /// The application-service tokens (AS mode only).
    pub app_service: Option<AppServiceTokens>,
}

impl Dereferenced {
    /// The builders' input: these plus the operator's defaults.
    pub fn build_input<'a>(&'a self, defaults: &'a OperatorDefaults) -> BuildInput<'a> {
        BuildInput {
            defaults,
            credentials: &self.credentials,
            secrets: &self.secrets,
            app_service: self.app_service.as_ref(),
        }
    }
}

/// Read (or generate once) the credentials and tokens of `validated`, and the versions of every Secret its
/// pods reference.
#[tracing::instrument(skip_all)]
pub(super) async fn dereference(
    validated: &Validated,
    ctx: &Context,
) -> Result<Dereferenced, ReconcileError> {
    let resolved = credentials::resolve(
        &ctx.client,
        validated.namespace(),
        validated.credentials_source(),
        ctx.random,
    )
    .await?;
    if resolved.generated_now {
        tracing::info!("generated LiveKit API credentials");
    }
    let app_service = app_service::resolve(&ctx.client, validated, random_bytes).await?;
    if app_service.as_ref().is_some_and(|r| r.generated_now) {
        tracing::info!("generated application-service tokens");
    }
    let secrets = credentials::observe_references(
        &ctx.client,
        validated.namespace(),
        &secret_refs::all(validated),
        resolved.observed,
    )
    .await?;
    Ok(Dereferenced {
        credentials: resolved.credentials,
        secrets,
        app_service: app_service.map(|r| r.tokens),
    })
}
