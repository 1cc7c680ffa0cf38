//! Idle keep-alive HTTP/1.1 connections to one federation route. A pool belongs to its cached
//! [`super::discovery::Route`], so a dropped route drops its connections; the federation client takes
//! connections out and puts them back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1;

use super::lock;
use crate::outbound;

/// One HTTP/1.1 connection's request half (dropping it ends the connection).
pub(crate) type Sender = http1::SendRequest<Empty<Bytes>>;

/// Idle keep-alive connections to one route, most recently used last.
#[derive(Debug, Default)]
pub(crate) struct IdlePool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl IdlePool {
    /// The most recently used connection that is neither closed nor idle for `timeout`.
    pub(crate) fn take(&self, timeout: Duration) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < timeout {
                return Some(sender);
            }
        }
        None
    }

    /// Closes the connections idle for `timeout` (dropping a sender ends its connection).
    pub(crate) fn reap(&self, now: Instant, timeout: Duration) {
        lock(&self.idle).retain(|(sender, since)| {
            !sender.is_closed() && now.saturating_duration_since(*since) < timeout
        });
    }

    pub(crate) fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < outbound::POOL_MAX_IDLE_PER_HOST {
            idle.push((sender, Instant::now()));
        }
    }
}
