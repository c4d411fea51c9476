//! Who may be answered: the `Host` header (DNS rebinding) and the bearer token, checked before
//! any handler runs; every refusal is counted (`transport = "admin"`) and says what was wrong.
//!
//! A web page on `evil.example` whose name an attacker re-points at the gateway's address makes
//! the victim's browser send `Host: evil.example`: only IP literals, `localhost` and the names
//! in `admin.hosts` are answered, which no rebinding can forge. The token is compared in
//! constant time, and accepted as `Authorization: Bearer <token>` (Prometheus' `bearer_token`)
//! or as the password of HTTP Basic (a browser's own prompt, for the status page). `/livez` and
//! the terse `/readyz` need no token: probes are unauthenticated, and they tell nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::observe::stats::Stats;

/// The peer of the connection a request came on, set by the accept loop.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What a request is checked against.
pub struct Guard {
    pub token: Option<String>,
    /// Lower-case names besides IP literals and `localhost`.
    pub hosts: Vec<String>,
    pub stats: Stats,
}

/// Refuses a request with a foreign `Host`, or without the token where one is needed.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST) {
        let host = String::from_utf8_lossy(host.as_bytes());
        if !host_allowed(&host, &guard.hosts) {
            guard
                .stats
                .record_refusal(crate::transport::Transport::Admin, "host", None, peer);
            return (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "refused: Host {:?} is not this gateway's address or one of admin.hosts\n",
                    crate::logline::clip(&host)
                ),
            )
                .into_response();
        }
    }
    if let Some(token) = &guard.token {
        let open = match request.uri().path() {
            "/livez" => true,
            "/readyz" => !request.uri().query().is_some_and(|q| q.contains("verbose")),
            _ => false,
        };
        if !open && !authorized(headers, token) {
            guard.stats.record_refusal(
                crate::transport::Transport::Admin,
                "unauthorized",
                None,
                peer,
            );
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"tributary\", Bearer",
                )],
                "refused: this needs the admin token (Authorization: Bearer, or Basic with the token as password)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// `host` (a `Host` header, port optional) is an IP literal, `localhost`, or one of `names`.
pub fn host_allowed(host: &str, names: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || is_port(port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok() || name == "localhost" || names.contains(&name)
}

/// `:port`, colon included, or a bare port.
fn is_port(text: &str) -> bool {
    let digits = text.strip_prefix(':').unwrap_or(text);
    !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given: Vec<u8> = if let Some(bearer) = value.strip_prefix("Bearer ") {
        bearer.trim().as_bytes().to_vec()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        match decoded.iter().position(|&b| b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    given.ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_no_rebinding_can_forge_are_answered() {
        let names = vec!["gw1.depot.lan".to_owned()];
        for ok in [
            "127.0.0.1:9880",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:9880",
            "[::1]",
            "localhost:9880",
            "LOCALHOST",
            "gw1.depot.lan",
            "GW1.Depot.Lan.:9880",
        ] {
            assert!(host_allowed(ok, &names), "{ok} refused");
        }
        for refused in [
            "evil.example",
            "evil.example:9880",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::1]x",
            "127.0.0.1:port",
            "",
            "gw1.depot.lan.evil.example",
        ] {
            assert!(!host_allowed(refused, &names), "{refused} answered");
        }
    }

    #[test]
    fn the_token_is_taken_as_bearer_or_as_a_basic_password() {
        let token = "0123456789abcdef0123";
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            h
        };
        assert!(authorized(&with(&format!("Bearer {token}")), token));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{token}"));
        assert!(authorized(&with(&format!("Basic {basic}")), token));
        assert!(!authorized(&with("Bearer 0123456789abcdef012"), token));
        assert!(!authorized(&with("Basic !!!"), token));
        assert!(!authorized(&HeaderMap::new(), token));
    }
}
