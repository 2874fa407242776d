//! Request authentication between a node and the boot server.
//!
//! Each request carries an HMAC-SHA256, keyed with the node's secret, over
//! the method, path, a timestamp, a fresh nonce and the hash of the body.
//! PlanetLab's boot manager signed a constant string, which made its HMAC a
//! static token anyone on the path could replay; here every field that makes
//! a request unique is covered, and the server refuses stale timestamps and
//! nonces it has seen. The server's reply is bound to the request's nonce the
//! same way, so a node may trust the time in it.
//!
//! ```text
//! Authorization: PLNODE-HMAC-SHA256 node=<id>,ts=<unix secs>,nonce=<32 hex>,sig=<64 hex>
//! string to sign: PLNODE-HMAC-SHA256\n<id>\n<METHOD>\n<path?query>\n<ts>\n<nonce>\n<hex sha256(body)>
//! X-Plnode-Response-Sig: hex(HMAC(key, "PLNODE-RESPONSE\n<nonce>\n<hex sha256(reply body)>"))
//! ```

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::node::{NodeId, NodeKey};

/// The `Authorization` scheme name, also the first line of the string to sign
/// (so a signature for this scheme cannot be replayed under another).
pub const SCHEME: &str = "PLNODE-HMAC-SHA256";
/// Header carrying the server's reply signature ([`sign_response`]), lowercase
/// as HTTP/2 and the `http` crate spell header names.
pub const RESPONSE_SIG_HEADER: &str = "x-plnode-response-sig";

/// A request nonce: 16 random bytes, shown as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce([u8; 16]);

impl Nonce {
    /// From bytes the caller drew from the system's random source.
    pub fn from_random_bytes(bytes: [u8; 16]) -> Nonce {
        Nonce(bytes)
    }
    /// The 32 lowercase hex digits sent in the header and signed.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
    fn parse(s: &str) -> Result<Nonce, AuthError> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| AuthError::Malformed("nonce must be 32 hex digits".into()))?;
        Ok(Nonce(out))
    }
}

/// Why a request or reply failed authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The header is not `PLNODE-HMAC-SHA256 node=…,ts=…,nonce=…,sig=…`
    /// with each field once and well formed; the text says which part.
    #[error("malformed Authorization header: {0}")]
    Malformed(String),
    /// The HMAC does not match the request (or reply) under the node's key:
    /// a wrong key, or bytes changed on the way.
    #[error("signature does not match")]
    BadSignature,
}

/// The parsed `Authorization` header of a node request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    /// The node the request claims to come from; the server looks its key up
    /// by this id before checking the signature.
    pub node_id: NodeId,
    /// The node's clock when it signed, in Unix seconds; the server refuses
    /// it outside its skew window.
    pub timestamp: i64,
    /// Fresh per request; the server refuses one it has seen within the window.
    pub nonce: Nonce,
    signature: [u8; 32],
}

impl AuthHeader {
    /// The header value, `PLNODE-HMAC-SHA256 node=…,ts=…,nonce=…,sig=…`.
    pub fn to_header_value(&self) -> String {
        format!(
            "{SCHEME} node={},ts={},nonce={},sig={}",
            self.node_id,
            self.timestamp,
            self.nonce.to_hex(),
            hex::encode(self.signature)
        )
    }

    /// Parses a header value; every field must be present exactly once.
    pub fn parse(value: &str) -> Result<AuthHeader, AuthError> {
        let malformed = |m: &str| AuthError::Malformed(m.to_string());
        let rest = value
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| malformed("expected scheme PLNODE-HMAC-SHA256"))?;
        let (mut node, mut ts, mut nonce, mut sig) = (None, None, None, None);
        for part in rest.split(',') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| malformed("expected key=value pairs"))?;
            let slot = match k {
                "node" => &mut node,
                "ts" => &mut ts,
                "nonce" => &mut nonce,
                "sig" => &mut sig,
                other => return Err(AuthError::Malformed(format!("unknown field `{other}`"))),
            };
            if slot.replace(v).is_some() {
                return Err(AuthError::Malformed(format!("field `{k}` given twice")));
            }
        }
        let node_id = node
            .ok_or_else(|| malformed("missing node"))?
            .parse::<u64>()
            .map_err(|_| malformed("node must be a number"))?;
        let timestamp = ts
            .ok_or_else(|| malformed("missing ts"))?
            .parse::<i64>()
            .map_err(|_| malformed("ts must be unix seconds"))?;
        let nonce = Nonce::parse(nonce.ok_or_else(|| malformed("missing nonce"))?)?;
        let mut signature = [0u8; 32];
        hex::decode_to_slice(sig.ok_or_else(|| malformed("missing sig"))?, &mut signature)
            .map_err(|_| malformed("sig must be 64 hex digits"))?;
        Ok(AuthHeader {
            node_id: NodeId(node_id),
            timestamp,
            nonce,
            signature,
        })
    }

    /// Checks the signature against the request as received. Freshness
    /// (timestamp window, nonce reuse) is the server's to check.
    pub fn verify(
        &self,
        key: &NodeKey,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(), AuthError> {
        let mut mac = keyed(key);
        mac.update(
            string_to_sign(
                self.node_id,
                method,
                path_and_query,
                self.timestamp,
                self.nonce,
                body,
            )
            .as_bytes(),
        );
        mac.verify_slice(&self.signature)
            .map_err(|_| AuthError::BadSignature)
    }
}

fn keyed(key: &NodeKey) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// The exact text a request signature covers.
pub fn string_to_sign(
    node_id: NodeId,
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: Nonce,
    body: &[u8],
) -> String {
    format!(
        "{SCHEME}\n{node_id}\n{}\n{path_and_query}\n{timestamp}\n{}\n{}",
        method.to_ascii_uppercase(),
        nonce.to_hex(),
        hex::encode(Sha256::digest(body))
    )
}

/// Signs a request the node is about to send.
pub fn sign_request(
    key: &NodeKey,
    node_id: NodeId,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp: i64,
    nonce: Nonce,
) -> AuthHeader {
    let mut mac = keyed(key);
    mac.update(string_to_sign(node_id, method, path_and_query, timestamp, nonce, body).as_bytes());
    AuthHeader {
        node_id,
        timestamp,
        nonce,
        signature: mac.finalize().into_bytes().into(),
    }
}

fn response_mac(key: &NodeKey, nonce: Nonce, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = keyed(key);
    mac.update(
        format!(
            "PLNODE-RESPONSE\n{}\n{}",
            nonce.to_hex(),
            hex::encode(Sha256::digest(body))
        )
        .as_bytes(),
    );
    mac
}

/// The `X-Plnode-Response-Sig` value for a reply to the request with `nonce`.
pub fn sign_response(key: &NodeKey, nonce: Nonce, body: &[u8]) -> String {
    hex::encode(response_mac(key, nonce, body).finalize().into_bytes())
}

/// Checks that a reply answers the request with `nonce` and was not altered.
pub fn verify_response(
    key: &NodeKey,
    nonce: Nonce,
    body: &[u8],
    header_value: &str,
) -> Result<(), AuthError> {
    let mut sig = [0u8; 32];
    hex::decode_to_slice(header_value.trim(), &mut sig)
        .map_err(|_| AuthError::Malformed("response signature must be 64 hex digits".into()))?;
    response_mac(key, nonce, body)
        .verify_slice(&sig)
        .map_err(|_| AuthError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NodeKey {
        NodeKey::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn signed() -> AuthHeader {
        sign_request(
            &key(),
            NodeId(7),
            "POST",
            "/api/v1/node/checkin",
            b"{}",
            1_800_000_000,
            Nonce([9; 16]),
        )
    }

    #[test]
    fn a_signed_request_verifies_after_a_header_round_trip() {
        let header = AuthHeader::parse(&signed().to_header_value()).unwrap();
        assert_eq!(header.node_id, NodeId(7));
        header
            .verify(&key(), "POST", "/api/v1/node/checkin", b"{}")
            .unwrap();
    }

    #[test]
    fn any_changed_part_breaks_the_signature() {
        let h = signed();
        let k = key();
        assert_eq!(
            h.verify(&k, "GET", "/api/v1/node/checkin", b"{}"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            h.verify(&k, "POST", "/api/v1/node/slivers", b"{}"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            h.verify(&k, "POST", "/api/v1/node/checkin", b"{ }"),
            Err(AuthError::BadSignature)
        );
        let other = NodeKey::new("fedcba9876543210fedcba9876543210").unwrap();
        assert_eq!(
            h.verify(&other, "POST", "/api/v1/node/checkin", b"{}"),
            Err(AuthError::BadSignature)
        );
        let mut moved = h.clone();
        moved.timestamp += 1;
        assert_eq!(
            moved.verify(&k, "POST", "/api/v1/node/checkin", b"{}"),
            Err(AuthError::BadSignature)
        );
        let mut renonced = h;
        renonced.nonce = Nonce([8; 16]);
        assert_eq!(
            renonced.verify(&k, "POST", "/api/v1/node/checkin", b"{}"),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers_say_why() {
        for (value, why) in [
            ("Bearer abc", "scheme"),
            ("PLNODE-HMAC-SHA256 node=1,ts=2,nonce=00", "nonce"),
            ("PLNODE-HMAC-SHA256 node=x,ts=2", "node must be a number"),
            ("PLNODE-HMAC-SHA256 node=1,node=2", "twice"),
            (
                "PLNODE-HMAC-SHA256 node=1,ts=1,nonce=00000000000000000000000000000000",
                "missing sig",
            ),
        ] {
            let e = AuthHeader::parse(value).unwrap_err().to_string();
            assert!(e.contains(why), "{value}: {e}");
        }
    }

    #[test]
    fn replies_are_bound_to_the_request_nonce() {
        let sig = sign_response(&key(), Nonce([1; 16]), b"{\"ok\":1}");
        verify_response(&key(), Nonce([1; 16]), b"{\"ok\":1}", &sig).unwrap();
        assert!(verify_response(&key(), Nonce([2; 16]), b"{\"ok\":1}", &sig).is_err());
        assert!(verify_response(&key(), Nonce([1; 16]), b"{\"ok\":2}", &sig).is_err());
    }
}
