//! Reconcile tests against the in-memory API server ([`matrixrtc_test_support::fake_api`]): each test drives
//! [`reconcile`] the way the runtime does and asserts on the requests made and the objects stored.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use matrixrtc_test_support::fake_api::{FakeApi, Recorded};
use serde_json::{Value, json};

use super::watches::{LAST_APPLIED, managed_selector};
use super::*;
use crate::api::{MatrixRTCTransport, MatrixRTCTransportStatus};
use crate::apply::cache::ChildCache;
use crate::build::{labels, names};
use crate::defaults::OperatorDefaults;
use crate::status;
use crate::telemetry::Telemetry;
use crate::telemetry::captured::CapturedLog;

const NS: &str = "calls";
const NAME: &str = "demo";

fn fixed_random() -> [u8; build::credentials::RANDOM_BYTES] {
    [42; build::credentials::RANDOM_BYTES]
}

fn other_random() -> [u8; build::credentials::RANDOM_BYTES] {
    [7; build::credentials::RANDOM_BYTES]
}

fn minimal_spec() -> Value {
    json!({"serverName": "example.com", "host": "rtc.example.com"})
}

struct Harness {
    fake: FakeApi,
    ctx: Arc<Context>,
}

impl Harness {
    fn new() -> Self {
        Self::with_random(fixed_random)
    }

    fn with_random(random: RandomBytes) -> Self {
        let fake = FakeApi::new();
        let ctx = Self::context(&fake, random);
        Self { fake, ctx }
    }

    fn context(fake: &FakeApi, random: RandomBytes) -> Arc<Context> {
        let reporter = Reporter {
            controller: "matrixrtc-operator".into(),
            instance: Some("test".into()),
        };
        let metrics = Telemetry::default().metrics().clone();
        let ctx = Arc::new(
            Context::new(
                fake.client(),
                OperatorDefaults::default(),
                metrics,
                reporter,
            )
            .with_random(random),
        );
        let (cache, watches) =
            ChildCache::start(&fake.client(), &[Some(NS.to_owned())], &managed_selector());
        for scope in watches {
            tokio::spawn(scope.drive());
        }
        ctx.set_cache(Some(cache));
        ctx
    }

    /// Wait until the children caches hold what the fake holds (as the watches deliver it in a real run
    /// before the next reconcile), at most 5 s.
    async fn sync_caches(&self) {
        let cache = self.ctx.cache().expect("the harness installs a cache");
        let expected = || {
            self.fake
                .labelled_versions(NS, labels::MANAGED_BY, labels::MANAGER)
                .into_iter()
                .filter_map(|(group_version, plural, name, version)| {
                    let kind = crate::kinds::ChildKind::ALL.iter().copied().find(|k| {
                        let resource = k.api_resource();
                        resource.api_version == group_version && resource.plural == plural
                    })?;
                    Some((kind, name, version))
                })
                .collect::<BTreeSet<_>>()
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while cache.versions(NS) != expected() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "caches did not catch up: {:?} vs {:?}",
                cache.versions(NS),
                expected()
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// A fresh context (new process, same cluster): nothing remembered in memory.
    fn restart(&mut self, random: RandomBytes) {
        self.ctx = Self::context(&self.fake, random);
    }

    fn create(&self, spec: Value) -> MatrixRTCTransport {
        let cr: MatrixRTCTransport = serde_json::from_value(json!({
            "apiVersion": "matrixrtc.dev/v1alpha1",
            "kind": "MatrixRTCTransport",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": spec,
        }))
        .expect("test spec deserialises");
        self.fake.insert(&cr);
        self.transport()
    }

    fn transport(&self) -> MatrixRTCTransport {
        self.fake.get(NS, NAME).expect("the CR exists")
    }

    /// Change the spec as `kubectl apply` would (bumps generation).
    fn edit_spec(&self, edit: impl FnOnce(&mut Value)) {
        self.fake.edit::<MatrixRTCTransport>(NS, NAME, |cr| {
            edit(&mut cr["spec"]);
            let generation = cr["metadata"]["generation"].as_i64().unwrap_or(1);
            cr["metadata"]["generation"] = json!(generation + 1);
        });
    }

    async fn reconcile(&self) -> Result<Action, ReconcileError> {
        self.sync_caches().await;
        let guarded = Arc::new(DeserializeGuard(Ok(self.transport())));
        reconcile(guarded, self.ctx.clone()).await
    }

    fn status(&self) -> MatrixRTCTransportStatus {
        self.transport().status.unwrap_or_default()
    }

    fn condition(&self, type_: &str) -> (String, String, String) {
        let status = self.status();
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"));
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    /// Every child in the namespace as (kind, name).
    fn children(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        let mut add = |kind: &str, names: Vec<Option<String>>| {
            all.extend(names.into_iter().flatten().map(|n| (kind.to_owned(), n)));
        };
        add(
            "ServiceAccount",
            self.fake
                .list::<ServiceAccount>(NS)
                .into_iter()
                .map(|o| o.metadata.name)
                .collect(),
        );
        add(
            "Secret",
            self.fake
                .list::<Secret>(NS)
                .into_iter()
                .map(|o| o.metadata.name)
                .collect(),
        );
        add(
            "ConfigMap",
            self.fake
                .list::<ConfigMap>(NS)
                .into_iter()
                .map(|o| o.metadata.name)
                .collect(),
        );
        add(
            "Service",
            self.fake
                .list::<Service>(NS)
                .into_iter()
                .map(|o| o.metadata.name)
                .collect(),
        );
        add(
            "Deployment",
            self.fake
                .list::<Deployment>(NS)
                .into_iter()
                .map(|o| o.metadata.name)
                .collect(),
        );
        add(
            "Ingress",
            self.fake
                .list::<Ingress>(NS)
                .into_iter()
                .map(|o| o.metadata.name)
                .collect(),
        );
        all
    }

    fn events(&self) -> Vec<Value> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.method == Method::POST && r.path.ends_with("/events"))
            .filter_map(|r| r.body)
            .collect()
    }

    /// Mark every Deployment as fully rolled out, as the Deployment controller would.
    fn roll_out_deployments(&self) {
        for deployment in self.fake.list::<Deployment>(NS) {
            let name = deployment.metadata.name.clone().unwrap_or_default();
            let replicas = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            self.fake.edit::<Deployment>(NS, &name, |d| {
                let generation = d["metadata"]["generation"].clone();
                d["status"] = json!({
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                });
            });
        }
    }
}

fn writes_except_events(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.is_write() && !r.path.contains("/events"))
        .map(ToString::to_string)
        .collect()
}

fn kind_rank(path: &str) -> usize {
    let kinds = [
        "/serviceaccounts/",
        "/secrets/",
        "/configmaps/",
        "/services/",
        "/deployments/",
        "/ingresses/",
    ];
    kinds
        .iter()
        .position(|k| path.contains(k))
        .unwrap_or(usize::MAX)
}

#[tokio::test]
async fn first_reconcile_creates_every_child_in_order_with_owner_references() {
    let h = Harness::new();
    let cr = h.create(minimal_spec());
    let action = h.reconcile().await.expect("reconcile succeeds");
    assert_eq!(
        action,
        Action::requeue(resync_after(&format!("{NS}/{NAME}")))
    );

    let children = h.children();
    for expected in [
        ("Deployment", names::livekit(NAME)),
        ("Deployment", names::auth(NAME)),
        ("ConfigMap", names::livekit(NAME)),
        ("Secret", names::keys(NAME)),
        ("Secret", names::credentials(NAME)),
        ("Ingress", names::ingress(NAME)),
    ] {
        assert!(
            children.contains(&(expected.0.to_owned(), expected.1.clone())),
            "missing {expected:?} in {children:?}"
        );
    }

    let uid = cr.metadata.uid.clone().unwrap();
    for value in h.fake.all_values() {
        if value["kind"] == "MatrixRTCTransport" || value["kind"] == "Event" {
            continue;
        }
        let refs = value["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            refs.len(),
            1,
            "{} {}",
            value["kind"],
            value["metadata"]["name"]
        );
        assert_eq!(refs[0]["uid"], uid.as_str());
        assert_eq!(refs[0]["controller"], true);
        assert_eq!(refs[0]["kind"], "MatrixRTCTransport");
    }

    // Applied in dependency order, all with the one field manager and force.
    let applies: Vec<Recorded> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::PATCH && !r.path.ends_with("/status"))
        .collect();
    let ranks: Vec<usize> = applies.iter().map(|r| kind_rank(&r.path)).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "apply order: {applies:?}"
    );
    assert!(
        applies
            .iter()
            .all(|r| r.query.contains("fieldManager=matrixrtc-operator")
                && r.query.contains("force=true"))
    );

    let status = h.status();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(h.condition("Ready").0, "False", "pods are not up yet");
    assert_eq!(h.condition("Progressing").0, "True");
    assert_eq!(h.condition("Degraded").0, "False");
    assert_eq!(
        status.livekit_service_url.as_deref(),
        Some("https://rtc.example.com")
    );
    assert!(
        h.events()
            .iter()
            .any(|e| e["reason"] == "Reconciled" && e["type"] == "Normal")
    );
}

#[tokio::test]
async fn steady_state_makes_no_writes_and_readiness_is_one_status_patch() {
    let h = Harness::new();
    h.create(minimal_spec());
    h.reconcile().await.unwrap();

    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    assert!(
        h.fake.writes().is_empty(),
        "second reconcile wrote: {:?}",
        h.fake.writes()
    );

    h.roll_out_deployments();
    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    let writes = writes_except_events(&h.fake.requests());
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(
        writes[0].ends_with(&format!("/matrixrtctransports/{NAME}/status")),
        "{writes:?}"
    );
    assert_eq!(h.condition("Ready").0, "True");
    let status = h.status();
    assert_eq!(
        (status.livekit_ready_replicas, status.auth_ready_replicas),
        (Some(1), Some(1))
    );

    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    assert!(
        h.fake.writes().is_empty(),
        "steady state wrote: {:?}",
        h.fake.writes()
    );
}

#[tokio::test]
async fn a_deleted_child_is_recreated() {
    let h = Harness::new();
    h.create(minimal_spec());
    h.reconcile().await.unwrap();
    let config = names::livekit(NAME);
    assert!(h.fake.remove::<ConfigMap>(NS, &config));

    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    assert!(
        h.fake.get::<ConfigMap>(NS, &config).is_some(),
        "ConfigMap recreated"
    );
    let writes = writes_except_events(&h.fake.requests());
    assert_eq!(
        writes,
        vec![format!("PATCH /api/v1/namespaces/{NS}/configmaps/{config}")]
    );
}

#[tokio::test]
async fn an_edited_child_is_repaired() {
    let h = Harness::new();
    h.create(minimal_spec());
    h.reconcile().await.unwrap();
    let deployment = names::auth(NAME);
    let original: Deployment = h.fake.get(NS, &deployment).unwrap();
    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
    };

    h.fake.edit::<Deployment>(NS, &deployment, |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:latest");
    });
    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    let repaired: Deployment = h.fake.get(NS, &deployment).unwrap();
    assert_eq!(image(&repaired), image(&original));
    let writes = writes_except_events(&h.fake.requests());
    assert_eq!(
        writes,
        vec![format!(
            "PATCH /apis/apps/v1/namespaces/{NS}/deployments/{deployment}"
        )]
    );
}

#[tokio::test]
async fn an_invalid_spec_writes_only_status_and_one_event() {
    let h = Harness::new();
    h.create(json!({
        "serverName": "example.com",
        "host": "",
        "homeservers": {"fullAccess": ["*", "other.org"]},
    }));
    let action = h
        .reconcile()
        .await
        .expect("an invalid spec is not a reconcile error");
    assert_eq!(action, Action::await_change());

    assert!(
        h.children().is_empty(),
        "nothing applied: {:?}",
        h.children()
    );
    let writes = h.fake.writes();
    assert!(
        writes
            .iter()
            .all(|r| r.path.ends_with("/status") || r.path.ends_with("/events")),
        "{writes:?}"
    );
    let (status, reason, message) = h.condition("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.contains("spec.host"), "{message}");
    assert!(
        message.contains("spec.homeservers.fullAccess"),
        "every problem at once: {message}"
    );
    assert_eq!(h.condition("Ready").0, "False");
    let events = h.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["reason"].as_str()),
        (Some("Warning"), Some("InvalidSpec"))
    );

    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    assert!(
        h.fake.writes().is_empty(),
        "no repeated status or Event: {:?}",
        h.fake.writes()
    );

    // Fixing the spec applies everything and clears Degraded.
    h.edit_spec(|spec| *spec = minimal_spec());
    h.reconcile().await.unwrap();
    assert_eq!(h.condition("Degraded").0, "False");
    assert!(!h.children().is_empty());
}

#[tokio::test]
async fn generated_credentials_are_created_once_and_never_rotated() {
    let mut h = Harness::new();
    h.create(minimal_spec());
    h.reconcile().await.unwrap();
    let name = names::credentials(NAME);
    let first: Secret = h.fake.get(NS, &name).expect("credentials generated");
    let expected = build::credentials::ApiCredentials::from_random_bytes(&fixed_random());
    let stored = build::credentials::ApiCredentials::from_secret(
        &first,
        crate::plan::API_KEY_FIELD,
        crate::plan::API_SECRET_FIELD,
    )
    .unwrap();
    assert_eq!(stored, expected);

    // A restarted operator with another random source keeps the stored credentials.
    h.restart(other_random);
    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    assert!(h.fake.writes().is_empty(), "{:?}", h.fake.writes());
    let second: Secret = h.fake.get(NS, &name).unwrap();
    assert_eq!(first.data, second.data);

    // The secret appears only in Secrets: not in ConfigMaps, Deployments, status or Events.
    let secret = expected.api_secret().to_owned();
    for value in h.fake.all_values() {
        if value["kind"] != "Secret" {
            assert!(
                !value.to_string().contains(&secret),
                "secret leaked into {} {}",
                value["kind"],
                value["metadata"]["name"]
            );
        }
    }
    for request in h.fake.requests() {
        if !request.path.contains("/secrets/")
            && let Some(body) = &request.body
        {
            assert!(
                !body.to_string().contains(&secret),
                "secret sent in {request}"
            );
        }
    }
}

#[tokio::test]
async fn a_damaged_generated_secret_is_reported_not_replaced() {
    let h = Harness::new();
    h.create(minimal_spec());
    h.reconcile().await.unwrap();
    let name = names::credentials(NAME);
    h.fake.edit::<Secret>(NS, &name, |s| {
        s["data"]["api-secret"] = json!("c2hvcnQ="); // "short"
    });
    let before: Secret = h.fake.get(NS, &name).unwrap();
    let error = h
        .reconcile()
        .await
        .expect_err("damaged credentials fail the reconcile");
    assert!(
        matches!(
            error,
            ReconcileError::Credentials(ResolveError::DamagedGenerated { .. })
        ),
        "{error}"
    );
    assert_eq!(
        h.fake.get::<Secret>(NS, &name).unwrap().data,
        before.data,
        "not regenerated"
    );
    let (status, reason, message) = h.condition("Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "GeneratedCredentialsDamaged")
    );
    assert!(message.contains("delete the Secret"), "{message}");
}

#[tokio::test]
async fn a_missing_user_secret_is_degraded_then_recovers() {
    let h = Harness::new();
    let mut spec = minimal_spec();
    spec["credentials"] = json!({"secretName": "my-livekit"});
    h.create(spec);
    let error = h.reconcile().await.expect_err("missing Secret");
    assert!(matches!(
        error,
        ReconcileError::Credentials(ResolveError::MissingSecret { .. })
    ));
    assert!(
        h.children().is_empty(),
        "nothing applied without credentials"
    );
    assert_eq!(h.condition("Degraded").1, "CredentialsSecretMissing");
    assert!(
        h.events()
            .iter()
            .any(|e| e["reason"] == "CredentialsSecretMissing")
    );

    let user_secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("my-livekit".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            [
                ("api-key".to_owned(), ByteString(b"userkey".to_vec())),
                (
                    "api-secret".to_owned(),
                    ByteString(b"0123456789abcdef0123456789abcdef".to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    h.fake.insert(&user_secret);
    h.reconcile()
        .await
        .expect("recovers once the Secret exists");
    assert_eq!(h.condition("Degraded").0, "False");
    assert!(
        h.fake
            .get::<Secret>(NS, &names::credentials(NAME))
            .is_none(),
        "no generated Secret with user credentials"
    );
}

#[tokio::test]
async fn pruning_removes_what_is_no_longer_desired_and_only_that() {
    let h = Harness::new();
    let cr = h.create(minimal_spec());
    h.reconcile().await.unwrap();
    let ingress = names::ingress(NAME);
    assert!(h.fake.get::<Ingress>(NS, &ingress).is_some());

    // Objects with the operator's labels that this CR does not control.
    let mut labels = build::labels::object(NAME, build::labels::Component::Transport);
    labels.insert(labels::MANAGED_BY.into(), labels::MANAGER.into());
    let mut foreign = Ingress::default();
    foreign.metadata.name = Some("someone-elses".into());
    foreign.metadata.namespace = Some(NS.into());
    foreign.metadata.labels = Some(labels.clone());
    foreign.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "matrixrtc.dev/v1alpha1".into(),
            kind: "MatrixRTCTransport".into(),
            name: "other".into(),
            uid: "another-uid".into(),
            controller: Some(true),
            ..Default::default()
        },
    ]);
    h.fake.insert(&foreign);
    let mut unowned = ConfigMap::default();
    unowned.metadata.name = Some("copied-labels".into());
    unowned.metadata.namespace = Some(NS.into());
    unowned.metadata.labels = Some(labels);
    h.fake.insert(&unowned);

    h.edit_spec(|spec| spec["ingress"] = json!({"enabled": false}));
    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    assert!(
        h.fake.get::<Ingress>(NS, &ingress).is_none(),
        "disabled Ingress pruned"
    );
    assert!(
        h.fake.get::<Ingress>(NS, "someone-elses").is_some(),
        "foreign Ingress kept"
    );
    assert!(
        h.fake.get::<ConfigMap>(NS, "copied-labels").is_some(),
        "unowned ConfigMap kept"
    );
    let deletes: Vec<Recorded> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::DELETE)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    let uid = cr.metadata.uid.unwrap_or_default();
    assert_eq!(h.transport().metadata.uid.unwrap_or_default(), uid);
}

#[tokio::test]
async fn an_unreadable_object_is_degraded_without_stopping_anything() {
    let h = Harness::new();
    h.create(minimal_spec());
    // Break the stored object the way a newer CRD version could, then read it the way the watcher does.
    h.fake.edit::<MatrixRTCTransport>(NS, NAME, |cr| {
        cr["spec"]["livekit"] = json!({"managed": {"replicas": "two"}})
    });
    let raw = h.fake.get_value::<MatrixRTCTransport>(NS, NAME).unwrap();
    let guarded: DeserializeGuard<MatrixRTCTransport> = serde_json::from_value(raw).unwrap();
    assert!(guarded.0.is_err());

    let action = reconcile(Arc::new(guarded.clone()), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(h.children().is_empty());
    let raw = h.fake.get_value::<MatrixRTCTransport>(NS, NAME).unwrap();
    let degraded = raw["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Degraded").cloned())
        .expect("Degraded written");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("UnreadableSpec"))
    );
    assert_eq!(h.events().len(), 1);

    h.fake.clear_requests();
    reconcile(Arc::new(guarded), h.ctx.clone()).await.unwrap();
    assert!(h.fake.writes().is_empty(), "{:?}", h.fake.writes());
}

#[tokio::test]
async fn failures_back_off_exponentially_per_object_and_reset_on_success() {
    let h = Harness::new();
    h.create(minimal_spec());
    let guarded = Arc::new(DeserializeGuard(Ok(h.transport())));
    for expected in [5, 10, 20] {
        h.fake.fail_next(
            Method::PATCH,
            &format!("/configmaps/{}", names::livekit(NAME)),
            500,
        );
        let error = h.reconcile().await.expect_err("apply fails");
        assert!(
            matches!(error, ReconcileError::Apply(ApplyError::Apply { .. })),
            "{error}"
        );
        let action = error_policy(guarded.clone(), &error, h.ctx.clone());
        assert_eq!(action, Action::requeue(Duration::from_secs(expected)));
    }
    assert_eq!(h.condition("Degraded").1, "ApplyFailed");
    h.reconcile()
        .await
        .expect("succeeds once the API server does");
    let error = ReconcileError::Incomplete;
    assert_eq!(
        error_policy(guarded, &error, h.ctx.clone()),
        Action::requeue(BASE_BACKOFF),
        "reset after success"
    );
}

#[test]
fn metric_labels_stay_what_dashboards_know() {
    use crate::apply::ChildId;
    use crate::kinds::ChildKind;
    let failure = || ApiFailure {
        code: Some(500),
        reason: "InternalError".into(),
        message: None,
    };
    let child = || ChildId {
        kind: ChildKind::Deployment,
        name: "x".into(),
    };
    // Metric labels are user-visible: derived from the variant names, so a rename must show up here.
    let labels = [
        (
            ReconcileError::Credentials(ResolveError::Read {
                name: "x".into(),
                failure: failure(),
            }),
            "credentials",
        ),
        (
            ReconcileError::AppService(AppServiceError::NotOwned { name: "x".into() }),
            "app_service",
        ),
        (
            ReconcileError::Build(BuildError::UnobservedSecret("x".into())),
            "build",
        ),
        (ReconcileError::Status(failure()), "status"),
        (ReconcileError::Incomplete, "incomplete"),
        (
            ReconcileError::PortConflict(crate::port_conflicts::Clash {
                port: 30000,
                holder_namespace: "a".into(),
                holder_name: "b".into(),
            }),
            "port_conflict",
        ),
        (
            ReconcileError::Apply(ApplyError::List {
                kind: ChildKind::Secret,
                failure: failure(),
            }),
            "list",
        ),
        (
            ReconcileError::Apply(ApplyError::Get {
                child: child(),
                failure: failure(),
            }),
            "get",
        ),
        (
            ReconcileError::Apply(ApplyError::Apply {
                child: child(),
                failure: failure(),
            }),
            "apply",
        ),
        (
            ReconcileError::Apply(ApplyError::Delete {
                child: child(),
                failure: failure(),
            }),
            "delete",
        ),
        (
            ReconcileError::Apply(ApplyError::Conflict { child: child() }),
            "conflict",
        ),
        (
            ReconcileError::Apply(ApplyError::Unnamed {
                kind: ChildKind::Service,
            }),
            "unnamed",
        ),
        (
            ReconcileError::Apply(ApplyError::Codec {
                child: child(),
                detail: None,
            }),
            "codec",
        ),
    ];
    for (error, label) in &labels {
        assert_eq!(error.metric_reason(), *label, "{error:?}");
    }
}

#[test]
fn every_failure_reason_is_a_listed_condition_reason() {
    use crate::apply::ChildId;
    use crate::kinds::ChildKind;
    let failure = || ApiFailure {
        code: Some(500),
        reason: "InternalError".into(),
        message: None,
    };
    let child = || ChildId {
        kind: ChildKind::Deployment,
        name: "x".into(),
    };
    let errors = [
        ReconcileError::Credentials(ResolveError::Read {
            name: "x".into(),
            failure: failure(),
        }),
        ReconcileError::AppService(AppServiceError::NotOwned { name: "x".into() }),
        ReconcileError::Build(BuildError::UnobservedSecret("x".into())),
        ReconcileError::Apply(ApplyError::Conflict { child: child() }),
        ReconcileError::Apply(ApplyError::Delete {
            child: child(),
            failure: failure(),
        }),
        ReconcileError::Apply(ApplyError::Apply {
            child: child(),
            failure: failure(),
        }),
        ReconcileError::Status(failure()),
        ReconcileError::Incomplete,
        ReconcileError::PortConflict(crate::port_conflicts::Clash {
            port: 30000,
            holder_namespace: "a".into(),
            holder_name: "b".into(),
        }),
    ];
    for error in &errors {
        // Exhaustive on purpose: a new variant fails to compile here until it is added above.
        match error {
            ReconcileError::Credentials(_)
            | ReconcileError::AppService(_)
            | ReconcileError::Build(_)
            | ReconcileError::Apply(_)
            | ReconcileError::Status(_)
            | ReconcileError::Incomplete
            | ReconcileError::PortConflict(_) => {}
        }
        let reason = error.condition_reason();
        assert!(
            status::REASONS.contains(&reason),
            "{reason} is not in status::REASONS"
        );
    }
    // Written directly by `report_unreadable`.
    assert!(status::REASONS.contains(&"UnreadableSpec"));
}

/// A Secret with `data` in the test namespace.
fn user_secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn pod_hash(h: &Harness, deployment: &str) -> String {
    let deployment: Deployment = h.fake.get(NS, deployment).expect("Deployment");
    deployment
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(build::HASH_ANNOTATION).cloned())
        .expect("hash annotation")
}

#[tokio::test]
async fn a_missing_referenced_secret_is_degraded_and_nothing_is_applied() {
    let h = Harness::new();
    let mut spec = minimal_spec();
    spec["livekit"] = json!({"managed": {
        "replicas": 2,
        "redis": {"address": "redis:6379", "passwordSecret": {"name": "redis-pw", "key": "password"}},
        "media": {"service": {"externalTrafficPolicy": "Local"}},
        "turn": {"domain": "turn.example.com", "tls": {"port": 30003, "secretName": "turn-cert"}},
    }});
    h.create(spec);
    let error = h.reconcile().await.expect_err("missing Secrets");
    assert!(
        matches!(
            error,
            ReconcileError::Credentials(ResolveError::ReferencedSecretsMissing { .. })
        ),
        "{error}"
    );
    assert!(
        h.children().is_empty(),
        "nothing applied: {:?}",
        h.children()
    );
    let (status, reason, message) = h.condition("Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ReferencedSecretMissing")
    );
    for expected in [
        "redis-pw (spec.livekit.managed.redis.passwordSecret)",
        "turn-cert (spec.livekit.managed.turn.tls.secretName)",
    ] {
        assert!(message.contains(expected), "{message}");
    }
    assert!(
        h.events()
            .iter()
            .any(|e| e["reason"] == "ReferencedSecretMissing")
    );

    h.fake
        .insert(&user_secret("redis-pw", &[("password", "hunter2-hunter2")]));
    h.reconcile().await.expect_err("one still missing");
    let message = h.condition("Degraded").2;
    assert!(
        message.contains("turn-cert") && !message.contains("redis-pw"),
        "{message}"
    );

    h.fake.insert(&user_secret(
        "turn-cert",
        &[("tls.crt", "c"), ("tls.key", "k")],
    ));
    h.reconcile().await.expect("recovers once both exist");
    assert_eq!(h.condition("Degraded").0, "False");
    assert!(
        h.fake
            .get::<Deployment>(NS, &names::livekit(NAME))
            .is_some()
    );
}

#[tokio::test]
async fn changing_a_referenced_secret_rolls_only_the_pods_that_read_it_and_its_content_stays_out() {
    let h = Harness::new();
    let password = "correct-horse-battery";
    h.fake
        .insert(&user_secret("redis-pw", &[("password", password)]));
    h.fake.insert(&user_secret(
        "auth-redis",
        &[("url", "redis://:auth-redis-password@redis:6379/1")],
    ));
    let mut spec = minimal_spec();
    spec["livekit"] = json!({"managed": {
        "replicas": 2,
        "redis": {"address": "redis:6379", "passwordSecret": {"name": "redis-pw", "key": "password"}},
        "media": {"service": {"externalTrafficPolicy": "Local"}},
    }});
    spec["auth"] = json!({"redis": {"urlSecret": {"name": "auth-redis", "key": "url"}}});
    h.create(spec);
    h.reconcile().await.expect("reconcile succeeds");
    let (livekit, auth) = (names::livekit(NAME), names::auth(NAME));
    let (livekit_before, auth_before) = (pod_hash(&h, &livekit), pod_hash(&h, &auth));

    // Nothing but the user's own Secrets holds their values.
    for value in h.fake.all_values() {
        if value["kind"] == "Secret" {
            continue;
        }
        let text = value.to_string();
        assert!(
            !text.contains(password) && !text.contains("auth-redis-password"),
            "{} {}",
            value["kind"],
            value["metadata"]["name"]
        );
    }

    // A new Redis password rolls LiveKit, not the authorisation service.
    h.fake.edit::<Secret>(NS, "redis-pw", |s| {
        s["data"]["password"] = json!("bmV3LXBhc3N3b3Jk");
    });
    h.reconcile().await.unwrap();
    assert_ne!(pod_hash(&h, &livekit), livekit_before);
    assert_eq!(pod_hash(&h, &auth), auth_before);

    // And a new Redis URL for the authorisation service rolls only its pods.
    let livekit_now = pod_hash(&h, &livekit);
    h.fake.edit::<Secret>(NS, "auth-redis", |s| {
        s["data"]["url"] = json!("cmVkaXM6Ly9vdGhlcjo2Mzc5");
    });
    h.reconcile().await.unwrap();
    assert_eq!(pod_hash(&h, &livekit), livekit_now);
    assert_ne!(pod_hash(&h, &auth), auth_before);

    // Unchanged Secrets: nothing to roll, nothing written.
    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    assert!(h.fake.writes().is_empty(), "{:?}", h.fake.writes());
}

/// Poll `condition` every 20 ms for at most `seconds`.
async fn wait_for(what: &str, seconds: u64, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {seconds}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_running_controller_reconciles_repairs_follows_secrets_and_then_idles() {
    let h = Harness::new();
    let (trigger, stop) = crate::shutdown::channel();
    let ctx = h.ctx.clone();
    let running =
        tokio::spawn(async move { run(ctx, &WatchScope::Namespaces(vec![NS.into()]), stop).await });

    // Created through the watch, not by calling reconcile.
    h.create(minimal_spec());
    let config = names::livekit(NAME);
    wait_for("children", 10, || {
        h.fake.get::<ConfigMap>(NS, &config).is_some()
    })
    .await;
    wait_for("a status", 10, || h.transport().status.is_some()).await;

    // A deleted child comes back through the owned-object watch.
    assert!(h.fake.remove::<ConfigMap>(NS, &config));
    wait_for("the ConfigMap to be recreated", 10, || {
        h.fake.get::<ConfigMap>(NS, &config).is_some()
    })
    .await;

    // A CR that no longer deserialises is reported, and the watch (and the other CRs) carry on.
    h.fake.edit::<MatrixRTCTransport>(NS, NAME, |cr| {
        cr["spec"]["livekit"] = json!({"managed": {"replicas": "two"}});
    });
    let unreadable = || {
        h.fake
            .get_value::<MatrixRTCTransport>(NS, NAME)
            .and_then(|cr| cr["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "UnreadableSpec"))
    };
    wait_for("the unreadable CR to be reported", 10, unreadable).await;

    // A CR waiting for its credentials Secret is reconciled when the Secret appears, well before its 5 s
    // backoff would retry: the Secret watch maps it to the CR.
    let mut spec = minimal_spec();
    spec["credentials"] = json!({"secretName": "later"});
    let other: MatrixRTCTransport = serde_json::from_value(json!({
        "apiVersion": "matrixrtc.dev/v1alpha1", "kind": "MatrixRTCTransport",
        "metadata": {"name": "other", "namespace": NS}, "spec": spec,
    }))
    .unwrap();
    h.fake.insert(&other);
    let degraded_reason = |name: &str| {
        h.fake
            .get::<MatrixRTCTransport>(NS, name)
            .and_then(|t| t.status)
            .and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| c.type_ == "Degraded" && c.status == "True")
            })
            .map(|c| c.reason)
    };
    wait_for("the missing Secret to be reported", 10, || {
        degraded_reason("other").as_deref() == Some("CredentialsSecretMissing")
    })
    .await;
    // Let the reconcile triggered by that status write pass, so only the Secret watch can explain a recovery.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut secret = Secret::default();
    secret.metadata.name = Some("later".into());
    secret.metadata.namespace = Some(NS.into());
    secret.string_data = Some(
        [
            ("api-key".to_owned(), "key".to_owned()),
            (
                "api-secret".to_owned(),
                "0123456789abcdef0123456789abcdef".to_owned(),
            ),
        ]
        .into(),
    );
    h.fake.insert(&secret);
    wait_for("the Secret to be picked up", 3, || {
        degraded_reason("other").is_none()
    })
    .await;

    // Settled: the controller keeps running but writes nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.fake.clear_requests();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        h.fake.writes().is_empty(),
        "idle controller wrote: {:?}",
        h.fake.writes()
    );

    trigger.fire();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the controller stops on the signal")
        .unwrap();
}

#[tokio::test]
async fn validation_warnings_are_published_once_per_generation() {
    let h = Harness::new();
    let mut spec = minimal_spec();
    // A NodePort outside the default node port range: valid, but worth a warning.
    spec["livekit"] = json!({"managed": {"media": {"tcp": {"port": 7881}}}});
    h.create(spec);
    let warnings = |h: &Harness| {
        h.events()
            .into_iter()
            .filter(|e| e["reason"] == "SpecWarning")
            .count()
    };
    h.reconcile().await.unwrap();
    assert_eq!(warnings(&h), 1);
    assert_eq!(
        h.condition("Degraded").0,
        "False",
        "a warning is not a degradation"
    );
    h.reconcile().await.unwrap();
    assert_eq!(warnings(&h), 1, "not repeated for the same generation");
    h.edit_spec(|spec| spec["host"] = json!("rtc2.example.com"));
    h.reconcile().await.unwrap();
    assert_eq!(
        warnings(&h),
        2,
        "repeated for a new generation that still has the problem"
    );
}

/// The requests of `requests` that list a collection (a GET without a name, not a watch).
fn lists(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| {
            crate::api_verb::Verb::of(&r.method, &r.path, &r.query) == crate::api_verb::Verb::List
        })
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect()
}

#[tokio::test]
async fn a_steady_state_reconcile_lists_nothing() {
    let h = Harness::new();
    h.create(minimal_spec());
    h.reconcile().await.unwrap();
    h.roll_out_deployments();
    h.reconcile().await.unwrap();

    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    let requests = h.fake.requests();
    assert!(
        lists(&requests).is_empty(),
        "steady state listed: {:?}",
        lists(&requests)
    );
    assert!(writes_except_events(&requests).is_empty(), "{requests:?}");
}

#[tokio::test]
async fn a_nodeport_clash_is_named_and_the_loser_applies_nothing() {
    use kube::runtime::reflector;
    let h = Harness::new();
    h.create(minimal_spec());
    let holder: MatrixRTCTransport = serde_json::from_value(json!({
        "apiVersion": "matrixrtc.dev/v1alpha1",
        "kind": "MatrixRTCTransport",
        "metadata": {"name": "rtc", "namespace": "holder"},
        "spec": {"serverName": "example.org", "host": "rtc.example.org"},
    }))
    .unwrap();
    h.fake.insert(&holder);
    // Both are created at the fake's one timestamp; make the holder the older one, so the tie-break on
    // namespace/name ("calls" < "holder") would pick the other way: the timestamp must decide.
    h.fake.edit::<MatrixRTCTransport>("holder", "rtc", |cr| {
        cr["metadata"]["creationTimestamp"] = json!("2023-06-01T00:00:00Z");
    });
    let stored = |ns: &str, name: &str| -> Guarded {
        serde_json::from_value(
            h.fake
                .get_value::<MatrixRTCTransport>(ns, name)
                .expect("stored"),
        )
        .expect("deserialises")
    };
    let (store, mut writer) = reflector::store::<Guarded>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(stored(NS, NAME)));
    writer.apply_watcher_event(&watcher::Event::InitApply(stored("holder", "rtc")));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    h.ctx.set_transports(vec![store]);

    let error = h.reconcile().await.expect_err("the newer transport loses");
    assert!(matches!(error, ReconcileError::PortConflict(_)), "{error}");
    assert!(h.children().is_empty(), "applied: {:?}", h.children());
    let writes = writes_except_events(&h.fake.requests());
    assert!(
        writes
            .iter()
            .all(|w| w.ends_with(&format!("/matrixrtctransports/{NAME}/status"))),
        "only the status is written: {writes:?}"
    );
    let (status, reason, message) = h.condition("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "PortConflict"));
    assert!(
        message.contains("MatrixRTCTransport holder/rtc"),
        "{message}"
    );
    let events = h.events();
    assert!(
        events.iter().any(|e| e["reason"] == "PortConflict"
            && e["type"] == "Warning"
            && e["note"].as_str().is_some_and(|n| n.contains("holder/rtc"))),
        "{events:?}"
    );

    // The holder goes away: the port is free and the transport is applied.
    writer.apply_watcher_event(&watcher::Event::Delete(stored("holder", "rtc")));
    h.reconcile().await.expect("applied once the port is free");
    assert!(!h.children().is_empty());
    assert_eq!(h.condition("Degraded").0, "False");
}

fn app_service_spec(extra: Value) -> Value {
    let mut spec = minimal_spec();
    spec["auth"] = json!({"appService": {"enabled": true}});
    if let (Some(target), Value::Object(extra)) =
        (spec["auth"]["appService"].as_object_mut(), extra)
    {
        target.extend(extra);
    }
    spec
}

fn stored_tokens(h: &Harness) -> build::appservice::AppServiceTokens {
    let secret: Secret = h
        .fake
        .get(NS, &names::app_service(NAME))
        .expect("the appservice Secret exists");
    build::appservice::AppServiceTokens::from_secret(&secret).expect("well-formed tokens")
}

#[tokio::test]
async fn app_service_tokens_are_generated_once_and_kept_across_reconciles_and_restarts() {
    let mut h = Harness::new();
    h.create(app_service_spec(
        json!({"registrationSecret": {"name": "synapse-as"}}),
    ));
    h.reconcile().await.unwrap();
    let first = stored_tokens(&h);
    let registration = |h: &Harness, name: &str, key: &str| -> String {
        let secret: Secret = h.fake.get(NS, name).expect("registration Secret");
        let data = secret.data.expect("data");
        String::from_utf8(data[key].0.clone()).expect("UTF-8")
    };
    let own = registration(&h, &names::app_service(NAME), "registration.yaml");
    assert!(own.contains(first.as_token()) && own.contains(first.hs_token()));
    assert_eq!(
        registration(&h, "synapse-as", "matrixrtc-auth.yaml"),
        own,
        "the copy for Synapse is the same registration"
    );
    let status = h.status().app_service.expect("status.appService");
    assert_eq!(
        (
            status.registration_secret.as_str(),
            status.registration_key.as_str()
        ),
        ("synapse-as", "matrixrtc-auth.yaml")
    );

    // A second reconcile, then a restarted operator: same tokens, nothing written.
    h.reconcile().await.unwrap();
    h.restart(other_random);
    h.fake.clear_requests();
    h.reconcile().await.unwrap();
    assert!(h.fake.writes().is_empty(), "{:?}", h.fake.writes());
    assert_eq!(stored_tokens(&h), first);

    // A spec change that rewrites the registration (another proxy URL) keeps the tokens too.
    h.edit_spec(|spec| spec["auth"]["appService"]["proxyUrl"] = json!("http://auth.internal:8080"));
    h.reconcile().await.unwrap();
    assert_eq!(stored_tokens(&h), first);
    assert!(
        registration(&h, "synapse-as", "matrixrtc-auth.yaml").contains("http://auth.internal:8080")
    );

    // The tokens are only ever in Secrets: not in Deployments, status, Events or other request bodies.
    for token in [first.as_token(), first.hs_token()] {
        for value in h.fake.all_values() {
            if value["kind"] != "Secret" {
                assert!(
                    !value.to_string().contains(token),
                    "token leaked into {} {}",
                    value["kind"],
                    value["metadata"]["name"]
                );
            }
        }
        for request in h.fake.requests() {
            if !request.path.contains("/secrets/")
                && let Some(body) = &request.body
            {
                assert!(!body.to_string().contains(token), "token sent in {request}");
            }
        }
    }

    // Turning AS mode off removes both Secrets (they are the operator's own).
    h.edit_spec(|spec| spec["auth"]["appService"]["enabled"] = json!(false));
    h.reconcile().await.unwrap();
    h.sync_caches().await;
    assert!(
        h.fake
            .get::<Secret>(NS, &names::app_service(NAME))
            .is_none()
    );
    assert!(h.fake.get::<Secret>(NS, "synapse-as").is_none());
    assert!(h.status().app_service.is_none());
}

#[tokio::test]
async fn damaged_app_service_tokens_are_reported_not_replaced() {
    let h = Harness::new();
    h.create(app_service_spec(json!({})));
    h.reconcile().await.unwrap();
    let name = names::app_service(NAME);
    h.fake.edit::<Secret>(NS, &name, |s| {
        s["data"]["hs-token"] = json!("c2hvcnQ="); // "short"
    });
    let error = h
        .reconcile()
        .await
        .expect_err("damaged tokens fail the reconcile");
    assert!(
        matches!(
            error,
            ReconcileError::AppService(AppServiceError::Damaged { .. })
        ),
        "{error}"
    );
    let secret: Secret = h.fake.get(NS, &name).unwrap();
    assert_eq!(
        secret.data.expect("data")["hs-token"].0,
        b"short",
        "not regenerated"
    );
    let (status, reason, message) = h.condition("Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "AppServiceTokensDamaged")
    );
    assert!(message.contains("delete the Secret"), "{message}");
}

#[tokio::test]
async fn a_registration_secret_the_operator_did_not_create_is_refused_and_left_alone() {
    let h = Harness::new();
    let foreign = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("synapse-config".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            [(
                "homeserver.yaml".to_owned(),
                ByteString(b"server_name: x".to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    h.fake.insert(&foreign);
    h.create(app_service_spec(
        json!({"registrationSecret": {"name": "synapse-config"}}),
    ));
    let error = h.reconcile().await.expect_err("refused");
    assert!(
        matches!(
            error,
            ReconcileError::AppService(AppServiceError::NotOwned { .. })
        ),
        "{error}"
    );
    assert!(
        h.children()
            .iter()
            .all(|(kind, name)| kind == "Secret" && name == "synapse-config"),
        "nothing applied: {:?}",
        h.children()
    );
    let kept: Secret = h.fake.get(NS, "synapse-config").unwrap();
    assert_eq!(kept.data, foreign.data, "the foreign Secret is untouched");
    assert!(kept.metadata.owner_references.is_none());
    let (status, reason, message) = h.condition("Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "RegistrationSecretNotOwned")
    );
    assert!(message.contains("synapse-config"), "{message}");
    assert!(
        h.events()
            .iter()
            .any(|e| e["reason"] == "RegistrationSecretNotOwned"),
        "{:?}",
        h.events()
    );

    // Naming another Secret recovers; the foreign one is still not touched (nor pruned).
    h.edit_spec(|spec| {
        spec["auth"]["appService"]["registrationSecret"]["name"] = json!("synapse-as")
    });
    h.reconcile().await.unwrap();
    assert!(h.fake.get::<Secret>(NS, "synapse-as").is_some());
    let kept: Secret = h.fake.get(NS, "synapse-config").unwrap();
    assert_eq!(kept.data, foreign.data);
}

#[tokio::test]
async fn log_lines_of_a_reconcile_name_the_transport_through_its_span() {
    let log = CapturedLog::default();
    let _logging = tracing::subscriber::set_default(log.json_subscriber("info"));
    let h = Harness::new();
    h.create(minimal_spec());
    h.reconcile().await.unwrap();

    let lines = log.lines();
    let applied: Vec<&Value> = lines.iter().filter(|l| l["message"] == "applied").collect();
    assert!(!applied.is_empty(), "no `applied` line in {lines:?}");
    for line in applied {
        let reconcile = &line["spans"][0];
        assert_eq!(
            (
                &reconcile["name"],
                &reconcile["namespace"],
                &reconcile["transport"],
                &reconcile["generation"]
            ),
            (&json!("reconcile"), &json!(NS), &json!(NAME), &json!(1)),
            "{line}"
        );
        assert_eq!(line["span"]["name"], "apply_children", "{line}");
    }
}

#[tokio::test]
async fn a_failure_logged_under_a_warn_filter_still_names_its_transport() {
    let log = CapturedLog::default();
    let _logging = tracing::subscriber::set_default(log.json_subscriber("warn"));
    let h = Harness::new();
    h.create(minimal_spec());
    h.fake.fail_next(
        Method::PATCH,
        &format!("/configmaps/{}", names::livekit(NAME)),
        500,
    );
    let error = h.reconcile().await.expect_err("apply fails");
    error_policy(
        Arc::new(DeserializeGuard(Ok(h.transport()))),
        &error,
        h.ctx.clone(),
    );

    let lines = log.lines();
    let failed = lines
        .iter()
        .find(|l| l["message"] == "reconcile failed")
        .unwrap_or_else(|| panic!("no `reconcile failed` line in {lines:?}"));
    assert_eq!(
        (
            &failed["span"]["name"],
            &failed["span"]["namespace"],
            &failed["span"]["transport"]
        ),
        (&json!("reconcile"), &json!(NS), &json!(NAME)),
        "{failed}"
    );
    assert!(failed.get("object").is_none(), "{failed}");
}

#[tokio::test]
async fn the_transports_store_keeps_no_managed_fields_or_last_applied_copy() {
    let h = Harness::new();
    let (trigger, stop) = crate::shutdown::channel();
    let ctx = h.ctx.clone();
    let running =
        tokio::spawn(async move { run(ctx, &WatchScope::Namespaces(vec![NS.into()]), stop).await });
    let cr: MatrixRTCTransport = serde_json::from_value(json!({
        "apiVersion": "matrixrtc.dev/v1alpha1", "kind": "MatrixRTCTransport",
        "metadata": {
            "name": NAME, "namespace": NS,
            "annotations": {LAST_APPLIED: "{\"spec\":{}}", "team": "calls"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:spec": {}}}],
        },
        "spec": minimal_spec(),
    }))
    .unwrap();
    h.fake.insert(&cr);
    let stored = || {
        let stores = h.ctx.transports.read().unwrap().clone();
        stores.iter().flat_map(|s| s.state()).next()
    };
    wait_for("the transport in the store", 10, || stored().is_some()).await;
    let meta = stored().unwrap().meta().clone();
    assert_eq!(meta.managed_fields, None);
    let annotations = meta.annotations.unwrap_or_default();
    assert!(!annotations.contains_key(LAST_APPLIED), "{annotations:?}");
    assert_eq!(annotations.get("team").map(String::as_str), Some("calls"));
    // What the API server holds is untouched.
    let held = h.fake.get::<MatrixRTCTransport>(NS, NAME).unwrap();
    assert!(held.metadata.managed_fields.is_some_and(|m| !m.is_empty()));
    trigger.fire();
    tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("the controller stops")
        .unwrap();
}
