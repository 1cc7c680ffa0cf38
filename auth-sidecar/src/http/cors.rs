//! The headers the reference sets on every response of its POST endpoints, before it even looks at the
//! method: so 405s, preflights and errors carry them too. There is no `Access-Control-Max-Age` and no
//! `Allow` header; a preflight is answered the same whatever it asks.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    CONTENT_TYPE,
};
use http::{HeaderMap, HeaderValue};

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");
static METHODS: HeaderValue = HeaderValue::from_static("POST");
static HEADERS: HeaderValue =
    HeaderValue::from_static("Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token");

/// Sets `Content-Type: application/json` and the three CORS headers.
pub fn apply(headers: &mut HeaderMap) {
    headers.insert(CONTENT_TYPE, JSON.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, METHODS.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, HEADERS.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_reference_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        apply(&mut headers);
        assert_eq!(headers.len(), 4);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], "POST");
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_HEADERS],
            "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token"
        );
    }
}
