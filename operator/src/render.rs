//! `matrixrtc-operator render -f transport.yaml`: every object the operator would apply for a
//! resource, offline, as a YAML stream in apply order; with `--status`, the status fields a valid
//! spec yields (what to paste into `.well-known/matrix/client` and Synapse).
//!
//! Without a cluster there is no credentials Secret to read, so fixed placeholder credentials are
//! used (the output says so), the Secrets the pods reference get a placeholder version (so the pod
//! hash annotations differ from the cluster's), and a missing namespace or uid gets a placeholder.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::api::{GROUP, MatrixRTCTransport, MatrixRTCTransportStatus, VERSION};
use crate::apply::Owner;
use crate::build::appservice::AppServiceTokens;
use crate::build::credentials::ApiCredentials;
use crate::build::secret_refs::{self, SecretVersion, SecretVersions};
use crate::build::{self, BuildError, BuildInput, discovery, labels};
use crate::defaults::{DefaultsArgs, OperatorDefaults};
use crate::plan::CredentialsSource;
use crate::plan::Validated;
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
    /// Print, instead of the objects, the status fields the operator writes for a valid spec: the
    /// `.well-known/matrix/client` JSON and the Synapse settings to merge into `homeserver.yaml`.
    #[arg(long)]
    pub status: bool,
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
    #[error("the resource has no name")]
    Unnamed,
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

/// Parse and validate the resource in `input`, filling in a placeholder namespace and uid.
fn validated(input: &str) -> Result<(MatrixRTCTransport, Validated), RenderError> {
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
    Ok((cr, validated))
}

/// The status fields the controller derives from a valid spec alone (as YAML), so an admin can
/// prepare the homeserver before the operator runs.
pub fn render_status(input: &str) -> Result<Rendered, RenderError> {
    let (_, validated) = validated(input)?;
    let status = MatrixRTCTransportStatus {
        livekit_service_url: Some(discovery::livekit_service_url(&validated)),
        well_known_client: Some(discovery::well_known_client_json(&validated)),
        synapse_config: Some(discovery::synapse_config_yaml(&validated)),
        app_service: discovery::app_service_status(&validated),
        ..MatrixRTCTransportStatus::default()
    };
    Ok(Rendered {
        yaml: serde_yaml::to_string(&status).map_err(RenderError::Serialise)?,
        warnings: validated.warnings().to_vec(),
    })
}

/// Render the objects for the resource in `input`.
pub fn render(input: &str, defaults: &OperatorDefaults) -> Result<Rendered, RenderError> {
    let (cr, validated) = validated(input)?;
    // Stamped as `apply` stamps what it sends, so the output shows the ownership the cluster will see.
    let owner =
        Owner::new(&cr, labels::owned_selector(validated.name())).ok_or(RenderError::Unnamed)?;
    let credentials = ApiCredentials::placeholder();
    let tokens = AppServiceTokens::placeholder();
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
            app_service: Some(&tokens),
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
    if validated.auth().app_service.is_some() {
        yaml.push_str(&format!(
            "# The application-service tokens below are PLACEHOLDERS too; the running operator generates them\n\
             # once into the Secret {}.\n",
            build::names::app_service(validated.name())
        ));
    }
    for child in children.iter() {
        let mut child = child.clone();
        owner.stamp(&mut child);
        let doc = child.to_yaml().map_err(RenderError::Serialise)?;
        yaml.push_str("---\n");
        yaml.push_str(&quote_yaml11_booleans(&doc));
    }
    Ok(Rendered {
        yaml,
        warnings: validated.warnings().to_vec(),
    })
}

/// Words YAML 1.1 reads as booleans, which YAML 1.2 (what serde_yaml writes) leaves as strings.
const YAML11_BOOLEANS: [&str; 16] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Quote plain scalars that YAML 1.1 would read as booleans. serde_yaml writes YAML 1.2, where
/// `off` is a string, but kubectl reads YAML 1.1: the Ingress annotation `proxy-buffering: off`
/// would reach the API server as `false` and be refused. The contents of block scalars (the
/// LiveKit config file) are left alone.
fn quote_yaml11_booleans(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    // Indentation of the line that opened a block scalar (`key: |`) whose lines we are in.
    let mut block: Option<usize> = None;
    for line in yaml.split_inclusive('\n') {
        let content = line.trim_end_matches('\n');
        let indent = content.len() - content.trim_start().len();
        if let Some(opened) = block {
            if content.trim().is_empty() || indent > opened {
                out.push_str(line);
                continue;
            }
            block = None;
        }
        let split = content
            .rsplit_once(": ")
            .or_else(|| content.trim_start().strip_prefix("- ").map(|v| ("", v)));
        match split {
            Some((_, value)) if value.starts_with(['|', '>']) => {
                block = Some(indent);
                out.push_str(line);
            }
            Some((_, value)) if YAML11_BOOLEANS.contains(&value) => {
                let head = &content[..content.len() - value.len()];
                out.push_str(&format!("{head}'{value}'"));
                out.push_str(&line[content.len()..]);
            }
            _ => out.push_str(line),
        }
    }
    out
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
    let result = if args.status {
        render_status(&input)
    } else {
        render(&input, &args.defaults.into())
    };
    match result {
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
    fn status_holds_what_the_homeserver_side_needs() {
        let (_, text) = examples()
            .into_iter()
            .find(|(p, _)| p.ends_with("single-node-nodeport.yaml"))
            .expect("the single-node example");
        let status: MatrixRTCTransportStatus =
            serde_yaml::from_str(&render_status(&text).expect("renders").yaml).expect("status");
        assert_eq!(
            status.livekit_service_url.as_deref(),
            Some("https://rtc.example.com")
        );
        let synapse: serde_json::Value =
            serde_yaml::from_str(status.synapse_config.as_deref().expect("synapse")).expect("YAML");
        assert_eq!(
            synapse["matrix_rtc"]["transports"][0]["livekit_service_url"],
            "https://rtc.example.com"
        );
        assert!(status.well_known_client.is_some());
        assert!(status.conditions.is_empty(), "nothing observed offline");
        assert!(matches!(
            render_status("kind: Deployment"),
            Err(RenderError::WrongKind(..))
        ));
    }

    #[test]
    fn yaml_1_1_booleans_are_quoted_outside_block_scalars() {
        let yaml = "metadata:\n  annotations:\n    a: off\n    b: 'on'\n    c: offline\nlist:\n- yes\ndata:\n  config.yaml: |\n    x: off\n    y: no\nafter: No\n";
        let quoted = quote_yaml11_booleans(yaml);
        assert_eq!(
            quoted,
            "metadata:\n  annotations:\n    a: 'off'\n    b: 'on'\n    c: offline\nlist:\n- 'yes'\ndata:\n  config.yaml: |\n    x: off\n    y: no\nafter: 'No'\n"
        );
        // What a YAML 1.2 reader makes of it is unchanged.
        let before: serde_json::Value = serde_yaml::from_str(yaml).expect("yaml");
        let after: serde_json::Value = serde_yaml::from_str(&quoted).expect("yaml");
        assert_eq!(before, after);
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
