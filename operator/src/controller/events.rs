//! Kubernetes Events about a transport: [`publish`] (rate-limited per object by the [`Context`]'s
//! [`EventLimiter`](crate::event_limit::EventLimiter), notes cut to the API's limit, failures only logged:
//! Events are best effort) and the validation warnings, published once per generation
//! ([`publish_warnings`]) so that a resync of an unchanged spec writes nothing.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use super::{Context, key_of};
use crate::api::MatrixRTCTransport;
use crate::plan::Validated;

/// `events.k8s.io` notes are limited to 1 kB.
const EVENT_NOTE_LIMIT: usize = 1000;

/// Validation warnings (e.g. LiveKit config keys the operator overrides), once per generation.
#[tracing::instrument(skip_all)]
pub(super) async fn publish_warnings(
    transport: &MatrixRTCTransport,
    validated: &Validated,
    ctx: &Context,
) {
    if validated.warnings().is_empty() {
        return;
    }
    let generation = transport.metadata.generation.unwrap_or_default();
    if !ctx.first_warning_for(&key_of(&transport.metadata), generation) {
        return;
    }
    let note = validated.warnings().join("; ");
    publish(
        ctx,
        &transport.object_ref(&()),
        EventType::Warning,
        "SpecWarning",
        "Validate",
        note,
    )
    .await;
}

/// Publish an Event; a failure is logged, never fatal (Events are best effort).
pub(super) async fn publish(
    ctx: &Context,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let key = format!(
        "{}/{}",
        regarding.namespace.as_deref().unwrap_or_default(),
        regarding.name.as_deref().unwrap_or_default()
    );
    if !ctx.events.allow(&key, std::time::Instant::now()) {
        tracing::debug!(reason, "Event dropped: this object published too many");
        return;
    }
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, EVENT_NOTE_LIMIT)),
        action: action.to_owned(),
        secondary: None,
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(error) = recorder.publish(&event, regarding).await {
        tracing::warn!(%error, reason, "could not publish an Event");
    }
}

fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut cut = limit.saturating_sub(3);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(EVENT_NOTE_LIMIT);
        let cut = truncate(long, EVENT_NOTE_LIMIT);
        assert!(cut.len() <= EVENT_NOTE_LIMIT && cut.ends_with("..."));
        assert_eq!(truncate("short".into(), EVENT_NOTE_LIMIT), "short");
    }
}
