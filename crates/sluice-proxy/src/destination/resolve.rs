//! Name resolution with a deadline: `--add-host` pins first, then an
//! optional upstream DNS server (`--dns-server`, plain UDP A/AAAA), else the
//! system resolver. The only resolver in the proxy.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on addresses kept from one answer.
const MAX_ADDRESSES: usize = 32;

/// Why resolution failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("DNS resolution failed for {name}: {detail}")]
    Failed { name: Arc<str>, detail: String },
    #[error("DNS resolution timed out for {name} after {timeout:?}")]
    Timeout { name: Arc<str>, timeout: Duration },
    #[error("DNS resolution returned no addresses for {name}")]
    Empty { name: Arc<str> },
}

/// Resolves names for the destination validator.
#[derive(Clone, Debug)]
pub struct Resolver {
    pinned: Arc<HashMap<String, Vec<IpAddr>>>,
    timeout: Duration,
    system: bool,
    dns_server: Option<SocketAddr>,
}

impl Resolver {
    /// `pinned` maps lowercase names (no trailing dot) to addresses that
    /// answer before DNS. `system` enables the system resolver after them.
    #[must_use]
    pub fn new(pinned: HashMap<String, Vec<IpAddr>>, timeout: Duration, system: bool) -> Self {
        Self {
            pinned: Arc::new(pinned),
            timeout,
            system,
            dns_server: None,
        }
    }

    /// Ask `server` (UDP, one A and one AAAA query per resolution) for names
    /// that are not pinned, instead of the system resolver. `None` keeps the
    /// system resolver (when enabled).
    #[must_use]
    pub fn with_dns_server(mut self, server: Option<SocketAddr>) -> Self {
        self.dns_server = server;
        self
    }

    /// Resolve `name`; every answer is returned for the validator to filter.
    ///
    /// # Errors
    /// [`ResolveError`] when nothing answers in time or the answer is empty.
    pub async fn resolve(&self, name: &str, port: u16) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(addrs) = self.pinned.get(name) {
            return Ok(addrs.clone());
        }
        let name_arc: Arc<str> = name.into();
        if let Some(server) = self.dns_server {
            return match tokio::time::timeout(self.timeout, query_server(server, name)).await {
                Err(_) => Err(ResolveError::Timeout {
                    name: name_arc,
                    timeout: self.timeout,
                }),
                Ok(Err(detail)) => Err(ResolveError::Failed {
                    name: name_arc,
                    detail,
                }),
                Ok(Ok(out)) if out.is_empty() => Err(ResolveError::Empty { name: name_arc }),
                Ok(Ok(out)) => Ok(out),
            };
        }
        if !self.system {
            return Err(ResolveError::Empty { name: name_arc });
        }
        // The one sanctioned use of the system resolver: answers go straight
        // to the validator, which filters every one of them.
        #[allow(clippy::disallowed_methods)]
        let lookup = tokio::net::lookup_host((name, port));
        let answers = match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => {
                return Err(ResolveError::Timeout {
                    name: name_arc,
                    timeout: self.timeout,
                })
            }
            Ok(Err(e)) => {
                return Err(ResolveError::Failed {
                    name: name_arc,
                    detail: e.to_string(),
                })
            }
            Ok(Ok(a)) => a,
        };
        let mut out: Vec<IpAddr> = Vec::new();
        for sa in answers.take(MAX_ADDRESSES) {
            if !out.contains(&sa.ip()) {
                out.push(sa.ip());
            }
        }
        if out.is_empty() {
            return Err(ResolveError::Empty { name: name_arc });
        }
        Ok(out)
    }
}

/// A random 16-bit DNS transaction id (std's per-process random hash keys).
fn transaction_id() -> u16 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    (h.finish() & 0xffff) as u16
}

/// One A and one AAAA query to `server` over a connected UDP socket; the
/// caller bounds the whole exchange with the resolver deadline. Replies must
/// match the id, the question and come from `server`; a truncated or failed
/// reply fails the resolution (no TCP fallback: this path exists for
/// controlled resolvers and tests).
async fn query_server(server: SocketAddr, name: &str) -> Result<Vec<IpAddr>, String> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};

    let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| format!("invalid DNS name: {e}"))?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("DNS socket: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("DNS server {server}: {e}"))?;
    let mut pending: Vec<(u16, RecordType)> = Vec::with_capacity(2);
    for rtype in [RecordType::A, RecordType::AAAA] {
        let mut id = transaction_id();
        while pending.iter().any(|(p, _)| *p == id) {
            id = transaction_id();
        }
        let mut msg = Message::new();
        msg.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true);
        msg.add_query(Query::query(fqdn.clone(), rtype));
        let wire = msg.to_vec().map_err(|e| format!("DNS encode: {e}"))?;
        sock.send(&wire)
            .await
            .map_err(|e| format!("DNS send to {server}: {e}"))?;
        pending.push((id, rtype));
    }
    let mut out: Vec<IpAddr> = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !pending.is_empty() {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| format!("DNS receive from {server}: {e}"))?;
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue; // not a DNS message: ignore, the deadline bounds us
        };
        let Some(pos) = pending.iter().position(|(id, rtype)| {
            *id == reply.id()
                && reply.message_type() == MessageType::Response
                && reply.queries().len() == 1
                && reply.queries()[0].query_type() == *rtype
                && reply.queries()[0].name() == &fqdn
        }) else {
            continue; // stale or spoofed reply
        };
        pending.swap_remove(pos);
        if reply.truncated() {
            return Err(format!("DNS reply from {server} truncated"));
        }
        match reply.response_code() {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            code => return Err(format!("DNS server {server} answered {code}")),
        }
        for record in reply.answers() {
            let ip = match record.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue, // CNAME chains are followed by the server
            };
            if out.len() < MAX_ADDRESSES && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}
