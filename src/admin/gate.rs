//! Who may read `/records`, the page and `/sim`: what DNS would not tell
//! them (every name and address of the zone, the same data `[transfer]
//! allow`/`require_tsig` guard) and the simulator's controls.
//!
//! `/health`, `/ready` and `/metrics` are not behind it: the kubelet and
//! Prometheus reach them from beyond loopback with no token. The rest asks,
//! per `[admin] require_token`, for `[admin] token_file`'s token as
//! `Authorization: Bearer <token>` (401 without it or with another one; 403
//! from beyond loopback when there is no token to show). A client is told
//! apart by the peer address of its connection (axum's `ConnectInfo`),
//! never by a header it could write itself. The token is compared in
//! constant time (`subtle`, already in the build through rustls): how long
//! a wrong guess takes says nothing about how much of it was right.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::config::{AdminConfig, AdminToken, RequireToken};

/// The admin listener's token policy: `[admin] require_token` and the token
/// `token_file` held when the configuration was loaded.
#[derive(Clone, Debug)]
pub struct Gate {
    require: RequireToken,
    token: Option<AdminToken>,
}

/// What the gate says to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Served.
    Pass,
    /// 401: the token is needed, and missing or wrong.
    Unauthorized,
    /// 403: from beyond loopback with no token configured to show.
    Forbidden,
}

impl Gate {
    /// The gate of `[admin]` (its `token` as loaded: see
    /// [`crate::config::Config::read_admin_token`]).
    pub fn new(admin: &AdminConfig) -> Self {
        Self {
            require: admin.require_token,
            token: admin.token.clone(),
        }
    }

    /// The verdict on a request from `peer` (`None`: unknown, which counts
    /// as beyond loopback) carrying `authorization` (the header's bytes).
    pub fn verdict(&self, peer: Option<IpAddr>, authorization: Option<&[u8]>) -> Verdict {
        let needs_token = match self.require {
            RequireToken::Never => false,
            RequireToken::Always => true,
            RequireToken::BeyondLoopback => !peer.is_some_and(is_loopback),
        };
        if !needs_token {
            return Verdict::Pass;
        }
        let Some(token) = &self.token else {
            return Verdict::Forbidden;
        };
        match authorization.and_then(bearer) {
            Some(given) if bool::from(given.ct_eq(token.as_bytes())) => Verdict::Pass,
            _ => Verdict::Unauthorized,
        }
    }
}

impl Gate {
    /// Logs who the listener bound at `addr` lets in, when that is more
    /// than loopback clients, or fewer than an operator may expect.
    pub fn announce(&self, addr: SocketAddr) {
        if is_loopback(addr.ip()) && self.require != RequireToken::Always {
            return;
        }
        match (self.require, &self.token) {
            (RequireToken::Never, _) => warn!(
                %addr,
                "admin: require_token = \"never\": whoever reaches this listener reads every \
                 name and address (/records) and drives the simulator"
            ),
            (RequireToken::BeyondLoopback, None) => info!(
                %addr,
                "admin: /records, the page and /sim answer loopback clients only \
                 (set [admin] token_file to let others in with its token)"
            ),
            (_, _) => info!(
                %addr,
                require_token = ?self.require,
                "admin: /records, the page and /sim ask for the [admin] token_file token"
            ),
        }
    }
}

/// True for 127.0.0.0/8 and ::1, and for IPv4 loopback mapped into IPv6
/// (what a dual-stack `[::]` listener sees of an IPv4 client).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// any case, RFC 9110 §11.1).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = header.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// The middleware in front of the gated routes: passes the request on, or
/// answers 401 (with `WWW-Authenticate: Bearer`) or 403.
pub async fn guard(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match gate.verdict(peer, authorization) {
        Verdict::Pass => next.run(request).await,
        Verdict::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"headless-dns admin\""),
            )],
            "this needs the admin token: Authorization: Bearer <[admin] token_file>\n",
        )
            .into_response(),
        Verdict::Forbidden => (
            StatusCode::FORBIDDEN,
            "answered on loopback only: set [admin] token_file to allow other clients \
             with its token\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(require: RequireToken, token: Option<&str>) -> Gate {
        Gate {
            require,
            token: token.map(|t| AdminToken::parse(t.as_bytes()).unwrap()),
        }
    }

    const TOKEN: &str = "0123456789abcdef0123";

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn loopback_is_127_8_and_ipv6_one_and_their_mapped_forms() {
        for l in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.0.9",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback(l.parse().unwrap()), "{l}");
        }
        for l in [
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.1",
            "fe80::1",
            "192.168.1.1",
        ] {
            assert!(!is_loopback(l.parse().unwrap()), "{l}");
        }
    }

    #[test]
    fn beyond_loopback_needs_the_token_and_loopback_does_not() {
        let g = gate(RequireToken::BeyondLoopback, Some(TOKEN));
        let good = format!("Bearer {TOKEN}");
        for peer in [ip("127.0.0.1"), ip("::1"), ip("::ffff:127.0.0.1")] {
            assert_eq!(g.verdict(peer, None), Verdict::Pass, "{peer:?}");
        }
        // A pod IP, a mapped one, and an unknown peer: beyond loopback.
        for peer in [
            ip("10.244.1.7"),
            ip("::ffff:10.244.1.7"),
            ip("fd00::7"),
            None,
        ] {
            assert_eq!(g.verdict(peer, None), Verdict::Unauthorized, "{peer:?}");
            let wrong = format!("Bearer {TOKEN}x");
            assert_eq!(
                g.verdict(peer, Some(wrong.as_bytes())),
                Verdict::Unauthorized
            );
            assert_eq!(
                g.verdict(peer, Some(TOKEN.as_bytes())),
                Verdict::Unauthorized,
                "no scheme"
            );
            assert_eq!(g.verdict(peer, Some(good.as_bytes())), Verdict::Pass);
            let lower = format!("bearer  {TOKEN} ");
            assert_eq!(g.verdict(peer, Some(lower.as_bytes())), Verdict::Pass);
        }
        // Without a token file, beyond loopback is refused outright.
        let g = gate(RequireToken::BeyondLoopback, None);
        assert_eq!(g.verdict(ip("10.0.0.1"), None), Verdict::Forbidden);
        assert_eq!(
            g.verdict(ip("10.0.0.1"), Some(good.as_bytes())),
            Verdict::Forbidden
        );
        assert_eq!(g.verdict(ip("127.0.0.1"), None), Verdict::Pass);
    }

    #[test]
    fn always_and_never() {
        let g = gate(RequireToken::Always, Some(TOKEN));
        let good = format!("Bearer {TOKEN}");
        for peer in [ip("127.0.0.1"), ip("10.0.0.1")] {
            assert_eq!(g.verdict(peer, None), Verdict::Unauthorized);
            assert_eq!(g.verdict(peer, Some(good.as_bytes())), Verdict::Pass);
        }
        let g = gate(RequireToken::Never, None);
        assert_eq!(g.verdict(ip("10.0.0.1"), None), Verdict::Pass);
        assert_eq!(g.verdict(None, None), Verdict::Pass);
    }

    #[test]
    fn tokens_are_long_printable_and_trimmed() {
        let t = AdminToken::parse(format!("{TOKEN}\n").as_bytes()).unwrap();
        assert_eq!(t.as_bytes(), TOKEN.as_bytes());
        assert!(AdminToken::parse(b"short\n").is_err());
        assert!(AdminToken::parse(b"0123456789 abcdef0123").is_err());
        assert_eq!(format!("{t:?}"), "AdminToken(..)", "Debug hides it");
    }
}
