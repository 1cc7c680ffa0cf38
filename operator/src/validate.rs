//! Spec validation (pure): a `MatrixRTCTransport` becomes a [`Validated`] plan, or every problem at
//! once, each naming its field path.
//!
//! The CRD's CEL rules catch the simple mistakes at `kubectl apply` time; this module repeats them
//! (clusters may run without them, e.g. a CRD applied by an older operator) and adds what CEL cannot
//! check: IP and URL syntax, port collisions, reserved environment variables, secrets in the free-form
//! LiveKit config, and the length of the names derived from the resource's name.
//!
//! The plan it makes lives in [`crate::plan`]. One file per concern: this one walks the spec and holds
//! what both workloads share; [`livekit`] checks a managed LiveKit, [`auth`] the authorisation
//! service, [`syntax`] names and URLs. Validation asks the builders what they reserve (ports, volumes,
//! labels, the LiveKit config keys they set), so those stay defined once, by whoever sets them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use matrixrtc_auth::contract;

use crate::api::{
    CredentialsSecretRef, IngressSpec, LiveKitSpec, MatrixRTCTransport, MonitoringSpec,
    ServiceMonitorSpec,
};
use crate::build::{HASH_ANNOTATION, labels, livekit_config};
use crate::plan::{CredentialsSource, FullAccess, Identity, LiveKitPlan, Validated, names};
use syntax::{is_dns_label, is_dns_name, is_server_name};

/// Longest resource name whose derived names (e.g. `<name>-livekit-udp-range-19`) still fit the
/// 63-character limit of Service names.
pub const MAX_NAME_LEN: usize = 63 - names::LONGEST_SUFFIX_LEN;

/// One thing wrong with a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `spec.livekit.managed.media.tcp.port`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a spec, in field order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    problems: Vec<Problem>,
}

impl Invalid {
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl std::error::Error for Invalid {}

impl fmt::Display for Invalid {
    /// One problem per line (a condition message or Event note shows them all).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(Problem::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Validate a resource: the plan, or every problem.
pub fn validate(cr: &MatrixRTCTransport) -> Result<Validated, Invalid> {
    let mut c = Checker::default();
    let id = c.identity(cr);
    let spec = &cr.spec;

    c.server_name("spec.serverName", &spec.server_name);
    c.dns_name("spec.host", &spec.host);
    let full_access = c.full_access(spec);
    let livekit = match &spec.livekit {
        LiveKitSpec::Managed(m) => LiveKitPlan::Managed(Box::new(c.managed(m, &id.name))),
        LiveKitSpec::External(e) => {
            c.external_url("spec.livekit.external.url", &e.url);
            if spec.credentials.is_none() {
                c.problem(
                    "spec.credentials",
                    "an external LiveKit needs credentials.secretName: the operator cannot generate keys for a server it does not run",
                );
            }
            LiveKitPlan::External { url: e.url.clone() }
        }
    };
    let livekit_replicas = match &livekit {
        LiveKitPlan::Managed(plan) => Some(plan.replicas),
        LiveKitPlan::External { .. } => None,
    };
    let mut auth = c.auth(&spec.auth, livekit_replicas);
    auth.app_service = c.app_service(
        spec.auth.app_service.as_ref(),
        &id.name,
        &auth::user_secret_names(spec),
    );
    let credentials = c.credentials(spec.credentials.as_ref(), &id.name);
    let ingress = c.ingress(&spec.ingress);
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        c.non_empty(&format!("spec.imagePullSecrets[{i}]"), secret);
    }
    let service_monitor = c.service_monitor(spec.monitoring.as_ref());

    if !c.problems.is_empty() {
        return Err(Invalid {
            problems: c.problems,
        });
    }
    let mut validated = Validated {
        id,
        server_name: spec.server_name.clone(),
        host: spec.host.clone(),
        full_access,
        livekit,
        auth,
        credentials,
        ingress,
        image_pull_secrets: spec.image_pull_secrets.clone(),
        service_monitor,
        warnings: c.warnings,
    };
    if let LiveKitPlan::Managed(plan) = &validated.livekit {
        let overridden = livekit_config::overridden_user_paths(&validated, plan);
        validated
            .warnings
            .extend(overridden.into_iter().map(|path| {
                format!(
                    "spec.livekit.managed.config.{path} is overridden by the operator's setting"
                )
            }));
    }
    Ok(validated)
}

/// Collects problems while walking the spec.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn identity(&mut self, cr: &MatrixRTCTransport) -> Identity {
        let name = cr.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            self.problem("metadata.name", "is missing");
        } else if name.len() > MAX_NAME_LEN || !is_dns_label(&name) {
            self.problem(
                "metadata.name",
                format!(
                    "must be a DNS label (lowercase letters, digits and '-', starting with a letter) of at most {MAX_NAME_LEN} characters: the operator derives Service names from it"
                ),
            );
        }
        let namespace = cr.metadata.namespace.clone().unwrap_or_default();
        if namespace.is_empty() {
            self.problem("metadata.namespace", "is missing");
        }
        let uid = cr.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            self.problem(
                "metadata.uid",
                "is missing (the resource must come from the API server)",
            );
        }
        Identity {
            name,
            namespace,
            uid,
        }
    }

    fn server_name(&mut self, path: &str, value: &str) {
        if !is_server_name(value) {
            self.problem(
                path,
                format!("{value:?} is not a Matrix server name (a DNS name or IP literal, optionally with :port)"),
            );
        }
    }

    fn dns_name(&mut self, path: &str, value: &str) {
        if !is_dns_name(value) {
            self.problem(
                path,
                format!("{value:?} is not a DNS name (lowercase labels of letters, digits and '-', no scheme or port)"),
            );
        }
    }

    fn non_empty(&mut self, path: &str, value: &str) {
        if value.trim().is_empty() {
            self.problem(path, "must not be empty");
        }
    }

    fn full_access(&mut self, spec: &crate::api::MatrixRTCTransportSpec) -> FullAccess {
        let path = "spec.homeservers.fullAccess";
        let Some(list) = &spec.homeservers.full_access else {
            return FullAccess::Only(vec![spec.server_name.clone()]);
        };
        if list.is_empty() {
            self.problem(path, "must not be empty (leave it unset for [serverName])");
            return FullAccess::Only(vec![spec.server_name.clone()]);
        }
        if list.iter().any(|h| h == contract::FULL_ACCESS_WILDCARD) {
            if list.len() > 1 {
                self.problem(path, "'*' must be the only entry of fullAccess");
            }
            return FullAccess::Everyone;
        }
        let mut seen = BTreeSet::new();
        for (i, name) in list.iter().enumerate() {
            self.server_name(&format!("{path}[{i}]"), name);
            if !seen.insert(name) {
                self.problem(format!("{path}[{i}]"), format!("{name:?} is listed twice"));
            }
        }
        FullAccess::Only(list.clone())
    }

    fn external_url(&mut self, path: &str, url: &str) {
        let rest = url
            .strip_prefix("wss://")
            .or_else(|| url.strip_prefix("ws://"));
        match rest {
            None => self.problem(path, "must start with wss:// (or ws://)"),
            Some(rest) => {
                let authority = rest.split('/').next().unwrap_or_default();
                if authority.is_empty() || url.chars().any(char::is_whitespace) {
                    self.problem(path, format!("{url:?} is not a WebSocket URL with a host"));
                }
            }
        }
    }

    fn image(&mut self, path: &str, image: Option<&String>) {
        if let Some(image) = image
            && (image.trim().is_empty() || image.chars().any(char::is_whitespace))
        {
            self.problem(path, "must be a non-empty image reference without spaces");
        }
    }

    /// Pod annotations and labels may add to the operator's, not replace them: the selector labels
    /// tie the pods to their Deployment and Services, and the hash annotation rolls them.
    fn pod_metadata(
        &mut self,
        base: &str,
        annotations: &BTreeMap<String, String>,
        pod_labels: &BTreeMap<String, String>,
    ) {
        if annotations.contains_key(HASH_ANNOTATION) {
            self.problem(
                format!("{base}.podAnnotations"),
                format!("{HASH_ANNOTATION} is set by the operator (it rolls the pods when their inputs change)"),
            );
        }
        for key in pod_labels.keys() {
            if labels::RESERVED.contains(&key.as_str()) {
                self.problem(
                    format!("{base}.podLabels"),
                    format!("{key} is set by the operator (Deployments and Services select the pods by it)"),
                );
            }
        }
    }

    fn credentials(&mut self, c: Option<&CredentialsSecretRef>, name: &str) -> CredentialsSource {
        let Some(c) = c else {
            return CredentialsSource::Generated {
                secret_name: names::credentials(name),
            };
        };
        let base = "spec.credentials";
        self.non_empty(&format!("{base}.secretName"), &c.secret_name);
        self.non_empty(&format!("{base}.apiKeyField"), &c.api_key_field);
        self.non_empty(&format!("{base}.apiSecretField"), &c.api_secret_field);
        if c.api_key_field == c.api_secret_field {
            self.problem(
                format!("{base}.apiSecretField"),
                "must differ from apiKeyField",
            );
        }
        CredentialsSource::Existing(c.clone())
    }

    /// The ServiceMonitors, if enabled: their durations and labels.
    fn service_monitor(&mut self, m: Option<&MonitoringSpec>) -> Option<ServiceMonitorSpec> {
        let monitor = m?.service_monitor.as_ref().filter(|s| s.enabled)?;
        let base = "spec.monitoring.serviceMonitor";
        let durations = [
            ("interval", Some(&monitor.interval)),
            ("scrapeTimeout", monitor.scrape_timeout.as_ref()),
        ];
        for (field, value) in durations {
            if let Some(value) = value
                && !syntax::is_prometheus_duration(value)
            {
                self.problem(
                    format!("{base}.{field}"),
                    format!("{value:?} is not a Prometheus duration (e.g. 30s, 1m30s, 500ms)"),
                );
            }
        }
        for key in monitor.labels.keys() {
            if labels::RESERVED.contains(&key.as_str()) {
                self.problem(
                    format!("{base}.labels"),
                    format!("{key} is set by the operator"),
                );
            }
        }
        Some(monitor.clone())
    }

    fn ingress(&mut self, i: &IngressSpec) -> Option<IngressSpec> {
        if !i.enabled {
            return None;
        }
        if let Some(class) = &i.class_name {
            self.non_empty("spec.ingress.className", class);
        }
        if let Some(secret) = &i.tls_secret_name {
            self.non_empty("spec.ingress.tlsSecretName", secret);
        }
        Some(i.clone())
    }
}

mod auth;
mod livekit;
mod syntax;

pub use auth::RESERVED_AUTH_ENV;
pub use livekit::{
    DEFAULT_NODE_PORT_RANGE, DRAIN_SECONDS_WITH_REDIS, DRAIN_SECONDS_WITHOUT_REDIS,
    MAX_UDP_RANGE_PORTS, RESERVED_LIVEKIT_ENV,
};
#[cfg(test)]
mod tests;
