//! The apply step: server-side apply of the built children in dependency order, then pruning of the
//! owned leftovers no longer desired (both in [`crate::apply`]), compared against what the children caches
//! hold so that an unchanged child is not written. Whatever was written or deleted is summed up in one
//! Normal `Reconciled` Event.

use kube::Resource;
use kube::runtime::events::EventType;

use super::events::publish;
use super::{Context, ReconcileError};
use crate::api::MatrixRTCTransport;
use crate::apply::cache::ChildCache;
use crate::apply::{self, Owner};
use crate::build::{Children, labels};
use crate::plan::Validated;

/// Apply `children` of `transport` and prune what it owns but no longer wants.
#[tracing::instrument(skip_all)]
pub(super) async fn apply_children(
    transport: &MatrixRTCTransport,
    validated: &Validated,
    children: &Children,
    ctx: &Context,
) -> Result<apply::Applied, ReconcileError> {
    let owner = Owner::new(transport, labels::owned_selector(validated.name()))
        .ok_or(ReconcileError::Incomplete)?;
    let observed = ctx
        .cache()
        .ok_or_else(ChildCache::not_running)?
        .observe(&owner)
        .await?;
    let applied = apply::apply(&ctx.client, &owner, children, &observed).await?;
    let pruned = apply::prune(&ctx.client, &owner, children, &observed).await?;
    if !applied.written.is_empty() || !pruned.is_empty() {
        let mut note = String::new();
        if !applied.written.is_empty() {
            note.push_str("applied ");
            note.push_str(&join(&applied.written));
        }
        if !pruned.is_empty() {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str("deleted ");
            note.push_str(&join(&pruned));
        }
        publish(
            ctx,
            &transport.object_ref(&()),
            EventType::Normal,
            "Reconciled",
            "Apply",
            note,
        )
        .await;
    }
    Ok(applied)
}

fn join(ids: &[apply::ChildId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
