//! Defaults the operator receives from its command line (and the Helm chart), which CR fields
//! override. Kept in a value passed to the builders rather than in globals, so tests and `render`
//! can choose their own.

/// LiveKit image used when `spec.livekit.managed.image` is unset.
pub const DEFAULT_LIVEKIT_IMAGE: &str = "docker.io/livekit/livekit-server:v1.13.5";

/// Authorisation service image used when `spec.auth.image` is unset: the release built with this
/// operator.
pub const DEFAULT_AUTH_IMAGE: &str = concat!(
    "ghcr.io/matrixrtc-operator/matrixrtc-auth:",
    env!("CARGO_PKG_VERSION")
);

/// Operator-wide defaults for the objects it builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorDefaults {
    pub livekit_image: String,
    pub auth_image: String,
}

impl Default for OperatorDefaults {
    fn default() -> Self {
        Self {
            livekit_image: DEFAULT_LIVEKIT_IMAGE.to_owned(),
            auth_image: DEFAULT_AUTH_IMAGE.to_owned(),
        }
    }
}

/// Command-line flags for [`OperatorDefaults`], shared by `run` and `render`.
#[derive(Clone, Debug, clap::Args)]
pub struct DefaultsArgs {
    /// LiveKit image for transports that do not name one.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_LIVEKIT_IMAGE)]
    pub livekit_image: String,
    /// Authorisation service image for transports that do not name one.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_AUTH_IMAGE)]
    pub auth_image: String,
}

impl From<DefaultsArgs> for OperatorDefaults {
    fn from(args: DefaultsArgs) -> Self {
        Self {
            livekit_image: args.livekit_image,
            auth_image: args.auth_image,
        }
    }
}
