//! Policy DNS (design §6.1), the refusing half: the sandbox's resolver address
//! answers every query itself with `REFUSED`, so a client that tries to resolve
//! a name fails at once, and does so while its socket is still open, waiting for
//! the answer: whoever asked can be named (a query dropped by the firewall fails
//! `send` with EPERM and the socket is usually gone before anyone can look).
//! Names are resolved by the proxy; synthetic answers for eligible names are the
//! other half of this adapter, still to come.

pub mod answer;
pub mod synthetic;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

/// One refused query, for attribution and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedQuery {
    /// The client's address (its socket's local end).
    pub peer: SocketAddr,
    /// The address the query was sent to (ours).
    pub local: SocketAddr,
    /// The name asked for (without the trailing dot), `-` if none.
    pub name: String,
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
pub const OBSERVE_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);
/// Queries observed at once; beyond that, answers go out without waiting.
pub const MAX_OBSERVED: usize = 64;

/// A bound policy DNS socket.
#[derive(Debug)]
pub struct PolicyDns {
    socket: UdpSocket,
    local: SocketAddr,
}

impl PolicyDns {
    /// Binds UDP `addr` (the sandbox's resolver address).
    ///
    /// # Errors
    /// The bind error (e.g. the port is taken).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        Ok(Self { socket, local })
    }

    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Answers every query with `REFUSED` until the task is dropped, each once
    /// `observer` is done with it (bounded by [`OBSERVE_DEADLINE`], at most
    /// [`MAX_OBSERVED`] at a time). A failed send is ignored (the client left).
    pub async fn refuse_all(self, observer: QueryObserver) {
        let socket = Arc::new(self.socket);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_OBSERVED));
        let mut buf = vec![0u8; answer::MAX_MESSAGE_BYTES + 1];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let answer::Answer::Refused { wire: answer, name } = answer::refuse(&buf[..n]) else {
                continue;
            };
            let query = RefusedQuery {
                peer,
                local: self.local,
                name,
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                let _ = socket.send_to(&answer, peer).await;
                continue;
            };
            let (socket, observed) = (Arc::clone(&socket), observer(query));
            tokio::spawn(async move {
                let _ = tokio::time::timeout(OBSERVE_DEADLINE, observed).await;
                let _ = socket.send_to(&answer, peer).await;
                drop(slot);
            });
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
        let answer::Answer::Refused { wire, name } =
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
            assert!(
                matches!(answer::refuse(&c), answer::Answer::Dropped),
                "{c:?}"
            );
        }
        assert!(
            matches!(answer::refuse(&two), answer::Answer::Refused { .. }),
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
        let task = tokio::spawn(dns.refuse_all(Arc::new(move |q| {
            let _ = tx.send(q);
            Box::pin(async {})
        })));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        client.send(b"junk").await.unwrap();
        client
            .send(&query("pypi.org.", RecordType::A, 7))
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.recv(&mut buf))
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
}
