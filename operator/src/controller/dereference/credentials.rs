//! The LiveKit API key and secret that the builders put into LiveKit's key file and the authorisation service.
//!
//! - `spec.credentials` set: read the user's Secret; a missing Secret or a bad field is a `Degraded` reason,
//!   and nothing is applied until it is fixed. The Secret is watched (metadata only), so fixing it
//!   reconciles at once.
//! - unset: read the operator-generated Secret `<name>-credentials`; if it does not exist, generate a key and a
//!   secret from 40 CSPRNG bytes **once**. The builders then include that Secret (same values) among the
//!   children, so every later reconcile reads and re-applies identical data. A damaged generated Secret is
//!   reported, never silently replaced: rotating keys drops every call in progress, so it must be a person's
//!   decision (delete the Secret to get new credentials).
//!
//! The other user Secrets the pods reference by name (Redis password, Redis URL, TURN certificate) are read as
//! metadata only: their versions go into the pod template hash (see [`crate::build::secret_refs`]), and a
//! missing one is a `Degraded` reason before anything is applied, rather than pods that cannot start.
//!
//! Nothing here logs or formats a secret value: `ApiCredentials` redacts itself and errors name only Secrets
//! and fields.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use crate::apply::ApiFailure;
use crate::build::credentials::{ApiCredentials, CredentialsError, RANDOM_BYTES};
use crate::build::secret_refs::{SecretRef, SecretVersion, SecretVersions};
use crate::plan::CredentialsSource;

/// The credentials to build with, and whether they were made just now.
pub struct Resolved {
    pub credentials: ApiCredentials,
    /// True when this reconcile generated them (worth an Event: a Secret is about to be created).
    pub generated_now: bool,
    /// The version of the user's credentials Secret (empty for generated credentials), so that
    /// [`observe_references`] need not read it again.
    pub observed: SecretVersions,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "the credentials Secret {name} does not exist in this namespace; create it with the fields \
         {key_field} (API key) and {secret_field} (API secret, at least 32 characters)"
    )]
    MissingSecret {
        name: String,
        key_field: String,
        secret_field: String,
    },
    #[error("{0}")]
    Invalid(CredentialsError),
    #[error(
        "the generated credentials Secret {name} is damaged ({problem}); the operator never replaces \
         credentials by itself: delete the Secret to generate new ones"
    )]
    DamagedGenerated {
        name: String,
        problem: CredentialsError,
    },
    #[error("reading the credentials Secret {name} failed: {failure}")]
    Read { name: String, failure: ApiFailure },
    #[error(
        "these Secrets the pods reference do not exist in this namespace: {missing}; nothing is applied until they do"
    )]
    ReferencedSecretsMissing {
        /// `name (spec field)`, comma separated.
        missing: String,
    },
    #[error("reading the Secret {name} failed: {failure}")]
    ReadReferenced { name: String, failure: ApiFailure },
}

impl ResolveError {
    /// The `Degraded` condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::MissingSecret { .. } => "CredentialsSecretMissing",
            ResolveError::Invalid(_) => "CredentialsInvalid",
            ResolveError::DamagedGenerated { .. } => "GeneratedCredentialsDamaged",
            ResolveError::Read { .. } => "CredentialsUnreadable",
            ResolveError::ReferencedSecretsMissing { .. } => "ReferencedSecretMissing",
            ResolveError::ReadReferenced { .. } => "ReferencedSecretUnreadable",
        }
    }
}

/// Read (or, for a generated Secret that does not exist yet, make) the credentials for `source`.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    source: &CredentialsSource,
    random: impl FnOnce() -> [u8; RANDOM_BYTES],
) -> Result<Resolved, ResolveError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let (key_field, secret_field) = source.fields();
    match source {
        CredentialsSource::Existing(reference) => {
            let name = &reference.secret_name;
            let secret = read(&api, name)
                .await?
                .ok_or_else(|| ResolveError::MissingSecret {
                    name: name.clone(),
                    key_field: key_field.to_owned(),
                    secret_field: secret_field.to_owned(),
                })?;
            let credentials = ApiCredentials::from_secret(&secret, key_field, secret_field)
                .map_err(ResolveError::Invalid)?;
            let mut observed = SecretVersions::default();
            observed.insert(name, SecretVersion::of(&secret.metadata));
            Ok(Resolved {
                credentials,
                generated_now: false,
                observed,
            })
        }
        CredentialsSource::Generated { secret_name } => match read(&api, secret_name).await? {
            Some(secret) => {
                let credentials = ApiCredentials::from_secret(&secret, key_field, secret_field)
                    .map_err(|problem| ResolveError::DamagedGenerated {
                        name: secret_name.clone(),
                        problem,
                    })?;
                Ok(Resolved {
                    credentials,
                    generated_now: false,
                    observed: SecretVersions::default(),
                })
            }
            None => Ok(Resolved {
                credentials: ApiCredentials::from_random_bytes(&random()),
                generated_now: true,
                observed: SecretVersions::default(),
            }),
        },
    }
}

/// The versions of every Secret in `references` (metadata only: the content stays on the API server),
/// adding to `known`, which is not read again. Every missing Secret is reported at once.
pub async fn observe_references(
    client: &Client,
    namespace: &str,
    references: &[SecretRef],
    mut known: SecretVersions,
) -> Result<SecretVersions, ResolveError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut missing: Vec<String> = Vec::new();
    for reference in references {
        if known.contains(&reference.name) {
            continue;
        }
        let found = api
            .get_metadata_opt(&reference.name)
            .await
            .map_err(|error| ResolveError::ReadReferenced {
                name: reference.name.clone(),
                failure: ApiFailure::for_secret(&error),
            })?;
        match found {
            Some(secret) => known.insert(&reference.name, SecretVersion::of(&secret.metadata)),
            None if reference.used_for.may_be_missing() => {
                known.insert(&reference.name, SecretVersion::absent())
            }
            None => missing.push(format!(
                "{} ({})",
                reference.name,
                reference.used_for.field()
            )),
        }
    }
    if missing.is_empty() {
        Ok(known)
    } else {
        Err(ResolveError::ReferencedSecretsMissing {
            missing: missing.join(", "),
        })
    }
}

async fn read(api: &Api<Secret>, name: &str) -> Result<Option<Secret>, ResolveError> {
    api.get_opt(name).await.map_err(|error| ResolveError::Read {
        name: name.to_owned(),
        failure: ApiFailure::for_secret(&error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::REASONS;

    #[test]
    fn every_reason_is_a_listed_condition_reason() {
        let failure = || ApiFailure {
            code: Some(403),
            reason: "Forbidden".into(),
            message: None,
        };
        let problem = || CredentialsError::Missing {
            secret: "s".into(),
            field: "f".into(),
        };
        let errors = [
            ResolveError::MissingSecret {
                name: "s".into(),
                key_field: "k".into(),
                secret_field: "f".into(),
            },
            ResolveError::Invalid(problem()),
            ResolveError::DamagedGenerated {
                name: "s".into(),
                problem: problem(),
            },
            ResolveError::Read {
                name: "s".into(),
                failure: failure(),
            },
            ResolveError::ReferencedSecretsMissing {
                missing: "s (spec.auth.redis.urlSecret)".into(),
            },
            ResolveError::ReadReferenced {
                name: "s".into(),
                failure: failure(),
            },
        ];
        let mut reasons = std::collections::BTreeSet::new();
        for error in &errors {
            // Exhaustive on purpose: a new variant fails to compile here until it is added above.
            match error {
                ResolveError::MissingSecret { .. }
                | ResolveError::Invalid(_)
                | ResolveError::DamagedGenerated { .. }
                | ResolveError::Read { .. }
                | ResolveError::ReferencedSecretsMissing { .. }
                | ResolveError::ReadReferenced { .. } => {}
            }
            assert!(REASONS.contains(&error.reason()), "{}", error.reason());
            reasons.insert(error.reason());
        }
        assert_eq!(reasons.len(), errors.len(), "one reason per problem");
    }
}
