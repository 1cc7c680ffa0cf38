//! Unit tests of the configuration: every variable, default, precedence rule and startup error text.

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
fn an_empty_full_access_list_starts_with_nobody_full_access() {
    let config = parse(&env_with(&[(env::LIVEKIT_FULL_ACCESS_HOMESERVERS, " , ")])).unwrap();
    assert_eq!(config.full_access, FullAccess::Only(Vec::new()));
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
        config
            .notices
            .iter()
            .any(|n| matches!(n, Notice::Warn(m) if m.contains("LIVEKIT_JWT_PORT is deprecated")))
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
fn worker_threads() {
    let threads = |extra: &[(&str, &str)]| parse(&env_with(extra)).unwrap().worker_threads.get();
    assert_eq!(threads(&[]), 1, "one thread unless asked");
    assert_eq!(
        threads(&[(env::LIVEKIT_WORKER_THREADS, "")]),
        1,
        "empty is unset"
    );
    assert_eq!(threads(&[(env::LIVEKIT_WORKER_THREADS, " 4 ")]), 4);
    let max = WorkerThreads::MAX.to_string();
    assert_eq!(
        threads(&[(env::LIVEKIT_WORKER_THREADS, &max)]),
        WorkerThreads::MAX
    );
    let too_many = (WorkerThreads::MAX + 1).to_string();
    for bad in ["0", "-1", "1.5", "two", &too_many, "18446744073709551616"] {
        assert_eq!(
            error_text(&[(env::LIVEKIT_WORKER_THREADS, bad)]),
            format!(
                "LIVEKIT_WORKER_THREADS must be an integer from 1 to {}, got {}",
                WorkerThreads::MAX,
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
