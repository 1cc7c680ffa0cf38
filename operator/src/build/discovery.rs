//! What an admin pastes into the homeserver side so clients find the transport (MSC4143): the
//! `.well-known/matrix/client` entry and the Synapse settings Element Call needs (the transport, the
//! MSC switches, delayed events and rate limits for call signalling). The controller copies both
//! into the status; `render --status` prints them offline.

use serde_json::json;

use super::appservice;
use crate::api::AppServiceStatus;
use crate::plan::Validated;

/// `https://<host>`: the `livekit_service_url` clients call for tokens.
pub fn livekit_service_url(v: &Validated) -> String {
    format!("https://{}", v.host())
}

fn transport(v: &Validated) -> serde_json::Value {
    json!({"type": "livekit", "livekit_service_url": livekit_service_url(v)})
}

/// `status.appService` (AS mode only).
pub fn app_service_status(v: &Validated) -> Option<AppServiceStatus> {
    v.auth()
        .app_service
        .as_ref()
        .map(|plan| appservice::status(v, plan))
}

/// JSON to merge into `/.well-known/matrix/client`.
pub fn well_known_client_json(v: &Validated) -> String {
    json!({"org.matrix.msc4143.rtc_foci": [transport(v)]}).to_string()
}

/// How long Synapse may hold a delayed event (MSC4140). Source of this and of the rate limits below:
/// Element Call's `docs/self-hosting.md` and ESS's `synapse-01-shared-underrides.yaml.tpl`
/// (spec/kubernetes-field.md section 1.8), which agree.
pub const MAX_EVENT_DELAY_DURATION: &str = "24h";

/// `rc_message` as those sources set it: Element Call's encryption key sharing sends bursts of
/// to-device and room events, which Synapse's default (0.2/s, burst 10) throttles.
pub const RC_MESSAGE: (f64, u32) = (0.5, 30);

/// `rc_delayed_event_mgmt` as those sources set it: a call member restarts its delayed leave event
/// about every 5 s (0.2/s), and Synapse's default burst of 5 leaves no headroom.
pub const RC_DELAYED_EVENT_MGMT: (f64, u32) = (1.0, 20);

/// The lines to merge into Synapse's `homeserver.yaml` (checked against Synapse 1.163), each with a
/// comment saying why and where the value comes from: the MSC switches Element Call's self-hosting
/// guide requires (MSC4143 makes Synapse serve the transport list, MSC4222 lets clients track room
/// state reliably, MSC3266 lets them knock), the transport, the delayed-event limit without which
/// Synapse refuses the MSC4140 leave events that delegated leave relies on, and the rate limits
/// tuned for call signalling.
pub fn synapse_config_yaml(v: &Validated) -> String {
    // Built by hand to keep the comments: the shape is fixed and the only variable is a DNS name
    // validated to need no quoting, so no serialiser error path is needed.
    let (message_rate, message_burst) = RC_MESSAGE;
    let (delayed_rate, delayed_burst) = RC_DELAYED_EVENT_MGMT;
    let app_service = v.auth().app_service.is_some();
    let (as_flags, as_registration) = if app_service {
        (
            appservice::synapse_experimental_lines(),
            appservice::synapse_registration_lines(),
        )
    } else {
        ("", String::new())
    };
    format!(
        "# Element Call's self-hosting guide and ESS: MSC4143 makes Synapse serve matrix_rtc.transports to clients,\n\
         # MSC4222 (sync state_after) lets clients track call membership reliably, MSC3266 (room summary) lets them knock.\n\
         experimental_features:\n  msc4143_enabled: true\n  msc4222_enabled: true\n  msc3266_enabled: true\n{as_flags}\
         # The transport: where clients get LiveKit tokens (MSC4195).\n\
         matrix_rtc:\n  transports:\n    - type: livekit\n      livekit_service_url: {url}\n\
         # MSC4140 delayed events: refused without this limit; Element Call's leave events (and delegated leave) need them.\n\
         # 24h as in Element Call's self-hosting guide and ESS.\n\
         max_event_delay_duration: {MAX_EVENT_DELAY_DURATION}\n\
         # Element Call's guide and ESS: encryption key sharing is bursty; Synapse's default (0.2/s, burst 10) throttles it.\n\
         rc_message:\n  per_second: {message_rate}\n  burst_count: {message_burst}\n\
         # Element Call's guide and ESS: a call member restarts its delayed leave event every 5 s; Synapse's default burst is 5.\n\
         rc_delayed_event_mgmt:\n  per_second: {delayed_rate}\n  burst_count: {delayed_burst}\n\
         {as_registration}\
         # Not set here: the authorisation service checks OpenID tokens at Synapse's federation (or openid) listener,\n\
         # which must be reachable from the cluster.\n",
        url = livekit_service_url(v)
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
    fn synapse_yaml_parses_to_every_setting_element_call_needs() {
        let parsed: serde_json::Value =
            serde_yaml::from_str(&synapse_config_yaml(&external())).expect("YAML");
        assert_eq!(
            parsed,
            json!({
                "experimental_features": {"msc4143_enabled": true, "msc4222_enabled": true, "msc3266_enabled": true},
                "matrix_rtc": {"transports": [{"type": "livekit", "livekit_service_url": "https://rtc.example.com"}]},
                "max_event_delay_duration": "24h",
                "rc_message": {"per_second": 0.5, "burst_count": 30},
                "rc_delayed_event_mgmt": {"per_second": 1, "burst_count": 20},
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
        let top_level = lines.iter().filter(|l| !l.starts_with([' ', '#'])).count();
        assert_eq!(top_level, 5, "{yaml}");
    }

    #[test]
    fn app_service_mode_adds_its_flags_and_the_registration_each_with_a_reason() {
        let v = validated("auth: {appService: {enabled: true}}");
        let yaml = synapse_config_yaml(&v);
        let parsed: serde_json::Value = serde_yaml::from_str(&yaml).expect("YAML");
        assert_eq!(
            parsed["experimental_features"],
            json!({"msc4143_enabled": true, "msc4222_enabled": true, "msc3266_enabled": true, "msc4502_enabled": true, "msc4512_enabled": true})
        );
        let status = app_service_status(&v).expect("AS status");
        assert_eq!(
            parsed["app_service_config_files"],
            json!([status.synapse_path])
        );
        let lines: Vec<&str> = yaml.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let setting = !line.trim_start().starts_with('#') && !line.starts_with("    ");
            if setting && line.contains("msc45") || line.starts_with("app_service_config_files") {
                assert!(
                    lines[..i]
                        .iter()
                        .rev()
                        .take(3)
                        .any(|l| l.trim_start().starts_with("# AS mode")),
                    "no reason given above {line:?} in:\n{yaml}"
                );
            }
        }
        assert!(app_service_status(&validated("")).is_none());
        assert!(!synapse_config_yaml(&validated("")).contains("msc4512"));
    }
}
