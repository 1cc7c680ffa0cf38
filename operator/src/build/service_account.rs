//! ServiceAccounts: one per workload, with no API token (neither LiveKit nor the authorisation
//! service talks to the Kubernetes API).

use k8s_openapi::api::core::v1::ServiceAccount;

use super::labels::Component;
use super::{names, object_meta};
use crate::plan::{AuthPlacement, Validated};

/// `<name>-livekit` for a managed LiveKit, `<name>-auth` when the service has its own Deployment.
pub fn build(v: &Validated) -> Vec<ServiceAccount> {
    let mut accounts = Vec::new();
    if v.is_managed_livekit() {
        accounts.push(account(v, names::livekit(v.name()), Component::Sfu));
    }
    if let AuthPlacement::Deployment { .. } = v.auth().placement {
        accounts.push(account(v, names::auth(v.name()), Component::Auth));
    }
    accounts
}

fn account(v: &Validated, name: String, component: Component) -> ServiceAccount {
    ServiceAccount {
        metadata: object_meta(v, name, component),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::{external, validated};

    fn names_of(accounts: &[ServiceAccount]) -> Vec<&str> {
        accounts
            .iter()
            .filter_map(|a| a.metadata.name.as_deref())
            .collect()
    }

    #[test]
    fn one_account_per_workload_without_token() {
        let accounts = build(&validated(""));
        assert_eq!(names_of(&accounts), ["demo-livekit", "demo-auth"]);
        assert!(
            accounts
                .iter()
                .all(|a| a.automount_service_account_token == Some(false))
        );
        assert_eq!(names_of(&build(&external())), ["demo-auth"]);
        let sidecar = validated("auth: {placement: Sidecar}");
        assert_eq!(names_of(&build(&sidecar)), ["demo-livekit"]);
    }
}
