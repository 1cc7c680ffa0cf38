//! Application-service (AS) mode (`spec.auth.appService`): the tokens, the registration Synapse reads,
//! the service's environment and what the status tells the admin to add to Synapse.
//!
//! - The `as_token` and `hs_token` are generated once by the controller (64 CSPRNG bytes, see
//!   [`AppServiceTokens::from_random_bytes`]) into the Secret `<name>-appservice`, and read back from it on
//!   every later reconcile, so applying never rotates them (as with the LiveKit credentials).
//! - That Secret also holds the registration (key [`REGISTRATION_KEY`]), rendered from the tokens with the
//!   unstable key names Synapse 1.163 reads (`io.element.msc4502.scopes`, `io.element.msc4512.proxy_*`;
//!   the stable names of the MSC text are silently ignored), `url: null` (no transactions) and a users
//!   namespace for the own server (identity assertion for delayed events; `joined_members` answers).
//! - The service reads only the registration file's `as_token` and `hs_token`
//!   (`LIVEKIT_AS_REGISTRATION_FILE`); the file is mounted, never passed as a plain variable.
//! - Optionally the registration is also written into a Secret the user names, for a homeserver in the
//!   same namespace to mount.
//!
//! Everything here is pure; the tokens only ever land in Secrets (`Debug` redacts them).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvVar, Secret, Volume, VolumeMount};
use matrixrtc_auth::contract;
use serde_json::json;

use super::labels::Component;
use super::{BuildError, names, object_meta, pod};
use crate::api::AppServiceStatus;
use crate::plan::{AppServicePlan, Validated};

/// The service's AS-mode variables the operator sets or reserves, from the service's own contract.
pub mod env {
    pub use matrixrtc_auth::contract::env::{
        LIVEKIT_AS_REGISTRATION_FILE, LIVEKIT_AS_TOKEN, LIVEKIT_HS_SERVER_NAME, LIVEKIT_HS_TOKEN,
        LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS,
    };
}

/// Key of the as_token in `<name>-appservice`.
pub const AS_TOKEN_KEY: &str = "as-token";
/// Key of the hs_token in `<name>-appservice`.
pub const HS_TOKEN_KEY: &str = "hs-token";
/// Key of the registration YAML in `<name>-appservice`.
pub const REGISTRATION_KEY: &str = "registration.yaml";
/// Random bytes [`AppServiceTokens::from_random_bytes`] needs: 32 per token.
pub const RANDOM_BYTES: usize = 64;
/// Shortest token accepted back from the Secret: 32 characters (what 24 random bytes give in base64).
pub const MIN_TOKEN_LEN: usize = 32;

/// The registration `id` (unique among a homeserver's application services).
pub const REGISTRATION_ID: &str = "matrixrtc-auth";
/// The AS user, as lk-jwt-service registers it (so a deployment can switch images keeping its
/// registration).
pub const SENDER_LOCALPART: &str = "_lk_jwt_service";
/// The MSC4502 scope that lets the service ask `/is_joined`.
pub const IS_JOINED_SCOPE: &str = "urn:matrix:client:io.element.msc4502:rooms:is_joined";
/// The path under `/_matrix/{client,federation}/.../` that Synapse forwards to `proxy_url` (MSC4512).
pub const PROXY_PREFIX: &str = "rtc/livekit";

/// Volume with the registration file in the service's pod.
pub const VOLUME: &str = "auth-appservice";
/// Where the registration file is mounted in the service's container.
pub const DIR: &str = "/etc/matrixrtc-auth/appservice";
/// Directory the status suggests for Synapse's mount, and the file name there.
pub const SYNAPSE_DIR: &str = "/etc/synapse/appservices";
pub const SYNAPSE_FILE: &str = "matrixrtc-auth.yaml";
/// Volume name in the Synapse pod spec snippet.
pub const SYNAPSE_VOLUME: &str = "matrixrtc-auth-registration";

/// The two application-service tokens. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct AppServiceTokens {
    as_token: String,
    hs_token: String,
}

impl fmt::Debug for AppServiceTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppServiceTokens(<redacted>)")
    }
}

/// Why the tokens in `<name>-appservice` are unusable. Messages name keys, never values.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokensError {
    #[error("key {0:?} is missing")]
    Missing(&'static str),
    #[error(
        "key {0:?} must hold at least {MIN_TOKEN_LEN} characters of letters, digits, '-' and '_'"
    )]
    Malformed(&'static str),
    #[error("the as_token and hs_token are the same")]
    Equal,
}

impl AppServiceTokens {
    /// Fresh tokens: each 32 bytes of a CSPRNG as unpadded base64url (43 characters).
    pub fn from_random_bytes(bytes: &[u8; RANDOM_BYTES]) -> Self {
        let (as_bytes, hs_bytes) = bytes.split_at(RANDOM_BYTES / 2);
        let encode = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Self {
            as_token: encode(as_bytes),
            hs_token: encode(hs_bytes),
        }
    }

    /// Read and check the tokens from the operator's `<name>-appservice` Secret.
    pub fn from_secret(secret: &Secret) -> Result<Self, TokensError> {
        let read = |key: &'static str| -> Result<String, TokensError> {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|s| s.clone().into_bytes())
                })
                .ok_or(TokensError::Missing(key))?;
            let token = String::from_utf8(bytes).map_err(|_| TokensError::Malformed(key))?;
            let well_formed = token.len() >= MIN_TOKEN_LEN
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if well_formed {
                Ok(token)
            } else {
                Err(TokensError::Malformed(key))
            }
        };
        let tokens = Self {
            as_token: read(AS_TOKEN_KEY)?,
            hs_token: read(HS_TOKEN_KEY)?,
        };
        if tokens.as_token == tokens.hs_token {
            return Err(TokensError::Equal);
        }
        Ok(tokens)
    }

    /// Fixed, clearly fake tokens for offline rendering and tests.
    pub fn placeholder() -> Self {
        Self {
            as_token: "PLACEHOLDER-as-token-not-for-use-0123456789".to_owned(),
            hs_token: "PLACEHOLDER-hs-token-not-for-use-0123456789".to_owned(),
        }
    }

    /// The token the service presents to the homeserver; only ever written into Secrets.
    pub fn as_token(&self) -> &str {
        &self.as_token
    }

    /// The token the homeserver presents to the service; only ever written into Secrets.
    pub fn hs_token(&self) -> &str {
        &self.hs_token
    }
}

/// `io.element.msc4512.proxy_url`: the user's, or the service's in-cluster Service (which exists for both
/// placements). No cluster domain: `<svc>.<ns>.svc` resolves through every pod's DNS search path, whatever
/// the cluster's domain is (as the service's own in-cluster LiveKit address does).
pub fn proxy_url(v: &Validated, plan: &AppServicePlan) -> String {
    plan.proxy_url.clone().unwrap_or_else(|| {
        format!(
            "http://{}.{}.svc:{}",
            names::auth(v.name()),
            v.namespace(),
            contract::DEFAULT_PORT
        )
    })
}

/// The users namespace regex for `server_name`: every user of it, anchored at the end (Synapse matches from
/// the start only, so without `$` it would also cover `@u:example.com.evil`).
pub fn users_regex(server_name: &str) -> String {
    format!("@.*:{}$", escape_regex(server_name))
}

/// Escape what Python's `re` (Synapse compiles the namespaces with it) treats as special, as `re.escape`
/// does.
fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "()[]{}?*+-|^$\\.&~# \t\n\r\u{b}\u{c}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The registration YAML (Synapse 1.163's `synapse/config/appservice.py`).
pub fn registration_yaml(
    v: &Validated,
    plan: &AppServicePlan,
    tokens: &AppServiceTokens,
) -> Result<String, BuildError> {
    let registration = json!({
        "id": REGISTRATION_ID,
        // Required; null: the homeserver pushes no transactions (the service needs none).
        "url": null,
        "as_token": tokens.as_token(),
        "hs_token": tokens.hs_token(),
        "sender_localpart": SENDER_LOCALPART,
        // Delayed events are sent as the user (identity assertion), and must not hit the AS's limit.
        "rate_limited": false,
        "namespaces": {
            "users": [{"exclusive": false, "regex": users_regex(v.server_name())}],
        },
        "io.element.msc4502.scopes": [IS_JOINED_SCOPE],
        "io.element.msc4512.proxy_prefix": PROXY_PREFIX,
        "io.element.msc4512.proxy_url": proxy_url(v, plan),
    });
    Ok(serde_yaml::to_string(&registration)?)
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

/// The Secret `<name>-appservice`: both tokens (read back on later reconciles) and the registration.
pub fn secret(
    v: &Validated,
    plan: &AppServicePlan,
    tokens: &AppServiceTokens,
) -> Result<Secret, BuildError> {
    let registration = registration_yaml(v, plan, tokens)?;
    Ok(Secret {
        metadata: object_meta(v, names::app_service(v.name()), Component::Auth),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (AS_TOKEN_KEY.to_owned(), bytes(tokens.as_token())),
            (HS_TOKEN_KEY.to_owned(), bytes(tokens.hs_token())),
            (REGISTRATION_KEY.to_owned(), bytes(&registration)),
        ])),
        ..Secret::default()
    })
}

/// The user-named Secret the registration is also written into, if any.
pub fn registration_copy(
    v: &Validated,
    plan: &AppServicePlan,
    tokens: &AppServiceTokens,
) -> Result<Option<Secret>, BuildError> {
    let Some((name, key)) = &plan.registration_secret else {
        return Ok(None);
    };
    let registration = registration_yaml(v, plan, tokens)?;
    Ok(Some(Secret {
        metadata: object_meta(v, name.clone(), Component::Auth),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(key.clone(), bytes(&registration))])),
        ..Secret::default()
    }))
}

fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

/// The service's AS-mode variables.
pub fn env(v: &Validated, plan: &AppServicePlan) -> Vec<EnvVar> {
    let mut vars = vec![
        value(
            env::LIVEKIT_AS_REGISTRATION_FILE,
            format!("{DIR}/{REGISTRATION_KEY}"),
        ),
        value(env::LIVEKIT_HS_SERVER_NAME, v.server_name().to_owned()),
    ];
    if let Some(seconds) = plan.membership_check_interval_seconds {
        vars.push(value(
            env::LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS,
            seconds.to_string(),
        ));
    }
    vars
}

/// The registration file (only: the service needs nothing else of the Secret) as a volume.
pub fn volume(v: &Validated) -> Volume {
    pod::secret_volume(VOLUME, &names::app_service(v.name()), &[REGISTRATION_KEY])
}

/// Where the service's container mounts [`volume`].
pub fn mount() -> VolumeMount {
    VolumeMount {
        name: VOLUME.to_owned(),
        mount_path: DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The Secret and key Synapse should read the registration from: the user's copy if there is one.
fn synapse_source(v: &Validated, plan: &AppServicePlan) -> (String, String) {
    plan.registration_secret
        .clone()
        .unwrap_or_else(|| (names::app_service(v.name()), REGISTRATION_KEY.to_owned()))
}

/// The path of the registration in the Synapse container (listed in `app_service_config_files`).
pub fn synapse_path() -> String {
    format!("{SYNAPSE_DIR}/{SYNAPSE_FILE}")
}

/// `status.appService`: where the registration is and the Synapse pod spec fragment that mounts it.
pub fn status(v: &Validated, plan: &AppServicePlan) -> AppServiceStatus {
    let (secret, key) = synapse_source(v, plan);
    // Built by hand to keep the comment; the variables are a validated Secret name and key, which
    // need no quoting in YAML.
    let synapse_mount = format!(
        "# Synapse's pod spec (namespace {ns}, where the Secret is): add the volume, and the mount to the\n\
         # Synapse container. Synapse reads the registration at startup: restart it when the tokens change.\n\
         volumes:\n\
         \x20 - name: {SYNAPSE_VOLUME}\n\
         \x20   secret:\n\
         \x20     secretName: {secret}\n\
         \x20     items:\n\
         \x20       - key: {key}\n\
         \x20         path: {SYNAPSE_FILE}\n\
         volumeMounts:\n\
         \x20 - name: {SYNAPSE_VOLUME}\n\
         \x20   mountPath: {SYNAPSE_DIR}\n\
         \x20   readOnly: true\n",
        ns = v.namespace(),
    );
    AppServiceStatus {
        registration_secret: secret,
        registration_key: key,
        synapse_path: synapse_path(),
        synapse_mount,
    }
}

/// Lines for `experimental_features` in `status.synapseConfig` (indented two spaces, commented).
pub fn synapse_experimental_lines() -> &'static str {
    "  # AS mode: MSC4502 answers the service's /is_joined, MSC4512 forwards token requests to it (and relays\n  \
     # requests for other servers' SFUs through fed_proxy).\n  \
     msc4502_enabled: true\n  msc4512_enabled: true\n"
}

/// The top-level `app_service_config_files` entry of `status.synapseConfig`, with its comment.
pub fn synapse_registration_lines() -> String {
    format!(
        "# AS mode: the authorisation service's registration, mounted as status.appService.synapseMount says\n\
         # (append it if homeserver.yaml already lists other application services).\n\
         app_service_config_files:\n  - {}\n",
        synapse_path()
    )
}

/// The objects pod hashes should follow: the registration's content (random tokens nobody can guess from a
/// hash, as for generated credentials), so new tokens or a new `proxy_url` roll the service.
pub fn hash_input(
    v: &Validated,
    plan: &AppServicePlan,
    tokens: &AppServiceTokens,
) -> Result<serde_json::Value, BuildError> {
    Ok(serde_json::Value::String(registration_yaml(
        v, plan, tokens,
    )?))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::KeyToPath;

    use super::*;
    use crate::build::test_support::validated;

    const ON: &str = "auth: {appService: {enabled: true}}";

    fn items(volume: &Volume) -> Vec<KeyToPath> {
        volume
            .secret
            .as_ref()
            .and_then(|s| s.items.clone())
            .unwrap_or_default()
    }

    fn plan(v: &Validated) -> AppServicePlan {
        v.auth().app_service.clone().expect("AS mode on")
    }

    fn parsed(yaml: &str) -> serde_json::Value {
        serde_yaml::from_str(yaml).expect("YAML")
    }

    #[test]
    fn generated_tokens_are_distinct_url_safe_and_pass_our_own_check() {
        let mut random = [0u8; RANDOM_BYTES];
        for (i, b) in random.iter_mut().enumerate() {
            *b = u8::try_from(i).expect("small");
        }
        let tokens = AppServiceTokens::from_random_bytes(&random);
        assert_eq!(tokens.as_token().len(), 43);
        assert_eq!(tokens.hs_token().len(), 43);
        assert_ne!(tokens.as_token(), tokens.hs_token());
        let v = validated(ON);
        let secret = secret(&v, &plan(&v), &tokens).expect("builds");
        assert_eq!(AppServiceTokens::from_secret(&secret), Ok(tokens.clone()));
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("demo-appservice"),
            "one name the controller reads back"
        );
        let other = AppServiceTokens::from_random_bytes(&[9; RANDOM_BYTES]);
        assert_ne!(other, tokens);
    }

    #[test]
    fn damaged_tokens_are_named_without_their_value() {
        let v = validated(ON);
        let good = secret(&v, &plan(&v), &AppServiceTokens::placeholder()).expect("builds");
        let with = |key: &str, value: Option<&[u8]>| {
            let mut s = good.clone();
            let data = s.data.as_mut().expect("data");
            match value {
                Some(value) => data.insert(key.to_owned(), ByteString(value.to_vec())),
                None => data.remove(key),
            };
            AppServiceTokens::from_secret(&s).unwrap_err()
        };
        assert_eq!(with(AS_TOKEN_KEY, None), TokensError::Missing(AS_TOKEN_KEY));
        assert_eq!(
            with(HS_TOKEN_KEY, Some(b"short")),
            TokensError::Malformed(HS_TOKEN_KEY)
        );
        let spaced = b"0123456789abcdef 0123456789abcdef";
        let error = with(AS_TOKEN_KEY, Some(spaced));
        assert_eq!(error, TokensError::Malformed(AS_TOKEN_KEY));
        assert!(!error.to_string().contains("0123456789"), "{error}");
        let same = AppServiceTokens::placeholder()
            .hs_token()
            .as_bytes()
            .to_vec();
        assert_eq!(with(AS_TOKEN_KEY, Some(&same)), TokensError::Equal);
    }

    #[test]
    fn debug_redacts_both_tokens() {
        let tokens = AppServiceTokens::from_random_bytes(&[1; RANDOM_BYTES]);
        let shown = format!("{tokens:?}");
        assert!(!shown.contains(tokens.as_token()) && !shown.contains(tokens.hs_token()));
    }

    #[test]
    fn registration_has_exactly_the_keys_synapse_1_163_reads() {
        let v = validated(ON);
        let tokens = AppServiceTokens::placeholder();
        let registration = parsed(&registration_yaml(&v, &plan(&v), &tokens).expect("builds"));
        assert_eq!(
            registration,
            json!({
                "id": "matrixrtc-auth",
                "url": null,
                "as_token": tokens.as_token(),
                "hs_token": tokens.hs_token(),
                "sender_localpart": "_lk_jwt_service",
                "rate_limited": false,
                "namespaces": {"users": [{"exclusive": false, "regex": "@.*:example\\.com$"}]},
                "io.element.msc4502.scopes": ["urn:matrix:client:io.element.msc4502:rooms:is_joined"],
                "io.element.msc4512.proxy_prefix": "rtc/livekit",
                "io.element.msc4512.proxy_url": "http://demo-auth.rtc.svc:8080",
            })
        );
        // `url` must be present as a key (Synapse refuses a registration without it).
        let text = registration_yaml(&v, &plan(&v), &tokens).expect("builds");
        assert!(text.lines().any(|l| l == "url: null"), "{text}");
    }

    #[test]
    fn proxy_url_can_be_overridden_and_server_names_are_escaped() {
        let v = validated(
            "serverName: 'matrix.example.org:8448'\nauth: {appService: {enabled: true, proxyUrl: 'https://auth.internal:8443'}}",
        );
        let registration = parsed(
            &registration_yaml(&v, &plan(&v), &AppServiceTokens::placeholder()).expect("builds"),
        );
        assert_eq!(
            registration["io.element.msc4512.proxy_url"],
            "https://auth.internal:8443"
        );
        assert_eq!(
            registration["namespaces"]["users"][0]["regex"],
            "@.*:matrix\\.example\\.org:8448$"
        );
        assert_eq!(users_regex("[::1]:8448"), "@.*:\\[::1\\]:8448$");
    }

    #[test]
    fn env_points_at_the_mounted_registration() {
        let v = validated("auth: {appService: {enabled: true, membershipCheckIntervalSeconds: 5}}");
        let vars: BTreeMap<String, Option<String>> = env(&v, &plan(&v))
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        assert_eq!(
            vars,
            BTreeMap::from([
                (
                    env::LIVEKIT_AS_REGISTRATION_FILE.to_owned(),
                    Some("/etc/matrixrtc-auth/appservice/registration.yaml".to_owned())
                ),
                (
                    env::LIVEKIT_HS_SERVER_NAME.to_owned(),
                    Some("example.com".to_owned())
                ),
                (
                    env::LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS.to_owned(),
                    Some("5".to_owned())
                ),
            ])
        );
        // The file the variable names is what the volume and mount provide.
        let volume = volume(&v);
        assert_eq!(
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("demo-appservice")
        );
        let files: Vec<String> = items(&volume).into_iter().map(|i| i.path).collect();
        assert_eq!(files, [REGISTRATION_KEY]);
        assert_eq!(mount().mount_path, DIR);
        let interval_unset = validated(ON);
        assert_eq!(env(&interval_unset, &plan(&interval_unset)).len(), 2);
    }

    #[test]
    fn a_registration_copy_holds_only_the_registration_under_the_chosen_key() {
        let v = validated(
            "auth: {appService: {enabled: true, registrationSecret: {name: synapse-appservices}}}",
        );
        let tokens = AppServiceTokens::placeholder();
        let copy = registration_copy(&v, &plan(&v), &tokens)
            .expect("builds")
            .expect("a copy");
        assert_eq!(copy.metadata.name.as_deref(), Some("synapse-appservices"));
        let data = copy.data.expect("data");
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["matrixrtc-auth.yaml"],
            "the default key"
        );
        assert_eq!(
            data["matrixrtc-auth.yaml"].0,
            registration_yaml(&v, &plan(&v), &tokens)
                .expect("builds")
                .into_bytes()
        );
        assert!(
            registration_copy(&validated(ON), &plan(&validated(ON)), &tokens)
                .expect("builds")
                .is_none()
        );
    }

    #[test]
    fn status_names_the_secret_synapse_reads_and_mounts_it_where_the_config_says() {
        let own = validated(ON);
        let status = status(&own, &plan(&own));
        assert_eq!(
            (
                status.registration_secret.as_str(),
                status.registration_key.as_str()
            ),
            ("demo-appservice", "registration.yaml")
        );
        let mount = parsed(&status.synapse_mount);
        assert_eq!(mount["volumeMounts"][0]["readOnly"], true);
        assert_eq!(
            mount["volumes"][0]["name"],
            mount["volumeMounts"][0]["name"]
        );
        assert_eq!(
            mount["volumes"][0]["secret"],
            json!({"secretName": "demo-appservice", "items": [{"key": "registration.yaml", "path": "matrixrtc-auth.yaml"}]})
        );
        assert_eq!(
            format!(
                "{}/{}",
                mount["volumeMounts"][0]["mountPath"]
                    .as_str()
                    .expect("path"),
                mount["volumes"][0]["secret"]["items"][0]["path"]
                    .as_str()
                    .expect("file")
            ),
            status.synapse_path
        );
        let copied = validated(
            "auth: {appService: {enabled: true, registrationSecret: {name: synapse-as, key: rtc.yaml}}}",
        );
        let status = status_of(&copied);
        assert_eq!(
            (
                status.registration_secret.as_str(),
                status.registration_key.as_str()
            ),
            ("synapse-as", "rtc.yaml")
        );
        let lines = synapse_registration_lines();
        let config = parsed(&lines);
        assert_eq!(
            config["app_service_config_files"],
            json!([status.synapse_path])
        );
    }

    fn status_of(v: &Validated) -> AppServiceStatus {
        status(v, &plan(v))
    }
}
