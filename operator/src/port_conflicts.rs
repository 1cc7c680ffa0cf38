//! NodePorts that two transports both ask for (issue 9, item 4): which transport keeps the port, decided
//! before anything is applied, so the loser is told who holds it instead of getting the API server's bare
//! `provided port is already allocated` halfway through an apply.
//!
//! - A NodePort is allocated cluster-wide by number (TCP and UDP share the allocator), so a claim is a port
//!   number or an inclusive range of them.
//! - The winner is the transport whose children are applied at its current generation (it holds its
//!   ports), then the one created first (`creationTimestamp`), then the smaller `namespace/name`: a
//!   deterministic order that never takes a port from a running transport because a newer one asks for it.
//!   Why "applied" first: `creationTimestamp` counts whole seconds, so two transports created in the same
//!   second tied, and the name order could pick the one the API server had refused the port to.
//! - A transport loses to every earlier one that claims the same port, even if that one is itself refused
//!   for another clash: the rule looks at two transports at a time, so the answer does not depend on the
//!   order in which the controller happens to reconcile them.
//! - Host ports (`hostNetwork`, `HostPort`) are not refused: they are exclusive per node, not per cluster,
//!   and the scheduler already puts two pods that bind the same host port on different nodes.

use std::fmt;

use k8s_openapi::jiff::Timestamp;

use crate::plan::{LiveKitPlan, Validated};

/// An inclusive range of NodePort numbers (a single port is a range of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    fn overlap(self, other: PortRange) -> Option<u16> {
        let start = self.start.max(other.start);
        (start <= self.end.min(other.end)).then_some(start)
    }
}

/// The NodePorts a validated transport asks for, sorted.
pub fn node_ports(v: &Validated) -> Vec<PortRange> {
    let LiveKitPlan::Managed(plan) = v.livekit() else {
        return Vec::new();
    };
    let mut ports: Vec<PortRange> = plan
        .node_port_ranges()
        .into_iter()
        .map(|(start, end)| PortRange { start, end })
        .collect();
    ports.sort();
    ports
}

/// One transport with what it claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    pub namespace: String,
    pub name: String,
    /// `None` sorts after every timestamp (an object read from the API server always has one).
    pub created: Option<Timestamp>,
    /// Its status says its children are applied at its current generation: it holds its ports.
    pub applied: bool,
    pub node_ports: Vec<PortRange>,
}

impl Claimant {
    /// The order in which transports get their ports: applied first, then older, then by namespace
    /// and name.
    fn rank(&self) -> (bool, bool, Option<Timestamp>, &str, &str) {
        (
            !self.applied,
            self.created.is_none(),
            self.created,
            &self.namespace,
            &self.name,
        )
    }

    fn is(&self, other: &Claimant) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }
}

/// `port` is already claimed by the transport `holder_namespace/holder_name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clash {
    pub port: u16,
    pub holder_namespace: String,
    pub holder_name: String,
}

impl fmt::Display for Clash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodePort {} is claimed by MatrixRTCTransport {}/{}, which holds it or was created earlier; nothing of this \
             transport is applied until it asks for other ports or the other one releases the port",
            self.port, self.holder_namespace, self.holder_name
        )
    }
}

/// The first clash that makes `me` lose: the lowest port it shares with the earliest-ranked other
/// transport that claims one of its ports. `None` when `me` keeps all its ports.
pub fn losing_clash<'a>(
    me: &Claimant,
    others: impl IntoIterator<Item = &'a Claimant>,
) -> Option<Clash> {
    if me.node_ports.is_empty() {
        return None;
    }
    others
        .into_iter()
        .filter(|other| !other.is(me) && other.rank() < me.rank())
        .filter_map(|other| {
            let port = me
                .node_ports
                .iter()
                .flat_map(|mine| {
                    other
                        .node_ports
                        .iter()
                        .filter_map(|theirs| mine.overlap(*theirs))
                })
                .min()?;
            Some((other, port))
        })
        .min_by(|(a, _), (b, _)| a.rank().cmp(&b.rank()))
        .map(|(holder, port)| Clash {
            port,
            holder_namespace: holder.namespace.clone(),
            holder_name: holder.name.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Reach;

    fn at(second: i64) -> Option<Timestamp> {
        Timestamp::from_second(second).ok()
    }

    fn claimant(
        namespace: &str,
        name: &str,
        created: Option<Timestamp>,
        ports: &[(u16, u16)],
    ) -> Claimant {
        Claimant {
            namespace: namespace.into(),
            name: name.into(),
            created,
            applied: false,
            node_ports: ports
                .iter()
                .map(|&(start, end)| PortRange { start, end })
                .collect(),
        }
    }

    #[test]
    fn the_older_transport_keeps_the_port_whatever_the_order_of_evaluation() {
        let old = claimant("b", "old", at(100), &[(30001, 30001)]);
        let new = claimant("a", "new", at(200), &[(30000, 30002)]);
        assert_eq!(losing_clash(&old, [&new]), None);
        assert_eq!(
            losing_clash(&new, [&old]),
            Some(Clash {
                port: 30001,
                holder_namespace: "b".into(),
                holder_name: "old".into()
            })
        );
    }

    #[test]
    fn an_applied_transport_keeps_its_port_against_one_created_in_the_same_second() {
        // "b/first" got the port; "a/second", created in the same second, sorts first by name.
        let holder = Claimant {
            applied: true,
            ..claimant("b", "first", at(100), &[(30011, 30011)])
        };
        let newcomer = claimant("a", "second", at(100), &[(30011, 30012)]);
        assert_eq!(losing_clash(&holder, [&newcomer]), None);
        assert_eq!(
            losing_clash(&newcomer, [&holder]),
            Some(Clash {
                port: 30011,
                holder_namespace: "b".into(),
                holder_name: "first".into()
            })
        );
        // Applied wins over older too: a running transport never yields its port.
        let older = claimant("c", "older", at(50), &[(30011, 30011)]);
        assert!(losing_clash(&older, [&holder]).is_some());
        assert_eq!(losing_clash(&holder, [&older]), None);
    }

    #[test]
    fn equal_timestamps_fall_back_to_namespace_then_name() {
        let a = claimant("x", "b", at(100), &[(30000, 30000)]);
        let b = claimant("y", "a", at(100), &[(30000, 30000)]);
        assert_eq!(losing_clash(&a, [&b]), None);
        assert_eq!(
            losing_clash(&b, [&a]).map(|c| c.holder_namespace),
            Some("x".into())
        );
        let unknown = claimant("a", "a", None, &[(30000, 30000)]);
        assert!(
            losing_clash(&unknown, [&a]).is_some(),
            "no timestamp ranks last"
        );
    }

    #[test]
    fn ranges_clash_on_any_shared_port_and_the_earliest_holder_is_named() {
        let me = claimant("ns", "me", at(300), &[(30010, 30020), (31000, 31000)]);
        let later = claimant("ns", "later", at(400), &[(30015, 30015)]);
        let second = claimant("ns", "second", at(200), &[(30020, 30030)]);
        let first = claimant("ns", "first", at(100), &[(31000, 31000)]);
        let apart = claimant("ns", "apart", at(50), &[(30021, 30999)]);
        let clash = losing_clash(&me, [&later, &second, &first, &apart]).unwrap();
        assert_eq!((clash.port, clash.holder_name.as_str()), (31000, "first"));
        assert_eq!(losing_clash(&me, [&later, &apart]), None);
        assert!(
            clash
                .to_string()
                .contains("NodePort 31000 is claimed by MatrixRTCTransport ns/first")
        );
    }

    #[test]
    fn a_transport_never_clashes_with_itself_and_no_ports_never_lose() {
        let me = claimant("ns", "me", at(100), &[(30000, 30000)]);
        assert_eq!(losing_clash(&me, [&me.clone()]), None);
        let none = claimant("ns", "none", at(500), &[]);
        assert_eq!(losing_clash(&none, [&me]), None);
    }

    #[test]
    fn node_ports_come_from_the_validated_spec() {
        use crate::api::MatrixRTCTransport;
        let cr: MatrixRTCTransport = serde_json::from_value(serde_json::json!({
            "apiVersion": "matrixrtc.dev/v1alpha1",
            "kind": "MatrixRTCTransport",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u"},
            "spec": {"serverName": "example.com", "host": "rtc.example.com"},
        }))
        .unwrap();
        let v = crate::validate::validate(&cr).unwrap();
        let LiveKitPlan::Managed(plan) = v.livekit() else {
            panic!("managed by default")
        };
        let expected: Vec<u16> = plan
            .single_ports()
            .iter()
            .filter(|p| p.reach == Reach::NodePort)
            .map(|p| p.port)
            .collect();
        assert!(!expected.is_empty(), "the default exposes NodePorts");
        let found: Vec<u16> = node_ports(&v)
            .iter()
            .flat_map(|r| r.start..=r.end)
            .collect();
        for port in expected {
            assert!(found.contains(&port), "{port} missing from {found:?}");
        }
    }
}
