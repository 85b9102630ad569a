//! Operational metrics (`--metrics ADDR`, design §6.7): counters, gauges and
//! histograms every other module may update, and their Prometheus text
//! encoding; [`server`] serves them with the liveness and readiness probes.
//!
//! Cheap on the hot path: every series exists from the start, in fixed
//! arrays indexed by small closed enums ([`DecisionSurface`], [`Outcome`],
//! ...), so an update is one relaxed atomic add: no lock, no allocation, no
//! map lookup. Labels come only from those enums, never from traffic, so no
//! series can carry a host name, a path or a secret, and their number is
//! fixed. Without `--metrics` the handle is [`Metrics::disabled`] and every
//! update is a branch on `None`.
//!
//! The lowest layer of the crate: it uses no other module of it.

mod encode;
mod histogram;
pub mod server;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use encode::CONTENT_TYPE;
use encode::{Encoder, Kind};
use histogram::{Histogram, DECISION_BOUNDS, MIDDLEWARE_BOUNDS};

/// A closed set of label values: `ALL` in declaration order, `label()` as
/// exposed, the discriminant as the array index.
macro_rules! labels {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];
            const COUNT: usize = Self::ALL.len();

            /// The label value as exposed.
            #[must_use]
            pub fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
                }
            }

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

labels! {
    /// Where an egress decision was made.
    DecisionSurface {
        /// `CONNECT host:port` on the explicit proxy.
        Connect => "connect",
        /// Absolute-form `http://` requests on the explicit proxy.
        ForwardHttp => "forward_http",
        /// Connections captured on their way to a synthetic address.
        Transparent => "transparent",
        /// Requests to `inference.local`.
        Inference => "inference",
        /// Requests to a metadata loopback (GCE, AWS).
        Metadata => "metadata",
    }
}

labels! {
    /// A decision's outcome.
    Outcome {
        Allow => "allow",
        Deny => "deny",
    }
}

labels! {
    /// The listener a client connection was accepted on.
    ConnectionSurface {
        /// The explicit proxy (CONNECT and forward HTTP).
        HttpProxy => "http_proxy",
        /// Transparent capture.
        Transparent => "transparent",
        /// A metadata loopback.
        Metadata => "metadata",
    }
}

labels! {
    /// How a tunnel (one authorized target per client byte stream) was opened.
    TunnelSurface {
        Connect => "connect",
        Transparent => "transparent",
    }
}

labels! {
    /// The protocol of a request-level (L7) verdict.
    L7Protocol {
        Rest => "rest",
        Websocket => "websocket",
        Graphql => "graphql",
        JsonRpc => "jsonrpc",
        Mcp => "mcp",
        Grpc => "grpc",
        Redis => "redis",
        Postgres => "postgres",
        /// Anything else (a request refused on an endpoint without rules).
        Other => "other",
    }
}

labels! {
    /// A request-level verdict.
    L7Verdict {
        Allow => "allow",
        Deny => "deny",
        /// Denied by the rules, forwarded because the endpoint is `enforcement: audit`.
        Audit => "audit",
    }
}

labels! {
    /// What policy DNS did with a query.
    DnsAnswer {
        /// Answered with a synthetic address (or an empty answer for an eligible name).
        Answered => "answered",
        /// Answered `REFUSED`.
        Refused => "refused",
        /// Not answered (not a DNS query).
        Dropped => "dropped",
    }
}

labels! {
    /// How a token grant fetch ended.
    GrantOutcome {
        Ok => "ok",
        Failed => "failed",
    }
}

labels! {
    /// How a policy reload ended.
    ReloadOutcome {
        /// A new generation is in force.
        Applied => "applied",
        /// The file was invalid or a reload check refused it; the last good
        /// policy stays.
        Refused => "refused",
    }
}

impl L7Protocol {
    /// The label of a policy endpoint's protocol.
    #[must_use]
    pub fn of(protocol: sluice_policy::Protocol) -> Self {
        use sluice_policy::Protocol as P;
        match protocol {
            P::Rest => Self::Rest,
            P::Websocket => Self::Websocket,
            P::Graphql => Self::Graphql,
            P::JsonRpc => Self::JsonRpc,
            P::Mcp => Self::Mcp,
            P::Grpc => Self::Grpc,
            P::Redis => Self::Redis,
            P::Postgres => Self::Postgres,
            _ => Self::Other,
        }
    }
}

/// Every series, created at start.
struct Registry {
    decisions: [[AtomicU64; Outcome::COUNT]; DecisionSurface::COUNT],
    decision_seconds: Histogram,
    connections: [AtomicI64; ConnectionSurface::COUNT],
    tunnels: [AtomicI64; TunnelSurface::COUNT],
    to_upstream: AtomicU64,
    to_client: AtomicU64,
    l7: [[AtomicU64; L7Verdict::COUNT]; L7Protocol::COUNT],
    dns: [AtomicU64; DnsAnswer::COUNT],
    middleware_seconds: Histogram,
    grants: [AtomicU64; GrantOutcome::COUNT],
    reloads: [AtomicU64; ReloadOutcome::COUNT],
    generation: AtomicU64,
    ready: AtomicBool,
}

fn zeros<T: Default, const N: usize>() -> [T; N] {
    std::array::from_fn(|_| T::default())
}

impl Registry {
    fn new() -> Self {
        Self {
            decisions: std::array::from_fn(|_| zeros()),
            decision_seconds: Histogram::new(DECISION_BOUNDS),
            connections: zeros(),
            tunnels: zeros(),
            to_upstream: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            l7: std::array::from_fn(|_| zeros()),
            dns: zeros(),
            middleware_seconds: Histogram::new(MIDDLEWARE_BOUNDS),
            grants: zeros(),
            reloads: zeros(),
            generation: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        }
    }
}

/// The metrics handle: a cheap clone (one `Arc`) carried by
/// the audit handle (`audit::Audit`) to every stage. Disabled, it records nothing.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Option<Arc<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.registry.is_some())
            .finish_non_exhaustive()
    }
}

/// When a timed step began (nothing when metrics are disabled, so a disabled
/// handle does not even read the clock).
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Option<Instant>);

impl Stopwatch {
    /// Time since the stopwatch started (`None` when disabled).
    #[must_use]
    pub fn elapsed(&self) -> Option<Duration> {
        self.0.map(|t| t.elapsed())
    }
}

/// Keeps one open connection or tunnel counted in its gauge until dropped
/// (every exit path, panics included, gives it back).
#[must_use = "the gauge goes back down when the guard is dropped"]
pub struct OpenGuard {
    registry: Option<Arc<Registry>>,
    gauge: Gauge,
}

#[derive(Clone, Copy)]
enum Gauge {
    Connection(ConnectionSurface),
    Tunnel(TunnelSurface),
}

impl OpenGuard {
    fn slot(registry: &Registry, gauge: Gauge) -> &AtomicI64 {
        match gauge {
            Gauge::Connection(s) => &registry.connections[s.index()],
            Gauge::Tunnel(s) => &registry.tunnels[s.index()],
        }
    }
}

impl std::fmt::Debug for OpenGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenGuard").finish_non_exhaustive()
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some(r) = &self.registry {
            Self::slot(r, self.gauge).fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Metrics {
    /// A handle that records (`--metrics` given).
    #[must_use]
    pub fn enabled() -> Self {
        Self {
            registry: Some(Arc::new(Registry::new())),
        }
    }

    /// A handle on which every update is a no-op and [`Self::encode`] is empty.
    #[must_use]
    pub fn disabled() -> Self {
        Self { registry: None }
    }

    /// Whether this handle records.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.registry.is_some()
    }

    /// Starts timing a step (see [`Stopwatch`]).
    #[must_use]
    pub fn stopwatch(&self) -> Stopwatch {
        Stopwatch(self.registry.as_ref().map(|_| Instant::now()))
    }

    /// One egress decision; `took` (authorize plus destination validation)
    /// goes into the latency histogram when known.
    pub fn decision(&self, surface: DecisionSurface, outcome: Outcome, took: Option<Duration>) {
        if let Some(r) = &self.registry {
            r.decisions[surface.index()][outcome.index()].fetch_add(1, Ordering::Relaxed);
            if let Some(d) = took {
                r.decision_seconds.observe(d);
            }
        }
    }

    /// Counts a client connection as open until the guard drops.
    pub fn connection(&self, surface: ConnectionSurface) -> OpenGuard {
        self.open(Gauge::Connection(surface))
    }

    /// Counts a tunnel as open until the guard drops.
    pub fn tunnel(&self, surface: TunnelSurface) -> OpenGuard {
        self.open(Gauge::Tunnel(surface))
    }

    fn open(&self, gauge: Gauge) -> OpenGuard {
        if let Some(r) = &self.registry {
            OpenGuard::slot(r, gauge).fetch_add(1, Ordering::Relaxed);
        }
        OpenGuard {
            registry: self.registry.clone(),
            gauge,
        }
    }

    /// Bytes relayed each way (payload and heads, as written to each side).
    pub fn relayed(&self, to_upstream: u64, to_client: u64) {
        if let Some(r) = &self.registry {
            r.to_upstream.fetch_add(to_upstream, Ordering::Relaxed);
            r.to_client.fetch_add(to_client, Ordering::Relaxed);
        }
    }

    /// One request-level verdict.
    pub fn l7_verdict(&self, protocol: L7Protocol, verdict: L7Verdict) {
        if let Some(r) = &self.registry {
            r.l7[protocol.index()][verdict.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One policy DNS query.
    pub fn dns(&self, answer: DnsAnswer) {
        if let Some(r) = &self.registry {
            r.dns[answer.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One middleware stage run that took `took`.
    pub fn middleware(&self, took: Duration) {
        if let Some(r) = &self.registry {
            r.middleware_seconds.observe(took);
        }
    }

    /// One token grant fetch from a token endpoint (not a cache hit).
    pub fn token_grant(&self, outcome: GrantOutcome) {
        if let Some(r) = &self.registry {
            r.grants[outcome.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One policy reload (file change, SIGHUP or an applied proposal).
    pub fn policy_reload(&self, outcome: ReloadOutcome) {
        if let Some(r) = &self.registry {
            r.reloads[outcome.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The policy generation now in force.
    pub fn policy_generation(&self, generation: u64) {
        if let Some(r) = &self.registry {
            r.generation.store(generation, Ordering::Relaxed);
        }
    }

    /// The policy is loaded and the proxy listener bound: `/readyz` answers 200.
    pub fn set_ready(&self) {
        if let Some(r) = &self.registry {
            r.ready.store(true, Ordering::Release);
        }
    }

    /// Whether [`Self::set_ready`] was called.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.registry
            .as_ref()
            .is_some_and(|r| r.ready.load(Ordering::Acquire))
    }

    /// Every series in the Prometheus text format ([`CONTENT_TYPE`]); empty
    /// when disabled.
    #[must_use]
    pub fn encode(&self) -> String {
        let Some(r) = &self.registry else {
            return String::new();
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut e = Encoder::new();

        e.family(
            "sluice_build_info",
            "Build information; always 1.",
            Kind::Gauge,
        );
        e.sample(
            "sluice_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1u64,
        );

        let name = "sluice_decisions_total";
        e.family(
            name,
            "Egress decisions (authorization and destination validation) by surface and outcome.",
            Kind::Counter,
        );
        for s in DecisionSurface::ALL {
            for o in Outcome::ALL {
                let v = load(&r.decisions[s.index()][o.index()]);
                e.sample(name, &[("surface", s.label()), ("outcome", o.label())], v);
            }
        }

        let name = "sluice_decision_duration_seconds";
        e.family(
            name,
            "Time to decide a connection or request: authorize plus destination validation (DNS included).",
            Kind::Histogram,
        );
        e.histogram(name, &[], &r.decision_seconds.snapshot());

        let name = "sluice_open_connections";
        e.family(
            name,
            "Client connections open now, by listener.",
            Kind::Gauge,
        );
        for s in ConnectionSurface::ALL {
            let v = r.connections[s.index()].load(Ordering::Relaxed);
            e.sample(name, &[("surface", s.label())], v);
        }

        let name = "sluice_open_tunnels";
        e.family(
            name,
            "Tunnels (CONNECT or captured connections to one authorized target) open now.",
            Kind::Gauge,
        );
        for s in TunnelSurface::ALL {
            let v = r.tunnels[s.index()].load(Ordering::Relaxed);
            e.sample(name, &[("surface", s.label())], v);
        }

        let name = "sluice_relayed_bytes_total";
        e.family(
            name,
            "Bytes relayed: raw and native-protocol tunnels when they close, HTTP/1.1 exchanges (heads and bodies) when they complete.",
            Kind::Counter,
        );
        e.sample(name, &[("direction", "to_upstream")], load(&r.to_upstream));
        e.sample(name, &[("direction", "to_client")], load(&r.to_client));

        let name = "sluice_l7_verdicts_total";
        e.family(
            name,
            "Request-level verdicts by protocol, as audited.",
            Kind::Counter,
        );
        for p in L7Protocol::ALL {
            for v in L7Verdict::ALL {
                let n = load(&r.l7[p.index()][v.index()]);
                e.sample(name, &[("protocol", p.label()), ("verdict", v.label())], n);
            }
        }

        let name = "sluice_dns_queries_total";
        e.family(name, "Policy DNS queries by answer.", Kind::Counter);
        for a in DnsAnswer::ALL {
            e.sample(name, &[("answer", a.label())], load(&r.dns[a.index()]));
        }

        let name = "sluice_middleware_duration_seconds";
        e.family(
            name,
            "Time one middleware stage took on a request or message.",
            Kind::Histogram,
        );
        e.histogram(name, &[], &r.middleware_seconds.snapshot());

        let name = "sluice_token_grant_refreshes_total";
        e.family(
            name,
            "Token grant fetches from token endpoints (cache misses) by outcome.",
            Kind::Counter,
        );
        for o in GrantOutcome::ALL {
            e.sample(name, &[("outcome", o.label())], load(&r.grants[o.index()]));
        }

        let name = "sluice_policy_reloads_total";
        e.family(
            name,
            "Policy reloads after the initial load, by outcome.",
            Kind::Counter,
        );
        for o in ReloadOutcome::ALL {
            e.sample(name, &[("outcome", o.label())], load(&r.reloads[o.index()]));
        }

        let name = "sluice_policy_generation";
        e.family(name, "The policy generation in force.", Kind::Gauge);
        e.sample(name, &[], load(&r.generation));

        let name = "sluice_ready";
        e.family(
            name,
            "1 once the policy is loaded and the proxy listener bound (as /readyz).",
            Kind::Gauge,
        );
        e.sample(name, &[], u64::from(r.ready.load(Ordering::Acquire)));

        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn disabled_records_nothing() {
        let m = Metrics::disabled();
        m.decision(DecisionSurface::Connect, Outcome::Allow, None);
        let g = m.connection(ConnectionSurface::HttpProxy);
        drop(g);
        m.set_ready();
        assert!(!m.is_ready());
        assert!(m.stopwatch().elapsed().is_none());
        assert_eq!(m.encode(), "");
    }

    #[test]
    fn every_series_exists_from_the_start() {
        let text = Metrics::enabled().encode();
        for s in DecisionSurface::ALL {
            for o in Outcome::ALL {
                let series = format!(
                    "sluice_decisions_total{{surface=\"{}\",outcome=\"{}\"}}",
                    s.label(),
                    o.label()
                );
                assert_eq!(value(&text, &series), Some(0.0), "{series}");
            }
        }
        assert_eq!(
            value(&text, "sluice_build_info{version=\"0.1.0\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "sluice_decision_duration_seconds_count"),
            Some(0.0)
        );
        assert_eq!(value(&text, "sluice_ready"), Some(0.0));
        // Every family has HELP then TYPE, and a name appears in one family only.
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types.len(), helps);
        let mut names: Vec<&str> = types.iter().filter_map(|t| t.split(' ').next()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), types.len());
        for name in names {
            assert!(name.starts_with("sluice_"), "{name}");
        }
    }

    #[test]
    fn updates_show_in_the_encoding() {
        let m = Metrics::enabled();
        let c = m.clone();
        c.decision(
            DecisionSurface::ForwardHttp,
            Outcome::Deny,
            Some(Duration::from_micros(3)),
        );
        c.decision(DecisionSurface::ForwardHttp, Outcome::Deny, None);
        c.relayed(10, 20);
        c.relayed(1, 2);
        c.l7_verdict(L7Protocol::Rest, L7Verdict::Audit);
        c.dns(DnsAnswer::Refused);
        c.middleware(Duration::from_millis(3));
        c.token_grant(GrantOutcome::Failed);
        c.policy_reload(ReloadOutcome::Applied);
        c.policy_generation(7);
        c.set_ready();
        let conn = m.connection(ConnectionSurface::Transparent);
        let t1 = m.tunnel(TunnelSurface::Connect);
        let t2 = m.tunnel(TunnelSurface::Connect);
        let text = m.encode();
        let v = |s: &str| value(&text, s);
        assert_eq!(
            v("sluice_decisions_total{surface=\"forward_http\",outcome=\"deny\"}"),
            Some(2.0)
        );
        assert_eq!(v("sluice_decision_duration_seconds_count"), Some(1.0));
        assert_eq!(
            v("sluice_decision_duration_seconds_bucket{le=\"0.000005\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("sluice_decision_duration_seconds_bucket{le=\"0.0000025\"}"),
            Some(0.0)
        );
        assert_eq!(
            v("sluice_relayed_bytes_total{direction=\"to_upstream\"}"),
            Some(11.0)
        );
        assert_eq!(
            v("sluice_relayed_bytes_total{direction=\"to_client\"}"),
            Some(22.0)
        );
        assert_eq!(
            v("sluice_l7_verdicts_total{protocol=\"rest\",verdict=\"audit\"}"),
            Some(1.0)
        );
        assert_eq!(v("sluice_dns_queries_total{answer=\"refused\"}"), Some(1.0));
        assert_eq!(
            v("sluice_middleware_duration_seconds_bucket{le=\"0.005\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("sluice_token_grant_refreshes_total{outcome=\"failed\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("sluice_policy_reloads_total{outcome=\"applied\"}"),
            Some(1.0)
        );
        assert_eq!(v("sluice_policy_generation"), Some(7.0));
        assert_eq!(v("sluice_ready"), Some(1.0));
        assert_eq!(
            v("sluice_open_connections{surface=\"transparent\"}"),
            Some(1.0)
        );
        assert_eq!(v("sluice_open_tunnels{surface=\"connect\"}"), Some(2.0));
        drop((conn, t1, t2));
        let text = m.encode();
        assert_eq!(
            value(&text, "sluice_open_connections{surface=\"transparent\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "sluice_open_tunnels{surface=\"connect\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn a_guard_gives_back_on_panic() {
        let m = Metrics::enabled();
        let m2 = m.clone();
        let r = std::thread::spawn(move || {
            let _g = m2.tunnel(TunnelSurface::Transparent);
            panic!("relay panicked");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(
            value(&m.encode(), "sluice_open_tunnels{surface=\"transparent\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn protocol_labels() {
        use sluice_policy::Protocol as P;
        assert_eq!(L7Protocol::of(P::JsonRpc).label(), "jsonrpc");
        assert_eq!(L7Protocol::of(P::Postgres), L7Protocol::Postgres);
        assert_eq!(L7Protocol::of(P::L4), L7Protocol::Other);
        for (i, p) in L7Protocol::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
    }
}
