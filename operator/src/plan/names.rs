//! Names of the children, derived from the resource's name. One place, so the controller (status,
//! pruning) and the builders agree.

/// Ports per media Service when a UDP range is sharded (as ESS does, to stay far from object size
/// and load-balancer port limits).
pub const PORTS_PER_SERVICE: u16 = 250;

/// Longest suffix appended to the resource name: `-livekit-udp-range-19` (5000 ports / 250 per
/// Service = 20 shards).
pub const LONGEST_SUFFIX_LEN: usize = "-livekit-udp-range-19".len();

/// LiveKit Deployment, ConfigMap, ServiceAccount and signalling Service.
pub fn livekit(cr: &str) -> String {
    format!("{cr}-livekit")
}

/// Authorisation service Deployment, ServiceAccount and Service.
pub fn auth(cr: &str) -> String {
    format!("{cr}-auth")
}

/// Operator-owned Secret with the LiveKit key file and the key and secret for the auth service.
pub fn keys(cr: &str) -> String {
    format!("{cr}-keys")
}

/// Secret holding generated credentials (only when `spec.credentials` is unset).
pub fn credentials(cr: &str) -> String {
    format!("{cr}-credentials")
}

/// Secret with the generated application-service tokens and the registration (AS mode only).
pub fn app_service(cr: &str) -> String {
    format!("{cr}-appservice")
}

/// Media Service for the single ports exposed as NodePort.
pub fn media_node_port(cr: &str) -> String {
    format!("{cr}-livekit-nodeport")
}

/// Media Service for the single ports exposed as LoadBalancer (one Service, one IP).
pub fn media_load_balancer(cr: &str) -> String {
    format!("{cr}-livekit-lb")
}

/// The `index`-th shard of the UDP range.
pub fn media_udp_range(cr: &str, index: usize) -> String {
    format!("{cr}-livekit-udp-range-{index}")
}

/// The cert-manager Certificate for the TURN domain, and the Secret it is issued into.
pub fn turn_tls(cr: &str) -> String {
    format!("{cr}-turn-tls")
}

/// The Ingress.
pub fn ingress(cr: &str) -> String {
    cr.to_owned()
}
