//! Replies: JSON errors (`config::api::ApiError`) and JSON bodies signed for
//! the node that asked (`X-Plnode-Response-Sig`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use config::api::auth::{sign_response, Nonce, RESPONSE_SIG_HEADER};
use config::api::ApiError;
use config::node::NodeKey;
use config::Timestamp;
use serde::Serialize;
use sha2::Digest;

/// Who a reply is signed for: the key of a node whose request signature
/// verified, and that request's nonce.
#[derive(Clone)]
pub struct Signer {
    pub key: NodeKey,
    pub nonce: Nonce,
}

/// A 4xx/5xx reply. Once a request's signature has verified, even its
/// error replies are signed, so a node can trust `server_time` in a
/// `stale_timestamp` reply and fix its clock.
pub struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub server_time: Option<Timestamp>,
    pub signer: Option<Signer>,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
            server_time: None,
            signer: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A 500 for an error the server ran into: the reply and the log carry
    /// the error with its causes, on one line.
    pub fn internal_error(error: &(dyn std::error::Error + 'static)) -> Failure {
        let line = floor::report::error_line(error);
        tracing::error!(error = %line, "a request failed inside the server");
        Failure::internal(line)
    }

    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn signed(mut self, signer: &Signer) -> Failure {
        self.signer = Some(signer.clone());
        self
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = ApiError {
            error: self.code.to_string(),
            message: self.message,
            server_time: self.server_time,
        };
        json_response(self.status, &body, self.signer.as_ref())
    }
}

/// A JSON reply, signed when `signer` is given.
pub fn json_response<T: Serialize>(
    status: StatusCode,
    value: &T,
    signer: Option<&Signer>,
) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "serialising a reply failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "serialising the reply failed",
            )
                .into_response();
        }
    };
    let sig = signer.map(|s| sign_response(&s.key, s.nonce, &body));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = sig.and_then(|s| HeaderValue::from_str(&s).ok()) {
        headers.insert(RESPONSE_SIG_HEADER, v);
    }
    response
}

/// A signed JSON reply to a conditional request: its entity tag is the
/// SHA-256 of the body; when `if_none_match` names it, a `304` without a
/// body, signed over the body the node already has (the same signature a
/// `200` would carry).
pub fn conditional_json<T: Serialize>(
    value: &T,
    if_none_match: Option<&str>,
    signer: &Signer,
) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "serialising a reply failed");
            return Failure::internal("serialising the reply failed")
                .signed(signer)
                .into_response();
        }
    };
    let etag = format!("\"{}\"", hex::encode(sha2::Sha256::digest(&body)));
    let sig = sign_response(&signer.key, signer.nonce, &body);
    let not_modified = if_none_match.is_some_and(|v| crate::input::etag_matches(v, &etag));
    let mut response = if not_modified {
        (StatusCode::NOT_MODIFIED, Vec::new()).into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    let headers = response.headers_mut();
    if !not_modified {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&sig) {
        headers.insert(RESPONSE_SIG_HEADER, v);
    }
    response
}

/// A successful reply to a node, signed for it.
pub struct Signed<T>(pub T, pub Signer);

impl<T: Serialize> IntoResponse for Signed<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self.0, Some(&self.1))
    }
}
