//! A real `redis-server` (Debian's package; `scripts/test.sh` installs it) on a free loopback port with
//! its own temporary directory and no persistence, killed when dropped. Tests that need it skip, loudly,
//! only when the binary is not installed, and fail instead when `CI` is set.

use std::process::Stdio;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::process::{Child, Command};

use super::TempDir;
use super::service::free_port;
use super::tls::TestPki;

const BINARY: &str = "redis-server";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running redis-server.
pub struct RedisServer {
    port: u16,
    /// The TLS port, when started with TLS.
    tls_port: Option<u16>,
    _child: Child,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts one, or returns None after printing a loud SKIP line when redis-server is not installed.
    pub async fn start_or_skip(test: &str) -> Option<Self> {
        Self::start(test, None).await
    }

    /// Like [`RedisServer::start_or_skip`], also serving TLS with the PKI's leaf (clients not checked).
    pub async fn start_tls_or_skip(test: &str, pki: &TestPki) -> Option<Self> {
        Self::start(test, Some(pki)).await
    }

    async fn start(test: &str, pki: Option<&TestPki>) -> Option<Self> {
        let dir = TempDir::new("redis");
        let port = free_port();
        let mut command = Command::new(BINARY);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "yes"]);
        let tls_port = pki.map(|pki| {
            let tls_port = free_port();
            let (cert, key) = pki.leaf_files();
            command
                .args(["--tls-port", &tls_port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(pki.ca_file())
                .args(["--tls-auth-clients", "no"]);
            tls_port
        });
        let spawned = command
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                skip_without_binary(test);
                return None;
            }
            Err(error) => panic!("could not start {BINARY}: {error}"),
        };
        let server = Self {
            port,
            tls_port,
            _child: child,
            _dir: dir,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(mut connection) = server.try_connect().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut connection).await;
                if pong.is_ok() {
                    return Some(server);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{BINARY} did not answer PING within {STARTUP_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:<tls port>` of a server started with TLS.
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a redis-server started with TLS");
        format!("rediss://127.0.0.1:{port}")
    }

    async fn try_connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// A connection for the test's own reads and writes.
    pub async fn connect(&self) -> MultiplexedConnection {
        self.try_connect().await.expect("connect to redis-server")
    }
}

/// Outages for the fault tests: the server is killed (SIGKILL) and later started again on the same
/// port, directory and options. Started with [`RedisServer::start_persistent_or_skip`], it keeps its
/// data across the outage (an append-only file, fsync'd on every write), as a production Redis would.
pub mod outage {
    use super::*;

    /// A redis-server that can be killed and started again.
    pub struct RestartableRedis {
        port: u16,
        dir: TempDir,
        child: Option<Child>,
    }

    impl RestartableRedis {
        /// Starts one with an append-only file, or None after a loud SKIP line.
        pub async fn start_persistent_or_skip(test: &str) -> Option<Self> {
            let mut redis = Self {
                port: free_port(),
                dir: TempDir::new("redis-outage"),
                child: None,
            };
            match redis.spawn() {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    super::skip_without_binary(test);
                    return None;
                }
                Err(error) => panic!("could not start {BINARY}: {error}"),
            }
            redis.wait_ready().await;
            Some(redis)
        }

        fn spawn(&mut self) -> std::io::Result<()> {
            let child = Command::new(BINARY)
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .args(["--protected-mode", "yes"])
                .arg("--dir")
                .arg(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            self.child = Some(child);
            Ok(())
        }

        async fn wait_ready(&self) {
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            loop {
                let client = redis::Client::open(self.url()).expect("redis URL");
                if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                    let pong: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(&mut connection).await;
                    if pong.is_ok() {
                        return;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "{BINARY} did not answer PING within {STARTUP_TIMEOUT:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// `redis://127.0.0.1:<port>`.
        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// Kills the server (SIGKILL) and waits until it is gone.
        pub async fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                child.kill().await.expect("kill redis-server");
            }
        }

        /// Starts it again on the same port with the same data directory; waits until it answers.
        pub async fn start_again(&mut self) {
            self.spawn().expect("start redis-server again");
            self.wait_ready().await;
        }

        /// A connection for the test's own reads and writes.
        pub async fn connect(&self) -> MultiplexedConnection {
            redis::Client::open(self.url())
                .expect("redis URL")
                .get_multiplexed_async_connection()
                .await
                .expect("connect to redis-server")
        }
    }
}

/// Says loudly that `test` skips because redis-server is missing, or fails it when `CI` is set: CI
/// installs redis-server (scripts/test.sh), so there a missing binary is a broken setup, and a skip
/// would pass the job with its Redis coverage gone.
fn skip_without_binary(test: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: `{BINARY}` is not installed, and CI is set: scripts/test.sh should have installed it"
    );
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: `{BINARY}` is not installed (apt-get install redis-server) !!!!!!!!\n"
    );
}
