//! Requests to the store: the path parsed into a collection or an object (and subresource), the query
//! decoded, the verb dispatched; injected failures; answers as JSON objects or `Status` errors.

use std::collections::BTreeMap;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::FakeApi;
use super::patch::patch_object;
use super::selector::Selector;
use super::store::{Key, Recorded, State, create_object};
use super::watch::WatchFilter;

impl FakeApi {
    /// Record the request, then answer it (an injected failure first, if one matches).
    pub(super) async fn respond<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: axum::body::HttpBody<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = request.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return status_response(StatusCode::BAD_REQUEST, "BadRequest", &error.to_string());
            }
        };
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(value) => Some(value),
                Err(error) => {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &error.to_string(),
                    );
                }
            }
        };
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();

        let mut state = self.lock();
        state.requests.push(Recorded {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        if state
            .unserved
            .iter()
            .any(|prefix| path.starts_with(&format!("{prefix}/")))
        {
            return status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        if let Some(index) = state.failures.iter().position(|(method, suffix, _)| {
            *method == parts.method && path.ends_with(suffix.as_str())
        }) {
            let (_, _, code) = state.failures.remove(index);
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let reason = match code.as_u16() {
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                422 => "Invalid",
                _ => "InternalError",
            };
            return status_response(code, reason, "injected failure");
        }
        let Some(route) = Route::parse(&path) else {
            return status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no route for {path}"),
            );
        };
        let params = parse_query(&query);
        if parts.method == Method::GET
            && params.get("watch").map(String::as_str) == Some("true")
            && let Route::Collection {
                group_version,
                plural,
                namespace,
            } = route
        {
            drop(state);
            let filter = WatchFilter {
                group_version,
                plural,
                namespace,
                selector: Selector::parse(params.get("labelSelector").map_or("", String::as_str)),
            };
            let since = params
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return self.watch(filter, since);
        }
        match (parts.method.clone(), route) {
            (
                Method::GET,
                Route::Collection {
                    group_version,
                    plural,
                    namespace,
                },
            ) => list(
                &state,
                &group_version,
                &plural,
                namespace.as_deref(),
                &Selector::parse(params.get("labelSelector").map_or("", String::as_str)),
            ),
            (Method::GET, Route::Object { key, .. }) => match state.objects.get(&key) {
                Some(object) => json_response(StatusCode::OK, object),
                None => not_found(&key),
            },
            (
                Method::POST,
                Route::Collection {
                    group_version,
                    plural,
                    namespace,
                },
            ) => {
                let Some(mut object) = body else {
                    return status_response(StatusCode::BAD_REQUEST, "BadRequest", "empty body");
                };
                let namespace = namespace.unwrap_or_default();
                let generate = object["metadata"]["generateName"]
                    .as_str()
                    .map(str::to_owned);
                let name = match (object["metadata"]["name"].as_str(), generate) {
                    (Some(name), _) => name.to_owned(),
                    (None, Some(prefix)) => format!("{prefix}{}", state.resource_version + 1),
                    (None, None) => {
                        return status_response(StatusCode::BAD_REQUEST, "BadRequest", "no name");
                    }
                };
                object["metadata"]["name"] = Value::String(name.clone());
                let key = Key {
                    group_version,
                    plural,
                    namespace,
                    name,
                };
                if state.objects.contains_key(&key) {
                    return status_response(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        "already exists",
                    );
                }
                let stored = create_object(&mut state, &key, object);
                state.put(key, stored.clone(), "ADDED");
                json_response(StatusCode::CREATED, &stored)
            }
            (Method::PATCH, Route::Object { key, subresource }) => {
                let Some(patch) = body else {
                    return status_response(StatusCode::BAD_REQUEST, "BadRequest", "empty body");
                };
                patch_object(
                    &mut state,
                    key,
                    subresource.as_deref(),
                    &content_type,
                    patch,
                )
            }
            (Method::DELETE, Route::Object { key, .. }) => {
                let wanted_uid = body
                    .as_ref()
                    .and_then(|b| b["preconditions"]["uid"].as_str())
                    .map(str::to_owned);
                match state.objects.get(&key) {
                    None => not_found(&key),
                    Some(object) => {
                        if let Some(uid) = wanted_uid
                            && object["metadata"]["uid"].as_str() != Some(uid.as_str())
                        {
                            return status_response(
                                StatusCode::CONFLICT,
                                "Conflict",
                                "uid precondition failed",
                            );
                        }
                        let object = state.delete(&key).unwrap_or_default();
                        json_response(StatusCode::OK, &object)
                    }
                }
            }
            (method, _) => status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{method} is not supported by the fake"),
            ),
        }
    }
}

/// What a URL path names.
enum Route {
    Collection {
        group_version: String,
        plural: String,
        namespace: Option<String>,
    },
    Object {
        key: Key,
        subresource: Option<String>,
    },
}

impl Route {
    /// `/api/v1/...` or `/apis/<group>/<version>/...`, then `namespaces/<ns>/<plural>[/<name>[/<subresource>]]`
    /// or a cluster-wide `<plural>` collection.
    fn parse(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group_version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ((*version).to_owned(), rest),
            ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
            _ => return None,
        };
        match rest {
            ["namespaces", namespace, plural] => Some(Route::Collection {
                group_version,
                plural: (*plural).to_owned(),
                namespace: Some((*namespace).to_owned()),
            }),
            ["namespaces", namespace, plural, name, subresource @ ..] if subresource.len() <= 1 => {
                Some(Route::Object {
                    key: Key {
                        group_version,
                        plural: (*plural).to_owned(),
                        namespace: (*namespace).to_owned(),
                        name: (*name).to_owned(),
                    },
                    subresource: subresource.first().map(|s| (*s).to_owned()),
                })
            }
            [plural] => Some(Route::Collection {
                group_version,
                plural: (*plural).to_owned(),
                namespace: None,
            }),
            _ => None,
        }
    }
}

/// The query parameters, percent-decoded (the last of repeated names wins).
fn parse_query(query: &str) -> BTreeMap<String, String> {
    url_decode_pairs(query).into_iter().collect()
}

fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .map(|hex| u8::from_str_radix(hex, 16))
                {
                    Ok(Ok(byte)) => {
                        out.push(byte);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// LIST: the matching objects as a `<Kind>List`.
fn list(
    state: &State,
    group_version: &str,
    plural: &str,
    namespace: Option<&str>,
    selector: &Selector,
) -> Response<Body> {
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|(k, _)| k.group_version == group_version && k.plural == plural)
        .filter(|(k, _)| namespace.is_none_or(|ns| ns == k.namespace))
        .filter(|(_, v)| selector.matches(v))
        .map(|(_, v)| v.clone())
        .collect();
    let kind = items
        .first()
        .and_then(|item| item["kind"].as_str())
        .map(|kind| format!("{kind}List"))
        .unwrap_or_else(|| "List".to_owned());
    // Like the real API server, items of a list carry no apiVersion/kind (the list does).
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            if let Some(fields) = item.as_object_mut() {
                fields.remove("apiVersion");
                fields.remove("kind");
            }
            item
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": group_version,
            "kind": kind,
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        }),
    )
}

pub(super) fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A `Status` error, as the API server sends it.
pub(super) fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

pub(super) fn not_found(key: &Key) -> Response<Body> {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{}\" not found", key.plural, key.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_selectors() {
        assert_eq!(percent_decode("a%3Db%2Cc%21%3Dd"), "a=b,c!=d");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
