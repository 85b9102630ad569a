//! Policy DNS (design §6.1): the sandbox's resolver. A name an eligible
//! endpoint matches (see [`eligible`]) gets a synthetic address whose mapping
//! is recorded before the answer leaves; every other query is answered
//! `REFUSED` at once and nothing is sent anywhere (an ineligible label never
//! reaches a resolver). A refusal waits for the [`QueryObserver`], so the
//! client's socket is still open while its sender is named (a query dropped
//! by the firewall fails `send` with EPERM and the socket is usually gone
//! before anyone can look). UDP and TCP (RFC 7766 framing), bounded in
//! message size, concurrency and time.

pub mod answer;
pub mod eligible;
pub mod synthetic;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::audit::Audit;
use crate::egress::Authorizer;
use crate::metrics::{DnsAnswer, Metrics};
use answer::Answer;
use eligible::{PolicyEligibility, TransparentMode};
use synthetic::MappingTable;

/// One refused query, for attribution and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedQuery {
    /// The client's address (its socket's local end).
    pub peer: SocketAddr,
    /// The address the query was sent to (ours).
    pub local: SocketAddr,
    /// The name asked for (without the trailing dot), `-` if none.
    pub name: String,
    /// Asked over TCP (else UDP).
    pub tcp: bool,
}

/// Called for every refused query; the answer is sent when the returned future
/// completes (or after [`OBSERVE_DEADLINE`]), so the client's socket is still
/// open while the observer looks it up.
pub type QueryObserver = Arc<
    dyn Fn(RefusedQuery) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Longest an answer waits for its observer (resolvers here time out after 1 s).
pub const OBSERVE_DEADLINE: Duration = Duration::from_millis(500);
/// Queries observed at once; beyond that, answers go out without waiting.
pub const MAX_OBSERVED: usize = 64;
/// DNS-over-TCP connections served at once; further ones wait in the backlog.
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// Queries answered on one TCP connection before it is closed.
pub const MAX_TCP_QUERIES: usize = 64;
/// Longest wait for the next query (or the rest of one) on a TCP connection.
pub const TCP_IDLE: Duration = Duration::from_secs(5);
/// Synthetic answers logged per second; the next logged one counts the rest.
pub const ANSWERS_LOGGED_PER_SEC: u32 = 100;

/// The synthetic half: which names get addresses and where mappings live
/// (shared with the transparent listener).
#[derive(Clone, Debug)]
pub struct Synthetic {
    pub mode: TransparentMode,
    pub table: Arc<MappingTable>,
}

/// How queries are answered: refused (observed) unless `synthetic` makes
/// the name eligible under the policy in force.
pub(crate) struct DnsService {
    observer: QueryObserver,
    metrics: Metrics,
    synthetic: Option<(Synthetic, Authorizer, Audit)>,
    logged: Mutex<(Instant, u32, u64)>,
    observing: Arc<Semaphore>,
}

impl DnsService {
    pub(crate) fn new(
        observer: QueryObserver,
        synthetic: Option<(Synthetic, Authorizer, Audit)>,
        metrics: Metrics,
    ) -> Self {
        Self {
            observer,
            metrics,
            synthetic,
            logged: Mutex::new((Instant::now(), 0, 0)),
            observing: Arc::new(Semaphore::new(MAX_OBSERVED)),
        }
    }

    /// The answer to `query` from `peer`, if it gets one: at once for a
    /// synthetic answer, after the observer (bounded) for a refusal.
    fn respond(&self, query: &[u8], peer: SocketAddr, local: SocketAddr, tcp: bool) -> Reply {
        let answer = match &self.synthetic {
            Some((synthetic, authorizer, _)) => {
                let snapshot = authorizer.snapshot();
                answer::answer(
                    query,
                    &PolicyEligibility::new(&snapshot, synthetic.mode),
                    &synthetic.table,
                    Instant::now(),
                )
            }
            None => answer::refuse(query),
        };
        self.metrics.dns(match answer {
            Answer::Synthetic { .. } => DnsAnswer::Answered,
            Answer::Refused { .. } => DnsAnswer::Refused,
            Answer::Dropped => DnsAnswer::Dropped,
        });
        match answer {
            Answer::Synthetic { wire, mapping } => {
                if let (Some(m), Some((_, authorizer, audit))) = (mapping, &self.synthetic) {
                    if let Some(suppressed) = self.log_slot() {
                        let snapshot = authorizer.snapshot();
                        let key = if m.generation == snapshot.generation() {
                            let policy = snapshot.endpoint(m.endpoint).policy;
                            snapshot.policy(policy).key.to_string()
                        } else {
                            "-".to_owned()
                        };
                        audit.dns_answered(
                            peer,
                            &m.name,
                            m.addr,
                            &m.ports,
                            &key,
                            m.generation,
                            suppressed,
                        );
                    }
                }
                Reply::Now(wire)
            }
            Answer::Refused { wire, name } => {
                match Arc::clone(&self.observing).try_acquire_owned() {
                    Ok(slot) => {
                        let observed = (self.observer)(RefusedQuery {
                            peer,
                            local,
                            name,
                            tcp,
                        });
                        Reply::AfterObserving(wire, observed, slot)
                    }
                    Err(_) => Reply::Now(wire),
                }
            }
            Answer::Dropped => Reply::Nothing,
        }
    }

    /// Whether this answer is logged, and how many were not since the last.
    fn log_slot(&self) -> Option<u64> {
        let mut g = self
            .logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(g.0) >= Duration::from_secs(1) {
            g.0 = now;
            g.1 = 0;
        }
        if g.1 >= ANSWERS_LOGGED_PER_SEC {
            g.2 += 1;
            return None;
        }
        g.1 += 1;
        Some(std::mem::take(&mut g.2))
    }
}

/// What a query gets.
enum Reply {
    Now(Vec<u8>),
    /// Sent once the observer is done (or [`OBSERVE_DEADLINE`] passed).
    AfterObserving(
        Vec<u8>,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        tokio::sync::OwnedSemaphorePermit,
    ),
    Nothing,
}

impl Reply {
    /// The answer, once it may be sent.
    async fn ready(self) -> Option<Vec<u8>> {
        match self {
            Self::Now(wire) => Some(wire),
            Self::AfterObserving(wire, observed, slot) => {
                let _ = tokio::time::timeout(OBSERVE_DEADLINE, observed).await;
                drop(slot);
                Some(wire)
            }
            Self::Nothing => None,
        }
    }
}

/// Bound policy DNS sockets: UDP and TCP on one address.
#[derive(Debug)]
pub struct PolicyDns {
    udp: UdpSocket,
    tcp: TcpListener,
    local: SocketAddr,
}

impl PolicyDns {
    /// Binds UDP and TCP `addr` (the sandbox's resolver address; with port
    /// 0, TCP takes the port UDP got).
    ///
    /// # Errors
    /// The bind error (e.g. the port is taken).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let local = udp.local_addr()?;
        let tcp = TcpListener::bind(local).await?;
        Ok(Self { udp, tcp, local })
    }

    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Answers until the task is dropped. Failed sends are ignored (the
    /// client left).
    pub(crate) async fn serve(self, service: Arc<DnsService>) {
        let Self { udp, tcp, local } = self;
        tokio::join!(
            serve_udp(udp, local, Arc::clone(&service)),
            serve_tcp(tcp, local, service)
        );
    }
}

async fn serve_udp(socket: UdpSocket, local: SocketAddr, service: Arc<DnsService>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; answer::MAX_MESSAGE_BYTES + 1];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        match service.respond(&buf[..n], peer, local, false) {
            Reply::Now(wire) => {
                let _ = socket.send_to(&wire, peer).await;
            }
            Reply::Nothing => {}
            waiting => {
                let socket = Arc::clone(&socket);
                tokio::spawn(async move {
                    if let Some(wire) = waiting.ready().await {
                        let _ = socket.send_to(&wire, peer).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, local: SocketAddr, service: Arc<DnsService>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            serve_tcp_connection(stream, peer, local, &service).await;
            drop(slot);
        });
    }
}

/// Length-prefixed queries (RFC 1035 §4.2.2) until the client closes, idles
/// or sends something that gets no answer.
async fn serve_tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    service: &DnsService,
) {
    let mut buf = vec![0u8; answer::MAX_MESSAGE_BYTES];
    for _ in 0..MAX_TCP_QUERIES {
        let mut len = [0u8; 2];
        let Ok(Ok(_)) = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await else {
            return;
        };
        let len = usize::from(u16::from_be_bytes(len));
        if len > answer::MAX_MESSAGE_BYTES {
            return;
        }
        let Ok(Ok(_)) = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf[..len])).await
        else {
            return;
        };
        let Some(wire) = service
            .respond(&buf[..len], peer, local, true)
            .ready()
            .await
        else {
            return;
        };
        let Ok(wire_len) = u16::try_from(wire.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(wire.len() + 2);
        out.extend_from_slice(&wire_len.to_be_bytes());
        out.extend_from_slice(&wire);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    /// A standard query for `name`/`rtype` with `id` (shared by the DNS tests).
    pub(super) fn query(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        m.to_vec().unwrap()
    }

    #[test]
    fn refusals_echo_the_question() {
        let Answer::Refused { wire, name } =
            answer::refuse(&query("Example.com.", RecordType::AAAA, 4242))
        else {
            panic!("a query is refused");
        };
        let answer = Message::from_vec(&wire).unwrap();
        assert_eq!(answer.id(), 4242);
        assert_eq!(answer.message_type(), MessageType::Response);
        assert_eq!(answer.response_code(), ResponseCode::Refused);
        assert!(answer.answers().is_empty());
        assert_eq!(answer.queries().len(), 1);
        assert_eq!(name, "example.com");
    }

    #[test]
    fn junk_is_dropped_and_odd_queries_refused() {
        let mut response = Message::from_vec(&query("a.", RecordType::A, 1)).unwrap();
        response.set_message_type(MessageType::Response);
        let two = {
            let mut m = Message::from_vec(&query("a.", RecordType::A, 1)).unwrap();
            m.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
            m.to_vec().unwrap()
        };
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![0; 11],
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            response.to_vec().unwrap(),
            vec![0xff; answer::MAX_MESSAGE_BYTES + 1],
        ];
        for c in cases {
            assert!(matches!(answer::refuse(&c), Answer::Dropped), "{c:?}");
        }
        assert!(
            matches!(answer::refuse(&two), Answer::Refused { .. }),
            "several questions are refused, not answered"
        );
    }

    #[tokio::test]
    async fn answers_over_loopback_and_reports() {
        let dns = PolicyDns::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = dns.local_addr();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let observer: QueryObserver = Arc::new(move |q| {
            let _ = tx.send(q);
            Box::pin(async {})
        });
        let task = tokio::spawn(dns.serve(Arc::new(DnsService::new(
            observer,
            None,
            Metrics::disabled(),
        ))));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        client.send(b"junk").await.unwrap();
        client
            .send(&query("pypi.org.", RecordType::A, 7))
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let answer = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            (answer.id(), answer.response_code()),
            (7, ResponseCode::Refused)
        );
        let q = rx.recv().await.unwrap();
        assert_eq!(q.name, "pypi.org");
        assert_eq!(q.peer, client.local_addr().unwrap());
        task.abort();
    }

    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // the test is the DNS client
    async fn tcp_queries_are_length_prefixed_and_bounded() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let dns = PolicyDns::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = dns.local_addr();
        let observer: QueryObserver = Arc::new(|_| Box::pin(async {}));
        let task = tokio::spawn(dns.serve(Arc::new(DnsService::new(
            observer,
            None,
            Metrics::disabled(),
        ))));
        let mut c = TcpStream::connect(addr).await.unwrap();
        for id in [1u16, 2] {
            let q = query("pypi.org.", RecordType::A, id);
            let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            c.write_all(&framed).await.unwrap();
            let mut len = [0u8; 2];
            c.read_exact(&mut len).await.unwrap();
            let mut wire = vec![0u8; usize::from(u16::from_be_bytes(len))];
            c.read_exact(&mut wire).await.unwrap();
            let answer = Message::from_vec(&wire).unwrap();
            assert_eq!(
                (answer.id(), answer.response_code()),
                (id, ResponseCode::Refused)
            );
        }
        // A length over the bound closes the connection without an answer.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        task.abort();
    }
}
