//! Configuration (spec §6): startup errors exit 1 with one line naming the problem, and every key source
//! and bind form works.

use crate::support::body::{self, DEVICE_ID, MEMBER_ID, ROOM_ID, SLOT_ID};
use crate::support::client::Response;
use crate::support::jwt::{self, SECRET, hash};
use crate::support::service::{Exited, Service, ServiceConfig, free_port};
use crate::support::{TempDir, World, assert_token_response, bounded};

const URL_KEY_SECRET: &str = "LIVEKIT_KEY* / LIVEKIT_SECRET* and LIVEKIT_URL must be set";

/// A configuration that would start: URL, key, secret and a full-access list.
fn complete() -> ServiceConfig {
    ServiceConfig::new()
        .set("LIVEKIT_URL", "ws://127.0.0.1:7880")
        .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", "example.org")
}

/// Exit code 1 and exactly one non-empty output line containing `message` (and never the secret).
fn assert_startup_error(exited: &Exited, message: &str) {
    let output = format!("{}{}", exited.stdout, exited.stderr);
    assert_eq!(exited.code, Some(1), "exit code; output:\n{output}");
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{output}");
    assert!(
        lines[0].contains(message),
        "{message:?} not in {:?}",
        lines[0]
    );
    assert!(!output.contains(SECRET), "the secret is not printed");
}

#[tokio::test]
async fn missing_url_key_or_secret_is_fatal() {
    bounded(async {
        for config in [
            complete().unset("LIVEKIT_URL"),
            complete().set("LIVEKIT_URL", ""),
            complete().unset("LIVEKIT_KEY"),
            complete().unset("LIVEKIT_SECRET"),
            complete().set("LIVEKIT_SECRET", " \r\n"),
        ] {
            assert_startup_error(&config.run_to_exit().await, URL_KEY_SECRET);
        }
    })
    .await;
}

#[tokio::test]
async fn missing_full_access_list_is_fatal() {
    bounded(async {
        let message = "LIVEKIT_FULL_ACCESS_HOMESERVERS environment variable must be set to the \
                       homeserver(s) you intend to serve — see README for guidance";
        for config in [
            complete().unset("LIVEKIT_FULL_ACCESS_HOMESERVERS"),
            complete().set("LIVEKIT_FULL_ACCESS_HOMESERVERS", ""),
        ] {
            assert_startup_error(&config.run_to_exit().await, message);
        }
    })
    .await;
}

#[tokio::test]
async fn bind_and_port_together_are_fatal() {
    bounded(async {
        let exited = complete()
            .set("LIVEKIT_JWT_PORT", &free_port().to_string())
            .run_to_exit()
            .await;
        assert_startup_error(
            &exited,
            "LIVEKIT_JWT_BIND and LIVEKIT_JWT_PORT must not be set together",
        );
    })
    .await;
}

#[tokio::test]
async fn bad_sanity_check_interval_is_fatal() {
    bounded(async {
        for value in ["-1", "abc", "1.5"] {
            let exited = complete()
                .set("LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS", value)
                .run_to_exit()
                .await;
            assert_startup_error(
                &exited,
                &format!(
                    "LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS must be a non-negative integer, got \"{value}\""
                ),
            );
        }
    })
    .await;
}

#[tokio::test]
async fn bad_cs_api_url_override_is_fatal() {
    bounded(async {
        for (value, entry) in [
            ("example.com", "example.com"),
            ("=https://matrix.example.com", "=https://matrix.example.com"),
            ("a.example=https://a.example,b.example", "b.example"),
        ] {
            let exited = complete()
                .set("LIVEKIT_CS_API_URL_OVERRIDES", value)
                .run_to_exit()
                .await;
            assert_startup_error(
                &exited,
                &format!(
                    "failed parsing LIVEKIT_CS_API_URL_OVERRIDES: invalid entry \"{entry}\", expected server_name=url"
                ),
            );
        }
    })
    .await;
}

#[tokio::test]
async fn key_file_with_wrong_format_is_fatal() {
    bounded(async {
        let dir = TempDir::new("keyfile");
        let path = dir.path().join("keys");
        for content in ["only-a-key", "a:b:c"] {
            std::fs::write(&path, content).expect("write key file");
            let exited = complete()
                .set("LIVEKIT_KEY_FILE", &path.display().to_string())
                .run_to_exit()
                .await;
            assert_startup_error(&exited, "invalid key secret file format!");
        }
    })
    .await;
}

#[tokio::test]
async fn unreadable_key_sources_are_fatal() {
    bounded(async {
        let missing = "/nonexistent/matrixrtc-auth/secret";
        for variable in [
            "LIVEKIT_KEY_FILE",
            "LIVEKIT_KEY_FROM_FILE",
            "LIVEKIT_SECRET_FROM_FILE",
            "LIVEKIT_KEYS_FILE",
        ] {
            let exited = complete().set(variable, missing).run_to_exit().await;
            let output = format!("{}{}", exited.stdout, exited.stderr);
            assert_eq!(exited.code, Some(1), "{variable}: {output}");
            assert_eq!(
                output.trim().lines().count(),
                1,
                "{variable}: one line: {output}"
            );
        }
    })
    .await;
}

/// Our own variables reject values they cannot parse, naming the variable.
#[tokio::test]
async fn bad_values_of_our_variables_are_fatal() {
    bounded(async {
        for (variable, value) in [
            ("LIVEKIT_RATE_LIMIT_PER_IP", "10"),
            ("LIVEKIT_RATE_LIMIT_PER_IP", "ten/m"),
            ("LIVEKIT_RATE_LIMIT_PER_IP", "0/m"),
            ("LIVEKIT_RATE_LIMIT_PER_HOMESERVER", "5/d"),
            ("LIVEKIT_OUTBOUND_IP_ALLOWLIST", "not-a-cidr"),
            ("LIVEKIT_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("LIVEKIT_OPENID_CACHE_SECONDS", "-5"),
            ("LIVEKIT_OUTBOUND_TIMEOUT_SECONDS", "soon"),
            ("LIVEKIT_OUTBOUND_CONNECT_TIMEOUT_SECONDS", "-1"),
            ("LIVEKIT_API_URL", "livekit.rtc.svc:7880"),
        ] {
            let exited = complete().set(variable, value).run_to_exit().await;
            assert_startup_error(&exited, variable);
        }
    })
    .await;
}

/// `POST /get_token` for `user` with the OpenID token `token-alice`.
async fn alice_token(service: &Service, world: &World, user: &str) -> Response {
    service
        .post_json(
            "/get_token",
            &body::get_token(&world.hs.server_name(), "token-alice", user),
        )
        .await
}

/// Verifies a token signed with a key and secret other than the defaults, and that it is otherwise a
/// normal token.
async fn assert_signed_with(config: ServiceConfig, world: &World, key: &str, secret: &str) {
    let user = world.hs.user("alice");
    let service = config.start().await;
    let response = alice_token(&service, world, &user).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let token = response.json()["jwt"].as_str().expect("jwt").to_owned();
    let verified = jwt::verify(&token, key, secret, &["exp", "nbf", "iss", "sub"]);
    assert_eq!(verified.claims["sub"], hash(&[&user, DEVICE_ID, MEMBER_ID]));
    assert_eq!(verified.claims["video"]["room"], hash(&[ROOM_ID, SLOT_ID]));
}

/// `LIVEKIT_KEY_FILE` (`key:secret`) wins over the plain variables.
#[tokio::test]
async fn key_file_takes_precedence() {
    bounded(async {
        let world = World::start().await;
        world.hs.add_user("token-alice", "alice");
        let dir = TempDir::new("keyfile");
        let path = dir.path().join("keys");
        std::fs::write(&path, "file-key:file-secret-with-enough-length\n").expect("write");
        let config = world
            .service()
            .set("LIVEKIT_KEY_FILE", &path.display().to_string());
        assert_signed_with(config, &world, "file-key", "file-secret-with-enough-length").await;
    })
    .await;
}

/// `*_FROM_FILE` replace the variables; a trailing CRLF is trimmed.
#[tokio::test]
async fn key_and_secret_from_files_are_trimmed() {
    bounded(async {
        let world = World::start().await;
        world.hs.add_user("token-alice", "alice");
        let dir = TempDir::new("fromfile");
        let key = dir.path().join("key");
        let secret = dir.path().join("secret");
        std::fs::write(&key, "from-file-key\r\n").expect("write");
        std::fs::write(&secret, "from-file-secret-0123456789\r\n").expect("write");
        let config = world
            .service()
            .set("LIVEKIT_KEY_FROM_FILE", &key.display().to_string())
            .set("LIVEKIT_SECRET_FROM_FILE", &secret.display().to_string());
        assert_signed_with(
            config,
            &world,
            "from-file-key",
            "from-file-secret-0123456789",
        )
        .await;
    })
    .await;
}

/// `LIVEKIT_KEYS_FILE` (LiveKit's YAML map): the first key signs.
#[tokio::test]
async fn keys_file_first_entry_signs() {
    bounded(async {
        let world = World::start().await;
        world.hs.add_user("token-alice", "alice");
        let dir = TempDir::new("keysyaml");
        let path = dir.path().join("keys.yaml");
        std::fs::write(
            &path,
            "first-key: first-secret-0123456789abcdef\nsecond-key: second-secret-0123456789abcdef\n",
        )
        .expect("write");
        let config = world
            .service()
            .unset("LIVEKIT_KEY")
            .unset("LIVEKIT_SECRET")
            .set("LIVEKIT_KEYS_FILE", &path.display().to_string());
        assert_signed_with(config, &world, "first-key", "first-secret-0123456789abcdef").await;
    })
    .await;
}

/// The deprecated `LIVEKIT_JWT_PORT` binds `:<port>` and warns; `:<port>` in `LIVEKIT_JWT_BIND` works.
#[tokio::test]
async fn port_and_all_interfaces_bind_forms_work() {
    bounded(async {
        let port = free_port();
        let service = complete()
            .unset("LIVEKIT_JWT_BIND")
            .set("LIVEKIT_JWT_PORT", &port.to_string())
            .with_port(port)
            .start()
            .await;
        assert!(
            service.output().contains("LIVEKIT_JWT_PORT"),
            "deprecation warning names the variable:\n{}",
            service.output()
        );
        drop(service);

        let port = free_port();
        let service = complete()
            .set("LIVEKIT_JWT_BIND", &format!(":{port}"))
            .with_port(port)
            .start()
            .await;
        assert_eq!(service.get("/healthz").await.status, 200);
    })
    .await;
}

/// `LIVEKIT_WORKER_THREADS`: one thread by default (the whole service on one thread), a multi-threaded
/// runtime with that many workers when asked; tokens are issued either way, and a bad value is fatal.
#[tokio::test]
async fn worker_threads_set_the_runtime() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        for (setting, threads) in [(None, 1), (Some("3"), 4)] {
            let config = match setting {
                Some(value) => world.service().set("LIVEKIT_WORKER_THREADS", value),
                None => world.service(),
            };
            let service = config.start().await;
            let response = alice_token(&service, &world, &user).await;
            assert_token_response(
                &response,
                &world.livekit.ws_url(),
                &hash(&[&user, DEVICE_ID, MEMBER_ID]),
                &hash(&[ROOM_ID, SLOT_ID]),
            );
            // Threads of the process: the main thread, plus the workers of a multi-threaded runtime.
            let tasks = std::fs::read_dir(format!("/proc/{}/task", service.pid()))
                .expect("the service's threads")
                .count();
            assert_eq!(
                tasks, threads,
                "threads with LIVEKIT_WORKER_THREADS={setting:?}"
            );
        }
        assert_startup_error(
            &complete()
                .set("LIVEKIT_WORKER_THREADS", "0")
                .run_to_exit()
                .await,
            "LIVEKIT_WORKER_THREADS must be an integer from 1 to 64, got \"0\"",
        );
    })
    .await;
}
