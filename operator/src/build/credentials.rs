//! The LiveKit API key and secret: where they come from and how they are checked.
//!
//! The controller reads them from the cluster (or generates them once) and hands them to the
//! builders; nothing here touches the API server or a random number generator.

use std::fmt;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;

/// LiveKit rejects shorter secrets outside dev mode ("secret is too short").
pub const MIN_SECRET_LEN: usize = 32;
/// Bytes [`ApiCredentials::from_random_bytes`] needs: 8 for the key suffix, 32 for the secret.
pub const RANDOM_BYTES: usize = 40;

/// Why a credentials Secret is unusable. Messages name the Secret and key, never the values.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("Secret {secret}: key {field:?} is missing")]
    Missing { secret: String, field: String },
    #[error("Secret {secret}: key {field:?} is not UTF-8")]
    NotUtf8 { secret: String, field: String },
    #[error(
        "Secret {secret}: the API key in {field:?} must be non-empty and contain no ':' or whitespace"
    )]
    BadKey { secret: String, field: String },
    #[error(
        "Secret {secret}: the API secret in {field:?} must be at least {MIN_SECRET_LEN} characters without whitespace"
    )]
    WeakSecret { secret: String, field: String },
}

/// A LiveKit API key and secret. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiCredentials {
    api_key: String,
    api_secret: String,
}

impl fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiCredentials")
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .finish()
    }
}

impl ApiCredentials {
    /// Read and check the key and secret from a Secret (`data`, or `stringData` as a fallback for
    /// objects that were never round-tripped through the API server).
    pub fn from_secret(
        secret: &Secret,
        key_field: &str,
        secret_field: &str,
    ) -> Result<Self, CredentialsError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let read = |field: &str| -> Result<String, CredentialsError> {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(field))
                .map(|b| b.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(field))
                        .map(|s| s.clone().into_bytes())
                })
                .ok_or_else(|| CredentialsError::Missing {
                    secret: name.clone(),
                    field: field.to_owned(),
                })?;
            String::from_utf8(bytes).map_err(|_| CredentialsError::NotUtf8 {
                secret: name.clone(),
                field: field.to_owned(),
            })
        };
        // Files and `kubectl create secret --from-file` often end in a newline; it is not part of
        // the value.
        let api_key = read(key_field)?.trim_end_matches(['\n', '\r']).to_owned();
        let api_secret = read(secret_field)?
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        Self::new(api_key, api_secret).map_err(|bad| match bad {
            Bad::Key => CredentialsError::BadKey {
                secret: name.clone(),
                field: key_field.to_owned(),
            },
            Bad::Secret => CredentialsError::WeakSecret {
                secret: name.clone(),
                field: secret_field.to_owned(),
            },
        })
    }

    /// Fresh credentials from [`RANDOM_BYTES`] bytes of a CSPRNG: key `mrtc-<16 hex digits>`,
    /// secret = 32 bytes as unpadded base64url (43 characters).
    pub fn from_random_bytes(bytes: &[u8; RANDOM_BYTES]) -> Self {
        let (key_bytes, secret_bytes) = bytes.split_at(8);
        let hex: String = key_bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            api_key: format!("mrtc-{hex}"),
            api_secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes),
        }
    }

    fn new(api_key: String, api_secret: String) -> Result<Self, Bad> {
        if api_key.is_empty() || api_key.contains(':') || api_key.chars().any(char::is_whitespace) {
            return Err(Bad::Key);
        }
        if api_secret.chars().count() < MIN_SECRET_LEN
            || api_secret.chars().any(char::is_whitespace)
        {
            return Err(Bad::Secret);
        }
        Ok(Self {
            api_key,
            api_secret,
        })
    }

    /// The API key (not secret: it appears in the LiveKit webhook config).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The API secret; only ever written into Secrets.
    pub fn api_secret(&self) -> &str {
        &self.api_secret
    }

    /// Fixed, clearly fake credentials for offline rendering and tests.
    pub fn placeholder() -> Self {
        Self {
            api_key: "placeholder-key".to_owned(),
            api_secret: "PLACEHOLDER-secret-not-for-use-0123456789".to_owned(),
        }
    }
}

enum Bad {
    Key,
    Secret,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(entries: &[(&str, &[u8])]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("creds".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    const GOOD_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_key_and_secret_and_trims_a_trailing_newline() {
        let s = secret(&[("k", b"mykey\n"), ("s", GOOD_SECRET)]);
        let c = ApiCredentials::from_secret(&s, "k", "s").expect("valid");
        assert_eq!(c.api_key(), "mykey");
        assert_eq!(c.api_secret().as_bytes(), GOOD_SECRET);
    }

    #[test]
    fn falls_back_to_string_data() {
        let mut s = secret(&[]);
        s.string_data = Some(BTreeMap::from([
            ("k".to_owned(), "key".to_owned()),
            (
                "s".to_owned(),
                String::from_utf8_lossy(GOOD_SECRET).into_owned(),
            ),
        ]));
        assert!(ApiCredentials::from_secret(&s, "k", "s").is_ok());
    }

    #[test]
    fn missing_fields_name_the_secret_and_key() {
        let err = ApiCredentials::from_secret(&secret(&[("k", b"key")]), "k", "s").unwrap_err();
        assert_eq!(
            err,
            CredentialsError::Missing {
                secret: "creds".into(),
                field: "s".into()
            }
        );
        assert_eq!(err.to_string(), "Secret creds: key \"s\" is missing");
    }

    #[test]
    fn rejects_bad_keys_short_secrets_and_non_utf8() {
        let cases: [(&[u8], &[u8], &str); 4] = [
            (b"a:b", GOOD_SECRET, "BadKey"),
            (b"", GOOD_SECRET, "BadKey"),
            (b"key", b"short", "WeakSecret"),
            (b"\xff", GOOD_SECRET, "NotUtf8"),
        ];
        for (key, value, expected) in cases {
            let err = ApiCredentials::from_secret(&secret(&[("k", key), ("s", value)]), "k", "s")
                .unwrap_err();
            assert!(format!("{err:?}").starts_with(expected), "{err:?}");
            assert!(!err.to_string().contains("short"), "value leaked: {err}");
        }
    }

    #[test]
    fn generated_credentials_are_well_formed_and_depend_on_the_bytes() {
        let a = ApiCredentials::from_random_bytes(&[7; RANDOM_BYTES]);
        let b = ApiCredentials::from_random_bytes(&[8; RANDOM_BYTES]);
        assert_eq!(a.api_key(), "mrtc-0707070707070707");
        assert_eq!(a.api_secret().len(), 43);
        assert_ne!(a.api_secret(), b.api_secret());
        // What we generate must pass our own checks.
        assert!(ApiCredentials::new(a.api_key.clone(), a.api_secret.clone()).is_ok());
        assert!(
            ApiCredentials::new(
                ApiCredentials::placeholder().api_key,
                ApiCredentials::placeholder().api_secret
            )
            .is_ok()
        );
    }

    #[test]
    fn debug_redacts_the_secret() {
        let c = ApiCredentials::from_random_bytes(&[1; RANDOM_BYTES]);
        let shown = format!("{c:?}");
        assert!(!shown.contains(c.api_secret()));
        assert!(shown.contains("<redacted>"));
    }
}
