//! Cluster helpers: bounded polling, a throwaway namespace, CRD installation, YAML documents, a minimal
//! transport, its children, Events and conditions.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use matrixrtc_operator::api::MatrixRTCTransport;
use matrixrtc_operator::apply::ChildKind;
use matrixrtc_operator::build::labels;

/// Field manager of everything the tests themselves apply (not the operator's).
pub const TEST_MANAGER: &str = "matrixrtc-e2e";

pub type Failure = String;

/// Poll `probe` every half second until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {}s waiting for {what}",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A namespace named `matrixrtc-e2e-<suffix>`, deleted by [`TestNamespace::delete`].
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client) -> Result<Self, Failure> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "matrixrtc-e2e-{:x}{:x}",
            std::process::id() % 0xfff,
            nanos % 0xfffff
        );
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("matrixrtc.dev/e2e".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|e| format!("creating namespace {name}: {e}"))?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    /// Delete the namespace and wait (bounded) until it is gone.
    pub async fn delete(self) -> Result<(), Failure> {
        let api = Api::<Namespace>::all(self.client.clone());
        match api.delete(&self.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(format!("deleting namespace {}: {e}", self.name)),
        }
        eventually(
            &format!("namespace {} to be deleted", self.name),
            Duration::from_secs(120),
            || {
                let api = api.clone();
                let name = self.name.clone();
                async move { matches!(api.get_opt(&name).await, Ok(None)).then_some(()) }
            },
        )
        .await
    }
}

/// Every YAML document in `text` (skipping empty ones).
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, Failure> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value =
            serde_json::Value::deserialize(document).map_err(|e| format!("bad YAML: {e}"))?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// The `.yaml`/`.yml` files of `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, Failure> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Server-side apply every CRD found in `dir` and wait until each is established.
pub async fn install_crds(client: &Client, dir: &Path) -> Result<Vec<String>, Failure> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut names = Vec::new();
    for file in yaml_files(dir)? {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        for document in documents(&text)? {
            let crd: CustomResourceDefinition = serde_json::from_value(document)
                .map_err(|e| format!("{} is not a CRD: {e}", file.display()))?;
            let name = crd.metadata.name.clone().ok_or("a CRD without a name")?;
            api.patch(
                &name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .map_err(|e| format!("installing CRD {name}: {e}"))?;
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(format!("no CRD found in {}", dir.display()));
    }
    for name in &names {
        eventually(
            &format!("CRD {name} to be established"),
            Duration::from_secs(60),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get_opt(&name).await.ok()??;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            },
        )
        .await?;
    }
    Ok(names)
}

/// A minimal managed transport with its media on the NodePorts `ports` (TCP, UDP mux).
pub fn transport(
    name: &str,
    namespace: &str,
    ports: (i32, i32),
) -> Result<MatrixRTCTransport, Failure> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "matrixrtc.dev/v1alpha1",
        "kind": "MatrixRTCTransport",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "serverName": "example.com",
            "host": "rtc.example.com",
            "livekit": {"managed": {"media": {
                "tcp": {"port": ports.0},
                "udp": {"mux": {"port": ports.1}},
            }}},
        },
    }))
    .map_err(|e| format!("test transport: {e}"))
}

/// Server-side apply `cr` as the test's field manager; returns the stored object.
pub async fn apply_transport(
    client: &Client,
    cr: &MatrixRTCTransport,
) -> Result<MatrixRTCTransport, Failure> {
    let namespace = cr.metadata.namespace.as_deref().ok_or("no namespace")?;
    let name = cr.metadata.name.as_deref().ok_or("no name")?;
    Api::<MatrixRTCTransport>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(cr),
        )
        .await
        .map_err(|e| format!("applying {namespace}/{name}: {e}"))
}

/// Every child of transport `name` in `namespace`, found by the operator's labels: "Kind name" -> object.
pub async fn labelled_children(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, DynamicObject>, Failure> {
    let selector = format!(
        "{}={},{}={name}",
        labels::MANAGED_BY,
        labels::MANAGER,
        labels::INSTANCE
    );
    let mut found = BTreeMap::new();
    for kind in ChildKind::ALL {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
        let list = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            // A kind of another project whose CRD is not installed (another test may remove the fixture
            // CRDs): nothing of it exists.
            Err(kube::Error::Api(status)) if status.code == 404 && kind.is_optional() => continue,
            Err(e) => return Err(format!("listing {kind}s: {e}")),
        };
        for object in list.items {
            found.insert(format!("{kind} {}", object.name_any()), object);
        }
    }
    Ok(found)
}

/// The Warning Events (events.k8s.io) about the transport `name` in `namespace`: (reason, note).
pub async fn warnings_about(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<(String, String)>, Failure> {
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Events: {e}"))?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("MatrixRTCTransport") && r.name.as_deref() == Some(name)
            })
        })
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

/// The condition `type_` of the transport, if its status describes the current generation.
pub fn current_condition<'a>(
    cr: &'a MatrixRTCTransport,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let status = cr.status.as_ref()?;
    if status.observed_generation != cr.metadata.generation {
        return None;
    }
    status.conditions.iter().find(|c| c.type_ == type_)
}
