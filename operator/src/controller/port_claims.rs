//! NodePorts are cluster-wide, so two transports asking for the same one cannot both be applied.
//! [`port_clash`] runs before anything of a transport is written (even generated credentials) and names the
//! clash this transport loses (the rules are in [`crate::port_conflicts`]); the NodePorts of the others are
//! read from the running controllers' CR stores and remembered per generation
//! ([`Context::other_claimants`]), so that a reconcile does not validate every other transport.

use std::sync::Arc;

use kube::Resource;

use super::{Context, Guarded};
use crate::api::MatrixRTCTransport;
use crate::plan::Validated;
use crate::port_conflicts::{self, Claimant, Clash, PortRange};
use crate::status;
use crate::validate::{self};

/// The NodePorts of one transport and the generation they were read from.
pub(super) type ClaimsAt = (Option<i64>, Vec<PortRange>);

impl Context {
    /// Every known transport (but `except`) with the NodePorts it asks for.
    pub(super) fn other_claimants(&self, except: &str) -> Vec<Claimant> {
        let stores = self
            .transports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let objects: Vec<Arc<Guarded>> = stores.iter().flat_map(|store| store.state()).collect();
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if claims.len() > 2 * objects.len() + 16 {
            let live: std::collections::HashSet<&str> = objects
                .iter()
                .filter_map(|o| o.meta().uid.as_deref())
                .collect();
            claims.retain(|uid, _| live.contains(uid.as_str()));
        }
        objects
            .iter()
            .filter_map(|object| {
                let transport = object.0.as_ref().ok()?;
                if transport.metadata.uid.as_deref() == Some(except) {
                    return None;
                }
                let uid = transport.metadata.uid.clone()?;
                let generation = transport.metadata.generation;
                let node_ports = match claims.get(&uid) {
                    Some((seen, ports)) if *seen == generation => ports.clone(),
                    _ => {
                        // An invalid transport applies nothing, so it claims nothing.
                        let ports = validate::validate(transport)
                            .map(|v| port_conflicts::node_ports(&v))
                            .unwrap_or_default();
                        claims.insert(uid, (generation, ports.clone()));
                        ports
                    }
                };
                Some(Claimant {
                    namespace: transport.metadata.namespace.clone()?,
                    name: transport.metadata.name.clone()?,
                    created: transport.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    applied: status::children_applied(transport),
                    node_ports,
                })
            })
            .filter(|c| !c.node_ports.is_empty())
            .collect()
    }
}

/// The NodePort clash this transport loses, if any (see [`port_conflicts`]).
#[tracing::instrument(skip_all)]
pub(super) fn port_clash(
    transport: &MatrixRTCTransport,
    validated: &Validated,
    ctx: &Context,
) -> Option<Clash> {
    let node_ports = port_conflicts::node_ports(validated);
    if node_ports.is_empty() {
        return None;
    }
    let me = Claimant {
        namespace: validated.namespace().to_owned(),
        name: validated.name().to_owned(),
        created: transport.metadata.creation_timestamp.as_ref().map(|t| t.0),
        applied: status::children_applied(transport),
        node_ports,
    };
    let others = ctx.other_claimants(transport.metadata.uid.as_deref().unwrap_or_default());
    port_conflicts::losing_clash(&me, &others)
}
