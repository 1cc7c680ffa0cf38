//! The service under test: the real `matrixrtc-auth` binary as a child process with a controlled
//! environment (nothing inherited), bound to a free loopback port, its stdout and stderr captured, killed
//! when dropped.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::client::{RequestBuilder, Response};
use super::jwt::{KEY, SECRET};

/// The binary cargo built for this package.
pub const BINARY: &str = env!("CARGO_BIN_EXE_matrixrtc-auth");

/// How long the service may take to answer `/healthz` after being spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a process that is expected to exit may take.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A port nobody listens on right now (bound, then released; the race is acceptable on loopback).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port()
}

/// The environment and arguments of one service process.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    env: BTreeMap<String, String>,
    args: Vec<String>,
    port: u16,
}

impl ServiceConfig {
    /// Key and secret set, debug logging, bound to `127.0.0.1:<free port>`; no LiveKit URL and no
    /// full-access list yet.
    pub fn new() -> Self {
        let port = free_port();
        Self {
            env: BTreeMap::new(),
            args: Vec::new(),
            port,
        }
        .set("LIVEKIT_KEY", KEY)
        .set("LIVEKIT_SECRET", SECRET)
        .set("LIVEKIT_LOG_LEVEL", "debug")
        .set("LIVEKIT_JWT_BIND", &format!("127.0.0.1:{port}"))
    }

    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn unset(mut self, name: &str) -> Self {
        self.env.remove(name);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Reach the service on another port (for configurations that bind by other means).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn spawn(&self) -> (Child, Captured, Captured) {
        let mut command = Command::new(BINARY);
        command
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn matrixrtc-auth");
        let stdout = Captured::from(child.stdout.take().expect("piped stdout"));
        let stderr = Captured::from(child.stderr.take().expect("piped stderr"));
        (child, stdout, stderr)
    }

    /// Spawns the service and waits until `GET /healthz` answers 200. Panics with its output if it
    /// exits or does not become ready in time.
    pub async fn start(&self) -> Service {
        match self.start_or_exit().await {
            Ok(service) => service,
            Err(exited) => panic!(
                "service exited during startup with {:?}; output:\n{}{}",
                exited.code, exited.stdout, exited.stderr
            ),
        }
    }

    /// Spawns the service and waits until it is ready (Ok) or has exited (Err). Panics if it does
    /// neither in time.
    pub async fn start_or_exit(&self) -> Result<Service, Exited> {
        let (child, stdout, stderr) = self.spawn();
        let mut service = Service {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            stdout,
            stderr,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = service.child.try_wait() {
                service.stdout.drained().await;
                service.stderr.drained().await;
                return Err(Exited {
                    code: status.code(),
                    stdout: service.stdout.text(),
                    stderr: service.stderr.text(),
                });
            }
            let probe = service.request(Method::GET, "/healthz").try_send().await;
            if probe.is_ok_and(|response| response.status == 200) {
                return Ok(service);
            }
            assert!(
                Instant::now() < deadline,
                "service not ready within {STARTUP_TIMEOUT:?}; output:\n{}",
                service.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the process to completion (for startup errors and the healthcheck mode).
    pub async fn run_to_exit(&self) -> Exited {
        let (mut child, stdout, stderr) = self.spawn();
        let status = tokio::time::timeout(EXIT_TIMEOUT, child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "process did not exit within {EXIT_TIMEOUT:?}; output so far:\n{}{}",
                    stdout.text(),
                    stderr.text()
                )
            })
            .expect("wait for process");
        // The pipes close when the process exits; give the readers a moment to drain them.
        stdout.drained().await;
        stderr.drained().await;
        Exited {
            code: status.code(),
            stdout: stdout.text(),
            stderr: stderr.text(),
        }
    }
}

/// A process that has exited.
#[derive(Debug)]
pub struct Exited {
    /// None if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A running service; killed when dropped.
pub struct Service {
    child: Child,
    addr: SocketAddr,
    stdout: Captured,
    stderr: Captured,
}

impl Service {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.addr, method, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        self.request(Method::POST, path).json(body).send().await
    }

    /// Everything the process wrote so far, stdout then stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout.text(), self.stderr.text())
    }

    /// The process ID (tests read its memory use from `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("service still running")
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) and a valid signal.
        let result = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(result, 0, "kill(SIGTERM) failed");
    }

    /// Kills the process with SIGKILL (no graceful anything) and waits until it is gone, so that its
    /// port is free for a successor.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill the service");
    }

    /// Waits for the process to exit; None if it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()?;
        self.stdout.drained().await;
        self.stderr.drained().await;
        Some(status.expect("wait for service").code())
    }
}

/// One output stream of the child, collected in the background.
#[derive(Clone)]
struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    finished: Arc<AtomicBool>,
}

impl Captured {
    fn from(mut stream: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let captured = Self {
            bytes: Arc::default(),
            finished: Arc::default(),
        };
        let sink = captured.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                sink.bytes
                    .lock()
                    .expect("captured output")
                    .extend_from_slice(&buffer[..n]);
            }
            sink.finished.store(true, Ordering::SeqCst);
        });
        captured
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().expect("captured output")).into_owned()
    }

    /// Waits (briefly) until the stream reached end of file.
    async fn drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.finished.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
