//! `matrixrtc-operator render -f transport.yaml`: every object the operator would apply for a
//! resource, offline, as a YAML stream in apply order.
//!
//! Without a cluster there is no credentials Secret to read, so fixed placeholder credentials are
//! used (the output says so), the Secrets the pods reference get a placeholder version (so the pod
//! hash annotations differ from the cluster's), and a missing namespace or uid gets a placeholder.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::api::{GROUP, MatrixRTCTransport, VERSION};
use crate::build::credentials::{ApiCredentials, CredentialsSource};
use crate::build::secret_refs::{self, SecretVersion, SecretVersions};
use crate::build::{self, BuildError, BuildInput, Child};
use crate::defaults::{DefaultsArgs, OperatorDefaults};
use crate::validate::{Invalid, validate};

/// Namespace used when the file names none (as `kubectl apply` would).
pub const PLACEHOLDER_NAMESPACE: &str = "default";
/// uid used when the file has none (the API server assigns the real one).
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Arguments of `render`.
#[derive(Clone, Debug, clap::Args)]
pub struct RenderArgs {
    /// The MatrixRTCTransport YAML file.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub defaults: DefaultsArgs,
}

/// Why nothing was rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot parse the resource: {0}")]
    Parse(#[source] serde_yaml::Error),
    #[error("the resource does not match the MatrixRTCTransport schema: {0}")]
    Deserialise(#[source] serde_json::Error),
    #[error("expected apiVersion {GROUP}/{VERSION} and kind MatrixRTCTransport, found {0} {1}")]
    WrongKind(String, String),
    #[error("the resource is invalid:\n{0}")]
    Invalid(Invalid),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot serialise an object: {0}")]
    Serialise(#[source] serde_yaml::Error),
}

/// The rendered stream plus non-fatal warnings.
#[derive(Debug)]
pub struct Rendered {
    pub yaml: String,
    pub warnings: Vec<String>,
}

/// Render the objects for the resource in `input`.
pub fn render(input: &str, defaults: &OperatorDefaults) -> Result<Rendered, RenderError> {
    // The generated type does not keep apiVersion and kind, so look at them first.
    let value: serde_json::Value = serde_yaml::from_str(input).map_err(RenderError::Parse)?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != format!("{GROUP}/{VERSION}") || kind != "MatrixRTCTransport" {
        return Err(RenderError::WrongKind(api_version, kind));
    }
    let mut cr: MatrixRTCTransport =
        serde_json::from_value(value).map_err(RenderError::Deserialise)?;
    cr.metadata
        .namespace
        .get_or_insert_with(|| PLACEHOLDER_NAMESPACE.to_owned());
    cr.metadata
        .uid
        .get_or_insert_with(|| PLACEHOLDER_UID.to_owned());
    let validated = validate(&cr).map_err(RenderError::Invalid)?;
    let credentials = ApiCredentials::placeholder();
    let mut secrets = SecretVersions::default();
    for reference in secret_refs::all(&validated) {
        secrets.insert(
            &reference.name,
            SecretVersion {
                uid: PLACEHOLDER_UID.to_owned(),
                resource_version: "0".to_owned(),
            },
        );
    }
    let children = build::build(
        &validated,
        &BuildInput {
            defaults,
            credentials: &credentials,
            secrets: &secrets,
        },
    )?;

    let source = match validated.credentials_source() {
        CredentialsSource::Existing(r) => format!("read from the Secret {}", r.secret_name),
        CredentialsSource::Generated { secret_name } => {
            format!("generated once into the Secret {secret_name}")
        }
    };
    let mut yaml = format!(
        "# Rendered offline by `matrixrtc-operator render` for MatrixRTCTransport {}/{}.\n\
         # The API key and secret below are PLACEHOLDERS ({:?}); the running operator uses the\n\
         # credentials {source}.\n",
        validated.namespace(),
        validated.name(),
        credentials.api_key(),
    );
    for child in children.iter() {
        let doc = match child {
            Child::Secret(o) => serde_yaml::to_string(o),
            Child::ConfigMap(o) => serde_yaml::to_string(o),
            Child::ServiceAccount(o) => serde_yaml::to_string(o),
            Child::Service(o) => serde_yaml::to_string(o),
            Child::Deployment(o) => serde_yaml::to_string(o),
            Child::Ingress(o) => serde_yaml::to_string(o),
        }
        .map_err(RenderError::Serialise)?;
        yaml.push_str("---\n");
        yaml.push_str(&doc);
    }
    Ok(Rendered {
        yaml,
        warnings: validated.warnings().to_vec(),
    })
}

/// The `render` command: YAML on stdout; warnings, and on failure every problem, on stderr.
pub fn main(args: RenderArgs) -> ExitCode {
    let input = match std::fs::read_to_string(&args.file) {
        Ok(input) => input,
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", args.file.display());
            return ExitCode::FAILURE;
        }
    };
    match render(&input, &args.defaults.into()) {
        Ok(rendered) => {
            for warning in &rendered.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", rendered.yaml);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde::Deserialize;

    use super::*;

    fn examples() -> Vec<(PathBuf, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
            .expect("examples dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("read");
                (p, text)
            })
            .collect();
        files.sort();
        files
    }

    fn documents(yaml: &str) -> Vec<serde_json::Value> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|doc| serde_json::Value::deserialize(doc).expect("document"))
            .collect()
    }

    #[test]
    fn every_example_renders_cleanly() {
        let files = examples();
        assert!(files.len() >= 6, "expected at least six examples");
        for (path, text) in files {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("name")
                .to_owned();
            let rendered = render(&text, &OperatorDefaults::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                rendered.warnings.is_empty(),
                "{name}: {:?}",
                rendered.warnings
            );
            let docs = documents(&rendered.yaml);
            assert!(
                docs.iter()
                    .all(|d| d["kind"].is_string() && d["apiVersion"].is_string()),
                "{name}"
            );
            assert!(
                docs.iter().any(|d| d["kind"] == "Deployment"),
                "{name}: no workload rendered"
            );
            insta::assert_snapshot!(name, rendered.yaml);
        }
    }

    #[test]
    fn output_says_the_credentials_are_placeholders() {
        let (_, text) = examples().into_iter().next().expect("an example");
        let rendered = render(&text, &OperatorDefaults::default()).expect("renders");
        let header: String = rendered
            .yaml
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect();
        assert!(header.contains("PLACEHOLDERS"), "{header}");
        assert!(rendered.yaml.contains(PLACEHOLDER_UID));
    }

    #[test]
    fn invalid_resources_report_every_problem() {
        let input = r#"
apiVersion: matrixrtc.dev/v1alpha1
kind: MatrixRTCTransport
metadata: {name: demo}
spec:
  serverName: "bad name"
  host: "https://rtc.example.com"
  auth: {replicas: 3}
"#;
        let Err(RenderError::Invalid(invalid)) = render(input, &OperatorDefaults::default()) else {
            panic!("expected validation errors");
        };
        let paths: Vec<&str> = invalid.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["spec.serverName", "spec.host", "spec.auth.redis"]);
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n";
        assert!(matches!(
            render(deployment, &OperatorDefaults::default()),
            Err(RenderError::WrongKind(..))
        ));
        assert!(matches!(
            render("{{{", &OperatorDefaults::default()),
            Err(RenderError::Parse(_))
        ));
        let missing_spec =
            "apiVersion: matrixrtc.dev/v1alpha1\nkind: MatrixRTCTransport\nmetadata: {name: x}\n";
        assert!(matches!(
            render(missing_spec, &OperatorDefaults::default()),
            Err(RenderError::Deserialise(_))
        ));
    }

    #[test]
    fn image_defaults_come_from_the_input() {
        let (_, text) = examples()
            .into_iter()
            .find(|(p, _)| p.ends_with("single-node-nodeport.yaml"))
            .expect("the single-node example");
        let defaults = OperatorDefaults {
            livekit_image: "mirror.example/livekit:1".into(),
            auth_image: "mirror.example/auth:1".into(),
        };
        let yaml = render(&text, &defaults).expect("renders").yaml;
        assert!(yaml.contains("image: mirror.example/livekit:1"));
        assert!(yaml.contains("image: mirror.example/auth:1"));
    }
}
