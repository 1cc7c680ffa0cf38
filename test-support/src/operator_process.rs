//! The operator binary as a child process, for the black-box tests (`operator/tests/binary`, against the
//! in-memory API server) and the end-to-end tests (`tests/`, against a real cluster): `run` with its health
//! and metrics endpoint on a free loopback port and its output in a log file; readiness awaited, probed and
//! scraped over HTTP, stopped with SIGTERM, and killed when dropped, so a failed assertion never leaves one
//! running.
//!
//! Errors are messages (with the log's tail where it explains them): the e2e tests collect them, the binary
//! tests panic with them.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How long a SIGTERM may take: the operator releases its lease and drains its controller first.
const STOP_WITHIN: Duration = Duration::from_secs(30);
/// Lines of the log that failure messages carry.
const LOG_TAIL_LINES: usize = 40;
/// The bound of one HTTP exchange with the operator.
const HTTP_WITHIN: Duration = Duration::from_secs(5);

/// `MATRIXRTC_OPERATOR_BIN` when set (e.g. a release build), else `fallback`; an error when it does not exist.
pub fn operator_binary(fallback: impl Into<PathBuf>) -> Result<PathBuf, String> {
    let path = std::env::var_os("MATRIXRTC_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| fallback.into());
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "operator binary {} not found: build it (`cargo nextest run -p matrixrtc-operator --no-run`) or \
             set MATRIXRTC_OPERATOR_BIN",
            path.display()
        ))
    }
}

/// How to start one operator: `<binary> run --metrics-address=<free port> [args]`, output to `log`.
pub struct Launch {
    binary: PathBuf,
    log: PathBuf,
    args: Vec<OsString>,
    /// In order: `Some` sets a variable, `None` removes it from the inherited environment.
    env: Vec<(OsString, Option<OsString>)>,
}

impl Launch {
    pub fn run(binary: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            log: log.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), Some(value.into())));
        self
    }

    pub fn env_remove(mut self, name: impl Into<OsString>) -> Self {
        self.env.push((name.into(), None));
        self
    }

    /// Start the process (without waiting for it to be ready).
    pub fn spawn(self) -> Result<OperatorProcess, String> {
        let metrics = free_loopback_port()?;
        let file = std::fs::File::create(&self.log)
            .map_err(|e| format!("creating {}: {e}", self.log.display()))?;
        let stderr = file.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("run")
            .arg(format!("--metrics-address={metrics}"))
            .args(&self.args);
        for (name, value) in &self.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        Ok(OperatorProcess {
            child,
            metrics,
            log: self.log,
        })
    }

    /// Start the process and wait (at most `within`) until `/readyz` answers 200.
    pub async fn start(self, within: Duration) -> Result<OperatorProcess, String> {
        let mut process = self.spawn()?;
        process.wait_ready(within).await?;
        Ok(process)
    }
}

/// A running operator; killed when dropped.
pub struct OperatorProcess {
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

impl OperatorProcess {
    /// Where its health and metrics endpoint listens.
    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Poll `/readyz` every 100 ms until it answers 200; an error if the process exits first or `within`
    /// passes.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the operator exited with {status} before it was ready; log:\n{}",
                    self.log_tail()
                ));
            }
            if self.get("/readyz").await.is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the operator was not ready within {} s; log:\n{}",
                    within.as_secs(),
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET `path` from its health and metrics endpoint: (status, body).
    pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.metrics, path).await
    }

    /// The `/metrics` text; an error unless it answers 200.
    pub async fn metrics(&self) -> Result<String, String> {
        match self.get("/metrics").await? {
            (200, body) => Ok(body),
            (code, body) => Err(format!("/metrics answered {code}: {body:.200}")),
        }
    }

    /// The value of the unlabelled sample `name` in `/metrics`, if it is there.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        sample(&self.metrics().await.ok()?, name)
    }

    /// Wait (at most `within`) for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, String> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("waiting for the operator: {e}")),
            Err(_) => Err(format!(
                "the operator did not exit within {} s; log:\n{}",
                within.as_secs(),
                self.log_tail()
            )),
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit: an error on any other outcome.
    pub async fn terminate(mut self) -> Result<(), String> {
        let Some(pid) = self.child.id() else {
            return Err(format!(
                "the operator had already exited; log:\n{}",
                self.log_tail()
            ));
        };
        let signalled = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|e| format!("kill -TERM {pid}: {e}"))?;
        if !signalled.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let status = self.wait_exit(STOP_WITHIN).await?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "the operator exited with {status} after SIGTERM; log:\n{}",
                self.log_tail()
            ))
        }
    }
}

/// The value of the unlabelled sample `name` in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
}

/// A port nobody listens on right now (the operator binds it moments later).
fn free_loopback_port() -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// A minimal HTTP/1.1 GET over loopback, bounded: (status, body).
pub async fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad response: {response:.80}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(HTTP_WITHIN, exchange)
        .await
        .map_err(|_| format!("GET {path} timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_exact_name() {
        let text = "# TYPE matrixrtc_operator_leader gauge\nmatrixrtc_operator_leader_changes 4\n\
                    matrixrtc_operator_leader 1\nother{label=\"x\"} 2\n";
        assert_eq!(sample(text, "matrixrtc_operator_leader"), Some(1.0));
        assert_eq!(sample(text, "matrixrtc_operator_leader_changes"), Some(4.0));
        assert_eq!(
            sample(text, "other"),
            None,
            "labelled samples are not unlabelled ones"
        );
        assert_eq!(sample(text, "missing"), None);
    }

    #[tokio::test]
    async fn http_get_reads_status_and_body_and_bounds_a_dead_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            stream
                .write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 8\r\n\r\nnot yet\n",
                )
                .await
                .unwrap();
        });
        assert_eq!(
            http_get(address, "/readyz").await,
            Ok((503, "not yet\n".to_owned()))
        );
        server.await.unwrap();
        assert!(
            http_get(free_loopback_port().unwrap(), "/readyz")
                .await
                .is_err()
        );
    }
}
