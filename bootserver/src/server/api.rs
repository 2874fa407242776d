//! The node API (DESIGN.md §2): authenticate, check what the node sent,
//! store it through the writer, answer signed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use config::api::auth::AuthHeader;
use config::api::{
    CheckinRequest, Empty, FailureReport, HelloRequest, HelloResponse, InstallReport, ReleaseAllow,
    ReleaseDirective, SliversResponse,
};
use config::Timestamp;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::reply::{conditional_json, json_response, Failure, Signed, Signer};
use super::{App, PeerAddr};
use crate::input::*;
use crate::model::NodeAuth;
use crate::registry;
use crate::writer::{AuthFailureReason, Stamp, WriteError, WriteOp, WriteOutcome};

/// Whether a request's nonce is remembered (and refused when seen again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nonces {
    /// A request with effects: accepted once, its nonce stored with them.
    Once,
    /// A read that changes nothing (`GET release`): a replay would only
    /// fetch a reply signed for the replayed nonce, which no node is waiting
    /// for, so its nonce is neither checked nor stored and the request
    /// costs no database write.
    ReadOnly,
}

/// A request whose signature, freshness and nonce all checked out.
struct Authenticated {
    node: NodeAuth,
    stamp: Stamp,
    signer: Signer,
    body: Bytes,
    peer: String,
}

fn peer_of(req: &Request) -> String {
    req.extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Reads the body, refusing more than `limit` bytes (by Content-Length
/// before reading, and while reading for chunked bodies).
async fn read_body(body: Body, declared: Option<u64>, limit: usize) -> Result<Bytes, Failure> {
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Failure::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl App {
    async fn count_failure(
        &self,
        claimed: u64,
        known: bool,
        reason: AuthFailureReason,
        peer: &str,
    ) {
        tracing::warn!(
            node = claimed,
            known,
            reason = reason.code(),
            peer,
            "authentication failed"
        );
        let op = WriteOp::AuthFailure {
            claimed,
            known,
            reason,
            peer: peer.to_string(),
        };
        if let Err(e) = self.writer.submit(op).await {
            tracing::error!(error = %e, "could not count a failed authentication");
        }
    }

    /// The whole check of a node request, in the order that lets each
    /// answer be as helpful as is safe: the signature first, then freshness
    /// and replay (whose replies are signed, since the key is now proven).
    async fn authenticate(&self, req: Request, nonces: Nonces) -> Result<Authenticated, Failure> {
        let peer = peer_of(&req);
        let declared = declared_length(&req);
        let (parts, body) = req.into_parts();
        let body = read_body(body, declared, self.settings.max_body).await?;
        let method = parts.method.as_str();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| parts.uri.path());

        let unauthenticated =
            |message: String| Failure::new(StatusCode::UNAUTHORIZED, "unauthenticated", message);
        let header_value = match parts.headers.get(header::AUTHORIZATION) {
            None => {
                self.count_failure(0, false, AuthFailureReason::Malformed, &peer)
                    .await;
                return Err(unauthenticated(
                    "missing Authorization header: node requests are signed with PLNODE-HMAC-SHA256".into(),
                ));
            }
            Some(v) => v,
        };
        let parsed = header_value
            .to_str()
            .map_err(|_| config::api::auth::AuthError::Malformed("not ASCII".into()))
            .and_then(AuthHeader::parse);
        let auth = match parsed {
            Ok(a) => a,
            Err(e) => {
                self.count_failure(0, false, AuthFailureReason::Malformed, &peer)
                    .await;
                return Err(unauthenticated(e.to_string()));
            }
        };
        let node_id = auth.node_id;
        let node = self
            .reads
            .with(|c| registry::node_auth(c, node_id))
            .map_err(|e| Failure::internal_error(&e))?
            .map_err(|e| Failure::internal_error(&e))?;
        let Some(node) = node else {
            self.count_failure(node_id.0, false, AuthFailureReason::UnknownNode, &peer)
                .await;
            return Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "unknown_node",
                format!("node {node_id} is not registered with this server"),
            ));
        };
        if auth.verify(&node.key, method, path, &body).is_err() {
            self.count_failure(node_id.0, true, AuthFailureReason::BadSignature, &peer)
                .await;
            return Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                format!("the request signature does not match node {node_id}'s key"),
            ));
        }
        let signer = Signer {
            key: node.key.clone(),
            nonce: auth.nonce,
        };
        let now = Timestamp::now();
        if !self.replay.is_fresh(auth.timestamp, now.unix()) {
            self.count_failure(node_id.0, true, AuthFailureReason::StaleTimestamp, &peer)
                .await;
            let mut failure = Failure::new(
                StatusCode::UNAUTHORIZED,
                "stale_timestamp",
                format!(
                    "request time {} is more than {} s from the server's time {now}; set the clock from server_time",
                    Timestamp::from_unix(auth.timestamp),
                    self.settings.clock_skew_secs
                ),
            )
            .signed(&signer);
            failure.server_time = Some(now);
            return Err(failure);
        }
        if nonces == Nonces::Once
            && !self
                .replay
                .first_use(node_id, auth.nonce, auth.timestamp, now.unix())
        {
            self.count_failure(node_id.0, true, AuthFailureReason::ReplayedNonce, &peer)
                .await;
            return Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "replayed_nonce",
                "this request's nonce was used before: a request is accepted once",
            )
            .signed(&signer));
        }
        Ok(Authenticated {
            stamp: Stamp {
                node: node_id,
                nonce: auth.nonce,
                ts: auth.timestamp,
            },
            node,
            signer,
            body,
            peer,
        })
    }

    /// Stores a node's report; `Ok` only once it is committed.
    async fn store(&self, op: WriteOp, signer: &Signer) -> Result<WriteOutcome, Failure> {
        match self.writer.submit(op).await {
            Ok(outcome) => Ok(outcome),
            Err(WriteError::Replayed) => Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "replayed_nonce",
                "this request's nonce was used before: a request is accepted once",
            )
            .signed(signer)),
            Err(WriteError::NodeGone) => Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "unknown_node",
                "the node was deleted while its request was on its way",
            )),
            Err(e) => {
                let line = floor::report::error_line(&e);
                tracing::error!(error = %line, "storing a node report failed");
                Err(
                    Failure::internal(format!("the server could not store the report: {line}"))
                        .signed(signer),
                )
            }
        }
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str, signer: &Signer) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::bad_request(format!("the body is not a valid {what}: {e}")).signed(signer)
    })
}

/// Runs a typed node endpoint: authenticate, parse, check, then `handle`.
async fn node_endpoint<T, F, Fut>(
    app: Arc<App>,
    req: Request,
    what: &str,
    check: fn(&T) -> Result<(), InputError>,
    handle: F,
) -> Response
where
    T: DeserializeOwned,
    F: FnOnce(Arc<App>, Authenticated, T) -> Fut,
    Fut: std::future::Future<Output = Result<Response, Failure>>,
{
    let result = async {
        let authed = app.authenticate(req, Nonces::Once).await?;
        let value: T = parse_json(&authed.body, what, &authed.signer)?;
        check(&value).map_err(|e| Failure::bad_request(e.to_string()).signed(&authed.signer))?;
        handle(app.clone(), authed, value).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn checkin(State(app): State<Arc<App>>, req: Request) -> Response {
    node_endpoint(
        app,
        req,
        "check-in",
        check_checkin,
        |app, a, request: CheckinRequest| async move {
            if request.node_id != a.node.id {
                return Err(Failure::bad_request(format!(
                    "node_id {} in the body is not the authenticated node {}",
                    request.node_id, a.node.id
                ))
                .signed(&a.signer));
            }
            let op = WriteOp::Checkin {
                stamp: a.stamp,
                request: Box::new(request),
                peer: a.peer,
            };
            let outcome = app.store(op, &a.signer).await?;
            let s = &app.settings;
            let mut reply = a.node.checkin_response(
                Timestamp::now(),
                s.checkin_interval_secs,
                &s.debug_ssh_keys,
            );
            if let WriteOutcome::CheckedIn(hints) = outcome {
                reply.hints = hints;
            }
            // The node's slices changed since it last fetched them: its
            // node manager polls now instead of at its next interval.
            let now = Timestamp::now();
            let slivers = app
                .reads
                .with(|c| registry::slivers_for_node(c, a.node.id, now))
                .map_err(|e| Failure::internal_error(&e).signed(&a.signer))?
                .map_err(|e| Failure::internal_error(&e).signed(&a.signer))?;
            reply.hints.slices_changed = app.slivers_seen.changed(a.node.id, &slivers);
            Ok(Signed(reply, a.signer).into_response())
        },
    )
    .await
}

pub async fn progress(State(app): State<Arc<App>>, req: Request) -> Response {
    node_endpoint(
        app,
        req,
        "progress report",
        check_progress,
        |app, a, report| async move {
            app.store(
                WriteOp::Progress {
                    stamp: a.stamp,
                    report,
                },
                &a.signer,
            )
            .await?;
            Ok(Signed(Empty {}, a.signer).into_response())
        },
    )
    .await
}

pub async fn failure(State(app): State<Arc<App>>, req: Request) -> Response {
    node_endpoint(app, req, "failure report", check_failure, |app, a, report: FailureReport| async move {
        tracing::warn!(node = %a.node.id, step = %report.step, error = %report.error, "node reported a failure");
        app.store(WriteOp::Failure { stamp: a.stamp, report }, &a.signer).await?;
        Ok(Signed(Empty {}, a.signer).into_response())
    })
    .await
}

pub async fn installed(State(app): State<Arc<App>>, req: Request) -> Response {
    node_endpoint(
        app,
        req,
        "install report",
        check_install,
        |app, a, report: InstallReport| async move {
            tracing::info!(node = %a.node.id, os = %report.os_version, "node finished a reinstall");
            let outcome = app
                .store(
                    WriteOp::Installed {
                        stamp: a.stamp,
                        report,
                    },
                    &a.signer,
                )
                .await?;
            let node = match outcome {
                WriteOutcome::Installed(node) => *node,
                WriteOutcome::Done | WriteOutcome::CheckedIn(_) => a.node,
            };
            let s = &app.settings;
            let reply =
                node.checkin_response(Timestamp::now(), s.checkin_interval_secs, &s.debug_ssh_keys);
            Ok(Signed(reply, a.signer).into_response())
        },
    )
    .await
}

pub async fn update(State(app): State<Arc<App>>, req: Request) -> Response {
    node_endpoint(
        app,
        req,
        "update report",
        check_update,
        |app, a, report| async move {
            app.store(
                WriteOp::Update {
                    stamp: a.stamp,
                    report,
                },
                &a.signer,
            )
            .await?;
            Ok(Signed(Empty {}, a.signer).into_response())
        },
    )
    .await
}

pub async fn slivers(State(app): State<Arc<App>>, req: Request) -> Response {
    let result = async {
        let a = app.authenticate(req, Nonces::Once).await?;
        if !a.body.is_empty() {
            return Err(Failure::bad_request("GET slivers takes no body").signed(&a.signer));
        }
        app.store(WriteOp::NonceOnly { stamp: a.stamp }, &a.signer)
            .await?;
        let now = Timestamp::now();
        let slivers = app
            .reads
            .with(|c| registry::slivers_for_node(c, a.node.id, now))
            .map_err(|e| Failure::internal_error(&e).signed(&a.signer))?
            .map_err(|e| Failure::internal_error(&e).signed(&a.signer))?;
        app.slivers_seen.record(a.node.id, &slivers);
        let reply = SliversResponse {
            node_id: a.node.id,
            generated_at: now,
            bwcap: a.node.bwcap,
            slivers,
        };
        Ok(Signed(reply, a.signer).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET release`: which release the node may install now (the newest
/// rollout decides; with none, whatever is published). Conditional: the
/// entity tag is the SHA-256 of the reply body, and a `304` is signed over
/// the body the node already holds. Nothing is written.
pub async fn release(State(app): State<Arc<App>>, req: Request) -> Response {
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let result = async {
        let a = app.authenticate(req, Nonces::ReadOnly).await?;
        if !a.body.is_empty() {
            return Err(Failure::bad_request("GET release takes no body").signed(&a.signer));
        }
        let latest = app
            .reads
            .with(crate::rollout::store::latest)
            .map_err(|e| Failure::internal_error(&e).signed(&a.signer))?
            .map_err(|e| Failure::internal_error(&e).signed(&a.signer))?;
        let now = Timestamp::now();
        let (allow, revert, rollout) = match latest {
            Some(r) => {
                let (allow, revert, note) = r.directive(a.node.id, now);
                (allow, revert, Some(note))
            }
            None => (ReleaseAllow::Latest, None, None),
        };
        let directive = ReleaseDirective {
            allow,
            revert,
            rollout,
            timestamp_version: app.repo.timestamp_version(),
            mirrors: app.settings.mirrors.clone(),
        };
        Ok(conditional_json(
            &directive,
            if_none_match.as_deref(),
            &a.signer,
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// An unregistered machine says hello: no key, so no authentication; the
/// record only helps an admin register it.
pub async fn hello(State(app): State<Arc<App>>, req: Request) -> Response {
    let result = async {
        let peer = peer_of(&req);
        let declared = declared_length(&req);
        let body = read_body(req.into_body(), declared, app.settings.max_body).await?;
        let request: HelloRequest = serde_json::from_slice(&body)
            .map_err(|e| Failure::bad_request(format!("the body is not a valid hello: {e}")))?;
        check_opt("bootcd_version", &request.bootcd_version, Limits::SHORT)
            .and_then(|()| check_hardware(&request.hardware))
            .map_err(|e| Failure::bad_request(e.to_string()))?;
        let macs: Vec<String> = request
            .hardware
            .nics
            .iter()
            .map(|n| n.mac.to_string())
            .collect();
        tracing::info!(peer, macs = %macs.join(","), "unregistered node said hello");
        app.writer
            .submit(WriteOp::Hello {
                request: Box::new(request),
                peer,
            })
            .await
            .map_err(|e| Failure::internal_error(&e))?;
        let reply = HelloResponse {
            message: "this machine is not registered with the boot server: an admin registers it \
                      with `bootserver node add` and boots it with the node config that writes"
                .into(),
            server_time: Timestamp::now(),
        };
        Ok::<_, Failure>(json_response(StatusCode::OK, &reply, None))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
