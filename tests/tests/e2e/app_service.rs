//! Application-service mode on a real API server: the operator generates the tokens once into
//! `<name>-appservice`, renders the registration there and into the Secret the transport names for Synapse,
//! mounts it into the authorisation service with its variables, and says in the status what Synapse needs.
//! The tokens stay the same across reconciles and an operator restart, and a Secret the operator did not
//! create is refused (status and Event) and left alone.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use matrixrtc_operator::api::MatrixRTCTransport;
use matrixrtc_operator::build::appservice::{self, AppServiceTokens};
use matrixrtc_operator::build::names;
use serde_json::{Value, json};

use crate::cluster::{
    Failure, TEST_MANAGER, apply_transport, current_condition, eventually, transport,
    warnings_about,
};
use crate::operator;
use crate::{ACT, on_cluster, ports, wait_for_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_service_tokens_are_generated_once_and_the_registration_reaches_synapses_secret() {
    on_cluster("app service", 1, Duration::from_secs(300), app_service).await;
}

fn with_app_service(namespace: &str, app_service: Value) -> Result<MatrixRTCTransport, Failure> {
    let mut cr = transport("rtc", namespace, ports::APP_SERVICE)?;
    cr.spec.auth.app_service =
        Some(serde_json::from_value(app_service).map_err(|e| format!("appService: {e}"))?);
    Ok(cr)
}

async fn tokens(secrets: &Api<Secret>) -> Result<AppServiceTokens, Failure> {
    let secret = secrets
        .get(&names::app_service("rtc"))
        .await
        .map_err(|e| format!("reading rtc-appservice: {e}"))?;
    AppServiceTokens::from_secret(&secret).map_err(|e| format!("rtc-appservice: {e}"))
}

fn text(secret: &Secret, key: &str) -> Result<String, Failure> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("{key} missing"))?;
    String::from_utf8(bytes.0.clone()).map_err(|e| e.to_string())
}

async fn app_service(client: Client, namespaces: Vec<String>) -> Result<(), Failure> {
    let namespace = &namespaces[0];
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let transports: Api<MatrixRTCTransport> = Api::namespaced(client.clone(), namespace);
    // A Secret of someone else's, which the transport names first.
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "synapse-config", "namespace": namespace},
        "stringData": {"homeserver.yaml": "server_name: example.com"},
    }))
    .map_err(|e| e.to_string())?;
    secrets
        .patch(
            "synapse-config",
            &PatchParams::apply(TEST_MANAGER),
            &Patch::Apply(&foreign),
        )
        .await
        .map_err(|e| format!("creating the foreign Secret: {e}"))?;
    let before = secrets
        .get("synapse-config")
        .await
        .map_err(|e| e.to_string())?;

    let operator = operator::start(&namespaces).await?;
    apply_transport(
        &client,
        &with_app_service(
            namespace,
            json!({"enabled": true, "registrationSecret": {"name": "synapse-config"}}),
        )?,
    )
    .await?;
    let refused = eventually("RegistrationSecretNotOwned", ACT, || {
        let transports = transports.clone();
        async move {
            let cr = transports.get("rtc").await.ok()?;
            current_condition(&cr, "Degraded")
                .filter(|c| c.status == "True" && c.reason == "RegistrationSecretNotOwned")
                .map(|c| c.message.clone())
        }
    })
    .await?;
    if !refused.contains("synapse-config") {
        return Err(format!("the message does not name the Secret: {refused}"));
    }
    eventually("a Warning Event about it", ACT, || {
        let client = client.clone();
        async move {
            let warnings = warnings_about(&client, namespace, "rtc").await.ok()?;
            warnings
                .iter()
                .any(|(reason, _)| reason == "RegistrationSecretNotOwned")
                .then_some(())
        }
    })
    .await?;
    let after = secrets
        .get("synapse-config")
        .await
        .map_err(|e| e.to_string())?;
    if after.metadata.resource_version != before.metadata.resource_version
        || secrets
            .get_opt(&names::app_service("rtc"))
            .await
            .map_err(|e| e.to_string())?
            .is_some()
    {
        return Err("something was written although the transport was refused".into());
    }

    // Named a Secret of its own: everything is applied.
    apply_transport(
        &client,
        &with_app_service(
            namespace,
            json!({"enabled": true, "membershipCheckIntervalSeconds": 5, "registrationSecret": {"name": "synapse-as"}}),
        )?,
    )
    .await?;
    wait_for_status(&transports, "rtc").await?;
    let first = tokens(&secrets).await?;
    let own = secrets
        .get(&names::app_service("rtc"))
        .await
        .map_err(|e| e.to_string())?;
    let registration = text(&own, appservice::REGISTRATION_KEY)?;
    let copy = secrets.get("synapse-as").await.map_err(|e| e.to_string())?;
    if text(&copy, "matrixrtc-auth.yaml")? != registration {
        return Err("the copy for Synapse differs from the registration".into());
    }
    let parsed: Value = serde_yaml::from_str(&registration).map_err(|e| e.to_string())?;
    let expected_url = format!("http://rtc-auth.{namespace}.svc:8080");
    if parsed["as_token"] != first.as_token()
        || parsed["io.element.msc4512.proxy_url"] != expected_url.as_str()
        || parsed["url"] != Value::Null
        || parsed["namespaces"]["users"][0]["regex"] != "@.*:example\\.com$"
    {
        return Err(format!("unexpected registration:\n{registration}"));
    }
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(&names::auth("rtc"))
        .await
        .map_err(|e| e.to_string())?;
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .ok_or("no pod spec")?;
    let env: BTreeMap<String, Option<String>> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    let file = env
        .get(appservice::env::LIVEKIT_AS_REGISTRATION_FILE)
        .cloned()
        .flatten()
        .ok_or("no LIVEKIT_AS_REGISTRATION_FILE")?;
    if env.get(appservice::env::LIVEKIT_HS_SERVER_NAME) != Some(&Some("example.com".into()))
        || env.get(appservice::env::LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS)
            != Some(&Some("5".into()))
    {
        return Err(format!("AS variables missing: {env:?}"));
    }
    let mounted =
        pod.containers[0].volume_mounts.iter().flatten().any(|m| {
            file.starts_with(&format!("{}/", m.mount_path)) && m.name == appservice::VOLUME
        });
    if !mounted {
        return Err(format!("{file} is not on a mounted volume"));
    }
    let status = transports
        .get("rtc")
        .await
        .map_err(|e| e.to_string())?
        .status
        .ok_or("no status")?;
    let app_status = status.app_service.ok_or("no status.appService")?;
    let synapse = status.synapse_config.unwrap_or_default();
    if app_status.registration_secret != "synapse-as"
        || !synapse.contains("msc4512_enabled: true")
        || !synapse.contains(&app_status.synapse_path)
    {
        return Err(format!("status: {app_status:?}\n{synapse}"));
    }
    eprintln!("  registration in rtc-appservice and synapse-as; status names synapse-as");

    // Another reconcile (a new generation) and a restarted operator keep the tokens.
    apply_transport(
        &client,
        &with_app_service(
            namespace,
            json!({"enabled": true, "membershipCheckIntervalSeconds": 7, "registrationSecret": {"name": "synapse-as"}}),
        )?,
    )
    .await?;
    wait_for_status(&transports, "rtc").await?;
    eventually("the new interval", ACT, || {
        let client = client.clone();
        async move {
            let deployment = Api::<Deployment>::namespaced(client, namespace)
                .get(&names::auth("rtc"))
                .await
                .ok()?;
            serde_json::to_string(&deployment.spec?)
                .ok()?
                .contains("\"value\":\"7\"")
                .then_some(())
        }
    })
    .await?;
    if tokens(&secrets).await? != first {
        return Err("the tokens changed on a reconcile".into());
    }
    operator.terminate().await?;
    let mut operator = operator::start(&namespaces).await?;
    wait_for_status(&transports, "rtc").await?;
    // A resync after the restart (the start reconciles every transport) has had its chance.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if tokens(&secrets).await? != first {
        return Err("the tokens changed when the operator restarted".into());
    }
    let still = secrets
        .get("synapse-config")
        .await
        .map_err(|e| e.to_string())?;
    if still.metadata.resource_version != before.metadata.resource_version {
        return Err("the foreign Secret was written".into());
    }
    eprintln!("  tokens stable across two reconciles and a restart");
    if !operator.alive() {
        return Err(format!("the operator died; log:\n{}", operator.log_tail()));
    }
    operator.terminate().await
}
