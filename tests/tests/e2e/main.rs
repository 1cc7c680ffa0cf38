//! End-to-end: the operator binary against a real cluster (Kubernetes >= 1.28).
//!
//! Skipped, with a line on stderr, unless `KUBECONFIG` is set. Needs cluster-admin-like rights for the test
//! itself (CRDs, namespaces) and a built operator (`cargo build -p matrixrtc-operator`, or
//! `MATRIXRTC_OPERATOR_BIN`). No image has to run: the checks are about the objects the operator writes,
//! which exist whether or not the LiveKit and auth pods ever start.
//!
//! In a throwaway namespace: install `crds/` (server-side apply), start `matrixrtc-operator run
//! --watch-namespace=<ns>`, wait for `/readyz`, then for each example in `examples/`, one at a time (node
//! ports are cluster-wide, so examples could collide if applied together):
//! 1. apply it (with a credentials Secret if it names one);
//! 2. wait for every child that validate + build (the operator's own pure pipeline) says should exist, and
//!    check labels, the controller owner reference, the auth service's environment and the status;
//! 3. edit the spec and see the pod template change (the config hash annotation, or the environment);
//! 4. delete a child and see it recreated;
//! 5. check that no child's resourceVersion moves for 15 s (no write in a steady state);
//! 6. delete the CR and see the children garbage-collected (or, where no garbage collector runs, at least
//!    owned), then clean up what is left.
//!
//! Finally SIGTERM the operator (it must exit cleanly) and delete the namespace. Every wait is bounded.

mod cluster;
mod operator;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use matrixrtc_auth::contract::env;
use matrixrtc_operator::api::MatrixRTCTransport;
use matrixrtc_operator::apply::ChildKind;
use matrixrtc_operator::build::credentials::ApiCredentials;
use matrixrtc_operator::build::secret_refs::{self, SecretVersion, SecretVersions, Use};
use matrixrtc_operator::build::{self, BuildInput, Child, HASH_ANNOTATION, labels, names};
use matrixrtc_operator::defaults::OperatorDefaults;
use matrixrtc_operator::validate;
use serde_json::{Value, json};

use cluster::{Failure, TEST_MANAGER, TestNamespace, eventually};
use operator::OperatorProcess;

/// Upper bound of the whole test.
const TOTAL: Duration = Duration::from_secs(25 * 60);
/// Upper bound of one wait for the operator to act.
const ACT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reconciles_every_example_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        // Straight to the process's stderr: `eprintln!` would be swallowed by the test harness's capture.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: KUBECONFIG not set; the end-to-end tests need a real Kubernetes (>= 1.28) cluster \
             and a built operator (cargo build -p matrixrtc-operator)"
        );
        return;
    }
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let namespace = TestNamespace::create(&client)
        .await
        .expect("test namespace");
    eprintln!("e2e namespace: {}", namespace.name);
    let outcome = tokio::time::timeout(TOTAL, scenario(&client, &namespace.name)).await;
    let cleanup = namespace.delete().await;
    match outcome {
        Err(_) => panic!("the end-to-end test exceeded {} s", TOTAL.as_secs()),
        Ok(Err(failure)) => panic!("{failure}"),
        Ok(Ok(())) => {}
    }
    cleanup.expect("namespace cleaned up");
}

async fn scenario(client: &Client, namespace: &str) -> Result<(), Failure> {
    let root = operator::workspace_root();
    let crds = cluster::install_crds(client, &root.join("crds")).await?;
    eprintln!("installed CRDs: {crds:?}");
    let mut process = OperatorProcess::start(namespace).await?;
    let (code, metrics) = operator::http_get(process.metrics, "/metrics").await?;
    if code != 200 || !metrics.contains("matrixrtc_operator_reconciles_total") {
        return Err(format!("/metrics answered {code}: {metrics:.200}"));
    }

    let examples = cluster::yaml_files(&root.join("examples"))?;
    if examples.is_empty() {
        return Err("no example in examples/".into());
    }
    for file in examples {
        eprintln!("example {}", file.display());
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let result = example(client, namespace, &text).await;
        if let Err(failure) = result {
            return Err(format!(
                "{}: {failure}\n--- operator log (tail) ---\n{}",
                file.display(),
                process.log_tail()
            ));
        }
        if !process.alive() {
            return Err(format!("the operator died; log:\n{}", process.log_tail()));
        }
    }
    process.terminate().await
}

/// One example through the whole life cycle.
async fn example(client: &Client, namespace: &str, text: &str) -> Result<(), Failure> {
    let mut transport = None;
    for mut document in cluster::documents(text)? {
        document["metadata"]["namespace"] = json!(namespace);
        match document["kind"].as_str() {
            Some("MatrixRTCTransport") => {
                let cr: MatrixRTCTransport =
                    serde_json::from_value(document).map_err(|e| format!("example CR: {e}"))?;
                transport = Some(cr);
            }
            Some("Secret") => {
                let secret: Secret =
                    serde_json::from_value(document).map_err(|e| format!("example Secret: {e}"))?;
                apply(client, namespace, &secret).await?;
            }
            other => return Err(format!("unsupported kind {other:?} in an example")),
        }
    }
    let cr = transport.ok_or("the example has no MatrixRTCTransport")?;
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

    // What the operator should create, by its own pure pipeline.
    let validated =
        validate::validate(&live).map_err(|e| format!("the example is invalid: {e}"))?;
    // Placeholder versions: the expected pod hashes are not compared with the live ones.
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
    let expected = build::build(
        &validated,
        &BuildInput {
            defaults: &OperatorDefaults::default(),
            credentials: &ApiCredentials::placeholder(),
            secrets: &secrets,
        },
    )
    .map_err(|e| e.to_string())?;

    let children = wait_for_children(client, namespace, &expected).await?;
    for (child, object) in expected.iter().zip(&children) {
        check_ownership(child, object, &name, &uid)?;
    }
    check_auth_env(client, namespace, &expected).await?;
    let ready_generation = wait_for_status(&api, &name).await?;
    eprintln!(
        "  {} children, status observed generation {ready_generation}",
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

/// Once settled, nothing the operator owns (nor the CR) is written for 15 s.
///
/// "Settled" first: pods that become ready (or not) change their Deployment's status, and the operator then
/// rightly updates the CR's status; so wait (bounded) until two snapshots 5 s apart agree. A hot loop never
/// settles and fails here too.
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
        tokio::time::sleep(Duration::from_secs(5)).await;
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
    tokio::time::sleep(Duration::from_secs(15)).await;
    let changed = moved(&before, &snapshot().await?);
    if changed.is_empty() {
        Ok(())
    } else {
        Err(format!("written during a steady state: {changed:?}"))
    }
}

/// Delete the CR; the children go with it (garbage collection), or at least are owned so they would.
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
    let collected = eventually("children to be garbage-collected", ACT, || async {
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
    .await;
    if collected.is_err() {
        // Ownership was checked above; an API server without a controller manager collects nothing.
        eprintln!(
            "NOTE: children of {name} were not garbage-collected within {} s; deleting them",
            ACT.as_secs()
        );
        for child in expected.iter() {
            let _ = dynamic_api(client, namespace, child)
                .delete(child.name(), &DeleteParams::background())
                .await;
        }
    }
    Ok(())
}
