//! The `--middleware NAME=URL[,timeout=DUR][,max_payload_bytes=N]` flag value.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use super::super::stage::PLATFORM_MAX_PAYLOAD;

/// The operator's timeout when the flag gives none (OpenShell's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// The shortest timeout a registration or binding may ask for.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// The longest timeout a registration or binding may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest registration name.
const MAX_NAME: usize = 128;

/// One `--middleware` registration: a name the policy's `middleware` field
/// refers to, and where its `SupervisorMiddleware` gRPC service listens.
/// Built only by parsing, so every value is usable as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The registration name (`[A-Za-z0-9._/-]`, never `sluice/...`).
    pub name: String,
    /// `http://host:port` or `https://host:port`, normalized.
    url: String,
    tls: bool,
    timeout: Duration,
    max_payload_bytes: Option<u64>,
}

impl Registration {
    /// Where the service listens (`http://host:port` or `https://host:port`).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the service is reached over TLS (`https://`).
    #[must_use]
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The operator's timeout: for `Describe` and `ValidateConfig`, and the
    /// upper bound of every binding's timeout (default 500 ms).
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The operator's payload limit, when given (else each binding's own).
    #[must_use]
    pub fn max_payload_bytes(&self) -> Option<u64> {
        self.max_payload_bytes
    }
}

impl fmt::Display for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={},timeout={}ms",
            self.name,
            self.url,
            self.timeout.as_millis()
        )?;
        if let Some(n) = self.max_payload_bytes {
            write!(f, ",max_payload_bytes={n}")?;
        }
        Ok(())
    }
}

/// Why a `--middleware` value does not parse (one line, naming the part).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RegistrationError(String);

impl FromStr for Registration {
    type Err = RegistrationError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |m: String| RegistrationError(m);
        let Some((name, rest)) = value.split_once('=') else {
            return Err(err(
                "expected NAME=URL[,timeout=DUR][,max_payload_bytes=N]".into()
            ));
        };
        check_name(name).map_err(err)?;
        let mut parts = rest.split(',');
        let url = parts.next().unwrap_or_default();
        let (tls, url) = parse_url(url).map_err(|m| err(format!("middleware `{name}`: {m}")))?;
        let (mut timeout, mut max_payload_bytes) = (None, None);
        for option in parts {
            let in_name = |m: String| err(format!("middleware `{name}`: {m}"));
            let Some((key, val)) = option.split_once('=') else {
                return Err(in_name(format!(
                    "option `{option}` is not KEY=VALUE (timeout, max_payload_bytes)"
                )));
            };
            let dup = match key {
                "timeout" => timeout
                    .replace(parse_timeout(val).map_err(|m| in_name(format!("timeout: {m}")))?)
                    .is_some(),
                "max_payload_bytes" => max_payload_bytes
                    .replace(
                        parse_payload(val)
                            .map_err(|m| in_name(format!("max_payload_bytes: {m}")))?,
                    )
                    .is_some(),
                _ => {
                    return Err(in_name(format!(
                        "unknown option `{key}` (known: timeout, max_payload_bytes)"
                    )))
                }
            };
            if dup {
                return Err(in_name(format!("option `{key}` given twice")));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            url,
            tls,
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            max_payload_bytes,
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty middleware name (NAME=URL)".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("middleware name is over {MAX_NAME} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(format!(
            "middleware name `{}`: {c:?} is not allowed (letters, digits, `.`, `_`, `/`, `-`)",
            name.escape_debug()
        ));
    }
    if name.starts_with("sluice/") {
        return Err(format!(
            "middleware name `{name}`: the `sluice/` prefix is reserved for built-in stages"
        ));
    }
    Ok(())
}

/// `http://host:port` or `https://host:port` (an optional trailing `/`):
/// whether it is TLS, and the normalized URL.
fn parse_url(url: &str) -> Result<(bool, String), String> {
    let lower = url.to_ascii_lowercase();
    let (tls, rest) = if let Some(rest) = lower.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = lower.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(format!(
            "URL `{url}` must be http://HOST:PORT (plaintext gRPC) or https://HOST:PORT (TLS)"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "URL `{url}`: only a scheme, a host and a port (no path, query or user)"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, port) = v6
            .split_once("]:")
            .ok_or_else(|| format!("URL `{url}`: expected [IPv6]:PORT"))?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("URL `{url}`: `{addr}` is not an IPv6 address"))?;
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("URL `{url}` needs an explicit port (HOST:PORT)"))?;
        let name_ok = !host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !(name_ok || host.parse::<Ipv4Addr>().is_ok()) {
            return Err(format!(
                "URL `{url}`: `{host}` is not a host name or address"
            ));
        }
        (host.to_owned(), port)
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {
            let scheme = if tls { "https" } else { "http" };
            Ok((tls, format!("{scheme}://{host}:{p}")))
        }
        _ => Err(format!("URL `{url}`: `{port}` is not a port (1-65535)")),
    }
}

/// `<int>ms` or `<int>s`, within 10 ms ..= 30 s (the contract's format for
/// registrations and binding timeouts alike).
pub(super) fn parse_timeout(text: &str) -> Result<Duration, String> {
    let parsed = if let Some(ms) = text.strip_suffix("ms") {
        digits(ms).map(Duration::from_millis)
    } else if let Some(s) = text.strip_suffix('s') {
        digits(s).map(Duration::from_secs)
    } else {
        None
    };
    let d = parsed.ok_or_else(|| format!("`{text}` is not <int>ms or <int>s"))?;
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&d) {
        return Err(format!("`{text}` is outside 10ms..30s"));
    }
    Ok(d)
}

fn parse_payload(text: &str) -> Result<u64, String> {
    let n = digits(text).ok_or_else(|| format!("`{text}` is not a number of bytes"))?;
    if n == 0 || n > PLATFORM_MAX_PAYLOAD as u64 {
        return Err(format!(
            "{n} is outside 1..{PLATFORM_MAX_PAYLOAD} (4 MiB, the platform cap)"
        ));
    }
    Ok(n)
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// value, name, url, tls, timeout, max_payload_bytes
    type Parsed = (
        &'static str,
        &'static str,
        &'static str,
        bool,
        Duration,
        Option<u64>,
    );

    #[test]
    fn parses_registrations() {
        let ms = Duration::from_millis;
        let ok: &[Parsed] = &[
            (
                "guard=http://127.0.0.1:50051",
                "guard",
                "http://127.0.0.1:50051",
                false,
                ms(500),
                None,
            ),
            (
                "guard=http://127.0.0.1:50051/",
                "guard",
                "http://127.0.0.1:50051",
                false,
                ms(500),
                None,
            ),
            (
                "a.b_c/d-e=HTTPS://MW.Example:443",
                "a.b_c/d-e",
                "https://mw.example:443",
                true,
                ms(500),
                None,
            ),
            (
                "g=http://[::1]:9,timeout=2s",
                "g",
                "http://[::1]:9",
                false,
                ms(2000),
                None,
            ),
            (
                "g=http://h:1,timeout=10ms,max_payload_bytes=4194304",
                "g",
                "http://h:1",
                false,
                ms(10),
                Some(4_194_304),
            ),
            (
                "g=http://h:1,max_payload_bytes=1,timeout=30s",
                "g",
                "http://h:1",
                false,
                ms(30_000),
                Some(1),
            ),
        ];
        for (value, name, url, tls, timeout, max) in ok {
            let r: Registration = value.parse().unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(
                (
                    r.name.as_str(),
                    r.url(),
                    r.tls(),
                    r.timeout(),
                    r.max_payload_bytes()
                ),
                (*name, *url, *tls, *timeout, *max),
                "{value}"
            );
            assert_eq!(
                r.to_string().parse::<Registration>().unwrap(),
                r,
                "{value} round trip"
            );
        }
    }

    #[test]
    fn rejects_bad_registrations() {
        // value, a fragment of the error
        let bad: &[(&str, &str)] = &[
            ("guard", "expected NAME=URL"),
            ("=http://h:1", "empty middleware name"),
            ("gu ard=http://h:1", "' ' is not allowed"),
            ("g=r=http://h:1", "must be http://"),
            ("sluice/regex=http://h:1", "reserved for built-in"),
            ("g=grpc://h:1", "must be http://"),
            ("g=h:1", "must be http://"),
            ("g=http://h", "explicit port"),
            ("g=http://h:0", "not a port"),
            ("g=http://h:65536", "not a port"),
            ("g=http://h:1/v1", "no path"),
            ("g=http://u@h:1", "no path, query or user"),
            ("g=http://h:1?x", "no path"),
            ("g=http://:1", "not a host name"),
            ("g=http://h_x:1", "not a host name"),
            ("g=http://[::1:1", "expected [IPv6]:PORT"),
            ("g=http://[zz]:1", "not an IPv6 address"),
            ("g=http://h:1,timeout=5m", "not <int>ms or <int>s"),
            ("g=http://h:1,timeout=1.5s", "not <int>ms or <int>s"),
            ("g=http://h:1,timeout=9ms", "outside 10ms..30s"),
            ("g=http://h:1,timeout=31s", "outside 10ms..30s"),
            ("g=http://h:1,timeout=", "not <int>ms"),
            ("g=http://h:1,max_payload_bytes=0", "outside 1..4194304"),
            (
                "g=http://h:1,max_payload_bytes=4194305",
                "outside 1..4194304",
            ),
            (
                "g=http://h:1,max_payload_bytes=1MiB",
                "not a number of bytes",
            ),
            ("g=http://h:1,timeout=1s,timeout=2s", "given twice"),
            ("g=http://h:1,retries=3", "unknown option `retries`"),
            ("g=http://h:1,verbose", "not KEY=VALUE"),
        ];
        for (value, want) in bad {
            let e = value.parse::<Registration>().expect_err(value).to_string();
            assert!(e.contains(want), "{value}: {e:?} lacks {want:?}");
        }
        let long = format!("{}=http://h:1", "n".repeat(MAX_NAME + 1));
        assert!(long.parse::<Registration>().is_err());
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
        for bad in ["", "s", "ms", "-1s", "1m", "0ms", "1 s", "30001ms"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
