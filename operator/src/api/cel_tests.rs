//! The CRD's CEL rules, evaluated client-side with kube's `cel` feature (kube-cel), so a typo in a
//! rule or a rule that does not say what we mean fails here instead of at `kubectl apply`. Each
//! refused case also runs through `validate`, which must reject what CEL rejects. The cases are
//! [`matrixrtc_test_support::cel_cases`], which the end-to-end tests also send to a real API server.

use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use matrixrtc_test_support::cel_cases;
use serde_json::{Value, json};

use super::MatrixRTCTransport;
use crate::validate::validate;

fn schema() -> Value {
    let crd = MatrixRTCTransport::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(schema).expect("schema JSON")
}

/// The shared cases' transport, with the uid `validate` requires.
fn with_spec(patch: &Value) -> Value {
    let mut cr = cel_cases::transport("rtc", patch);
    cr["metadata"]["uid"] = json!("u-1");
    cr
}

/// CEL failure messages for `cr` (empty when it passes).
fn cel_messages(cr: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), cr, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn validate_rejects(cr: &Value) -> bool {
    let typed: MatrixRTCTransport = serde_json::from_value(cr.clone()).expect("deserialises");
    validate(&typed).is_err()
}

fn compilation_errors(schema: &CompiledSchema, path: &str, out: &mut Vec<String>) {
    for error in schema.compilation_errors() {
        out.push(format!("{path}: {error:?}"));
    }
    for (name, child) in &schema.properties {
        compilation_errors(child, &format!("{path}.{name}"), out);
    }
    let nested = schema
        .items
        .iter()
        .chain(schema.additional_properties.iter())
        .map(|b| &**b)
        .chain(&schema.one_of)
        .chain(&schema.any_of)
        .chain(&schema.all_of);
    for child in nested {
        compilation_errors(child, path, out);
    }
}

#[test]
fn every_rule_compiles() {
    let mut errors = Vec::new();
    compilation_errors(&compile_schema(&schema()), "", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
    let rules = serde_json::to_string(&schema())
        .expect("json")
        .matches("\"rule\"")
        .count();
    assert_eq!(
        rules,
        cel_cases::RULES,
        "a rule was added or lost: update test-support/src/cel_cases.rs"
    );
}

#[test]
fn a_minimal_transport_passes() {
    assert_eq!(cel_messages(&with_spec(&json!({}))), Vec::<String>::new());
}

#[test]
fn each_rule_rejects_what_it_should_and_validate_agrees() {
    for (patch, expected) in cel_cases::refused() {
        let cr = with_spec(&patch);
        let messages = cel_messages(&cr);
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "{patch}: expected {expected:?}, CEL said {messages:?}"
        );
        assert!(
            validate_rejects(&cr),
            "{patch}: validate accepted what CEL rejects"
        );
    }
}

#[test]
fn the_allowed_counterparts_pass() {
    for patch in cel_cases::allowed() {
        let shown = patch.to_string();
        assert_eq!(
            cel_messages(&with_spec(&patch)),
            Vec::<String>::new(),
            "{shown:.200}"
        );
    }
}

#[test]
fn every_example_passes_cel() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let cr: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("YAML");
        assert_eq!(
            cel_messages(&cr),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 6, "expected the examples, found {seen}");
}
