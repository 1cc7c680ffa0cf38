//! `load`: the load generator. HTTP/1.1 keep-alive connections (hyper's client connection, one task
//! each), opened before the clock starts, then either
//! - **closed loop** (`--rate 0`, saturation): every connection sends its next request as soon as the
//!   previous answer is read, until `--duration` is over; or
//! - **open loop** (`--rate R`): a pacer thread issues one ticket every `1/R` s and hands ticket `i` to
//!   connection `i mod C`. A request's latency runs from its ticket's *scheduled* time, so a slow answer
//!   that delays the requests queued behind it is charged to them too (no coordinated omission). The
//!   pacer sleeps with `nanosleep` rather than tokio's millisecond timer; how late it woke is reported
//!   separately as `lag_*`, and is already included in the latencies.
//!
//! `--tokens warm` draws each request's user at random from `--users` users, so the service sees the
//! same OpenID tokens again; `--tokens cold` gives every request a user (and token) never used before,
//! numbered from the start time so that successive runs do not share tokens either.
//!
//! Every wait is bounded: each request by `--timeout`, the connecting by [`CONNECT_TIMEOUT`], and the
//! whole run by `--duration` plus those plus [`HARD_LIMIT_SLACK`]; past that the run fails.
//!
//! Output: one `RESULT key=value ...` line on stdout (see [`summary`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::body;
use crate::stats::{ResultLine, Samples};

/// How long opening all connections may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Added to the run's own bounds to make its hard limit.
const HARD_LIMIT_SLACK: Duration = Duration::from_secs(30);
/// Pause between attempts to reopen a failed connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// Clock ticks per second of `/proc/<pid>/stat` CPU times: Linux's `USER_HZ`, 100 on x86 and arm.
const USER_HZ: u64 = 100;

#[derive(clap::Args)]
pub struct Args {
    /// Base URL of the endpoint, `http://host:port`.
    #[arg(long)]
    url: String,
    /// Request path.
    #[arg(long, default_value = "/get_token")]
    path: String,
    /// `matrix_server_name` in the bodies: the fake homeserver's printed `server_name`.
    #[arg(long)]
    server_name: String,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests per second over all connections (open loop); 0 saturates (closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Length of the measured run, seconds.
    #[arg(long, default_value = "10", value_parser = crate::seconds)]
    duration: Duration,
    /// `warm`: users drawn from `--users`; `cold`: a new user (and OpenID token) for every request.
    #[arg(long, value_enum, default_value_t = Tokens::Warm)]
    tokens: Tokens,
    /// Distinct users of a warm run.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Distinct rooms (user `N` is in room `N mod rooms`).
    #[arg(long, default_value_t = 50)]
    rooms: u64,
    /// Timeout of one request, seconds.
    #[arg(long, default_value = "5", value_parser = crate::seconds)]
    timeout: Duration,
    /// Name of the run in the RESULT line.
    #[arg(long, default_value = "load")]
    label: String,
    /// Runtime worker threads (1: a current-thread runtime, like `wrk -t1`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Tokens {
    Warm,
    Cold,
}

impl Tokens {
    fn name(self) -> &'static str {
        match self {
            Self::Warm => "warm",
            Self::Cold => "cold",
        }
    }
}

/// Why a load run failed (failed requests are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("--url must be http://host:port: {0}")]
    Url(String),
    #[error("--connections, --users and --rooms must be at least 1")]
    Zero,
    #[error("{address} resolves to no address")]
    Unresolved { address: String },
    #[error("could not open {connections} connections: {detail}")]
    Connect { connections: usize, detail: String },
    #[error("a connection task failed: {0}")]
    Worker(String),
    #[error("the run did not finish within its hard limit of {0:?}")]
    HardLimit(Duration),
}

/// What every connection shares.
struct Plan {
    address: SocketAddr,
    host: HeaderValue,
    path: Uri,
    server_name: String,
    connections: usize,
    rate: u32,
    duration: Duration,
    timeout: Duration,
    tokens: Tokens,
    rooms: u64,
    /// Warm runs: the body of each user, rendered once.
    warm_bodies: Vec<Bytes>,
    /// Cold runs: the next unused user.
    next_cold_user: AtomicU64,
    label: String,
}

type Sender = http1::SendRequest<Full<Bytes>>;

pub fn run(args: &Args) -> Result<(), LoadError> {
    let runtime = crate::runtime(args.threads)?;
    let hard_limit = args.duration + args.timeout + CONNECT_TIMEOUT + HARD_LIMIT_SLACK;
    let line = runtime.block_on(async {
        let plan = Arc::new(plan(args).await?);
        tokio::time::timeout(hard_limit, drive(plan))
            .await
            .map_err(|_| LoadError::HardLimit(hard_limit))?
    })?;
    println!("{line}");
    Ok(())
}

async fn plan(args: &Args) -> Result<Plan, LoadError> {
    if args.connections == 0 || args.users == 0 || args.rooms == 0 {
        return Err(LoadError::Zero);
    }
    let url: Uri = args
        .url
        .parse()
        .map_err(|e: http::uri::InvalidUri| LoadError::Url(e.to_string()))?;
    let authority = match (url.scheme_str(), url.authority()) {
        (Some("http"), Some(authority)) => authority.clone(),
        _ => return Err(LoadError::Url(args.url.clone())),
    };
    let target = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let resolved = tokio::net::lookup_host(target.as_str()).await?.next();
    let address = resolved.ok_or(LoadError::Unresolved { address: target })?;
    let host =
        HeaderValue::from_str(authority.as_str()).map_err(|e| LoadError::Url(e.to_string()))?;
    let path: Uri = args
        .path
        .parse()
        .map_err(|e: http::uri::InvalidUri| LoadError::Url(e.to_string()))?;
    let warm_bodies = match args.tokens {
        Tokens::Warm => (0..args.users)
            .map(|user| render(user, args.rooms, &args.server_name))
            .collect(),
        Tokens::Cold => Vec::new(),
    };
    // A million users per second of wall-clock time from the epoch: a later run starts past every user
    // an earlier one could have used.
    let first_cold_user = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() * 1_000_000);
    Ok(Plan {
        address,
        host,
        path,
        server_name: args.server_name.clone(),
        connections: args.connections,
        rate: args.rate,
        duration: args.duration,
        timeout: args.timeout,
        tokens: args.tokens,
        rooms: args.rooms,
        warm_bodies,
        next_cold_user: AtomicU64::new(first_cold_user),
        label: args.label.clone(),
    })
}

fn render(user: u64, rooms: u64, server_name: &str) -> Bytes {
    let mut text = String::with_capacity(320 + 4 * server_name.len());
    body::write_get_token(&mut text, user, user % rooms, server_name);
    Bytes::from(text)
}

/// Chooses each request's body.
struct Picker {
    /// xorshift64 state; never zero.
    state: u64,
}

impl Picker {
    fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }

    fn body(&mut self, plan: &Plan) -> Bytes {
        match plan.tokens {
            Tokens::Warm => {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                // `plan` refuses zero users, so the list is not empty.
                let index = (self.state % plan.warm_bodies.len() as u64) as usize;
                plan.warm_bodies[index].clone()
            }
            Tokens::Cold => {
                let user = plan.next_cold_user.fetch_add(1, Ordering::Relaxed);
                render(user, plan.rooms, &plan.server_name)
            }
        }
    }
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies: Samples,
    /// Answers received, whatever their status.
    answered: u64,
    non2xx: u64,
    /// Requests that got no answer (connection error or timeout).
    errors: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.merge(other.latencies);
        self.answered += other.answered;
        self.non2xx += other.non2xx;
        self.errors += other.errors;
    }

    /// Counts one exchange that started at `since`.
    fn count(&mut self, since: Instant, outcome: Result<bool, ()>) {
        match outcome {
            Ok(success) => {
                self.latencies.record(since.elapsed());
                self.answered += 1;
                self.non2xx += u64::from(!success);
            }
            Err(()) => self.errors += 1,
        }
    }
}

async fn connect(plan: &Plan) -> Result<Sender, String> {
    let stream = TcpStream::connect(plan.address)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; errors surface on the sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Reopens a connection, retrying until `until`; `None` if that passes first.
async fn reconnect(plan: &Plan, until: Instant) -> Option<Sender> {
    while Instant::now() < until {
        if let Ok(Ok(sender)) = tokio::time::timeout(plan.timeout, connect(plan)).await {
            return Some(sender);
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    None
}

/// One request and its whole answer, within `--timeout`: whether the status was 2xx, or `Err` if no
/// answer came.
async fn exchange(sender: &mut Sender, plan: &Plan, body: Bytes) -> Result<bool, ()> {
    let attempt = async {
        sender.ready().await.map_err(drop)?;
        let request = Request::post(plan.path.clone())
            .header(HOST, plan.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))
            .map_err(drop)?;
        let response = sender.send_request(request).await.map_err(drop)?;
        let success = response.status().is_success();
        response.into_body().collect().await.map_err(drop)?;
        Ok(success)
    };
    tokio::time::timeout(plan.timeout, attempt)
        .await
        .unwrap_or(Err(()))
}

/// Saturation: request after request until `deadline`.
async fn closed_loop(plan: Arc<Plan>, mut sender: Sender, deadline: Instant, seed: u64) -> Tally {
    let mut picker = Picker::new(seed);
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let body = picker.body(&plan);
        let sent = Instant::now();
        let outcome = exchange(&mut sender, &plan, body).await;
        tally.count(sent, outcome);
        if outcome.is_err() {
            match reconnect(&plan, deadline).await {
                Some(fresh) => sender = fresh,
                None => break,
            }
        }
    }
    tally
}

/// Fixed rate: one request per ticket, timed from the ticket's scheduled time.
async fn open_loop(
    plan: Arc<Plan>,
    mut sender: Sender,
    mut tickets: mpsc::UnboundedReceiver<Instant>,
    until: Instant,
    seed: u64,
) -> Tally {
    let mut picker = Picker::new(seed);
    let mut tally = Tally::default();
    while let Some(scheduled) = tickets.recv().await {
        let body = picker.body(&plan);
        let outcome = exchange(&mut sender, &plan, body).await;
        tally.count(scheduled, outcome);
        if outcome.is_err() {
            match reconnect(&plan, until).await {
                Some(fresh) => sender = fresh,
                // The tickets left unserved count as errors (see `drive`).
                None => break,
            }
        }
    }
    tally
}

/// Issues ticket `i` at `start + i/rate` to connection `i mod C` until `deadline`; returns how many
/// tickets it issued and how late it woke for each. Runs on its own thread: `nanosleep` wakes within
/// tens of microseconds where tokio's timer has millisecond steps.
fn pace(
    senders: Vec<mpsc::UnboundedSender<Instant>>,
    start: Instant,
    rate: u32,
    deadline: Instant,
) -> (u64, Samples) {
    let mut lateness = Samples::default();
    let mut issued = 0;
    for i in 0u64.. {
        let at = start + Duration::from_nanos(i.saturating_mul(1_000_000_000) / u64::from(rate));
        if at >= deadline {
            break;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        lateness.record(Instant::now().saturating_duration_since(at));
        let connection = (i % senders.len() as u64) as usize;
        if senders[connection].send(at).is_ok() {
            issued += 1;
        }
    }
    (issued, lateness)
}

/// CPU time this process has used (all threads, living and ended), in `USER_HZ` ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces; utime and stime are
    // fields 14 and 15 of the whole line, so 12 and 13 of the rest.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

async fn drive(plan: Arc<Plan>) -> Result<ResultLine, LoadError> {
    let connecting = futures::future::try_join_all((0..plan.connections).map(|_| connect(&plan)));
    let senders = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_| Err(format!("not done within {CONNECT_TIMEOUT:?}")))
        .map_err(|detail| LoadError::Connect {
            connections: plan.connections,
            detail,
        })?;

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.subsec_nanos().into());
    let cpu_before = cpu_ticks();
    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut workers: Vec<JoinHandle<Tally>> = Vec::with_capacity(plan.connections);
    let pacer = if plan.rate == 0 {
        for (i, sender) in senders.into_iter().enumerate() {
            let task = closed_loop(Arc::clone(&plan), sender, deadline, seed ^ i as u64);
            workers.push(tokio::spawn(task));
        }
        None
    } else {
        let mut tickets = Vec::with_capacity(plan.connections);
        for (i, sender) in senders.into_iter().enumerate() {
            let (issue, receive) = mpsc::unbounded_channel();
            tickets.push(issue);
            let until = deadline + plan.timeout;
            let task = open_loop(Arc::clone(&plan), sender, receive, until, seed ^ i as u64);
            workers.push(tokio::spawn(task));
        }
        let rate = plan.rate;
        Some(tokio::task::spawn_blocking(move || {
            pace(tickets, start, rate, deadline)
        }))
    };

    let mut total = Tally::default();
    for worker in workers {
        total.merge(worker.await.map_err(|e| LoadError::Worker(e.to_string()))?);
    }
    let elapsed = start.elapsed();
    let cpu_used = cpu_before
        .zip(cpu_ticks())
        .map(|(a, b)| b.saturating_sub(a));
    let pacing = match pacer {
        Some(pacer) => Some(pacer.await.map_err(|e| LoadError::Worker(e.to_string()))?),
        None => None,
    };
    if let Some((issued, _)) = &pacing {
        // Every ticket is either answered or failed; unserved ones failed too.
        total.errors = issued.saturating_sub(total.answered);
    }
    Ok(summary(
        &plan,
        total,
        elapsed,
        cpu_used,
        pacing.map(|(_, lag)| lag),
    ))
}

/// The RESULT line: `label mode tokens connections rate duration_s requests elapsed_s rps p50_ms p90_ms
/// p99_ms p999_ms max_ms non2xx errors load_cpu_us_per_req`, and for open-loop runs the pacer's
/// lateness `lag_p50_ms ... lag_max_ms`. `requests` counts answers of any status.
fn summary(
    plan: &Plan,
    total: Tally,
    elapsed: Duration,
    cpu_ticks: Option<u64>,
    lag: Option<Samples>,
) -> ResultLine {
    let mut line = ResultLine::default();
    let seconds = elapsed.as_secs_f64();
    line.text("label", &plan.label)
        .text("mode", if plan.rate == 0 { "closed" } else { "open" })
        .text("tokens", plan.tokens.name())
        .text("connections", plan.connections)
        .text("rate", plan.rate)
        .number("duration_s", plan.duration.as_secs_f64(), 1)
        .text("requests", total.answered)
        .number("elapsed_s", seconds, 3)
        .number("rps", total.answered as f64 / seconds, 1);
    line.latencies("", &total.latencies.into_sorted())
        .text("non2xx", total.non2xx)
        .text("errors", total.errors);
    let per_request = match cpu_ticks {
        Some(ticks) if total.answered > 0 => {
            (ticks * 1_000_000 / USER_HZ) as f64 / total.answered as f64
        }
        _ => 0.0,
    };
    line.number("load_cpu_us_per_req", per_request, 1);
    if let Some(lag) = lag {
        line.latencies("lag_", &lag.into_sorted());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_plan(tokens: Tokens, users: u64) -> Plan {
        Plan {
            address: SocketAddr::from(([127, 0, 0, 1], 9)),
            host: HeaderValue::from_static("127.0.0.1:9"),
            path: Uri::from_static("/get_token"),
            server_name: "hs:1".into(),
            connections: 1,
            rate: 0,
            duration: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            tokens,
            rooms: 3,
            warm_bodies: (0..users).map(|u| render(u, 3, "hs:1")).collect(),
            next_cold_user: AtomicU64::new(100),
            label: "test".into(),
        }
    }

    fn user_of(body: &Bytes) -> String {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        json["openid_token"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn cold_bodies_never_repeat_a_token() {
        let plan = test_plan(Tokens::Cold, 0);
        let mut picker = Picker::new(1);
        let tokens: Vec<String> = (0..5).map(|_| user_of(&picker.body(&plan))).collect();
        assert_eq!(tokens, ["tok100", "tok101", "tok102", "tok103", "tok104"]);
    }

    #[test]
    fn warm_bodies_come_from_the_fixed_users() {
        let plan = test_plan(Tokens::Warm, 4);
        let mut picker = Picker::new(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(user_of(&picker.body(&plan)));
        }
        let all: std::collections::BTreeSet<String> = (0..4).map(|u| format!("tok{u}")).collect();
        assert_eq!(seen, all);
    }

    #[test]
    fn pacer_spreads_tickets_over_connections_at_the_rate() {
        let (first, mut first_rx) = mpsc::unbounded_channel();
        let (second, mut second_rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        // 200/s for 50 ms: tickets at 0, 5, ..., 45 ms.
        let (issued, lateness) = pace(
            vec![first, second],
            start,
            200,
            start + Duration::from_millis(50),
        );
        assert_eq!(issued, 10);
        assert!(lateness.into_sorted().max_ms() < 500.0);
        let mut at_first = Vec::new();
        while let Ok(at) = first_rx.try_recv() {
            at_first.push(at.duration_since(start).as_millis());
        }
        let mut at_second = Vec::new();
        while let Ok(at) = second_rx.try_recv() {
            at_second.push(at.duration_since(start).as_millis());
        }
        assert_eq!(at_first, [0, 10, 20, 30, 40]);
        assert_eq!(at_second, [5, 15, 25, 35, 45]);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_ticks().is_some());
    }
}
