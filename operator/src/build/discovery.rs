//! What an admin pastes into the homeserver side so clients find the transport (MSC4143): the
//! `.well-known/matrix/client` entry and Synapse's `matrix_rtc.transports`. The controller copies
//! both into the status.

use serde_json::json;

use crate::validate::Validated;

/// `https://<host>`: the `livekit_service_url` clients call for tokens.
pub fn livekit_service_url(v: &Validated) -> String {
    format!("https://{}", v.host())
}

fn transport(v: &Validated) -> serde_json::Value {
    json!({"type": "livekit", "livekit_service_url": livekit_service_url(v)})
}

/// JSON to merge into `/.well-known/matrix/client`.
pub fn well_known_client_json(v: &Validated) -> String {
    json!({"org.matrix.msc4143.rtc_foci": [transport(v)]}).to_string()
}

/// YAML for Synapse's `homeserver.yaml` (`matrix_rtc.transports`).
pub fn synapse_config_yaml(v: &Validated) -> String {
    // Built by hand: the shape is fixed and the only variable is a DNS name validated to need no
    // quoting, so no serialiser error path is needed.
    format!(
        "matrix_rtc:\n  transports:\n    - type: livekit\n      livekit_service_url: {}\n",
        livekit_service_url(v)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::{external, validated};

    #[test]
    fn well_known_is_the_exact_msc4143_json() {
        assert_eq!(
            well_known_client_json(&validated("")),
            r#"{"org.matrix.msc4143.rtc_foci":[{"livekit_service_url":"https://rtc.example.com","type":"livekit"}]}"#
        );
    }

    #[test]
    fn synapse_yaml_parses_to_the_transport_list() {
        let parsed: serde_json::Value =
            serde_yaml::from_str(&synapse_config_yaml(&external())).expect("YAML");
        assert_eq!(
            parsed,
            json!({"matrix_rtc": {"transports": [{"type": "livekit", "livekit_service_url": "https://rtc.example.com"}]}})
        );
    }
}
