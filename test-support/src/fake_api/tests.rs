//! Self-tests of the fake through a real `kube::Client`: apply semantics, label selectors, the uid
//! precondition, and a watch over loopback HTTP.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Map, json};

use super::FakeApi;

fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<Map<_, _>>(),
        },
        "data": data.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<Map<_, _>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn apply_creates_then_identical_apply_keeps_resource_version() {
    let fake = FakeApi::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
    let params = PatchParams::apply("test").force();
    let desired = config_map("a", &[], &[("k", "v")]);
    let first = api
        .patch("a", &params, &Patch::Apply(&desired))
        .await
        .unwrap();
    let second = api
        .patch("a", &params, &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version,
        second.metadata.resource_version
    );
    let changed = config_map("a", &[], &[("k", "w")]);
    let third = api
        .patch("a", &params, &Patch::Apply(&changed))
        .await
        .unwrap();
    assert_ne!(
        second.metadata.resource_version,
        third.metadata.resource_version
    );
    assert_eq!(third.data.unwrap()["k"], "w");
}

#[tokio::test]
async fn apply_drops_fields_the_previous_apply_set() {
    let fake = FakeApi::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
    let params = PatchParams::apply("test").force();
    api.patch(
        "a",
        &params,
        &Patch::Apply(&config_map("a", &[], &[("x", "1"), ("y", "2")])),
    )
    .await
    .unwrap();
    let after = api
        .patch(
            "a",
            &params,
            &Patch::Apply(&config_map("a", &[], &[("x", "1")])),
        )
        .await
        .unwrap();
    assert_eq!(after.data.unwrap().keys().collect::<Vec<_>>(), vec!["x"]);
}

#[tokio::test]
async fn list_filters_by_label_selector_and_records_requests() {
    let fake = FakeApi::new();
    fake.insert(&config_map("mine", &[("app", "x"), ("tier", "a")], &[]));
    fake.insert(&config_map("other", &[("app", "y")], &[]));
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=x"))
                .await
                .unwrap()
        ),
        vec!["mine"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app!=x"))
                .await
                .unwrap()
        ),
        vec!["other"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier"))
                .await
                .unwrap()
        ),
        vec!["mine"]
    );
    assert_eq!(
        names(api.list(&ListParams::default()).await.unwrap()).len(),
        2
    );
    assert!(fake.writes().is_empty());
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn delete_honours_uid_precondition_and_404s_when_absent() {
    let fake = FakeApi::new();
    fake.insert(&config_map("a", &[], &[]));
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
    let wrong = DeleteParams::default().preconditions(kube::api::Preconditions {
        uid: Some("not-it".into()),
        resource_version: None,
    });
    assert!(api.delete("a", &wrong).await.is_err());
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let missing = api.get("a").await.unwrap_err();
    assert!(matches!(missing, kube::Error::Api(status) if status.is_not_found()));
}

#[tokio::test]
async fn serves_over_loopback_http_including_watches() {
    use futures::StreamExt as _;
    let fake = FakeApi::new();
    let (address, server) = fake.listen().await.unwrap();
    let config = kube::Config::new(format!("http://{address}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "ns");
    let watch = api
        .watch(&kube::api::WatchParams::default(), "0")
        .await
        .unwrap();
    tokio::pin!(watch);
    fake.insert(&config_map("seen", &[], &[]));
    let event = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    assert!(
        matches!(event, kube::api::WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("seen"))
    );
    server.abort();
}
