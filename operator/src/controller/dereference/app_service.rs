//! Application-service mode's reads before building (see [`crate::build::appservice`]):
//!
//! - the tokens: read back from the operator's Secret `<name>-appservice`, or, when it does not exist yet,
//!   generated **once** from 64 CSPRNG bytes; the builders then include that Secret with the same values, so
//!   every later reconcile reads and re-applies identical data. A damaged Secret is reported, never replaced
//!   (new tokens mean a new registration and a Synapse restart: a person's decision, made by deleting it);
//! - the Secret the user asked the registration to be copied into: if it exists and this transport is not
//!   its controller, nothing is applied (the operator never overwrites, and so never prunes, a Secret it
//!   did not create).
//!
//! Errors name Secrets and keys, never token values.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use crate::apply::ApiFailure;
use crate::build::appservice::{AppServiceTokens, RANDOM_BYTES, TokensError};
use crate::build::names;
use crate::plan::Validated;

/// The tokens to build with, and whether they were made just now.
pub struct Resolved {
    pub tokens: AppServiceTokens,
    pub generated_now: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppServiceError {
    #[error(
        "the application-service Secret {name} is damaged ({problem}); the operator never replaces the \
         tokens by itself: delete the Secret to generate new ones (and restart the homeserver with the new \
         registration)"
    )]
    Damaged { name: String, problem: TokensError },
    #[error("reading the Secret {name} failed: {failure}")]
    Read { name: String, failure: ApiFailure },
    #[error(
        "the Secret {name} (spec.auth.appService.registrationSecret) already exists and was not created by \
         this MatrixRTCTransport; the operator does not overwrite it: name another Secret, or delete this \
         one so the operator creates it"
    )]
    NotOwned { name: String },
}

impl AppServiceError {
    /// The `Degraded` condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            AppServiceError::Damaged { .. } => "AppServiceTokensDamaged",
            AppServiceError::Read { .. } => "AppServiceSecretUnreadable",
            AppServiceError::NotOwned { .. } => "RegistrationSecretNotOwned",
        }
    }
}

/// The tokens for `v` (None when AS mode is off), after checking that the registration copy, if any, is
/// ours to write.
pub async fn resolve(
    client: &Client,
    v: &Validated,
    random: impl FnOnce() -> [u8; RANDOM_BYTES],
) -> Result<Option<Resolved>, AppServiceError> {
    let Some(plan) = &v.auth().app_service else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), v.namespace());
    if let Some((name, _)) = &plan.registration_secret {
        let existing = api
            .get_metadata_opt(name)
            .await
            .map_err(|error| AppServiceError::Read {
                name: name.clone(),
                failure: ApiFailure::for_secret(&error),
            })?;
        // The transport's uid: the controller owner reference that `apply::Owner::stamp` puts on it.
        let uid = &v.id.uid;
        if let Some(existing) = existing {
            let ours = existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == *uid);
            if !ours {
                return Err(AppServiceError::NotOwned { name: name.clone() });
            }
        }
    }
    let name = names::app_service(v.name());
    let stored = api
        .get_opt(&name)
        .await
        .map_err(|error| AppServiceError::Read {
            name: name.clone(),
            failure: ApiFailure::for_secret(&error),
        })?;
    let resolved = match stored {
        Some(secret) => Resolved {
            tokens: AppServiceTokens::from_secret(&secret)
                .map_err(|problem| AppServiceError::Damaged { name, problem })?,
            generated_now: false,
        },
        None => Resolved {
            tokens: AppServiceTokens::from_random_bytes(&random()),
            generated_now: true,
        },
    };
    Ok(Some(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::REASONS;

    #[test]
    fn every_reason_is_a_listed_condition_reason() {
        let errors = [
            AppServiceError::Damaged {
                name: "s".into(),
                problem: TokensError::Equal,
            },
            AppServiceError::Read {
                name: "s".into(),
                failure: ApiFailure {
                    code: Some(403),
                    reason: "Forbidden".into(),
                    message: None,
                },
            },
            AppServiceError::NotOwned { name: "s".into() },
        ];
        let mut reasons = std::collections::BTreeSet::new();
        for error in &errors {
            // Exhaustive on purpose: a new variant fails to compile here until it is added above.
            match error {
                AppServiceError::Damaged { .. }
                | AppServiceError::Read { .. }
                | AppServiceError::NotOwned { .. } => {}
            }
            assert!(REASONS.contains(&error.reason()), "{}", error.reason());
            reasons.insert(error.reason());
        }
        assert_eq!(reasons.len(), errors.len(), "one reason per problem");
    }
}
