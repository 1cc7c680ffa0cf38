//! Secrets the operator owns: the keys Secret every pod mounts, and the generated credentials.
//!
//! The keys Secret holds a copy of the credentials in the shapes the consumers want: LiveKit's
//! `keys.yaml` (`<key>: <secret>`) and one file each for the authorisation service's
//! `LIVEKIT_KEY_FROM_FILE` / `LIVEKIT_SECRET_FROM_FILE`. Pods mount this operator-owned copy, and the
//! pod template hash follows the source credentials (see [`super::secret_refs`]), so new credentials
//! roll them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::credentials::ApiCredentials;
use super::labels::Component;
use super::{BuildError, names, object_meta};
use crate::plan::Validated;
use crate::plan::{API_KEY_FIELD, API_SECRET_FIELD};

/// File name of LiveKit's key file in the keys Secret.
pub const KEY_FILE: &str = "keys.yaml";

/// The keys Secret `<name>-keys`. `keys.yaml` is only present for a managed LiveKit.
pub fn keys(v: &Validated, credentials: &ApiCredentials) -> Result<Secret, BuildError> {
    let mut data = BTreeMap::from([
        (API_KEY_FIELD.to_owned(), bytes(credentials.api_key())),
        (API_SECRET_FIELD.to_owned(), bytes(credentials.api_secret())),
    ]);
    if v.is_managed_livekit() {
        // serde_yaml quotes whatever needs quoting, so any key/secret yields a valid map.
        let file = serde_yaml::to_string(&BTreeMap::from([(
            credentials.api_key(),
            credentials.api_secret(),
        )]))?;
        data.insert(KEY_FILE.to_owned(), ByteString(file.into_bytes()));
    }
    Ok(Secret {
        metadata: object_meta(v, names::keys(v.name()), Component::Transport),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

/// The Secret `<name>-credentials` holding generated credentials. The controller generates them
/// once and passes the same values on every reconcile, so applying this never rotates them.
pub fn generated_credentials(v: &Validated, credentials: &ApiCredentials) -> Secret {
    Secret {
        metadata: object_meta(v, names::credentials(v.name()), Component::Transport),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (API_KEY_FIELD.to_owned(), bytes(credentials.api_key())),
            (API_SECRET_FIELD.to_owned(), bytes(credentials.api_secret())),
        ])),
        ..Secret::default()
    }
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::{external, validated};

    #[test]
    fn keys_secret_has_livekit_key_file_and_auth_files() {
        let creds = ApiCredentials::placeholder();
        let secret = keys(&validated(""), &creds).expect("build");
        let data = secret.data.expect("data");
        let key_file = String::from_utf8(data[KEY_FILE].0.clone()).expect("utf8");
        let parsed: BTreeMap<String, String> = serde_yaml::from_str(&key_file).expect("yaml map");
        assert_eq!(
            parsed,
            BTreeMap::from([(creds.api_key().to_owned(), creds.api_secret().to_owned())])
        );
        assert_eq!(data[API_KEY_FIELD].0, creds.api_key().as_bytes());
        assert_eq!(data[API_SECRET_FIELD].0, creds.api_secret().as_bytes());
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-keys"));
    }

    #[test]
    fn external_livekit_needs_no_key_file() {
        let secret = keys(&external(), &ApiCredentials::placeholder()).expect("build");
        let data = secret.data.expect("data");
        assert!(!data.contains_key(KEY_FILE));
        assert!(data.contains_key(API_SECRET_FIELD));
    }

    #[test]
    fn generated_secret_carries_the_given_values() {
        let creds = ApiCredentials::from_random_bytes(&[3; 40]);
        let secret = generated_credentials(&validated(""), &creds);
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-credentials"));
        let data = secret.data.expect("data");
        assert_eq!(data[API_SECRET_FIELD].0, creds.api_secret().as_bytes());
    }
}
