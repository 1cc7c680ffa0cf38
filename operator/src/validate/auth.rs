//! Validation of the authorisation service: placement, Redis, homeserver overrides and environment.

use std::collections::BTreeSet;

use matrixrtc_auth::contract::env;

use super::Checker;
use super::syntax::{is_dns_name, is_http_url, is_origin_url, is_server_name, url_has_password};
use crate::api::{
    AppServiceSpec, AuthRedis, AuthSpec, LiveKitSpec, MatrixRTCTransportSpec, Placement,
};
use crate::build::appservice;
use crate::plan::{AppServicePlan, AuthPlacement, AuthPlan, names};

/// Environment variables of the authorisation service that the operator owns; `auth.extraEnv` may
/// not set them (the ones the operator does not set would change how the ones it sets are read).
pub const RESERVED_AUTH_ENV: [&str; 19] = [
    env::LIVEKIT_URL,
    env::LIVEKIT_KEY,
    env::LIVEKIT_SECRET,
    env::LIVEKIT_KEY_FROM_FILE,
    env::LIVEKIT_SECRET_FROM_FILE,
    env::LIVEKIT_KEY_FILE,
    env::LIVEKIT_KEYS_FILE,
    env::LIVEKIT_FULL_ACCESS_HOMESERVERS,
    env::LIVEKIT_TRUSTED_HOMESERVERS,
    env::LIVEKIT_REPLICA_ID,
    env::LIVEKIT_JWT_BIND,
    env::LIVEKIT_JWT_PORT,
    env::LIVEKIT_CS_API_URL_OVERRIDES,
    env::LIVEKIT_REDIS_URL,
    // AS mode goes through `auth.appService`, so that the registration and the service agree.
    appservice::env::LIVEKIT_AS_TOKEN,
    appservice::env::LIVEKIT_HS_TOKEN,
    appservice::env::LIVEKIT_AS_REGISTRATION_FILE,
    appservice::env::LIVEKIT_HS_SERVER_NAME,
    appservice::env::LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS,
];

impl Checker {
    /// `livekit_replicas`: the managed LiveKit's replica count, `None` for an external LiveKit.
    pub(super) fn auth(&mut self, a: &AuthSpec, livekit_replicas: Option<i32>) -> AuthPlan {
        let base = "spec.auth";
        self.image(&format!("{base}.image"), a.image.as_ref());
        let placement = match a.placement.unwrap_or_default() {
            Placement::Deployment => {
                let replicas = a.replicas.unwrap_or(1);
                if replicas < 0 {
                    self.problem(format!("{base}.replicas"), "must not be negative");
                }
                if replicas > 1 && a.redis.is_none() {
                    self.problem(
                        format!("{base}.redis"),
                        "auth.redis is required when auth.replicas > 1: delegated leave jobs are shared through Redis",
                    );
                }
                AuthPlacement::Deployment {
                    replicas,
                    scheduling: Box::new(a.scheduling.clone().unwrap_or_default()),
                }
            }
            Placement::Sidecar => {
                match livekit_replicas {
                    None => self.problem(
                        format!("{base}.placement"),
                        "auth.placement Sidecar needs a managed LiveKit",
                    ),
                    // Each LiveKit pod then runs its own instance, and a webhook about a room reaches
                    // whichever instance its LiveKit node posts to, not the one holding the job.
                    Some(replicas) if replicas > 1 && a.redis.is_none() => self.problem(
                        format!("{base}.redis"),
                        "auth.redis is required with placement Sidecar when livekit.managed.replicas > 1: each LiveKit pod runs its own authorisation service, so delegated leave jobs are shared through Redis",
                    ),
                    Some(_) => {}
                }
                for (field, set) in [
                    ("replicas", a.replicas.is_some()),
                    ("scheduling", a.scheduling.is_some()),
                    ("podAnnotations", !a.pod_annotations.is_empty()),
                    ("podLabels", !a.pod_labels.is_empty()),
                ] {
                    if set {
                        self.problem(
                            format!("{base}.{field}"),
                            "with placement Sidecar the service runs in the LiveKit pods: replicas, scheduling and pod metadata come from livekit.managed",
                        );
                    }
                }
                AuthPlacement::Sidecar
            }
        };
        for (server, url) in &a.cs_api_url_overrides {
            let path = format!("{base}.csApiUrlOverrides[{server}]");
            if !is_server_name(server) {
                self.problem(&path, format!("{server:?} is not a Matrix server name"));
            }
            if !is_http_url(url) || url.contains(',') {
                self.problem(&path, format!("{url:?} is not an http(s) URL"));
            }
        }
        match &a.redis {
            Some(AuthRedis::Url(url)) => {
                let path = format!("{base}.redis.url");
                if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                    || url.chars().any(char::is_whitespace)
                {
                    self.problem(&path, "must be a redis:// or rediss:// URL");
                } else if url_has_password(url) {
                    self.problem(
                        &path,
                        "carries a password: put the URL in a Secret and use auth.redis.urlSecret",
                    );
                }
            }
            Some(AuthRedis::UrlSecret(secret)) => {
                self.non_empty(&format!("{base}.redis.urlSecret.name"), &secret.name);
                self.non_empty(&format!("{base}.redis.urlSecret.key"), &secret.key);
            }
            None => {}
        }
        self.pod_metadata(base, &a.pod_annotations, &a.pod_labels);
        let mut seen = BTreeSet::new();
        for (i, var) in a.extra_env.iter().enumerate() {
            let path = format!("{base}.extraEnv[{i}].name");
            if var.name.is_empty() {
                self.problem(&path, "must not be empty");
            } else if RESERVED_AUTH_ENV.contains(&var.name.as_str()) {
                self.problem(
                    &path,
                    format!(
                        "{} is set by the operator and cannot be overridden",
                        var.name
                    ),
                );
            } else if var.name == env::LIVEKIT_API_URL && livekit_replicas.is_some() {
                self.problem(
                    &path,
                    "LIVEKIT_API_URL is set by the operator for a managed LiveKit (its in-cluster address) and cannot be overridden",
                );
            } else if !seen.insert(var.name.as_str()) {
                self.problem(&path, format!("{} is set twice", var.name));
            }
        }
        AuthPlan {
            image: a.image.clone(),
            placement,
            resources: a.resources.clone(),
            cs_api_url_overrides: a.cs_api_url_overrides.clone(),
            redis: a.redis.clone(),
            extra_env: a.extra_env.clone(),
            pod_annotations: a.pod_annotations.clone(),
            pod_labels: a.pod_labels.clone(),
            // Set by `validate`, which knows every Secret the spec names.
            app_service: None,
        }
    }

    /// AS mode, if enabled. `user_secrets`: the Secrets the pods read by name, which the
    /// registration must not be written into.
    pub(super) fn app_service(
        &mut self,
        a: Option<&AppServiceSpec>,
        cr_name: &str,
        user_secrets: &[&str],
    ) -> Option<AppServicePlan> {
        let a = a.filter(|a| a.enabled)?;
        let base = "spec.auth.appService";
        if let Some(url) = &a.proxy_url
            && !is_origin_url(url)
        {
            self.problem(
                format!("{base}.proxyUrl"),
                "must be an http(s) URL with no user, path, query or trailing slash: the homeserver appends the request path to it verbatim",
            );
        }
        if let Some(interval) = a.membership_check_interval_seconds
            && !(0..=86400).contains(&interval)
        {
            self.problem(
                format!("{base}.membershipCheckIntervalSeconds"),
                "must lie between 0 (monitor off) and 86400",
            );
        }
        let registration_secret = a.registration_secret.as_ref().map(|target| {
            let path = format!("{base}.registrationSecret");
            let own = [
                names::keys(cr_name),
                names::credentials(cr_name),
                names::app_service(cr_name),
                names::turn_tls(cr_name),
            ];
            if !is_dns_name(&target.name) {
                self.problem(
                    format!("{path}.name"),
                    format!(
                        "{:?} is not a Secret name (lowercase DNS name)",
                        target.name
                    ),
                );
            } else if own.contains(&target.name) {
                self.problem(
                    format!("{path}.name"),
                    format!(
                        "{} is a Secret the operator writes for this transport",
                        target.name
                    ),
                );
            } else if user_secrets.contains(&target.name.as_str()) {
                self.problem(
                    format!("{path}.name"),
                    format!(
                        "{} is a Secret the pods read; name a Secret of its own",
                        target.name
                    ),
                );
            }
            if target.key.is_empty()
                || target.key.len() > 253
                || !target
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                self.problem(
                    format!("{path}.key"),
                    "key must consist of letters, digits, '-', '_' and '.'",
                );
            }
            (target.name.clone(), target.key.clone())
        });
        Some(AppServicePlan {
            proxy_url: a.proxy_url.clone(),
            membership_check_interval_seconds: a.membership_check_interval_seconds,
            registration_secret,
        })
    }
}

/// Every Secret the spec names for the pods to read.
pub(super) fn user_secret_names(spec: &MatrixRTCTransportSpec) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    if let Some(c) = &spec.credentials {
        names.push(&c.secret_name);
    }
    if let Some(AuthRedis::UrlSecret(secret)) = &spec.auth.redis {
        names.push(&secret.name);
    }
    if let LiveKitSpec::Managed(m) = &spec.livekit {
        if let Some(secret) = m.redis.as_ref().and_then(|r| r.password_secret.as_ref()) {
            names.push(&secret.name);
        }
        if let Some(name) = m
            .turn
            .as_ref()
            .and_then(|t| t.tls.as_ref())
            .and_then(|t| t.secret_name.as_ref())
        {
            names.push(name);
        }
    }
    names
}
