//! What an admin pastes into the homeserver side so clients find the transport (MSC4143): the
//! `.well-known/matrix/client` entry and the Synapse settings (`matrix_rtc.transports` and the two
//! switches calls need). The controller copies both into the status.

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

/// How long Synapse may hold a delayed event; what Element's ESS chart sets.
pub const MAX_EVENT_DELAY_DURATION: &str = "24h";

/// The lines to merge into Synapse's `homeserver.yaml` (checked against Synapse 1.163): the transport
/// list, the MSC4143 switch that makes Synapse serve it, and the delayed-event limit without which
/// Synapse refuses the MSC4140 leave events that delegated leave relies on.
pub fn synapse_config_yaml(v: &Validated) -> String {
    // Built by hand to keep the comments: the shape is fixed and the only variable is a DNS name
    // validated to need no quoting, so no serialiser error path is needed.
    format!(
        "# MSC4143: Synapse serves matrix_rtc.transports to clients only with this switch on.\n\
         experimental_features:\n  msc4143_enabled: true\n\
         # The transport: where clients get LiveKit tokens (MSC4195).\n\
         matrix_rtc:\n  transports:\n    - type: livekit\n      livekit_service_url: {}\n\
         # MSC4140 delayed events: refused without this limit; Element Call's leave events (and delegated leave) need them.\n\
         max_event_delay_duration: {MAX_EVENT_DELAY_DURATION}\n",
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
    fn synapse_yaml_parses_to_the_three_settings() {
        let parsed: serde_json::Value =
            serde_yaml::from_str(&synapse_config_yaml(&external())).expect("YAML");
        assert_eq!(
            parsed,
            json!({
                "experimental_features": {"msc4143_enabled": true},
                "matrix_rtc": {"transports": [{"type": "livekit", "livekit_service_url": "https://rtc.example.com"}]},
                "max_event_delay_duration": "24h",
            })
        );
    }

    #[test]
    fn every_setting_says_why_it_is_there() {
        let yaml = synapse_config_yaml(&validated(""));
        let lines: Vec<&str> = yaml.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let top_level = !line.starts_with([' ', '#']);
            if top_level {
                assert!(
                    i > 0 && lines[i - 1].starts_with("# "),
                    "no comment above {line:?} in:\n{yaml}"
                );
            }
        }
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("# ")).count(),
            3,
            "{yaml}"
        );
    }
}
