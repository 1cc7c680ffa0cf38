//! The service configuration, read once from the environment (spec §6).
//!
//! Variables shared with lk-jwt-service keep its names, defaults, precedence and startup error texts, so
//! a deployment can swap images without touching its environment. The reference's checks run in its
//! order (key and secret, then the URL, the full-access list, the listen address, the sanity interval,
//! the CS API overrides); ours come after. A value the reference ignores but we must use (a bind address,
//! a timeout) is validated here, so that a typo stops the service at startup rather than at first use.
//!
//! Parsing takes a lookup function instead of reading the process environment, so tests never touch it.
//! As in Go's `os.Getenv`, an empty variable counts as unset.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use tracing::level_filters::LevelFilter;

use crate::contract::{self, FULL_ACCESS_WILDCARD, INSECURE_SKIP_VERIFY_TLS_VALUE, env};
use crate::livekit::keys::{KeySet, KeysError};
use crate::livekit::twirp::http_base;
use crate::matrix::server_name::ServerName;
use crate::outbound::OutboundSettings;
use crate::telemetry::LogFormat;

/// Why the service cannot start. The texts of the reference's errors are the reference's, verbatim.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("LIVEKIT_KEY* / LIVEKIT_SECRET* and LIVEKIT_URL must be set")]
    MissingKeyOrUrl,
    #[error(
        "LIVEKIT_FULL_ACCESS_HOMESERVERS environment variable must be set to the homeserver(s) you intend to serve — see README for guidance"
    )]
    MissingFullAccess,
    #[error("LIVEKIT_JWT_BIND and LIVEKIT_JWT_PORT must not be set together")]
    BindAndPort,
    #[error("LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS must be a non-negative integer, got {}", go_quote(.0))]
    SanityInterval(String),
    #[error("failed parsing LIVEKIT_CS_API_URL_OVERRIDES: invalid entry {}, expected server_name=url", go_quote(.0))]
    CsApiUrlOverride(String),
    #[error("invalid key secret file format!")]
    KeySecretFileFormat,
    #[error("could not read {var} file {path:?}: {source}")]
    ReadFile {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("invalid LIVEKIT_KEYS_FILE {path:?}: {source}")]
    KeysFile { path: String, source: KeysError },
    #[error("invalid listen address {} (from {var}): expected host:port or :port", go_quote(.value))]
    ListenAddress { var: &'static str, value: String },
    #[error("LIVEKIT_LOG_FORMAT must be \"text\" or \"json\", got {}", go_quote(.0))]
    LogFormat(String),
    #[error("{var} must be a list of IP addresses or CIDR ranges, got {}", go_quote(.entry))]
    Cidr { var: &'static str, entry: String },
    #[error("{var} must be {expected}, got {}", go_quote(.value))]
    Number {
        var: &'static str,
        expected: &'static str,
        value: String,
    },
    #[error("{var} must look like 10/s, 600/m or 5000/h (a positive count per second, minute or hour), got {}", go_quote(.value))]
    RateLimit { var: &'static str, value: String },
    #[error("LIVEKIT_API_URL must be an http://, https://, ws:// or wss:// URL with a host, got {}", go_quote(.0))]
    LiveKitApiUrl(String),
    // --- LIVEKIT_TRUSTED_HOMESERVERS ---
    #[error(
        "LIVEKIT_TRUSTED_HOMESERVERS must name homeservers: \"*\" would exempt every homeserver from the SSRF guard"
    )]
    TrustedWildcard,
    #[error("LIVEKIT_TRUSTED_HOMESERVERS must be Matrix server names (host or host:port, such as example.com or matrix.example.com:8448) separated by commas, got {}", go_quote(.0))]
    TrustedHomeserver(String),

    // Application-service mode (as-mode spec §2).
    #[error("{0}")]
    AppService(#[from] crate::appservice::config::AsConfigError),

    // Replica identity (delegation across replicas).
    #[error("LIVEKIT_REPLICA_ID must be 1 to {max} characters of A-Z, a-z, 0-9, '.', '_' and '-', got {}", go_quote(.value), max = REPLICA_ID_MAX_LEN)]
    ReplicaId { value: String },
    #[error(transparent)]
    Membership(#[from] crate::membership::config::MembershipConfigError),
}

/// Which homeservers' users may create rooms and delegate (§3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FullAccess {
    /// The list was exactly `*`.
    Everyone,
    /// Exact, case-sensitive server names. May be empty (`" , "`): then nobody is full-access.
    Only(Vec<String>),
}

/// The entries of a list of server names as the reference splits `LIVEKIT_FULL_ACCESS_HOMESERVERS`:
/// commas become whitespace, then split on whitespace.
fn server_name_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

impl FullAccess {
    /// Parses the variable as the reference does (see [`server_name_list`]); `*` is a wildcard only as
    /// the sole entry.
    pub fn parse(raw: &str) -> Self {
        let entries: Vec<String> = server_name_list(raw).map(str::to_owned).collect();
        if entries.len() == 1 && entries[0] == FULL_ACCESS_WILDCARD {
            Self::Everyone
        } else {
            Self::Only(entries)
        }
    }

    /// Whether users of `server_name` are full-access.
    pub fn allows(&self, server_name: &str) -> bool {
        match self {
            Self::Everyone => true,
            Self::Only(list) => list.iter().any(|s| s == server_name),
        }
    }

    /// Whether the operator named `server_name` explicitly, which is what makes it trusted by the SSRF
    /// guard. The wildcard grants full access to everyone but trusts no one: with `*`, any client could
    /// otherwise point the service at an internal address by naming it as its homeserver.
    pub fn names(&self, server_name: &str) -> bool {
        match self {
            Self::Everyone => false,
            Self::Only(list) => list.iter().any(|s| s == server_name),
        }
    }
}

/// Where the service listens: `:port` means every interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindAddress {
    /// `:port`.
    AllInterfaces(u16),
    /// `host:port`, the host as written (an IP literal without brackets, or a name).
    Host(String, u16),
}

impl BindAddress {
    /// Parses a Go listen address. `var` names the variable for the error.
    pub fn parse(var: &'static str, value: &str) -> Result<Self, ConfigError> {
        let error = || ConfigError::ListenAddress {
            var,
            value: value.to_owned(),
        };
        let (host, port) = value.rsplit_once(':').ok_or_else(error)?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|_| port.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(error)?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').ok_or_else(error)?,
            None if host.contains(':') => return Err(error()),
            None => host,
        };
        Ok(if host.is_empty() {
            Self::AllInterfaces(port)
        } else {
            Self::Host(host.to_owned(), port)
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::AllInterfaces(port) | Self::Host(_, port) => *port,
        }
    }
}

impl fmt::Display for BindAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllInterfaces(port) => write!(f, ":{port}"),
            Self::Host(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// A rate: `count` requests per `period`, with bursts of up to `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl RateLimit {
    /// Parses `N/s`, `N/m` or `N/h`.
    pub fn parse(var: &'static str, value: &str) -> Result<Self, ConfigError> {
        let error = || ConfigError::RateLimit {
            var,
            value: value.to_owned(),
        };
        let (count, unit) = value.trim().split_once('/').ok_or_else(error)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| error())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(error()),
        };
        Ok(Self { count, period })
    }
}

/// The Redis URL of the delegation store. It may hold a password, so it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

/// Something worth logging about the configuration, kept until logging is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Info(String),
    Warn(String),
}

/// Everything the service needs from its environment.
#[derive(Debug)]
pub struct Config {
    /// `LIVEKIT_URL`, returned verbatim to clients.
    pub livekit_url: String,
    /// `LIVEKIT_API_URL`: where the Twirp calls go instead of `livekit_url` (checked to have a usable
    /// scheme and a host).
    pub livekit_api_url: Option<String>,
    /// The API keys; the first signs.
    pub keys: KeySet,
    pub full_access: FullAccess,
    /// `LIVEKIT_TRUSTED_HOMESERVERS`: homeservers trusted by the SSRF guard besides those named in
    /// `full_access` (see [`Config::ssrf_trusted`]).
    pub trusted_homeservers: Vec<String>,
    pub bind: BindAddress,
    pub outbound: OutboundSettings,
    /// Zero disables the phase-2 participant check.
    pub sanity_check_interval: Duration,
    /// Server name -> client-server API base URL, used verbatim.
    pub cs_api_url_overrides: HashMap<String, String>,
    pub redis_url: Option<RedisUrl>,
    pub log_level: LevelFilter,
    pub log_format: LogFormat,
    pub rate_limit_per_ip: Option<RateLimit>,
    pub rate_limit_per_homeserver: Option<RateLimit>,
    /// Peers whose `X-Forwarded-For` is believed for per-IP limits.
    pub trusted_proxies: Vec<IpNet>,
    /// To log once logging is up (deprecations, the insecure-TLS banner, where the key came from).
    pub notices: Vec<Notice>,

    /// `LIVEKIT_REPLICA_ID`: this replica's stable name in Redis; None gives a random one per process.
    pub replica_id: Option<String>,

    /// Application-service mode (see [`crate::appservice`]).
    pub appservice: crate::appservice::config::AppServiceConfig,
    /// The membership monitor's settings (see [`crate::membership`]).
    pub membership: crate::membership::config::MembershipConfig,
}

/// The environment as a lookup function; an empty value counts as unset.
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }

    fn get_or_empty(&self, name: &str) -> String {
        self.get(name).unwrap_or_default()
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads the configuration through `lookup` (a variable's value, or `None` if unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(lookup);
        let mut notices = Vec::new();

        let skip_tls_verify = env.get_or_empty(env::LIVEKIT_INSECURE_SKIP_VERIFY_TLS)
            == INSECURE_SKIP_VERIFY_TLS_VALUE;
        if skip_tls_verify {
            notices.push(Notice::Warn(
                "LIVEKIT_INSECURE_SKIP_VERIFY_TLS is set: TLS certificates of homeservers and LiveKit are NOT verified. Use only for testing or debugging".into(),
            ));
        }

        let keys = read_keys(&env, &mut notices)?;
        let livekit_url = env.get_or_empty(env::LIVEKIT_URL);
        let keys = match keys {
            Some(keys) if !livekit_url.is_empty() => keys,
            _ => return Err(ConfigError::MissingKeyOrUrl),
        };

        let full_access = env
            .get(env::LIVEKIT_FULL_ACCESS_HOMESERVERS)
            .ok_or(ConfigError::MissingFullAccess)?;
        let full_access = FullAccess::parse(&full_access);

        let bind = bind_address(&env, &mut notices)?;

        let sanity_check_interval = match env.get(env::LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS) {
            None => Duration::ZERO,
            // Go's Atoi: optional sign, decimal digits, no spaces; so `+5` and `-0` are accepted.
            Some(raw) => match raw.parse::<i64>() {
                Ok(secs) if secs >= 0 => Duration::from_secs(secs.unsigned_abs()),
                _ => return Err(ConfigError::SanityInterval(raw)),
            },
        };

        let cs_api_url_overrides =
            parse_cs_api_url_overrides(&env.get_or_empty(env::LIVEKIT_CS_API_URL_OVERRIDES))?;

        let redis_url = env.get(env::LIVEKIT_REDIS_URL).map(RedisUrl);

        let log_level = match env.get(env::LIVEKIT_LOG_LEVEL) {
            None => LevelFilter::INFO,
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "debug" => LevelFilter::DEBUG,
                "info" => LevelFilter::INFO,
                "warn" | "warning" => LevelFilter::WARN,
                "error" => LevelFilter::ERROR,
                _ => {
                    notices.push(Notice::Warn(format!(
                        "Invalid log level in LIVEKIT_LOG_LEVEL, defaulting to info: {}",
                        go_quote(&raw)
                    )));
                    LevelFilter::INFO
                }
            },
        };

        let log_format = match env.get(env::LIVEKIT_LOG_FORMAT) {
            None => LogFormat::Text,
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(ConfigError::LogFormat(raw)),
            },
        };

        let defaults = OutboundSettings::default();
        let outbound = OutboundSettings {
            skip_tls_verify,
            connect_timeout: positive_seconds(&env, env::LIVEKIT_OUTBOUND_CONNECT_TIMEOUT_SECONDS)?
                .unwrap_or(defaults.connect_timeout),
            request_timeout: positive_seconds(&env, env::LIVEKIT_OUTBOUND_TIMEOUT_SECONDS)?
                .unwrap_or(defaults.request_timeout),
            allowed_ranges: cidrs(&env, env::LIVEKIT_OUTBOUND_IP_ALLOWLIST)?,
            openid_cache_ttl: match env.get(env::LIVEKIT_OPENID_CACHE_SECONDS) {
                None => defaults.openid_cache_ttl,
                Some(raw) => {
                    Duration::from_secs(raw.trim().parse().map_err(|_| ConfigError::Number {
                        var: env::LIVEKIT_OPENID_CACHE_SECONDS,
                        expected: "a non-negative integer",
                        value: raw.clone(),
                    })?)
                }
            },
        };

        let livekit_api_url = env
            .get(env::LIVEKIT_API_URL)
            .map(|raw| match http_base(&raw) {
                Ok(_) => Ok(raw),
                Err(_) => Err(ConfigError::LiveKitApiUrl(raw)),
            })
            .transpose()?;

        let rate_limit = |var| env.get(var).map(|v| RateLimit::parse(var, &v)).transpose();
        let rate_limit_per_ip = rate_limit(env::LIVEKIT_RATE_LIMIT_PER_IP)?;
        let rate_limit_per_homeserver = rate_limit(env::LIVEKIT_RATE_LIMIT_PER_HOMESERVER)?;
        let trusted_proxies = cidrs(&env, env::LIVEKIT_TRUSTED_PROXIES)?;

        // --- LIVEKIT_TRUSTED_HOMESERVERS ---
        let trusted_homeservers =
            trusted_homeservers(&env.get_or_empty(env::LIVEKIT_TRUSTED_HOMESERVERS))?;
        let replica_id = env
            .get(env::LIVEKIT_REPLICA_ID)
            .map(|raw| parse_replica_id(&raw))
            .transpose()?;
        let membership =
            crate::membership::config::MembershipConfig::from_lookup(|name| env.get(name))?;
        let (appservice, warnings) =
            crate::appservice::config::parse(|name| env.get(name), &full_access, &membership)?;
        notices.extend(warnings.into_iter().map(Notice::Warn));

        Ok(Self {
            livekit_url,
            livekit_api_url,
            keys,
            full_access,
            trusted_homeservers,
            bind,
            outbound,
            sanity_check_interval,
            cs_api_url_overrides,
            redis_url,
            log_level,
            log_format,
            rate_limit_per_ip,
            rate_limit_per_homeserver,
            trusted_proxies,
            notices,
            replica_id,
            appservice,
            membership,
        })
    }
}

/// Longest `LIVEKIT_REPLICA_ID` (a pod name is at most 63 characters in practice).
pub const REPLICA_ID_MAX_LEN: usize = 128;

/// A replica ID goes into Redis key names and into lease values of the form `<replica>/<generation>`,
/// so it is kept to characters that cannot be confused with those separators.
fn parse_replica_id(raw: &str) -> Result<String, ConfigError> {
    let valid = raw.len() <= REPLICA_ID_MAX_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(ConfigError::ReplicaId {
            value: raw.to_owned(),
        })
    }
}

impl Config {
    /// The homeservers the SSRF guard trusts (the service reaches them wherever they resolve, as it does
    /// LiveKit): those named in `LIVEKIT_FULL_ACCESS_HOMESERVERS`, never through `*`, and those in
    /// `LIVEKIT_TRUSTED_HOMESERVERS`. Given as a named full-access list because that is the form in
    /// which the outbound clients take trust ([`FullAccess::names`]).
    pub fn ssrf_trusted(&self) -> FullAccess {
        let named = match &self.full_access {
            FullAccess::Everyone => &[][..],
            FullAccess::Only(list) => &list[..],
        };
        let mut trusted = named.to_vec();
        trusted.extend(
            self.trusted_homeservers
                .iter()
                .filter(|name| !named.contains(name))
                .cloned(),
        );
        FullAccess::Only(trusted)
    }
}

/// `LIVEKIT_TRUSTED_HOMESERVERS`: split like the full-access list and matched the same way (exactly,
/// case-sensitively, against `matrix_server_name`). Each entry must be a server name, so that a URL or
/// a pattern fails at startup instead of silently never matching; `*` is refused outright.
fn trusted_homeservers(raw: &str) -> Result<Vec<String>, ConfigError> {
    server_name_list(raw)
        .map(|entry| {
            if entry == FULL_ACCESS_WILDCARD {
                Err(ConfigError::TrustedWildcard)
            } else if ServerName::parse(entry).is_err() {
                Err(ConfigError::TrustedHomeserver(entry.to_owned()))
            } else {
                Ok(entry.to_owned())
            }
        })
        .collect()
}

/// Only the listen address, for the healthcheck mode, which must not need the rest of the configuration.
pub fn listen_address(lookup: impl Fn(&str) -> Option<String>) -> Result<BindAddress, ConfigError> {
    bind_address(&Env(lookup), &mut Vec::new())
}

fn bind_address<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    notices: &mut Vec<Notice>,
) -> Result<BindAddress, ConfigError> {
    match (
        env.get(env::LIVEKIT_JWT_BIND),
        env.get(env::LIVEKIT_JWT_PORT),
    ) {
        (Some(_), Some(_)) => Err(ConfigError::BindAndPort),
        (Some(bind), None) => BindAddress::parse(env::LIVEKIT_JWT_BIND, &bind),
        (None, Some(port)) => {
            notices.push(Notice::Warn(
                "LIVEKIT_JWT_PORT is deprecated, use LIVEKIT_JWT_BIND".into(),
            ));
            BindAddress::parse(env::LIVEKIT_JWT_PORT, &format!(":{port}"))
        }
        (None, None) => Ok(BindAddress::AllInterfaces(contract::DEFAULT_PORT)),
    }
}

/// The signing and verifying keys, by precedence: `LIVEKIT_KEYS_FILE` (ours), `LIVEKIT_KEY_FILE`, then
/// `LIVEKIT_KEY[_FROM_FILE]` with `LIVEKIT_SECRET[_FROM_FILE]`. `None` when the key or the secret is
/// empty after trimming, which the caller reports together with a missing URL, as the reference does.
fn read_keys<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    notices: &mut Vec<Notice>,
) -> Result<Option<KeySet>, ConfigError> {
    if let Some(path) = env.get(env::LIVEKIT_KEYS_FILE) {
        let text = read_file(env::LIVEKIT_KEYS_FILE, &path)?;
        let keys = KeySet::from_yaml(&text).map_err(|source| ConfigError::KeysFile {
            path: path.clone(),
            source,
        })?;
        notices.push(Notice::Info(format!(
            "Using {} LiveKit API key(s) from LIVEKIT_KEYS_FILE {path:?}; {:?} signs",
            keys.len(),
            keys.signing_key_id()
        )));
        return Ok(Some(keys));
    }

    let (key, secret) = if let Some(path) = env.get(env::LIVEKIT_KEY_FILE) {
        let text = read_file(env::LIVEKIT_KEY_FILE, &path)?;
        let parts: Vec<&str> = text.split(':').collect();
        let [key, secret] = parts[..] else {
            return Err(ConfigError::KeySecretFileFormat);
        };
        notices.push(Notice::Info(format!(
            "Using LiveKit API key and secret from LIVEKIT_KEY_FILE {path:?}"
        )));
        (key.to_owned(), secret.to_owned())
    } else {
        let mut from =
            |value_var: &'static str, file_var: &'static str, what: &str| match env.get(file_var) {
                Some(path) => {
                    notices.push(Notice::Info(format!(
                        "Using LiveKit API {what} from {file_var} {path:?}"
                    )));
                    read_file(file_var, &path)
                }
                None => Ok(env.get_or_empty(value_var)),
            };
        let key = from(env::LIVEKIT_KEY, env::LIVEKIT_KEY_FROM_FILE, "key")?;
        let secret = from(env::LIVEKIT_SECRET, env::LIVEKIT_SECRET_FROM_FILE, "secret")?;
        (key, secret)
    };

    // The reference trims exactly space, CR and LF (not tabs).
    let trim = |s: &str| s.trim_matches([' ', '\r', '\n']).to_owned();
    Ok(KeySet::single(trim(&key), trim(&secret)).ok())
}

fn read_file(var: &'static str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(Path::new(path)).map_err(|source| ConfigError::ReadFile {
        var,
        path: path.to_owned(),
        source,
    })
}

/// `server_name=url,...`, split at the first `=`, both sides trimmed and non-empty.
fn parse_cs_api_url_overrides(raw: &str) -> Result<HashMap<String, String>, ConfigError> {
    let mut overrides = HashMap::new();
    if raw.is_empty() {
        return Ok(overrides);
    }
    for entry in raw.split(',') {
        let invalid = || ConfigError::CsApiUrlOverride(entry.to_owned());
        let (server, url) = entry.split_once('=').ok_or_else(invalid)?;
        let (server, url) = (server.trim(), url.trim());
        if server.is_empty() || url.is_empty() {
            return Err(invalid());
        }
        overrides.insert(server.to_owned(), url.to_owned());
    }
    Ok(overrides)
}

/// A positive whole number of seconds, or `None` when unset.
fn positive_seconds<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    var: &'static str,
) -> Result<Option<Duration>, ConfigError> {
    env.get(var)
        .map(|raw| match raw.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
            _ => Err(ConfigError::Number {
                var,
                expected: "a positive integer",
                value: raw,
            }),
        })
        .transpose()
}

/// IP addresses or CIDR ranges separated by commas and/or whitespace; a bare address is a /32 or /128.
fn cidrs<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    var: &'static str,
) -> Result<Vec<IpNet>, ConfigError> {
    env.get_or_empty(var)
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| ConfigError::Cidr {
                    var,
                    entry: entry.to_owned(),
                })
        })
        .collect()
}

/// Quotes like Go's `%q`, so error texts match the reference byte for byte: `"` and `\` escaped, the
/// usual short escapes, other ASCII control characters as `\x..`, printable Unicode raw.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid environment plus `extra` (later entries win; an empty value unsets).
    fn env_with(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut vars: HashMap<String, String> = [
            (env::LIVEKIT_URL, "wss://sfu.example.com"),
            (env::LIVEKIT_KEY, "devkey"),
            (env::LIVEKIT_SECRET, "devsecret"),
            (env::LIVEKIT_FULL_ACCESS_HOMESERVERS, "example.com"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        vars
    }

    fn parse(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    fn error_text(extra: &[(&str, &str)]) -> String {
        parse(&env_with(extra)).unwrap_err().to_string()
    }

    fn temp_file(contents: &str) -> tempfile_lite::TempFile {
        tempfile_lite::TempFile::new(contents)
    }

    /// A temporary file removed on drop (std only; no extra dependency).
    mod tempfile_lite {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicUsize, Ordering};

        pub struct TempFile(pub PathBuf);
        static NEXT: AtomicUsize = AtomicUsize::new(0);

        impl TempFile {
            pub fn new(contents: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "matrixrtc-auth-config-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, contents).unwrap();
                Self(path)
            }
            pub fn path(&self) -> &str {
                self.0.to_str().unwrap()
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn minimal_environment_gives_the_reference_defaults() {
        let config = parse(&env_with(&[])).unwrap();
        assert_eq!(config.livekit_url, "wss://sfu.example.com");
        assert_eq!(config.keys.signing_key_id(), "devkey");
        assert_eq!(config.keys.secret_for("devkey"), Some("devsecret"));
        assert_eq!(
            config.full_access,
            FullAccess::Only(vec!["example.com".into()])
        );
        assert_eq!(config.bind, BindAddress::AllInterfaces(8080));
        assert_eq!(config.sanity_check_interval, Duration::ZERO);
        assert!(config.cs_api_url_overrides.is_empty());
        assert_eq!(config.redis_url, None);
        assert_eq!(config.log_level, LevelFilter::INFO);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.outbound, OutboundSettings::default());
        assert_eq!(config.rate_limit_per_ip, None);
        assert_eq!(config.rate_limit_per_homeserver, None);
        assert!(config.trusted_proxies.is_empty());
        assert!(config.notices.is_empty(), "{:?}", config.notices);
    }

    #[test]
    fn missing_key_secret_or_url() {
        let expected = "LIVEKIT_KEY* / LIVEKIT_SECRET* and LIVEKIT_URL must be set";
        for var in [env::LIVEKIT_URL, env::LIVEKIT_KEY, env::LIVEKIT_SECRET] {
            assert_eq!(error_text(&[(var, "")]), expected, "without {var}");
        }
        // Whitespace-only key or secret is empty after trimming.
        assert_eq!(error_text(&[(env::LIVEKIT_KEY, " \r\n")]), expected);
        assert_eq!(error_text(&[(env::LIVEKIT_SECRET, "\n")]), expected);
    }

    #[test]
    fn missing_key_is_reported_before_missing_full_access() {
        assert_eq!(
            error_text(&[
                (env::LIVEKIT_KEY, ""),
                (env::LIVEKIT_FULL_ACCESS_HOMESERVERS, "")
            ]),
            "LIVEKIT_KEY* / LIVEKIT_SECRET* and LIVEKIT_URL must be set"
        );
    }

    #[test]
    fn missing_full_access() {
        assert_eq!(
            error_text(&[(env::LIVEKIT_FULL_ACCESS_HOMESERVERS, "")]),
            "LIVEKIT_FULL_ACCESS_HOMESERVERS environment variable must be set to the homeserver(s) you intend to serve — see README for guidance"
        );
    }

    #[test]
    fn full_access_parsing() {
        use FullAccess::*;
        let only = |v: &[&str]| Only(v.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(FullAccess::parse("*"), Everyone);
        assert_eq!(FullAccess::parse(" * , "), Everyone);
        assert_eq!(
            FullAccess::parse("*,example.com"),
            only(&["*", "example.com"])
        );
        assert_eq!(FullAccess::parse(" , "), only(&[]));
        assert_eq!(
            FullAccess::parse("a.com,b.com  c.com\td.com,,"),
            only(&["a.com", "b.com", "c.com", "d.com"])
        );
        let list = FullAccess::parse("example.com,matrix.example.com:8448");
        assert!(list.allows("example.com"));
        assert!(list.allows("matrix.example.com:8448"));
        assert!(!list.allows("aexample.com"));
        assert!(!list.allows("Example.com"));
        assert!(!list.allows("matrix.example.com"));
        assert!(Everyone.allows("anything"));
        assert!(!only(&[]).allows(""));
        // Trust (no SSRF guard) only for names the operator wrote down, never through the wildcard.
        assert!(list.names("example.com"));
        assert!(!list.names("other.com"));
        assert!(!Everyone.names("anything"));
        // `*` among others is a literal name.
        assert!(!FullAccess::parse("*,example.com").allows("other.com"));
        // Through the config: " , " starts the service with nobody full-access.
        let config = parse(&env_with(&[(env::LIVEKIT_FULL_ACCESS_HOMESERVERS, " , ")])).unwrap();
        assert_eq!(config.full_access, only(&[]));
    }

    #[test]
    fn bind_and_port() {
        assert_eq!(
            error_text(&[
                (env::LIVEKIT_JWT_BIND, ":9000"),
                (env::LIVEKIT_JWT_PORT, "9001")
            ]),
            "LIVEKIT_JWT_BIND and LIVEKIT_JWT_PORT must not be set together"
        );
        let config = parse(&env_with(&[(env::LIVEKIT_JWT_PORT, "9001")])).unwrap();
        assert_eq!(config.bind, BindAddress::AllInterfaces(9001));
        assert!(
            config.notices.iter().any(
                |n| matches!(n, Notice::Warn(m) if m.contains("LIVEKIT_JWT_PORT is deprecated"))
            )
        );
        let config = parse(&env_with(&[(env::LIVEKIT_JWT_BIND, "127.0.0.1:9002")])).unwrap();
        assert_eq!(config.bind, BindAddress::Host("127.0.0.1".into(), 9002));
        assert!(config.notices.is_empty());
    }

    #[test]
    fn bind_address_forms() {
        let parse = |v| BindAddress::parse(env::LIVEKIT_JWT_BIND, v);
        assert_eq!(parse(":8080").unwrap(), BindAddress::AllInterfaces(8080));
        assert_eq!(
            parse("localhost:1").unwrap(),
            BindAddress::Host("localhost".into(), 1)
        );
        assert_eq!(
            parse("[::1]:8080").unwrap(),
            BindAddress::Host("::1".into(), 8080)
        );
        assert_eq!(parse("[::1]:8080").unwrap().to_string(), "[::1]:8080");
        assert_eq!(parse(":0").unwrap().port(), 0);
        for bad in [
            "8080",
            ":",
            ":http",
            ":65536",
            "::1:8080",
            "[::1:8080",
            ":+80",
            ": 80",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().to_string(),
                format!(
                    "invalid listen address {} (from LIVEKIT_JWT_BIND): expected host:port or :port",
                    go_quote(bad)
                ),
                "{bad}"
            );
        }
        assert_eq!(
            error_text(&[(env::LIVEKIT_JWT_PORT, "abc")]),
            r#"invalid listen address ":abc" (from LIVEKIT_JWT_PORT): expected host:port or :port"#
        );
    }

    #[test]
    fn listen_address_alone_ignores_the_rest() {
        let vars: HashMap<&str, &str> = [(env::LIVEKIT_JWT_BIND, "127.0.0.1:9999")].into();
        let bind = listen_address(|n| vars.get(n).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(bind.port(), 9999);
        assert_eq!(listen_address(|_| None).unwrap().port(), 8080);
    }

    #[test]
    fn sanity_interval() {
        let interval = |v| {
            parse(&env_with(&[(
                env::LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS,
                v,
            )]))
        };
        assert_eq!(interval("0").unwrap().sanity_check_interval, Duration::ZERO);
        assert_eq!(
            interval("+5").unwrap().sanity_check_interval,
            Duration::from_secs(5)
        );
        assert_eq!(
            interval("30").unwrap().sanity_check_interval,
            Duration::from_secs(30)
        );
        assert_eq!(
            interval("-0").unwrap().sanity_check_interval,
            Duration::ZERO
        );
        for bad in ["-1", "abc", "1.5", " 5", "5s", "99999999999999999999"] {
            assert_eq!(
                interval(bad).unwrap_err().to_string(),
                format!(
                    "LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS must be a non-negative integer, got {}",
                    go_quote(bad)
                )
            );
        }
        assert_eq!(
            interval("-1").unwrap_err().to_string(),
            r#"LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS must be a non-negative integer, got "-1""#
        );
    }

    #[test]
    fn cs_api_url_overrides() {
        let parsed = parse_cs_api_url_overrides(
            "example.com=https://matrix.example.com, 10.0.0.1 = http://10.0.0.1:8008 ,[::1]:8448=http://[::1]:8008,::1=http://x",
        )
        .unwrap();
        assert_eq!(parsed["example.com"], "https://matrix.example.com");
        assert_eq!(parsed["10.0.0.1"], "http://10.0.0.1:8008");
        assert_eq!(parsed["[::1]:8448"], "http://[::1]:8008");
        assert_eq!(parsed["::1"], "http://x");
        // Split at the first `=` only.
        assert_eq!(
            parse_cs_api_url_overrides("a=http://h/?x=1").unwrap()["a"],
            "http://h/?x=1"
        );
        for (raw, entry) in [
            ("example.com", "example.com"),
            ("=http://x", "=http://x"),
            ("example.com= ", "example.com= "),
            ("a=http://x,", ""),
            ("a=http://x, b", " b"),
        ] {
            assert_eq!(
                error_text(&[(env::LIVEKIT_CS_API_URL_OVERRIDES, raw)]),
                format!(
                    "failed parsing LIVEKIT_CS_API_URL_OVERRIDES: invalid entry {}, expected server_name=url",
                    go_quote(entry)
                )
            );
        }
        assert_eq!(
            error_text(&[(env::LIVEKIT_CS_API_URL_OVERRIDES, "a=http://x,")]),
            r#"failed parsing LIVEKIT_CS_API_URL_OVERRIDES: invalid entry "", expected server_name=url"#
        );
    }

    #[test]
    fn key_file_takes_precedence_and_needs_exactly_two_parts() {
        let file = temp_file(
            "keysecret_iethuB2LeLiNuishiaKeephei9jaatio: keysecret_xefaingo4oos6ohla9phiMieBu3ohJi2\n",
        );
        let config = parse(&env_with(&[
            (env::LIVEKIT_KEY_FILE, file.path()),
            (env::LIVEKIT_KEY, "ignored"),
            (env::LIVEKIT_SECRET, "ignored"),
        ]))
        .unwrap();
        assert_eq!(
            config.keys.signing_key_id(),
            "keysecret_iethuB2LeLiNuishiaKeephei9jaatio"
        );
        assert_eq!(
            config
                .keys
                .secret_for("keysecret_iethuB2LeLiNuishiaKeephei9jaatio"),
            Some("keysecret_xefaingo4oos6ohla9phiMieBu3ohJi2")
        );
        for bad in ["onlykey", "a:b:c", ""] {
            let file = temp_file(bad);
            assert_eq!(
                error_text(&[(env::LIVEKIT_KEY_FILE, file.path())]),
                "invalid key secret file format!",
                "{bad:?}"
            );
        }
        // Two parts but an empty secret: the generic message.
        let file = temp_file("key:\n");
        assert_eq!(
            error_text(&[(env::LIVEKIT_KEY_FILE, file.path())]),
            "LIVEKIT_KEY* / LIVEKIT_SECRET* and LIVEKIT_URL must be set"
        );
    }

    #[test]
    fn from_file_variables_replace_the_values_and_are_trimmed() {
        let key = temp_file("filekey\r\n");
        let secret = temp_file("  filesecret \n");
        let config = parse(&env_with(&[
            (env::LIVEKIT_KEY_FROM_FILE, key.path()),
            (env::LIVEKIT_SECRET_FROM_FILE, secret.path()),
        ]))
        .unwrap();
        assert_eq!(config.keys.signing_key_id(), "filekey");
        assert_eq!(config.keys.secret_for("filekey"), Some("filesecret"));
        // Mixed: key from the environment, secret from a file.
        let config = parse(&env_with(&[(env::LIVEKIT_SECRET_FROM_FILE, secret.path())])).unwrap();
        assert_eq!(config.keys.secret_for("devkey"), Some("filesecret"));
        // Tabs are not trimmed (the reference trims space, CR and LF only).
        let config = parse(&env_with(&[(env::LIVEKIT_KEY, "\tk ")])).unwrap();
        assert_eq!(config.keys.signing_key_id(), "\tk");
    }

    #[test]
    fn unreadable_files_are_fatal() {
        for var in [
            env::LIVEKIT_KEY_FILE,
            env::LIVEKIT_KEY_FROM_FILE,
            env::LIVEKIT_SECRET_FROM_FILE,
            env::LIVEKIT_KEYS_FILE,
        ] {
            let text = error_text(&[(var, "/nonexistent/matrixrtc-auth-test")]);
            assert!(
                text.starts_with(&format!(
                    "could not read {var} file \"/nonexistent/matrixrtc-auth-test\": "
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn keys_file_takes_precedence_over_everything() {
        let yaml = temp_file("first: s1\nsecond: s2\n");
        let keyfile = temp_file("other:othersecret");
        let config = parse(&env_with(&[
            (env::LIVEKIT_KEYS_FILE, yaml.path()),
            (env::LIVEKIT_KEY_FILE, keyfile.path()),
        ]))
        .unwrap();
        assert_eq!(config.keys.signing_key_id(), "first");
        assert_eq!(config.keys.secret_for("second"), Some("s2"));
        assert_eq!(config.keys.secret_for("other"), None);
        // Still needs LIVEKIT_URL.
        assert_eq!(
            error_text(&[
                (env::LIVEKIT_KEYS_FILE, yaml.path()),
                (env::LIVEKIT_URL, "")
            ]),
            "LIVEKIT_KEY* / LIVEKIT_SECRET* and LIVEKIT_URL must be set"
        );
        for bad in ["", "{}", "- a\n", "k: ''\n", "not yaml: [\n"] {
            let file = temp_file(bad);
            let text = error_text(&[(env::LIVEKIT_KEYS_FILE, file.path())]);
            assert!(
                text.starts_with("invalid LIVEKIT_KEYS_FILE"),
                "{bad:?}: {text}"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let config = parse(&env_with(&[
            (env::LIVEKIT_SECRET, "supersecretvalue"),
            (
                env::LIVEKIT_REDIS_URL,
                "redis://:redispassword@redis:6379/0",
            ),
        ]))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("supersecretvalue"), "{printed}");
        assert!(!printed.contains("redispassword"), "{printed}");
        assert_eq!(
            config.redis_url,
            Some(RedisUrl("redis://:redispassword@redis:6379/0".into()))
        );
    }

    #[test]
    fn log_level_and_format() {
        let level = |v| parse(&env_with(&[(env::LIVEKIT_LOG_LEVEL, v)])).unwrap();
        assert_eq!(level("DEBUG").log_level, LevelFilter::DEBUG);
        assert_eq!(level("Warning").log_level, LevelFilter::WARN);
        assert_eq!(level("warn").log_level, LevelFilter::WARN);
        assert_eq!(level("error").log_level, LevelFilter::ERROR);
        let invalid = level("verbose");
        assert_eq!(invalid.log_level, LevelFilter::INFO);
        assert!(matches!(&invalid.notices[..], [Notice::Warn(m)] if m.contains("\"verbose\"")));

        let format = |v| parse(&env_with(&[(env::LIVEKIT_LOG_FORMAT, v)]));
        assert_eq!(format("json").unwrap().log_format, LogFormat::Json);
        assert_eq!(format("TEXT").unwrap().log_format, LogFormat::Text);
        assert_eq!(
            format("xml").unwrap_err().to_string(),
            r#"LIVEKIT_LOG_FORMAT must be "text" or "json", got "xml""#
        );
    }

    #[test]
    fn insecure_tls_needs_the_exact_value() {
        let with = |v| {
            parse(&env_with(&[(env::LIVEKIT_INSECURE_SKIP_VERIFY_TLS, v)]))
                .unwrap()
                .outbound
                .skip_tls_verify
        };
        assert!(with("YES_I_KNOW_WHAT_I_AM_DOING"));
        assert!(!with("true"));
        assert!(!with("yes_i_know_what_i_am_doing"));
    }

    #[test]
    fn outbound_settings() {
        let config = parse(&env_with(&[
            (env::LIVEKIT_OUTBOUND_CONNECT_TIMEOUT_SECONDS, "2"),
            (env::LIVEKIT_OUTBOUND_TIMEOUT_SECONDS, "7"),
            (env::LIVEKIT_OPENID_CACHE_SECONDS, "0"),
            (
                env::LIVEKIT_OUTBOUND_IP_ALLOWLIST,
                "10.0.0.0/8, 192.168.1.7 fd00::/8",
            ),
        ]))
        .unwrap();
        assert_eq!(config.outbound.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.outbound.request_timeout, Duration::from_secs(7));
        assert_eq!(config.outbound.openid_cache_ttl, Duration::ZERO);
        let ranges: Vec<String> = config
            .outbound
            .allowed_ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ranges, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);

        assert_eq!(
            error_text(&[(env::LIVEKIT_OUTBOUND_TIMEOUT_SECONDS, "0")]),
            r#"LIVEKIT_OUTBOUND_TIMEOUT_SECONDS must be a positive integer, got "0""#
        );
        assert_eq!(
            error_text(&[(env::LIVEKIT_OUTBOUND_CONNECT_TIMEOUT_SECONDS, "soon")]),
            r#"LIVEKIT_OUTBOUND_CONNECT_TIMEOUT_SECONDS must be a positive integer, got "soon""#
        );
        assert_eq!(
            error_text(&[(env::LIVEKIT_OPENID_CACHE_SECONDS, "-1")]),
            r#"LIVEKIT_OPENID_CACHE_SECONDS must be a non-negative integer, got "-1""#
        );
        assert_eq!(
            error_text(&[(env::LIVEKIT_OUTBOUND_IP_ALLOWLIST, "10.0.0.0/8,10.0.0.0/33")]),
            r#"LIVEKIT_OUTBOUND_IP_ALLOWLIST must be a list of IP addresses or CIDR ranges, got "10.0.0.0/33""#
        );
    }

    #[test]
    fn rate_limits_and_proxies() {
        let config = parse(&env_with(&[
            (env::LIVEKIT_RATE_LIMIT_PER_IP, "10/s"),
            (env::LIVEKIT_RATE_LIMIT_PER_HOMESERVER, "600/m"),
            (env::LIVEKIT_TRUSTED_PROXIES, "10.0.0.0/8,::1"),
        ]))
        .unwrap();
        let limit = |count, secs| RateLimit {
            count: NonZeroU32::new(count).unwrap(),
            period: Duration::from_secs(secs),
        };
        assert_eq!(config.rate_limit_per_ip, Some(limit(10, 1)));
        assert_eq!(config.rate_limit_per_homeserver, Some(limit(600, 60)));
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(
            RateLimit::parse(env::LIVEKIT_RATE_LIMIT_PER_IP, "5000/h").unwrap(),
            limit(5000, 3600)
        );
        assert_eq!(
            RateLimit::parse(env::LIVEKIT_RATE_LIMIT_PER_IP, " 3 / m ").unwrap(),
            limit(3, 60)
        );
        for bad in [
            "0/s",
            "10",
            "10/d",
            "/s",
            "-1/s",
            "1.5/s",
            "10/sec",
            "4294967296/s",
        ] {
            assert_eq!(
                error_text(&[(env::LIVEKIT_RATE_LIMIT_PER_HOMESERVER, bad)]),
                format!(
                    "LIVEKIT_RATE_LIMIT_PER_HOMESERVER must look like 10/s, 600/m or 5000/h (a positive count per second, minute or hour), got {}",
                    go_quote(bad)
                ),
                "{bad}"
            );
        }
        assert!(
            error_text(&[(env::LIVEKIT_TRUSTED_PROXIES, "proxy.local")])
                .starts_with("LIVEKIT_TRUSTED_PROXIES must be a list")
        );
    }

    #[test]
    fn livekit_api_url_is_optional_and_needs_a_usable_scheme_and_host() {
        assert_eq!(parse(&env_with(&[])).unwrap().livekit_api_url, None);
        for good in [
            "http://demo-livekit.rtc.svc:7880",
            "https://sfu.internal/livekit/sfu",
            "ws://127.0.0.1:7880",
            "wss://sfu.example.com",
        ] {
            let config = parse(&env_with(&[(env::LIVEKIT_API_URL, good)])).unwrap();
            assert_eq!(config.livekit_api_url.as_deref(), Some(good));
            assert_eq!(
                config.livekit_url, "wss://sfu.example.com",
                "LIVEKIT_URL stays what clients get"
            );
        }
        for bad in [
            "demo-livekit:7880",
            "ftp://sfu.example.com",
            "http://",
            " http://h",
        ] {
            assert_eq!(
                error_text(&[(env::LIVEKIT_API_URL, bad)]),
                format!(
                    "LIVEKIT_API_URL must be an http://, https://, ws:// or wss:// URL with a host, got {}",
                    go_quote(bad)
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn replica_id() {
        assert_eq!(parse(&env_with(&[])).unwrap().replica_id, None);
        assert_eq!(
            parse(&env_with(&[(env::LIVEKIT_REPLICA_ID, "")]))
                .unwrap()
                .replica_id,
            None,
            "empty counts as unset"
        );
        for good in ["rtc-auth-7d9f8b6c5-x2x9k", "a", "A.b_c-1", &"x".repeat(128)] {
            assert_eq!(
                parse(&env_with(&[(env::LIVEKIT_REPLICA_ID, good)]))
                    .unwrap()
                    .replica_id
                    .as_deref(),
                Some(good)
            );
        }
        for bad in [
            "a/b",
            "pod 1",
            " pod",
            "pöd",
            "a:b",
            "{x}",
            &"x".repeat(129),
        ] {
            assert_eq!(
                error_text(&[(env::LIVEKIT_REPLICA_ID, bad)]),
                format!(
                    "LIVEKIT_REPLICA_ID must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-', got {}",
                    go_quote(bad)
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn go_quote_matches_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{1}\u{7f}é"), "\"\\t\\n\\x01\\x7fé\"");
        assert_eq!(go_quote(""), "\"\"");
    }

    // --- LIVEKIT_TRUSTED_HOMESERVERS ---

    fn ssrf_trusted(extra: &[(&str, &str)]) -> FullAccess {
        parse(&env_with(extra)).unwrap().ssrf_trusted()
    }

    #[test]
    fn trusted_homeservers_join_the_named_full_access_servers() {
        assert!(
            parse(&env_with(&[]))
                .unwrap()
                .trusted_homeservers
                .is_empty()
        );
        let only = |names: &[&str]| FullAccess::Only(names.iter().map(|&n| n.to_owned()).collect());
        assert_eq!(ssrf_trusted(&[]), only(&["example.com"]));
        // The wildcard trusts no one; the trusted list is what the operator adds to it.
        let wildcard = (env::LIVEKIT_FULL_ACCESS_HOMESERVERS, "*");
        assert_eq!(ssrf_trusted(&[wildcard]), only(&[]));
        let trusted = (
            env::LIVEKIT_TRUSTED_HOMESERVERS,
            " example.com,matrix.example.org:8448\t[::1]:8448 ,, 10.0.0.1 ",
        );
        let config = parse(&env_with(&[wildcard, trusted])).unwrap();
        assert_eq!(config.full_access, FullAccess::Everyone);
        assert_eq!(
            config.trusted_homeservers,
            [
                "example.com",
                "matrix.example.org:8448",
                "[::1]:8448",
                "10.0.0.1"
            ]
        );
        let trust = config.ssrf_trusted();
        assert!(trust.names("example.com"));
        assert!(trust.names("[::1]:8448"));
        // Exact matching, as for the full-access list.
        assert!(!trust.names("Example.com"));
        assert!(!trust.names("example.com:443"));
        assert!(!trust.names("other.example.com"));
        // With a named list, names in both appear once.
        assert_eq!(
            ssrf_trusted(&[trusted]),
            only(&[
                "example.com",
                "matrix.example.org:8448",
                "[::1]:8448",
                "10.0.0.1"
            ])
        );
        // Separators alone trust nothing more.
        assert_eq!(
            ssrf_trusted(&[wildcard, (env::LIVEKIT_TRUSTED_HOMESERVERS, " , ")]),
            only(&[])
        );
    }

    #[test]
    fn trusted_homeservers_must_be_server_names() {
        for bad in ["*", "example.com,*"] {
            assert_eq!(
                error_text(&[(env::LIVEKIT_TRUSTED_HOMESERVERS, bad)]),
                "LIVEKIT_TRUSTED_HOMESERVERS must name homeservers: \"*\" would exempt every homeserver from the SSRF guard",
                "{bad:?}"
            );
        }
        for (value, entry) in [
            ("https://example.com", "https://example.com"),
            ("example.com,matrix.example.com:0", "matrix.example.com:0"),
            ("@alice:example.com", "@alice:example.com"),
            ("[::1", "[::1"),
            ("*.example.com", "*.example.com"),
        ] {
            assert_eq!(
                error_text(&[(env::LIVEKIT_TRUSTED_HOMESERVERS, value)]),
                format!(
                    "LIVEKIT_TRUSTED_HOMESERVERS must be Matrix server names (host or host:port, such as example.com or matrix.example.com:8448) separated by commas, got {}",
                    go_quote(entry)
                ),
                "{value:?}"
            );
        }
    }
}
