//! The client's startup phase: `SSLRequest` (answered `S` and TLS with the
//! sandbox-CA leaf, or `N`), `GSSENCRequest` (always `N`), direct TLS
//! (PostgreSQL 17 `sslnegotiation=direct`), `CancelRequest`, then the
//! `StartupMessage`, whose parameters are checked here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;

use super::io::{MsgReader, ReadError};
use super::wire;
use crate::relay::stream::ClientStream;

/// The ALPN protocol PostgreSQL clients (libpq 17+) offer over TLS.
pub(super) const ALPN_POSTGRESQL: &[u8] = b"postgresql";
/// The whole startup phase, TLS handshake included, must finish in this.
pub(super) const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// The `StartupMessage` the client sent (protocol 3.x).
#[derive(Debug)]
pub(super) struct ClientStartup {
    pub(super) version: u32,
    pub(super) params: Vec<(String, String)>,
    pub(super) user: String,
    /// Whether the client negotiated TLS with sluice.
    pub(super) tls: bool,
}

/// How the startup phase ended.
pub(super) enum Outcome {
    Startup(Box<MsgReader<ClientStream>>, ClientStartup),
    /// A `CancelRequest` (its 16 bytes, to forward over a new connection).
    Cancel(Bytes),
    /// Refused or failed: `reply` (a FATAL `ErrorResponse`, may be empty)
    /// goes to the client, `reason` to the audit log.
    Refused {
        client: Box<MsgReader<ClientStream>>,
        reply: Vec<u8>,
        reason: String,
    },
    /// The client left (or broke the framing) before a startup message.
    Gone(String),
}

/// `client_tls` with the PostgreSQL ALPN protocol instead of HTTP's.
fn postgres_tls(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Arc::new(config)
}

async fn accept_tls(tcp: TcpStream, config: &ServerConfig) -> std::io::Result<ClientStream> {
    let tls = tokio_rustls::TlsAcceptor::from(postgres_tls(config))
        .accept(tcp)
        .await?;
    Ok(ClientStream::Tls(Box::new(tls)))
}

/// Runs the client's startup phase (the caller bounds it in time).
pub(super) async fn negotiate(client: TcpStream, client_tls: Option<&ServerConfig>) -> Outcome {
    // Direct TLS: the first byte is a TLS handshake record.
    let mut first = [0u8; 1];
    let direct = matches!(client.peek(&mut first).await, Ok(1) if first[0] == 0x16);
    let mut tls = false;
    let mut reader = if direct {
        let Some(config) = client_tls else {
            return Outcome::Gone("direct TLS without a leaf certificate".into());
        };
        match accept_tls(client, config).await {
            Ok(s) => {
                tls = true;
                MsgReader::new(s)
            }
            Err(e) => return Outcome::Gone(format!("TLS handshake with client failed: {e}")),
        }
    } else {
        MsgReader::new(ClientStream::Plain(client))
    };
    let mut negotiations = 0;
    loop {
        let packet = match reader.startup().await {
            Ok(Some(p)) => p,
            Ok(None) => return Outcome::Gone("client closed during startup".into()),
            Err(e) => return refused(reader, "08P01", &startup_error(&e)),
        };
        match packet.code {
            wire::SSL_REQUEST | wire::GSSENC_REQUEST if negotiations < 2 && !tls => {
                negotiations += 1;
                let config = client_tls.filter(|_| packet.code == wire::SSL_REQUEST);
                let answer: &[u8] = if config.is_some() { b"S" } else { b"N" };
                if reader.io.write_all(answer).await.is_err() {
                    return Outcome::Gone("client closed during startup".into());
                }
                let Some(config) = config else { continue };
                if !reader.buf.is_empty() {
                    // Bytes sent before the handshake would be read as if they had been encrypted.
                    return Outcome::Gone("client sent data before the TLS handshake".into());
                }
                let ClientStream::Plain(tcp) = reader.io else {
                    return Outcome::Gone("TLS requested twice".into());
                };
                match accept_tls(tcp, config).await {
                    Ok(s) => {
                        tls = true;
                        reader = MsgReader::new(s);
                    }
                    Err(e) => {
                        return Outcome::Gone(format!("TLS handshake with client failed: {e}"))
                    }
                }
            }
            // Process id and key: 4 + 4 bytes, up to 4 + 256 in protocol 3.2.
            wire::CANCEL_REQUEST if (8..=260).contains(&packet.payload.len()) => {
                let len = u32::try_from(packet.payload.len() + 8).unwrap_or(u32::MAX);
                let mut raw = len.to_be_bytes().to_vec();
                raw.extend_from_slice(&wire::CANCEL_REQUEST.to_be_bytes());
                raw.extend_from_slice(&packet.payload);
                return Outcome::Cancel(Bytes::from(raw));
            }
            v if v >> 16 == 3 => {
                let params = match wire::startup_params(&packet.payload) {
                    Ok(p) => p,
                    Err(e) => return refused(reader, "08P01", &format!("sluice: {e}")),
                };
                return match check_params(&params) {
                    Err(reason) => refused(reader, "42501", &format!("sluice: {reason}")),
                    Ok(user) => Outcome::Startup(
                        Box::new(reader),
                        ClientStartup {
                            version: v,
                            params,
                            user,
                            tls,
                        },
                    ),
                };
            }
            other => {
                return refused(
                    reader,
                    "08P01",
                    &format!(
                        "sluice: unsupported frontend protocol or request {}.{}",
                        other >> 16,
                        other & 0xffff
                    ),
                )
            }
        }
    }
}

fn startup_error(e: &ReadError) -> String {
    match e {
        ReadError::Wire(w) => format!("sluice: invalid startup packet: {w}"),
        other => format!("sluice: {other}"),
    }
}

fn refused(reader: MsgReader<ClientStream>, code: &str, text: &str) -> Outcome {
    Outcome::Refused {
        client: Box::new(reader),
        reply: wire::error_response(true, code, text),
        reason: text.trim_start_matches("sluice: ").to_owned(),
    }
}

/// Settings a client may not choose at startup: `search_path` (sluice
/// qualifies unqualified names with `public` and pins it), and those that
/// change how statement text is lexed.
const GUARDED: &[&str] = &[
    "search_path",
    "standard_conforming_strings",
    "backslash_quote",
    "client_encoding",
];

/// The user name, or why the parameters are refused. `options`
/// (command-line switches for the backend) may not mention a guarded
/// setting in any spelling (`-c`, `--`, `-` for `_`, escapes, case).
pub(super) fn check_params(params: &[(String, String)]) -> Result<String, String> {
    let mut user = None;
    for (name, value) in params {
        let lname = name.to_ascii_lowercase();
        let v = value.trim().to_ascii_lowercase();
        match lname.as_str() {
            "user" => user = Some(value.clone()),
            "replication" if !matches!(v.as_str(), "false" | "off" | "no" | "0") => {
                return Err("replication connections are not allowed".into());
            }
            "options" => {
                let norm: String = v
                    .chars()
                    .filter(|&c| c != '\\')
                    .map(|c| if c == '-' { '_' } else { c })
                    .collect();
                if let Some(g) = GUARDED.iter().find(|g| norm.contains(*g)) {
                    return Err(format!("startup option {g} is not allowed"));
                }
            }
            "client_encoding" if super::classify::safe_encoding(&v) => {}
            "standard_conforming_strings" if matches!(v.as_str(), "on" | "true" | "1" | "yes") => {}
            n if GUARDED.contains(&n) => {
                return Err(format!("startup parameter {n} is not allowed"));
            }
            _ => {}
        }
    }
    match user {
        Some(u) if !u.is_empty() => Ok(u),
        _ => Err("no PostgreSQL user name specified in startup packet".into()),
    }
}

/// The parameters sent upstream: the client's, with `search_path` pinned
/// to `public` (it takes precedence over role and database defaults, so
/// the `public.` qualification is what the server resolves too).
pub(super) fn upstream_params(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = params.to_vec();
    out.push(("search_path".into(), "public".into()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn startup_parameters() {
        let ok: &[&[(&str, &str)]] = &[
            &[("user", "agent")],
            &[
                ("user", "agent"),
                ("database", "app"),
                ("application_name", "psql"),
            ],
            &[("user", "a"), ("client_encoding", "UTF8")],
            &[("user", "a"), ("client_encoding", "sql_ascii")],
            &[("user", "a"), ("options", "-c statement_timeout=5s")],
            &[("user", "a"), ("replication", "false")],
            &[("user", "a"), ("standard_conforming_strings", "on")],
        ];
        for params in ok {
            assert!(check_params(&p(params)).is_ok(), "{params:?}");
        }
        let refused: &[&[(&str, &str)]] = &[
            &[("database", "app")],
            &[("user", "")],
            &[("user", "a"), ("search_path", "private")],
            &[("user", "a"), ("Search_Path", "private")],
            &[("user", "a"), ("options", "-c search_path=private")],
            &[("user", "a"), ("options", "--search-path=private")],
            &[("user", "a"), ("options", "-c SEARCH\\_PATH=private")],
            &[
                ("user", "a"),
                ("options", "-c standard_conforming_strings=off"),
            ],
            &[("user", "a"), ("client_encoding", "SJIS")],
            &[("user", "a"), ("standard_conforming_strings", "off")],
            &[("user", "a"), ("backslash_quote", "on")],
            &[("user", "a"), ("replication", "database")],
            &[("user", "a"), ("replication", "true")],
        ];
        for params in refused {
            assert!(check_params(&p(params)).is_err(), "{params:?}");
        }
        let up = upstream_params(&p(&[("user", "a")]));
        assert_eq!(up.last(), Some(&("search_path".into(), "public".into())));
    }
}
