//! The Kubernetes verb of an API request (`get`, `list`, `watch`, `create`, `patch`, ...), from its method,
//! path and query: the label of the request metrics, and what tests look at to assert "no list".

use axum::http::Method;

/// The verbs the operator uses (as RBAC names them), plus `other` for anything else. The metric label is
/// the variant's name in snake case (`Get` is `get`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, strum::IntoStaticStr, strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    Other,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Classify a request. A GET of a collection is a `list`, or a `watch` with `watch=true`/`watch=1`.
    pub fn of(method: &Method, path: &str, query: &str) -> Self {
        let collection = is_collection(path);
        match *method {
            Method::GET if collection && is_watch(query) => Verb::Watch,
            Method::GET if collection => Verb::List,
            Method::GET => Verb::Get,
            Method::POST => Verb::Create,
            Method::PUT => Verb::Update,
            Method::PATCH => Verb::Patch,
            Method::DELETE => Verb::Delete,
            _ => Verb::Other,
        }
    }
}

fn is_watch(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1")
}

/// `/api/v1/[namespaces/<ns>/]<plural>` or `/apis/<group>/<version>/[namespaces/<ns>/]<plural>`: no object name.
/// `/api/v1/namespaces` itself is a collection, `/api/v1/namespaces/<name>` an object.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        ["namespaces", _namespace, scoped @ ..] if !scoped.is_empty() => scoped,
        other => other,
    };
    rest.len() == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_labels_are_the_rbac_verbs() {
        // Metric labels are user-visible: a renamed variant must not change them silently.
        let labels = [
            (Verb::Get, "get"),
            (Verb::List, "list"),
            (Verb::Watch, "watch"),
            (Verb::Create, "create"),
            (Verb::Update, "update"),
            (Verb::Patch, "patch"),
            (Verb::Delete, "delete"),
            (Verb::Other, "other"),
        ];
        for (verb, label) in labels {
            assert_eq!((verb.as_str(), verb.to_string()), (label, label.to_owned()));
        }
    }

    #[test]
    fn verbs_follow_method_path_and_query() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/a/configmaps",
                "labelSelector=x%3Dy",
                Verb::List,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/configmaps",
                "watch=true&resourceVersion=1",
                Verb::Watch,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/configmaps/b",
                "",
                Verb::Get,
            ),
            (Method::GET, "/apis/apps/v1/deployments", "", Verb::List),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/a/deployments/b",
                "",
                Verb::Get,
            ),
            (Method::GET, "/api/v1/namespaces", "", Verb::List),
            (Method::GET, "/api/v1/namespaces/a", "", Verb::Get),
            (
                Method::PATCH,
                "/apis/matrixrtc.dev/v1alpha1/namespaces/a/matrixrtctransports/b/status",
                "",
                Verb::Patch,
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                "",
                Verb::Create,
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/secrets/b",
                "",
                Verb::Delete,
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/b",
                "",
                Verb::Update,
            ),
            (Method::GET, "/version", "", Verb::Get),
        ];
        for (method, path, query, verb) in cases {
            assert_eq!(
                Verb::of(&method, path, query),
                verb,
                "{method} {path}?{query}"
            );
        }
    }
}
