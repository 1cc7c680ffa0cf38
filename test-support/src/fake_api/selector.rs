//! Equality-based label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`): what the operator's LISTs and
//! watches send. Set-based selectors (`in`, `notin`) are not understood.

use serde_json::Value;

/// A parsed `labelSelector`: every requirement must hold (an empty one selects everything).
#[derive(Clone, Debug, Default)]
pub(super) struct Selector(Vec<Requirement>);

/// One requirement of an equality-based label selector.
#[derive(Clone, Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

impl Selector {
    pub(super) fn parse(selector: &str) -> Self {
        let requirements = selector
            .split(',')
            .map(str::trim)
            .filter(|term| !term.is_empty())
            .map(|term| {
                if let Some((k, v)) = term.split_once("!=") {
                    Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
                } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('='))
                {
                    Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
                } else if let Some(k) = term.strip_prefix('!') {
                    Requirement::NotExists(k.trim().to_owned())
                } else {
                    Requirement::Exists(term.to_owned())
                }
            })
            .collect();
        Self(requirements)
    }

    /// Whether the labels of `object` satisfy every requirement.
    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => labels[k].as_str() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => labels[k].as_str() != Some(v.as_str()),
            Requirement::Exists(k) => labels.get(k).is_some(),
            Requirement::NotExists(k) => labels.get(k).is_none(),
        })
    }
}
