//! The Prometheus Operator ServiceMonitors (`spec.monitoring.serviceMonitor`): one for LiveKit's
//! metrics port on the `<name>-livekit` Service (managed LiveKit only) and one for the authorisation
//! service's `/metrics` on the `<name>-auth` Service (which reaches the service in either placement).
//!
//! One per component, not one selecting both Services: an endpoint applies to every selected Service
//! that has its port name, and the LiveKit Service has an `http` port too (signalling, no metrics).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use matrixrtc_auth::contract;

use super::labels::{self, Component};
use super::services::{HTTP, METRICS};
use super::{names, object_meta};
use crate::api::ServiceMonitorSpec as Wanted;
use crate::kinds::third_party::{Endpoint, ServiceMonitor, ServiceMonitorSpec};
use crate::plan::Validated;

/// LiveKit's metrics path (its Prometheus handler answers on every path; this is the usual one).
const LIVEKIT_METRICS_PATH: &str = "/metrics";

/// The ServiceMonitors, when enabled.
pub fn build(v: &Validated) -> Vec<ServiceMonitor> {
    let Some(wanted) = v.service_monitor() else {
        return Vec::new();
    };
    let mut monitors = Vec::new();
    if v.is_managed_livekit() {
        monitors.push(monitor(
            v,
            wanted,
            names::livekit(v.name()),
            Component::Sfu,
            METRICS,
            LIVEKIT_METRICS_PATH,
        ));
    }
    monitors.push(monitor(
        v,
        wanted,
        names::auth(v.name()),
        Component::Auth,
        HTTP,
        contract::path::METRICS,
    ));
    monitors
}

fn monitor(
    v: &Validated,
    wanted: &Wanted,
    name: String,
    component: Component,
    port: &str,
    path: &str,
) -> ServiceMonitor {
    let mut metadata = object_meta(v, name, component);
    // The user's labels (e.g. the one their Prometheus selects ServiceMonitors by) under ours.
    let mut all = wanted.labels.clone();
    all.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(all);
    ServiceMonitor {
        metadata,
        spec: ServiceMonitorSpec {
            selector: LabelSelector {
                match_labels: Some(labels::selector(v.name(), component)),
                ..LabelSelector::default()
            },
            endpoints: vec![Endpoint {
                port: Some(port.to_owned()),
                path: Some(path.to_owned()),
                interval: Some(wanted.interval.clone()),
                scrape_timeout: wanted.scrape_timeout.clone(),
            }],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::{children, validated};
    use crate::kinds::Child;

    const ON: &str =
        "monitoring: {serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}}";

    /// The Service the monitor selects has the port its endpoint names.
    fn scrapes(spec: &str, monitor: &ServiceMonitor) -> bool {
        let built = children(spec);
        let selector = monitor
            .spec
            .selector
            .match_labels
            .clone()
            .unwrap_or_default();
        let port = monitor.spec.endpoints[0].port.clone().unwrap_or_default();
        built.iter().any(|child| match child {
            Child::Service(service) => {
                let labels = service.metadata.labels.clone().unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                    && service
                        .spec
                        .iter()
                        .flat_map(|s| s.ports.iter().flatten())
                        .any(|p| p.name.as_deref() == Some(port.as_str()))
            }
            _ => false,
        })
    }

    #[test]
    fn livekit_and_the_auth_service_are_scraped_on_their_metrics_ports() {
        for spec in [ON.to_owned(), format!("{ON}\nauth: {{placement: Sidecar}}")] {
            let monitors = build(&validated(&spec));
            let names: Vec<_> = monitors
                .iter()
                .filter_map(|m| m.metadata.name.as_deref())
                .collect();
            assert_eq!(names, ["demo-livekit", "demo-auth"], "{spec}");
            for monitor in &monitors {
                assert!(scrapes(&spec, monitor), "{spec}: {monitor:?}");
                let endpoint = &monitor.spec.endpoints[0];
                assert_eq!(endpoint.path.as_deref(), Some("/metrics"));
                assert_eq!(endpoint.interval.as_deref(), Some("30s"));
                assert_eq!(endpoint.scrape_timeout, None);
                let labels = monitor.metadata.labels.as_ref().expect("labels");
                assert_eq!(labels["release"], "kube-prometheus-stack");
                assert_eq!(labels[labels::INSTANCE], "demo");
            }
        }
    }

    #[test]
    fn an_external_livekit_has_only_the_auth_monitor() {
        let monitors = build(&validated(&format!(
            "{ON}\nlivekit: {{external: {{url: 'wss://sfu.example.net'}}}}\ncredentials: {{secretName: lk}}"
        )));
        assert_eq!(monitors.len(), 1);
        assert_eq!(monitors[0].metadata.name.as_deref(), Some("demo-auth"));
    }

    #[test]
    fn timing_comes_from_the_spec_and_nothing_is_built_unless_enabled() {
        let monitors = build(&validated(
            "monitoring: {serviceMonitor: {enabled: true, interval: 1m, scrapeTimeout: 10s}}",
        ));
        let endpoint = &monitors[0].spec.endpoints[0];
        assert_eq!(
            (
                endpoint.interval.as_deref(),
                endpoint.scrape_timeout.as_deref()
            ),
            (Some("1m"), Some("10s"))
        );
        assert!(build(&validated("")).is_empty());
        assert!(build(&validated("monitoring: {serviceMonitor: {enabled: false}}")).is_empty());
        assert!(build(&validated("monitoring: {}")).is_empty());
    }
}
