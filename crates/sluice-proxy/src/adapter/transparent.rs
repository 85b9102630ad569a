//! Transparent capture (design §6.1): connections the sandbox's firewall
//! redirected on their way to a synthetic address. The address and port the
//! client dialled (`SO_ORIGINAL_DST`, read by the platform) must match one
//! live mapping exactly; the mapped name then goes through identity,
//! [`authorize`](crate::egress::authorize) and destination validation as a
//! CONNECT to `name:port` would, and only the validated real addresses are
//! dialled. Anything else is reset with an event and no decision: an unknown
//! or expired address, a port the endpoint does not allow
//! (`transparent_tcp_port_mismatch`), a mapping the policy in force no longer
//! covers. A connection to a real address never reaches this listener (the
//! firewall refuses it as a bypass).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::policy_dns::answer::Eligibility as _;
use super::policy_dns::eligible::PolicyEligibility;
use super::policy_dns::synthetic::MappingError;
use super::policy_dns::Synthetic;
use super::{tunnel, Listener, Shared};
use crate::egress::{EgressIntent, Surface, Target};
use crate::metrics::ConnectionSurface;

/// Reads the address a redirected connection was originally sent to.
pub type OriginalDst = Arc<dyn Fn(&TcpStream) -> std::io::Result<SocketAddr> + Send + Sync>;

/// The transparent listener: sockets the firewall redirects captured
/// connections to (one per address family), the mappings policy DNS issued,
/// and how to read a connection's original destination.
pub struct TransparentListener {
    listeners: Vec<TcpListener>,
    synthetic: Synthetic,
    original_dst: OriginalDst,
}

impl TransparentListener {
    /// Serves `listeners` (at least one) against `synthetic`'s mappings.
    ///
    /// # Panics
    /// Never; an empty `listeners` serves nothing.
    #[must_use]
    pub fn new(
        listeners: Vec<TcpListener>,
        synthetic: Synthetic,
        original_dst: OriginalDst,
    ) -> Self {
        Self {
            listeners,
            synthetic,
            original_dst,
        }
    }
}

impl Listener for TransparentListener {
    fn surface(&self) -> &'static str {
        "transparent"
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners
            .first()
            .ok_or_else(|| std::io::Error::other("no transparent socket"))?
            .local_addr()
    }

    fn serve(self: Box<Self>, shared: Arc<Shared>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
            let context = Arc::new(Capture {
                synthetic: self.synthetic,
                original_dst: self.original_dst,
            });
            let tasks: Vec<_> = self
                .listeners
                .into_iter()
                .map(|l| {
                    tokio::spawn(accept_loop(
                        l,
                        Arc::clone(&shared),
                        Arc::clone(&context),
                        Arc::clone(&permits),
                    ))
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        })
    }
}

struct Capture {
    synthetic: Synthetic,
    original_dst: OriginalDst,
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    capture: Arc<Capture>,
    permits: Arc<Semaphore>,
) {
    super::listener::accept_forever(&listener, permits, |stream, peer, permit| {
        let (shared, capture) = (Arc::clone(&shared), Arc::clone(&capture));
        let open = shared
            .relay
            .audit
            .metrics()
            .connection(ConnectionSurface::Transparent);
        tokio::spawn(async move {
            handle(&shared, &capture, stream, peer).await;
            drop((permit, open));
        });
    })
    .await;
}

/// Closes with a TCP reset: the client sees its connection refused.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn handle(shared: &Arc<Shared>, capture: &Capture, stream: TcpStream, peer: SocketAddr) {
    let audit = &shared.relay.audit;
    let dialled = match (capture.original_dst)(&stream) {
        Ok(a) => a,
        Err(e) => {
            let local = stream.local_addr().unwrap_or(peer);
            audit.transparent_refused(
                peer,
                local,
                None,
                &format!("transparent_original_destination_unavailable: {e}"),
            );
            return reset(stream);
        }
    };
    let table = &capture.synthetic.table;
    let mapping = match table.lookup(dialled.ip(), dialled.port(), Instant::now()) {
        Ok(m) => m,
        Err(e) => {
            let (name, reason) = match &e {
                MappingError::PortMismatch { name, .. } => {
                    (Some(name.to_string()), "transparent_tcp_port_mismatch")
                }
                MappingError::Expired(_) => (None, "transparent_mapping_expired"),
                _ => (None, "transparent_mapping_unknown"),
            };
            audit.transparent_refused(peer, dialled, name.as_deref(), &format!("{reason}: {e}"));
            return reset(stream);
        }
    };
    // Issued under an older policy: the name must still be eligible, on this port.
    let snapshot = shared.relay.authorizer.snapshot();
    if mapping.generation != snapshot.generation() {
        let still = PolicyEligibility::new(&snapshot, capture.synthetic.mode)
            .eligible(&mapping.name)
            .is_some_and(|(_, ports, _)| ports.contains(&dialled.port()));
        if !still {
            audit.transparent_refused(
                peer,
                dialled,
                Some(&mapping.name),
                "transparent_mapping_stale: the policy in force no longer covers this name and port",
            );
            return reset(stream);
        }
    }
    drop(snapshot);
    let target = match Target::parse_authority(&format!("{}:{}", mapping.name, dialled.port())) {
        Ok(t) => t,
        Err(e) => {
            audit.transparent_refused(peer, dialled, Some(&mapping.name), &e.to_string());
            return reset(stream);
        }
    };
    let identity = super::resolve_identity(shared, peer, dialled).await;
    let intent = EgressIntent {
        surface: Surface::Transparent {
            synthetic: dialled.ip(),
        },
        target,
        client: peer,
        identity,
    };
    // A refusal is audited by `open`; a captured client has no protocol to read it in.
    let Ok(opened) = tunnel::open(shared, intent).await else {
        return reset(stream);
    };
    audit.connect_allowed(&opened.decision, opened.inspected);
    tunnel::serve(shared, stream, opened, &[], Some(&mapping.name)).await;
}
