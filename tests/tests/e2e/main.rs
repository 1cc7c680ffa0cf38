//! End-to-end: the operator binary against a real cluster (Kubernetes >= 1.28, API server and
//! controller-manager; `scripts/test.sh` starts one from `../shared/k8s` when it is there).
//!
//! Skipped, with a line on stderr, unless `KUBECONFIG` is set. Needs cluster-admin-like rights for the tests
//! themselves (CRDs, namespaces) and a built operator (`cargo build -p matrixrtc-operator`, or
//! `MATRIXRTC_OPERATOR_BIN`). No image has to run and no Pod ever does (there may be no kubelet): the checks
//! are about the objects the operator writes and its status, never readiness.
//!
//! Every test gets throwaway namespaces (deleted afterwards), installs `crds/` (server-side apply) and,
//! where it needs one, starts its own `matrixrtc-operator run --watch-namespace=...`. NodePorts are
//! cluster-wide, so each test uses its own fixed ports in the static band of the default range
//! (30000-30085, which the API server never hands out at random); see [`ports`].
//!
//! This file: every example in `examples/` through its life cycle, in its own namespace; examples asking for
//! the same NodePort run one after the other, the rest side by side:
//! 1. apply it (with a credentials Secret if it names one);
//! 2. wait for every child that validate + build (the operator's own pure pipeline) says should exist, and
//!    check labels, the controller owner reference, the auth service's environment and the status;
//! 3. edit the spec and see the pod template change (the config hash annotation, or the environment);
//! 4. delete a child and see it recreated;
//! 5. check that no child's resourceVersion moves for [`QUIET`] (no write in a steady state);
//! 6. delete the CR and see the garbage collector remove the children.
//!
//! Finally SIGTERM the operator (it must exit cleanly). Every wait is bounded. The other modules test what
//! only a real API server shows: CEL rules and their cost ([`cel`]), NodePort allocation across namespaces
//! ([`node_ports`]), server-side apply field ownership and garbage collection ([`ownership`]), and the
//! PodDisruptionBudget and the optional kinds of other projects, with and without their CRDs
//! ([`optional_kinds`]).

mod app_service;
mod cel;
mod cluster;
mod node_ports;
mod operator;
mod optional_kinds;
mod ownership;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use matrixrtc_auth::contract::env;
use matrixrtc_operator::api::MatrixRTCTransport;
use matrixrtc_operator::apply::ChildKind;
use matrixrtc_operator::build::appservice::AppServiceTokens;
use matrixrtc_operator::build::credentials::ApiCredentials;
use matrixrtc_operator::build::secret_refs::{self, SecretVersion, SecretVersions, Use};
use matrixrtc_operator::build::{self, BuildInput, Child, HASH_ANNOTATION, labels, names};
use matrixrtc_operator::defaults::OperatorDefaults;
use matrixrtc_operator::validate;
use serde_json::{Value, json};

use cluster::{Failure, TEST_MANAGER, TestNamespace, eventually};

/// Upper bound of the examples test.
const TOTAL: Duration = Duration::from_secs(10 * 60);
/// Upper bound of one wait for the operator (or the controller-manager) to act.
pub const ACT: Duration = Duration::from_secs(90);
/// How long nothing may be written once a transport has settled.
const QUIET: Duration = Duration::from_secs(10);

/// The fixed NodePorts of each test (TCP, UDP mux), apart from each other and from the examples' (30001,
/// 30002, 30004), so tests can run side by side.
pub mod ports {
    pub const NODE_PORT_CLASH: (i32, i32) = (30011, 30012);
    pub const OWNERSHIP: (i32, i32) = (30013, 30014);
    pub const GARBAGE_COLLECTION: (i32, i32) = (30015, 30016);
    pub const APP_SERVICE: (i32, i32) = (30017, 30018);
    pub const OPTIONAL_KINDS: (i32, i32) = (30019, 30020);
}

/// Run `scenario` against the cluster of `KUBECONFIG` in `count` fresh namespaces, with the CRDs installed,
/// bounded by `limit`; the namespaces are deleted afterwards and a failure panics with its message. Without
/// `KUBECONFIG`, print a SKIPPED line and return.
pub async fn on_cluster<F, Fut>(test: &str, count: usize, limit: Duration, scenario: F)
where
    F: FnOnce(Client, Vec<String>) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    if std::env::var_os("KUBECONFIG").is_none() {
        // Straight to the process's stderr: `eprintln!` would be swallowed by the test harness's capture.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: KUBECONFIG not set; the end-to-end tests need a real Kubernetes (>= 1.28) \
             cluster and a built operator (cargo build -p matrixrtc-operator)"
        );
        return;
    }
    let started = std::time::Instant::now();
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let mut namespaces = Vec::new();
    for _ in 0..count {
        namespaces.push(
            TestNamespace::create(&client)
                .await
                .expect("test namespace"),
        );
    }
    let names: Vec<String> = namespaces.iter().map(|n| n.name.clone()).collect();
    eprintln!("{test}: namespaces {names:?}");
    let outcome = tokio::time::timeout(limit, async {
        let crds = cluster::install_crds(&client, &operator::workspace_root().join("crds")).await?;
        eprintln!("{test}: installed CRDs {crds:?}");
        scenario(client.clone(), names).await
    })
    .await;
    eprintln!(
        "{test}: scenario took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Side by side: each deletion waits for the namespace controller to empty the namespace.
    let mut deleting = tokio::task::JoinSet::new();
    for namespace in namespaces {
        deleting.spawn(namespace.delete());
    }
    let mut cleanup = Ok(());
    while let Some(deleted) = deleting.join_next().await {
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(error)) => cleanup = Err(error),
            Err(error) => cleanup = Err(format!("deleting a namespace panicked: {error}")),
        }
    }
    match outcome {
        Err(_) => panic!("{test} exceeded {} s", limit.as_secs()),
        Ok(Err(failure)) => panic!("{failure}"),
        Ok(Ok(())) => {}
    }
    cleanup.expect("namespaces cleaned up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reconciles_every_example_on_a_real_cluster() {
    let files = cluster::yaml_files(&operator::workspace_root().join("examples"))
        .expect("the examples directory");
    assert!(!files.is_empty(), "no example in examples/");
    on_cluster("examples", files.len(), TOTAL, |client, namespaces| {
        every_example(client, namespaces, files)
    })
    .await;
}

async fn every_example(
    client: Client,
    namespaces: Vec<String>,
    files: Vec<std::path::PathBuf>,
) -> Result<(), Failure> {
    // An example may ask for a ServiceMonitor or a cert-manager Certificate: stand-in CRDs for them.
    let fixtures = optional_kinds::install_fixture_crds(&client).await?;
    eprintln!("examples: installed fixture CRDs {fixtures:?}");
    let mut process = operator::start(&namespaces).await?;
    let metrics = process.metrics().await?;
    if !metrics.contains("matrixrtc_operator_reconciles_total") {
        return Err(format!(
            "/metrics lacks the reconcile counter: {metrics:.200}"
        ));
    }

    // Lanes: examples that ask for a common NodePort go into one lane and run in turn; lanes run at once.
    type Lane = Vec<(std::path::PathBuf, String, String)>;
    let mut lanes: Vec<(BTreeSet<i32>, Lane)> = Vec::new();
    for (file, namespace) in files.into_iter().zip(namespaces) {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let ports = node_ports(&planned(&example_transport(&text, &namespace)?)?);
        match lanes
            .iter_mut()
            .find(|(taken, _)| !taken.is_disjoint(&ports))
        {
            Some((taken, lane)) => {
                taken.extend(ports);
                lane.push((file, namespace, text));
            }
            None => lanes.push((ports, vec![(file, namespace, text)])),
        }
    }
    let mut running = tokio::task::JoinSet::new();
    for (_, lane) in lanes {
        let client = client.clone();
        running.spawn(async move {
            for (file, namespace, text) in lane {
                let started = std::time::Instant::now();
                example(&client, &namespace, &text)
                    .await
                    .map_err(|failure| format!("{}: {failure}", file.display()))?;
                eprintln!(
                    "example {} passed in {:.1} s",
                    file.display(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok::<(), Failure>(())
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => failures.push(failure),
            Err(error) => failures.push(format!("an example lane panicked: {error}")),
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "{}\n--- operator log (tail) ---\n{}",
            failures.join("\n"),
            process.log_tail()
        ));
    }
    if !process.alive() {
        return Err(format!("the operator died; log:\n{}", process.log_tail()));
    }
    process.terminate().await
}

/// The example's MatrixRTCTransport, moved into `namespace`.
fn example_transport(text: &str, namespace: &str) -> Result<MatrixRTCTransport, Failure> {
    let mut found = None;
    for mut document in cluster::documents(text)? {
        if document["kind"].as_str() == Some("MatrixRTCTransport") {
            document["metadata"]["namespace"] = json!(namespace);
            found = Some(serde_json::from_value(document).map_err(|e| format!("example CR: {e}"))?);
        }
    }
    found.ok_or_else(|| "the example has no MatrixRTCTransport".to_owned())
}

/// What the operator should create for `cr`, by its own pure pipeline (placeholder Secret versions: the
/// pod hashes are not compared with the live ones).
pub fn planned(cr: &MatrixRTCTransport) -> Result<build::Children, Failure> {
    let mut probe = cr.clone();
    probe
        .metadata
        .uid
        .get_or_insert_with(|| "e2e-probe".to_owned());
    let validated =
        validate::validate(&probe).map_err(|e| format!("the transport is invalid: {e}"))?;
    let mut secrets = SecretVersions::default();
    for reference in secret_refs::all(&validated) {
        secrets.insert(
            &reference.name,
            SecretVersion {
                uid: "e2e".into(),
                resource_version: "0".into(),
            },
        );
    }
    build::build(
        &validated,
        &BuildInput {
            defaults: &OperatorDefaults::default(),
            credentials: &ApiCredentials::placeholder(),
            secrets: &secrets,
            app_service: Some(&AppServiceTokens::placeholder()),
        },
    )
    .map_err(|e| e.to_string())
}

/// The fixed node ports the children's Services ask for.
fn node_ports(children: &build::Children) -> BTreeSet<i32> {
    children
        .iter()
        .filter_map(|child| match child {
            Child::Service(service) => service.spec.as_ref(),
            _ => None,
        })
        .flat_map(|spec| spec.ports.iter().flatten())
        .filter_map(|port| port.node_port)
        .collect()
}

/// One example through the whole life cycle.
async fn example(client: &Client, namespace: &str, text: &str) -> Result<(), Failure> {
    for mut document in cluster::documents(text)? {
        document["metadata"]["namespace"] = json!(namespace);
        match document["kind"].as_str() {
            Some("MatrixRTCTransport") => {}
            Some("Secret") => {
                let secret: Secret =
                    serde_json::from_value(document).map_err(|e| format!("example Secret: {e}"))?;
                apply(client, namespace, &secret).await?;
            }
            other => return Err(format!("unsupported kind {other:?} in an example")),
        }
    }
    let cr = example_transport(text, namespace)?;
    if let Some(credentials) = &cr.spec.credentials {
        ensure_credentials_secret(client, namespace, credentials).await?;
    }
    ensure_referenced_secrets(client, namespace, &cr).await?;
    let api: Api<MatrixRTCTransport> = Api::namespaced(client.clone(), namespace);
    let name = cr.name_any();
    api.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&cr),
    )
    .await
    .map_err(|e| format!("applying {name}: {e}"))?;
    let live = api.get(&name).await.map_err(|e| e.to_string())?;
    let uid = live.uid().ok_or("no uid")?;
    let expected = planned(&live)?;

    let children = wait_for_children(client, namespace, &expected).await?;
    for (child, object) in expected.iter().zip(&children) {
        check_ownership(child, object, &name, &uid)?;
    }
    check_auth_env(client, namespace, &expected).await?;
    let ready_generation = wait_for_status(&api, &name).await?;
    eprintln!(
        "  {namespace}: {} children, status observed generation {ready_generation}",
        children.len()
    );

    roll(client, namespace, &api, &live).await?;
    recreate(client, namespace, &expected).await?;
    steady(client, namespace, &expected, &api, &name).await?;
    delete(client, namespace, &api, &name, &expected).await
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<(), Failure>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object
        .meta()
        .name
        .clone()
        .ok_or("an object without a name")?;
    api.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|e| format!("applying {name}: {e}"))?;
    Ok(())
}

/// A Secret with test credentials under the fields the CR names, unless the example brought one.
async fn ensure_credentials_secret(
    client: &Client,
    namespace: &str,
    credentials: &matrixrtc_operator::api::CredentialsSecretRef,
) -> Result<(), Failure> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if api
        .get_opt(&credentials.secret_name)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": credentials.secret_name, "namespace": namespace},
        "stringData": {
            credentials.api_key_field.clone(): "e2e-key",
            credentials.api_secret_field.clone(): "e2e-secret-0123456789abcdef0123456789",
        },
    }))
    .map_err(|e| e.to_string())?;
    apply(client, namespace, &secret).await
}

/// A placeholder for every other Secret the example's pods reference (Redis password or URL, TURN
/// certificate) that the example does not bring: the operator applies nothing while one is missing. No pod
/// has to start, so the content does not matter.
async fn ensure_referenced_secrets(
    client: &Client,
    namespace: &str,
    cr: &MatrixRTCTransport,
) -> Result<(), Failure> {
    let mut probe = cr.clone();
    probe
        .metadata
        .uid
        .get_or_insert_with(|| "e2e-probe".to_owned());
    let validated =
        validate::validate(&probe).map_err(|e| format!("the example is invalid: {e}"))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for reference in secret_refs::all(&validated) {
        if reference.used_for == Use::Credentials
            || api
                .get_opt(&reference.name)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
        {
            continue;
        }
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": reference.name, "namespace": namespace},
            "stringData": {"e2e": "placeholder"},
        }))
        .map_err(|e| e.to_string())?;
        apply(client, namespace, &secret).await?;
    }
    Ok(())
}

fn dynamic_api(client: &Client, namespace: &str, child: &Child) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ChildKind::of(child).api_resource(),
    )
}

async fn wait_for_children(
    client: &Client,
    namespace: &str,
    expected: &build::Children,
) -> Result<Vec<DynamicObject>, Failure> {
    let mut found = Vec::new();
    for child in expected.iter() {
        let api = dynamic_api(client, namespace, child);
        let what = format!("{} {}", child.kind(), child.name());
        let object = eventually(&what, ACT, || {
            let api = api.clone();
            let name = child.name().to_owned();
            async move { api.get_opt(&name).await.ok().flatten() }
        })
        .await?;
        found.push(object);
    }
    Ok(found)
}

fn check_ownership(
    child: &Child,
    object: &DynamicObject,
    cr: &str,
    uid: &str,
) -> Result<(), Failure> {
    let what = format!("{} {}", child.kind(), child.name());
    let labels = object.labels();
    if labels.get(labels::MANAGED_BY).map(String::as_str) != Some(labels::MANAGER)
        || labels.get(labels::INSTANCE).map(String::as_str) != Some(cr)
    {
        return Err(format!("{what} lacks the operator's labels: {labels:?}"));
    }
    let controllers: Vec<_> = object
        .owner_references()
        .iter()
        .filter(|r| r.controller == Some(true))
        .collect();
    match controllers.as_slice() {
        [owner] if owner.uid == uid && owner.kind == "MatrixRTCTransport" => Ok(()),
        other => Err(format!(
            "{what}: controller owner references {other:?}, want uid {uid}"
        )),
    }
}

/// The auth service's container has every variable the builder sets, and the URL and allowlist match.
async fn check_auth_env(
    client: &Client,
    namespace: &str,
    expected: &build::Children,
) -> Result<(), Failure> {
    let Some(Child::Deployment(desired)) = expected
        .iter()
        .find(|c| matches!(c, Child::Deployment(d) if d.name_any().ends_with("-auth")))
    else {
        return Ok(()); // sidecar placement: the env is checked through the LiveKit pod template
    };
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let live = api
        .get(&desired.name_any())
        .await
        .map_err(|e| e.to_string())?;
    let env_of = |d: &Deployment| -> BTreeMap<String, Option<String>> {
        d.spec
            .iter()
            .flat_map(|s| s.template.spec.iter())
            .flat_map(|p| p.containers.iter())
            .flat_map(|c| c.env.iter().flatten())
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    };
    let (want, have) = (env_of(desired), env_of(&live));
    for name in want.keys() {
        if !have.contains_key(name) {
            return Err(format!(
                "auth container lacks {name}; has {:?}",
                have.keys().collect::<Vec<_>>()
            ));
        }
    }
    for name in [env::LIVEKIT_URL, env::LIVEKIT_FULL_ACCESS_HOMESERVERS] {
        if want.get(name) != have.get(name) {
            return Err(format!(
                "{name}: want {:?}, have {:?}",
                want.get(name),
                have.get(name)
            ));
        }
    }
    Ok(())
}

/// Wait until the status describes the current generation with all three conditions and no Degraded.
async fn wait_for_status(api: &Api<MatrixRTCTransport>, name: &str) -> Result<i64, Failure> {
    eventually("a status for the current generation", ACT, || {
        let api = api.clone();
        let name = name.to_owned();
        async move {
            let cr = api.get(&name).await.ok()?;
            let status = cr.status.as_ref()?;
            let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
            let degraded = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "True");
            let current = status.observed_generation == cr.metadata.generation;
            (current
                && !degraded
                && ["Ready", "Progressing", "Degraded"]
                    .iter()
                    .all(|t| types.contains(t)))
            .then_some(status.observed_generation.unwrap_or_default())
        }
    })
    .await
}

fn template_fingerprint(deployment: &Deployment) -> Value {
    let template = deployment.spec.as_ref().map(|s| s.template.clone());
    json!({
        "hash": template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.annotations.as_ref()).and_then(|a| a.get(HASH_ANNOTATION)),
        "spec": template.and_then(|t| t.spec),
    })
}

/// Edit the spec; the affected pod template must change.
async fn roll(
    client: &Client,
    namespace: &str,
    api: &Api<MatrixRTCTransport>,
    live: &MatrixRTCTransport,
) -> Result<(), Failure> {
    let name = live.name_any();
    let (deployment, patch) = if matches!(
        live.spec.livekit,
        matrixrtc_operator::api::LiveKitSpec::Managed(_)
    ) {
        // A LiveKit setting the operator does not own: only the ConfigMap (hence the hash) changes.
        (
            names::livekit(&name),
            json!({"spec": {"livekit": {"managed": {"config": {"limit": {"num_tracks": 321}}}}}}),
        )
    } else {
        (
            names::auth(&name),
            json!({"spec": {"homeservers": {"fullAccess": ["e2e.example.org"]}}}),
        )
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let before = template_fingerprint(
        &deployments
            .get(&deployment)
            .await
            .map_err(|e| e.to_string())?,
    );
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("editing {name}: {e}"))?;
    eventually(&format!("Deployment {deployment} to roll"), ACT, || {
        let deployments = deployments.clone();
        let deployment = deployment.clone();
        let before = before.clone();
        async move {
            let now = template_fingerprint(&deployments.get(&deployment).await.ok()?);
            (now != before).then_some(())
        }
    })
    .await
}

/// Delete a child the operator owns (the keys Secret, present in every mode); it must come back.
async fn recreate(
    client: &Client,
    namespace: &str,
    expected: &build::Children,
) -> Result<(), Failure> {
    let child = expected
        .iter()
        .find(|c| matches!(c, Child::Secret(_)) && c.name().ends_with("-keys"))
        .or_else(|| expected.iter().next())
        .ok_or("no child to delete")?;
    let api = dynamic_api(client, namespace, child);
    let old = api.get(child.name()).await.map_err(|e| e.to_string())?;
    api.delete(child.name(), &DeleteParams::default())
        .await
        .map_err(|e| format!("deleting {}: {e}", child.name()))?;
    eventually(
        &format!("{} {} to be recreated", child.kind(), child.name()),
        ACT,
        || {
            let api = api.clone();
            let name = child.name().to_owned();
            let old_uid = old.uid();
            async move {
                let new = api.get_opt(&name).await.ok()??;
                (new.uid() != old_uid).then_some(())
            }
        },
    )
    .await
}

/// Once settled, nothing the operator owns (nor the CR) is written for [`QUIET`].
///
/// "Settled" first: the controller-manager writes the Deployments' status (and a kubelet would make pods
/// ready), and the operator then rightly updates the CR's status; so wait (bounded) until two snapshots 3 s
/// apart agree. A hot loop never settles and fails here too; a retry with back-off (5 s first) falls in
/// the quiet window.
async fn steady(
    client: &Client,
    namespace: &str,
    expected: &build::Children,
    api: &Api<MatrixRTCTransport>,
    name: &str,
) -> Result<(), Failure> {
    wait_for_status(api, name).await?;
    let snapshot = || async {
        let mut versions = BTreeMap::new();
        for child in expected.iter() {
            let object = dynamic_api(client, namespace, child)
                .get(child.name())
                .await
                .map_err(|e| e.to_string())?;
            versions.insert(
                format!("{} {}", child.kind(), child.name()),
                object.resource_version(),
            );
        }
        let cr = api.get(name).await.map_err(|e| e.to_string())?;
        versions.insert(format!("MatrixRTCTransport {name}"), cr.resource_version());
        Ok::<_, Failure>(versions)
    };
    let moved = |a: &BTreeMap<String, Option<String>>,
                 b: &BTreeMap<String, Option<String>>|
     -> Vec<String> {
        a.keys()
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect()
    };

    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut previous = snapshot().await?;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let current = snapshot().await?;
        let changed = moved(&previous, &current);
        if changed.is_empty() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "never settled within 120 s; still changing: {changed:?}"
            ));
        }
        previous = current;
    }

    let before = snapshot().await?;
    tokio::time::sleep(QUIET).await;
    let changed = moved(&before, &snapshot().await?);
    if changed.is_empty() {
        Ok(())
    } else {
        Err(format!("written during a steady state: {changed:?}"))
    }
}

/// Delete the CR; the garbage collector (kube-controller-manager) deletes the children it owned.
async fn delete(
    client: &Client,
    namespace: &str,
    api: &Api<MatrixRTCTransport>,
    name: &str,
    expected: &build::Children,
) -> Result<(), Failure> {
    api.delete(name, &DeleteParams::background())
        .await
        .map_err(|e| format!("deleting {name}: {e}"))?;
    eventually("children to be garbage-collected", ACT, || async {
        for child in expected.iter() {
            if dynamic_api(client, namespace, child)
                .get_opt(child.name())
                .await
                .ok()?
                .is_some()
            {
                return None;
            }
        }
        Some(())
    })
    .await
}
