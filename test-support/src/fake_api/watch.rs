//! WATCH: the changes after a resourceVersion as newline-delimited events, kept open until the client hangs
//! up, so the real controller runtime (reflectors, `Controller`) can run against the fake.

use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::FakeApi;
use super::selector::Selector;
use super::store::Key;

impl FakeApi {
    /// A watch: newline-delimited events for changes after `since` (for `since == 0`, the current objects
    /// first), until the client hangs up.
    pub(super) fn watch(&self, filter: WatchFilter, since: u64) -> Response<Body> {
        let events = futures::stream::unfold(
            (self.clone(), since, since == 0),
            move |(fake, cursor, initial)| {
                let filter = filter.clone();
                async move {
                    let changed = fake.changed.clone();
                    loop {
                        // Registered before looking, so a change between the look and the wait is not missed.
                        let notified = changed.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        let (lines, next) = {
                            let state = fake.lock();
                            let mut lines = String::new();
                            let mut push = |type_: &str, object: &Value| {
                                lines.push_str(
                                    &json!({"type": type_, "object": object}).to_string(),
                                );
                                lines.push('\n');
                            };
                            if initial {
                                for (key, object) in &state.objects {
                                    if filter.matches(key, object) {
                                        push("ADDED", object);
                                    }
                                }
                            } else {
                                for change in
                                    state.changes.iter().filter(|c| c.resource_version > cursor)
                                {
                                    if filter.matches(&change.key, &change.object) {
                                        push(change.type_, &change.object);
                                    }
                                }
                            }
                            (lines, state.resource_version)
                        };
                        if !lines.is_empty() {
                            return Some((
                                Ok::<_, Infallible>(Bytes::from(lines)),
                                (fake, next, false),
                            ));
                        }
                        if initial {
                            return Some((Ok(Bytes::new()), (fake, next, false)));
                        }
                        notified.await;
                    }
                }
            },
        );
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(events))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

/// Which changes a watch reports.
#[derive(Clone)]
pub(super) struct WatchFilter {
    pub(super) group_version: String,
    pub(super) plural: String,
    /// `None`: every namespace (a cluster-wide watch).
    pub(super) namespace: Option<String>,
    pub(super) selector: Selector,
}

impl WatchFilter {
    fn matches(&self, key: &Key, object: &Value) -> bool {
        key.group_version == self.group_version
            && key.plural == self.plural
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
            && self.selector.matches(object)
    }
}
