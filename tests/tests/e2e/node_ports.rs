//! NodePorts are allocated cluster-wide by the API server: two transports in two namespaces asking for the
//! same NodePort cannot both have it. The second must be told so in its status (a `Degraded` condition) and
//! an Event naming the port, be retried with back-off rather than take the operator down, and leave the first
//! untouched.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::Api;
use matrixrtc_operator::api::MatrixRTCTransport;
use matrixrtc_operator::build::names;

use crate::cluster::{
    Failure, apply_transport, current_condition, eventually, transport, warnings_about,
};
use crate::operator;
use crate::{ACT, on_cluster, ports, wait_for_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_port_taken_in_another_namespace_is_reported_without_a_crash_loop() {
    on_cluster("node port clash", 2, Duration::from_secs(300), clash).await;
}

async fn clash(client: Client, namespaces: Vec<String>) -> Result<(), Failure> {
    let [first, second] = namespaces.as_slice() else {
        return Err("two namespaces expected".into());
    };
    let mut operator = operator::start(&namespaces).await?;
    let (tcp, udp) = ports::NODE_PORT_CLASH;
    let winner: Api<MatrixRTCTransport> = Api::namespaced(client.clone(), first);
    let loser: Api<MatrixRTCTransport> = Api::namespaced(client.clone(), second);

    apply_transport(&client, &transport("rtc", first, ports::NODE_PORT_CLASH)?).await?;
    wait_for_status(&winner, "rtc").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), first);
    let held = node_ports_of(&services, &names::media_node_port("rtc")).await?;
    if !(held.contains(&tcp) && held.contains(&udp)) {
        return Err(format!(
            "the first transport's Service holds {held:?}, not {tcp} and {udp}"
        ));
    }

    apply_transport(&client, &transport("rtc", second, ports::NODE_PORT_CLASH)?).await?;
    let named = |text: &str| text.contains(&tcp.to_string()) || text.contains(&udp.to_string());
    let degraded = eventually("a Degraded condition on the second transport", ACT, || {
        let loser = loser.clone();
        async move {
            let cr = loser.get("rtc").await.ok()?;
            current_condition(&cr, "Degraded")
                .filter(|c| c.status == "True")
                .map(|c| format!("{}: {}", c.reason, c.message))
        }
    })
    .await?;
    eprintln!("  second transport: Degraded {degraded}");
    let event = eventually("a Warning Event naming the port", ACT, || {
        let client = client.clone();
        async move {
            warnings_about(&client, second, "rtc")
                .await
                .ok()?
                .into_iter()
                .find(|(_, note)| named(note))
        }
    })
    .await?;
    eprintln!("  second transport: Event {event:?}");

    // Past the first retries (back-off starts at 5 s): still running, still reporting, the winner intact.
    tokio::time::sleep(Duration::from_secs(8)).await;
    if !operator.alive() {
        return Err(format!("the operator died; log:\n{}", operator.log_tail()));
    }
    let cr = loser.get("rtc").await.map_err(|e| e.to_string())?;
    if current_condition(&cr, "Degraded").map(|c| c.status.as_str()) != Some("True") {
        return Err(format!(
            "the second transport is no longer Degraded: {:?}",
            cr.status
        ));
    }
    wait_for_status(&winner, "rtc").await?;
    let still = node_ports_of(&services, &names::media_node_port("rtc")).await?;
    if still != held {
        return Err(format!(
            "the first transport's node ports moved from {held:?} to {still:?}"
        ));
    }
    // Fixing the clash (another port) heals the second transport without a restart.
    apply_transport(&client, &transport("rtc", second, (tcp + 10, udp + 10))?).await?;
    wait_for_status(&loser, "rtc").await?;
    operator.terminate().await
}

async fn node_ports_of(services: &Api<Service>, name: &str) -> Result<Vec<i32>, Failure> {
    let service = services
        .get(name)
        .await
        .map_err(|e| format!("Service {name}: {e}"))?;
    Ok(service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| p.node_port)
        .collect())
}
