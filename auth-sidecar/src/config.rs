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
// `Config::full_access` is one; it lives with the other homeserver rules so that `matrix` needs no config.
pub use crate::matrix::full_access::FullAccess;
use crate::matrix::full_access::server_name_list;
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
    AppService(#[from] crate::config::appservice::AsConfigError),

    // Replica identity (delegation across replicas).
    #[error("LIVEKIT_REPLICA_ID must be 1 to {max} characters of A-Z, a-z, 0-9, '.', '_' and '-', got {}", go_quote(.value), max = REPLICA_ID_MAX_LEN)]
    ReplicaId { value: String },
    #[error(transparent)]
    Membership(#[from] crate::config::membership::MembershipConfigError),
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
    /// `LIVEKIT_WORKER_THREADS`: 1 (the default) runs everything on one thread, more a multi-threaded
    /// runtime with that many workers.
    pub worker_threads: WorkerThreads,

    /// Application-service mode (see [`crate::appservice`]).
    pub appservice: crate::config::appservice::AppServiceConfig,
    /// The membership monitor's settings (see [`crate::membership`]).
    pub membership: crate::config::membership::MembershipConfig,
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
        let worker_threads = env
            .get(env::LIVEKIT_WORKER_THREADS)
            .map(|raw| WorkerThreads::parse(&raw))
            .transpose()?
            .unwrap_or_default();
        let membership =
            crate::config::membership::MembershipConfig::from_lookup(|name| env.get(name))?;
        let (appservice, warnings) =
            crate::config::appservice::parse(|name| env.get(name), &full_access, &membership)?;
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
            worker_threads,
            appservice,
            membership,
        })
    }
}

/// How many threads serve requests: `LIVEKIT_WORKER_THREADS`, 1 to [`WorkerThreads::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerThreads(std::num::NonZeroUsize);

impl WorkerThreads {
    /// More threads than any sensible pod has cores: a larger value is a typo, not a tuning.
    pub const MAX: usize = 64;

    fn parse(raw: &str) -> Result<Self, ConfigError> {
        raw.trim()
            .parse::<std::num::NonZeroUsize>()
            .ok()
            .filter(|n| n.get() <= Self::MAX)
            .map(Self)
            .ok_or_else(|| ConfigError::Number {
                var: env::LIVEKIT_WORKER_THREADS,
                expected: "an integer from 1 to 64",
                value: raw.to_owned(),
            })
    }

    /// The number of threads.
    pub fn get(self) -> usize {
        self.0.get()
    }
}

impl Default for WorkerThreads {
    /// One thread: the fewest cross-thread wake-ups per request (docs/benchmark-auth.md).
    fn default() -> Self {
        Self(std::num::NonZeroUsize::MIN)
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

pub mod appservice;
pub mod membership;

#[cfg(test)]
mod tests;
