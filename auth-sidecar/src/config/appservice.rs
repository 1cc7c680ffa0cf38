//! The application-service variables (as-mode spec §2): lk-jwt-service's names, defaults and startup
//! errors, plus the checks of `LIVEKIT_REQUIRE_MEMBERSHIP`. The monitor's own variables are parsed in
//! [`crate::membership::config`]; only the warning about them outside AS mode is given here.
//!
//! AS mode is on when the AS token, the HS token and the server name are all non-empty; a partial set is
//! a startup error, so a typo cannot silently leave a deployment in standalone mode. The homeserver is
//! never contacted here: an unreachable one must not stop the service from starting.

use std::fmt;
use std::path::Path;

use super::membership::MembershipConfig;
use super::{FullAccess, go_quote};
use crate::contract::env;
use crate::matrix::server_name::ServerName;

/// Why the AS variables stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum AsConfigError {
    #[error(
        "LIVEKIT_AS_TOKEN / LIVEKIT_HS_TOKEN (or LIVEKIT_AS_REGISTRATION_FILE) and LIVEKIT_HS_SERVER_NAME must either all be set or all be left empty"
    )]
    PartialSet,
    #[error("could not read LIVEKIT_AS_REGISTRATION_FILE file {path:?}: {source}")]
    ReadRegistration {
        path: String,
        source: std::io::Error,
    },
    #[error("LIVEKIT_AS_REGISTRATION_FILE: invalid root element")]
    RegistrationRoot,
    #[error("LIVEKIT_AS_REGISTRATION_FILE: no {0} property")]
    RegistrationMissing(&'static str),
    #[error("LIVEKIT_AS_REGISTRATION_FILE: invalid value for {0} property")]
    RegistrationType(&'static str),
    #[error("LIVEKIT_HS_SERVER_NAME must be a Matrix server name (host or host:port), got {}", go_quote(.0))]
    ServerName(String),
    #[error(
        "LIVEKIT_REQUIRE_MEMBERSHIP=true needs AS mode: set LIVEKIT_AS_TOKEN and LIVEKIT_HS_TOKEN (or LIVEKIT_AS_REGISTRATION_FILE) and LIVEKIT_HS_SERVER_NAME"
    )]
    RequireMembershipWithoutAs,
}

/// A token shared with the homeserver. It never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token itself, for an `Authorization` header or a comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The registration with the homeserver: on when all three are set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// What the service sends to its homeserver.
    pub as_token: Secret,
    /// What the homeserver sends to the service (compared in constant time).
    pub hs_token: Secret,
    /// `LIVEKIT_HS_SERVER_NAME`: the server registered with; its users are "local".
    pub server_name: String,
}

/// Everything AS mode reads from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppServiceConfig {
    /// `None`: standalone only.
    pub registration: Option<Registration>,
    /// `LIVEKIT_CAN_UPDATE_OWN_METADATA=true`.
    pub can_update_own_metadata: bool,
    /// `LIVEKIT_REMOTE_CAN_PUBLISH_HOMESERVERS`: origins whose users may publish on S-S tokens.
    pub remote_can_publish: FullAccess,
    /// `LIVEKIT_REQUIRE_MEMBERSHIP=true`: the standalone endpoints also check membership.
    pub require_membership: bool,
}

/// Something to log once logging is up.
pub type Warning = String;

/// Reads the AS variables through `lookup` (empty counts as unset, as everywhere else). `full_access`
/// is the parsed `LIVEKIT_FULL_ACCESS_HOMESERVERS` and `membership` the monitor's settings, both only for
/// warnings.
pub fn parse(
    lookup: impl Fn(&str) -> Option<String>,
    full_access: &FullAccess,
    membership: &MembershipConfig,
) -> Result<(AppServiceConfig, Vec<Warning>), AsConfigError> {
    let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
    let mut warnings = Vec::new();

    let (as_token, hs_token) = match get(env::LIVEKIT_AS_REGISTRATION_FILE) {
        Some(path) => read_registration(&path)?,
        None => (
            get(env::LIVEKIT_AS_TOKEN).unwrap_or_default(),
            get(env::LIVEKIT_HS_TOKEN).unwrap_or_default(),
        ),
    };
    let as_token = as_token.trim().to_owned();
    let hs_token = hs_token.trim().to_owned();
    let server_name = get(env::LIVEKIT_HS_SERVER_NAME)
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let registration = match (
        as_token.is_empty(),
        hs_token.is_empty(),
        server_name.is_empty(),
    ) {
        (true, true, true) => None,
        (false, false, false) => {
            if ServerName::parse(&server_name).is_err() {
                return Err(AsConfigError::ServerName(server_name));
            }
            Some(Registration {
                as_token: Secret(as_token),
                hs_token: Secret(hs_token),
                server_name,
            })
        }
        _ => return Err(AsConfigError::PartialSet),
    };

    let interval_set = get(env::LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS).is_some();
    let require_membership = get(env::LIVEKIT_REQUIRE_MEMBERSHIP).as_deref() == Some("true");

    match &registration {
        None if require_membership => return Err(AsConfigError::RequireMembershipWithoutAs),
        None if interval_set && membership.enabled() => {
            warnings.push(
                "LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS is set but AS mode is off: no membership monitor runs"
                    .to_owned(),
            );
        }
        Some(registration) if require_membership => {
            let only_own = *full_access == FullAccess::Only(vec![registration.server_name.clone()]);
            if !only_own {
                warnings.push(format!(
                    "LIVEKIT_REQUIRE_MEMBERSHIP is on but LIVEKIT_FULL_ACCESS_HOMESERVERS is not just {}: membership is checked as {0} sees the room, so users of rooms it is not in are refused",
                    registration.server_name
                ));
            }
        }
        _ => {}
    }

    Ok((
        AppServiceConfig {
            registration,
            can_update_own_metadata: get(env::LIVEKIT_CAN_UPDATE_OWN_METADATA).as_deref()
                == Some("true"),
            remote_can_publish: FullAccess::parse(
                &get(env::LIVEKIT_REMOTE_CAN_PUBLISH_HOMESERVERS).unwrap_or_default(),
            ),
            require_membership,
        },
        warnings,
    ))
}

/// The top-level string `as_token` and `hs_token` of a registration file; nothing else is read.
fn read_registration(path: &str) -> Result<(String, String), AsConfigError> {
    let text = std::fs::read_to_string(Path::new(path)).map_err(|source| {
        AsConfigError::ReadRegistration {
            path: path.to_owned(),
            source,
        }
    })?;
    let document: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|_| AsConfigError::RegistrationRoot)?;
    let serde_yaml::Value::Mapping(root) = document else {
        return Err(AsConfigError::RegistrationRoot);
    };
    let field = |name: &'static str| match root.get(name) {
        None => Err(AsConfigError::RegistrationMissing(name)),
        Some(serde_yaml::Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(AsConfigError::RegistrationType(name)),
    };
    Ok((field("as_token")?, field("hs_token")?))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse_env(vars: &[(&str, &str)]) -> Result<(AppServiceConfig, Vec<Warning>), AsConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = |name: &str| vars.get(name).cloned();
        let membership = MembershipConfig::from_lookup(lookup).unwrap();
        parse(
            lookup,
            &FullAccess::Only(vec!["example.com".into()]),
            &membership,
        )
    }

    fn error(vars: &[(&str, &str)]) -> String {
        parse_env(vars).unwrap_err().to_string()
    }

    const FULL: [(&str, &str); 3] = [
        (env::LIVEKIT_AS_TOKEN, " as-secret\n"),
        (env::LIVEKIT_HS_TOKEN, "hs-secret"),
        (env::LIVEKIT_HS_SERVER_NAME, "example.com"),
    ];

    /// A registration file in a fresh temporary directory (removed on drop).
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "matrixrtc-auth-as-test-{}-{}.yaml",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn off_by_default_with_the_defaults() {
        let (config, warnings) = parse_env(&[]).unwrap();
        assert_eq!(config.registration, None);
        assert!(!config.can_update_own_metadata);
        assert_eq!(config.remote_can_publish, FullAccess::Only(vec![]));
        assert!(!config.require_membership);
        assert!(warnings.is_empty());
    }

    #[test]
    fn all_three_turn_it_on_trimmed() {
        let (config, _) = parse_env(&FULL).unwrap();
        let registration = config.registration.unwrap();
        assert_eq!(registration.as_token.expose(), "as-secret");
        assert_eq!(registration.hs_token.expose(), "hs-secret");
        assert_eq!(registration.server_name, "example.com");
        let printed = format!("{registration:?}");
        assert!(
            !printed.contains("as-secret") && !printed.contains("hs-secret"),
            "{printed}"
        );
    }

    #[test]
    fn a_partial_set_is_an_error() {
        let expected = "LIVEKIT_AS_TOKEN / LIVEKIT_HS_TOKEN (or LIVEKIT_AS_REGISTRATION_FILE) and LIVEKIT_HS_SERVER_NAME must either all be set or all be left empty";
        for (missing, (name, _)) in FULL.iter().enumerate() {
            let mut vars = FULL.to_vec();
            vars.remove(missing);
            assert_eq!(error(&vars), expected, "without {name:?}");
        }
        // Whitespace only is empty after trimming.
        let mut vars = FULL.to_vec();
        vars[1] = (env::LIVEKIT_HS_TOKEN, "  ");
        assert_eq!(error(&vars), expected);
    }

    #[test]
    fn an_invalid_server_name_is_an_error() {
        let mut vars = FULL.to_vec();
        vars[2] = (env::LIVEKIT_HS_SERVER_NAME, "https://example.com");
        assert_eq!(
            error(&vars),
            "LIVEKIT_HS_SERVER_NAME must be a Matrix server name (host or host:port), got \"https://example.com\""
        );
    }

    #[test]
    fn the_registration_file_wins_and_is_checked() {
        let file = TempFile::new(
            "id: matrixrtc-auth\nurl: null\nas_token: file-as\nhs_token: \"file-hs\"\nnamespaces: {users: []}\n",
        );
        let mut vars = FULL.to_vec();
        vars.push((env::LIVEKIT_AS_REGISTRATION_FILE, file.path()));
        let registration = parse_env(&vars).unwrap().0.registration.unwrap();
        assert_eq!(registration.as_token.expose(), "file-as");
        assert_eq!(registration.hs_token.expose(), "file-hs");

        for (contents, expected) in [
            (
                "- a\n- b\n",
                "LIVEKIT_AS_REGISTRATION_FILE: invalid root element",
            ),
            (
                "just text\n",
                "LIVEKIT_AS_REGISTRATION_FILE: invalid root element",
            ),
            ("{{{", "LIVEKIT_AS_REGISTRATION_FILE: invalid root element"),
            (
                "hs_token: x\n",
                "LIVEKIT_AS_REGISTRATION_FILE: no as_token property",
            ),
            (
                "as_token: x\n",
                "LIVEKIT_AS_REGISTRATION_FILE: no hs_token property",
            ),
            (
                "as_token: x\nhs_token: 42\n",
                "LIVEKIT_AS_REGISTRATION_FILE: invalid value for hs_token property",
            ),
            (
                "as_token: [x]\nhs_token: y\n",
                "LIVEKIT_AS_REGISTRATION_FILE: invalid value for as_token property",
            ),
        ] {
            let file = TempFile::new(contents);
            let vars = [
                (env::LIVEKIT_AS_REGISTRATION_FILE, file.path()),
                (env::LIVEKIT_HS_SERVER_NAME, "example.com"),
            ];
            assert_eq!(error(&vars), expected, "{contents:?}");
        }

        let vars = [(
            env::LIVEKIT_AS_REGISTRATION_FILE,
            "/nonexistent/registration.yaml",
        )];
        assert!(
            error(&vars).starts_with(
                "could not read LIVEKIT_AS_REGISTRATION_FILE file \"/nonexistent/registration.yaml\": "
            ),
            "{}",
            error(&vars)
        );
    }

    #[test]
    fn an_interval_without_as_mode_only_warns() {
        let (config, warnings) =
            parse_env(&[(env::LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS, "10")]).unwrap();
        assert_eq!(config.registration, None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (_, warnings) =
            parse_env(&[(env::LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS, "0")]).unwrap();
        assert!(warnings.is_empty());
    }

    #[test]
    fn require_membership_needs_as_mode_and_the_exact_value() {
        assert_eq!(
            error(&[(env::LIVEKIT_REQUIRE_MEMBERSHIP, "true")]),
            AsConfigError::RequireMembershipWithoutAs.to_string()
        );
        let (config, _) = parse_env(&[(env::LIVEKIT_REQUIRE_MEMBERSHIP, "TRUE")]).unwrap();
        assert!(!config.require_membership, "only exactly `true`");

        let mut vars = FULL.to_vec();
        vars.push((env::LIVEKIT_REQUIRE_MEMBERSHIP, "true"));
        let (config, warnings) = parse_env(&vars).unwrap();
        assert!(config.require_membership);
        assert!(
            warnings.is_empty(),
            "full access is just the AS server: {warnings:?}"
        );
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (_, warnings) = parse(
            |name| vars.get(name).cloned(),
            &FullAccess::Everyone,
            &MembershipConfig::default(),
        )
        .unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn grants_variables() {
        let mut vars = FULL.to_vec();
        vars.push((env::LIVEKIT_CAN_UPDATE_OWN_METADATA, "true"));
        vars.push((env::LIVEKIT_REMOTE_CAN_PUBLISH_HOMESERVERS, "a.org, b.org"));
        let (config, _) = parse_env(&vars).unwrap();
        assert!(config.can_update_own_metadata);
        assert!(config.remote_can_publish.allows("b.org"));
        assert!(!config.remote_can_publish.allows("c.org"));
        vars[3] = (env::LIVEKIT_CAN_UPDATE_OWN_METADATA, "yes");
        assert!(!parse_env(&vars).unwrap().0.can_update_own_metadata);
    }
}
