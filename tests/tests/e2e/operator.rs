//! The operator binary as a child process: start, probe over HTTP, stop with SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::cluster::{Failure, eventually};

/// The workspace root (this crate is `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `MATRIXRTC_OPERATOR_BIN`, else `target/debug/matrixrtc-operator` (cargo's per-crate `CARGO_BIN_EXE_*`
/// does not reach across crates).
fn binary() -> Result<PathBuf, Failure> {
    let path = std::env::var_os("MATRIXRTC_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/matrixrtc-operator"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "operator binary {} not found: run `cargo build -p matrixrtc-operator` or set MATRIXRTC_OPERATOR_BIN",
            path.display()
        ))
    }
}

pub struct OperatorProcess {
    child: Child,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Start `matrixrtc-operator run` watching `namespaces`; its log goes to `target/e2e-<first>.log`.
    pub async fn start(namespaces: &[String]) -> Result<Self, Failure> {
        let binary = binary()?;
        let metrics = free_loopback_port()?;
        let first = namespaces.first().ok_or("no namespace to watch")?;
        let log = workspace_root().join(format!("target/e2e-{first}.log"));
        let file =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let stderr = file.try_clone().map_err(|e| e.to_string())?;
        let mut args = vec![
            "run".to_owned(),
            format!("--metrics-address={metrics}"),
            "--log-level=info,matrixrtc_operator=debug".to_owned(),
        ];
        args.extend(
            namespaces
                .iter()
                .map(|ns| format!("--watch-namespace={ns}")),
        );
        let child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut process = Self {
            child,
            metrics,
            log,
        };
        let ready = eventually("the operator's /readyz", Duration::from_secs(60), || {
            let metrics = process.metrics;
            async move { (http_get(metrics, "/readyz").await.ok()?.0 == 200).then_some(()) }
        })
        .await;
        if let Err(error) = ready {
            let exited = process.child.try_wait().ok().flatten();
            return Err(format!(
                "{error} (exit status {exited:?}); log:\n{}",
                process.log_tail()
            ));
        }
        Ok(process)
    }

    /// The process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the operator's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub async fn terminate(mut self) -> Result<(), Failure> {
        let Some(pid) = self.child.id() else {
            return Err("the operator had already exited".into());
        };
        let signalled = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|e| format!("kill -TERM {pid}: {e}"))?;
        if !signalled.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("the operator exited with {status} after SIGTERM")),
            Ok(Err(e)) => Err(format!("waiting for the operator: {e}")),
            Err(_) => Err("the operator did not stop within 30 s of SIGTERM".into()),
        }
    }
}

fn free_loopback_port() -> Result<SocketAddr, Failure> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// A minimal HTTP/1.1 GET over loopback, bounded to 5 s: (status, body).
pub async fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String), Failure> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
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
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("GET {path} timed out"))?
}
