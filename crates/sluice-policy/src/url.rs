//! The operator-configured URLs of a policy (a token grant's
//! `token_endpoint`, an inference route's `endpoint`): absolute `http(s)`
//! only, no user information or fragment, a plain host name or an IP
//! literal, a valid port, and plain `http` only to loopback. Messages name
//! the field (`what`) and quote the URL, never anything else.

use std::net::IpAddr;

use crate::host::parse_ip_literal;

/// The parts of an accepted URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HttpUrl<'a> {
    pub(crate) https: bool,
    /// Host name or IP literal, without brackets.
    pub(crate) host: &'a str,
    pub(crate) port: Option<u16>,
    /// Everything after the authority: path and query (may be empty).
    pub(crate) rest: &'a str,
}

/// Whether `host` (brackets removed) is loopback.
pub(crate) fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match parse_ip_literal(host) {
        Some(IpAddr::V4(v4)) => v4.is_loopback(),
        Some(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// Parses `url` as the value of the field `what`.
pub(crate) fn parse_http_url<'a>(what: &str, url: &'a str) -> Result<HttpUrl<'a>, String> {
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "{what} `{url}` must not contain whitespace or control characters"
        ));
    }
    let lower = url.to_ascii_lowercase();
    let (https, rest) = if lower.starts_with("https://") {
        (true, &url[8..])
    } else if lower.starts_with("http://") {
        (false, &url[7..])
    } else {
        return Err(format!("{what} `{url}` must be an absolute http(s) URL"));
    };
    if url.contains('#') {
        return Err(format!("{what} `{url}` must not have a fragment"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(format!("{what} `{url}` must not contain user information"));
    }
    let bracketed = authority.starts_with('[');
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        match r.split_once(']') {
            Some((h, p)) if p.is_empty() || p.starts_with(':') => (h, p.strip_prefix(':')),
            _ => return Err(format!("{what} `{url}` has an invalid host")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && if bracketed {
            matches!(parse_ip_literal(host), Some(IpAddr::V6(_)))
        } else {
            host.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
    if !host_ok {
        return Err(format!("{what} `{url}` has an invalid host"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("{what} `{url}` has an invalid port")),
        },
    };
    if !https && !is_loopback(host) {
        return Err(format!(
            "{what} `{url}` must use https (http is allowed only for loopback hosts)"
        ));
    }
    Ok(HttpUrl {
        https,
        host,
        port,
        rest: tail,
    })
}
