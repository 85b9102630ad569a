//! Synthetic addresses for policy DNS (design §6.1, invariant 9): a name that
//! an eligible endpoint matches is answered with an address from a private
//! pool, and the mapping {address, name, endpoint, ports, generation, expiry}
//! is what a captured connection to that address is correlated with, exactly.
//!
//! Bounds: at most `capacity` live mappings; a mapping lives at most the TTL
//! cap; an expired address is quarantined before it is handed out again (a
//! client that cached the old answer past its TTL reaches nothing, never the
//! next name); a reload drops every mapping the new policy no longer backs.
//!
//! Default pools: `198.18.0.0/15` and `fd23:6f70:656e::/48` (OpenShell's). They
//! are reserved (benchmarking, RFC 2544; unique local, RFC 4193), so nothing
//! real answers there, and client-side SSRF guards that block loopback,
//! link-local, RFC 1918 and metadata addresses let them through.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};
use sluice_policy::EndpointId;

/// The default IPv4 pool.
pub const DEFAULT_POOL_V4: &str = "198.18.0.0/15";
/// The default IPv6 pool.
pub const DEFAULT_POOL_V6: &str = "fd23:6f70:656e::/48";
/// Longest life of a mapping (and of the TTL in an answer).
pub const MAX_TTL: Duration = Duration::from_secs(30);
/// Most live mappings per family.
pub const DEFAULT_CAPACITY: usize = 1024;

/// One issued synthetic address and what it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub addr: IpAddr,
    /// The name it answered (lower case, no trailing dot).
    pub name: Arc<str>,
    /// The endpoint that made the name eligible.
    pub endpoint: EndpointId,
    /// The ports that endpoint allows.
    pub ports: Arc<[u16]>,
    /// The policy generation it was issued under.
    pub generation: u64,
    pub expires: Instant,
}

/// Why no mapping could be issued or found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    #[error("synthetic address pool exhausted")]
    Exhausted,
    #[error("no mapping for {0}")]
    Unknown(IpAddr),
    #[error("mapping for {0} expired")]
    Expired(IpAddr),
    /// The port is not one the mapped endpoint allows (`transparent_tcp_port_mismatch`).
    #[error("port {port} is not allowed for {name}")]
    PortMismatch { name: Arc<str>, port: u16 },
}

#[derive(Debug)]
struct Family {
    /// Offsets into the pool, one per address slot.
    size: u128,
    next: u128,
    live: HashMap<u128, Mapping>,
    /// Slot → when it may be issued again.
    quarantined: HashMap<u128, Instant>,
}

impl Family {
    fn new(host_bits: u32) -> Self {
        Self {
            // Leave out the pool's first address (a network address to many tools).
            size: (1u128 << host_bits.min(64)).saturating_sub(1),
            next: 0,
            live: HashMap::new(),
            quarantined: HashMap::new(),
        }
    }
}

/// The live mappings of both families.
#[derive(Debug)]
pub struct MappingTable {
    v4: Ipv4Net,
    v6: Ipv6Net,
    ttl: Duration,
    quarantine: Duration,
    capacity: usize,
    inner: Mutex<(Family, Family)>,
}

impl MappingTable {
    /// Pools `v4` and `v6`; mappings live `ttl` (capped at [`MAX_TTL`]) and
    /// stay quarantined as long again after they expire.
    #[must_use]
    pub fn new(v4: Ipv4Net, v6: Ipv6Net, ttl: Duration, capacity: usize) -> Self {
        let ttl = ttl.clamp(Duration::from_secs(1), MAX_TTL);
        Self {
            v4,
            v6,
            ttl,
            quarantine: ttl,
            capacity: capacity.max(1),
            inner: Mutex::new((
                Family::new(32 - u32::from(v4.prefix_len())),
                Family::new(128 - u32::from(v6.prefix_len())),
            )),
        }
    }

    /// The IPv4 and IPv6 pools.
    #[must_use]
    pub fn pools(&self) -> (Ipv4Net, Ipv6Net) {
        (self.v4, self.v6)
    }

    /// The TTL answers carry (how long a mapping lives).
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn addr(&self, v6: bool, offset: u128) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(u128::from(self.v6.network()) + offset + 1))
        } else {
            let o = u32::try_from(offset + 1).unwrap_or(u32::MAX);
            IpAddr::V4(Ipv4Addr::from(
                u32::from(self.v4.network()).saturating_add(o),
            ))
        }
    }

    fn offset(&self, addr: IpAddr) -> Option<(bool, u128)> {
        match addr {
            IpAddr::V4(a) if self.v4.contains(&a) => {
                let o = u128::from(u32::from(a) - u32::from(self.v4.network()));
                o.checked_sub(1).map(|o| (false, o))
            }
            IpAddr::V6(a) if self.v6.contains(&a) => {
                let o = u128::from(a) - u128::from(self.v6.network());
                o.checked_sub(1).map(|o| (true, o))
            }
            _ => None,
        }
    }

    /// The address for `name` in the IPv6 (`v6`) or IPv4 pool: the live mapping
    /// for the same name, endpoint and generation when there is one (its
    /// expiry extended), else a fresh address.
    ///
    /// # Errors
    /// [`MappingError::Exhausted`] when every address is live or quarantined.
    pub fn map(
        &self,
        v6: bool,
        name: &str,
        endpoint: EndpointId,
        ports: &Arc<[u16]>,
        generation: u64,
        now: Instant,
    ) -> Result<Mapping, MappingError> {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let family = if v6 { &mut guard.1 } else { &mut guard.0 };
        // Expired mappings go to quarantine.
        let expired: Vec<u128> = family
            .live
            .iter()
            .filter(|(_, m)| m.expires <= now)
            .map(|(o, _)| *o)
            .collect();
        for o in expired {
            family.live.remove(&o);
            family.quarantined.insert(o, now + self.quarantine);
        }
        family.quarantined.retain(|_, until| *until > now);
        if let Some(m) = family
            .live
            .values_mut()
            .find(|m| &*m.name == name && m.endpoint == endpoint && m.generation == generation)
        {
            m.expires = now + self.ttl;
            return Ok(m.clone());
        }
        if family.live.len() >= self.capacity {
            return Err(MappingError::Exhausted);
        }
        let size = family.size;
        let mut chosen = None;
        for step in 0..size.min(self.capacity as u128 * 4 + 16) {
            let o = (family.next + step) % size.max(1);
            if !family.live.contains_key(&o) && !family.quarantined.contains_key(&o) {
                chosen = Some(o);
                break;
            }
        }
        let o = chosen.ok_or(MappingError::Exhausted)?;
        family.next = (o + 1) % size.max(1);
        let mapping = Mapping {
            addr: self.addr(v6, o),
            name: Arc::from(name),
            endpoint,
            ports: Arc::clone(ports),
            generation,
            expires: now + self.ttl,
        };
        family.live.insert(o, mapping.clone());
        Ok(mapping)
    }

    /// The mapping a connection to `addr:port` is correlated with: exactly
    /// that address, still live, and a port its endpoint allows.
    ///
    /// # Errors
    /// [`MappingError`]: unknown address, expired mapping, or the wrong port.
    pub fn lookup(&self, addr: IpAddr, port: u16, now: Instant) -> Result<Mapping, MappingError> {
        let (v6, o) = self.offset(addr).ok_or(MappingError::Unknown(addr))?;
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let family = if v6 { &guard.1 } else { &guard.0 };
        let m = family.live.get(&o).ok_or(MappingError::Unknown(addr))?;
        if m.expires <= now {
            return Err(MappingError::Expired(addr));
        }
        if !m.ports.contains(&port) {
            return Err(MappingError::PortMismatch {
                name: Arc::clone(&m.name),
                port,
            });
        }
        Ok(m.clone())
    }

    /// After a reload: drops (and quarantines) every mapping `keep` rejects,
    /// e.g. one whose endpoint the new policy no longer has.
    pub fn retain(&self, now: Instant, mut keep: impl FnMut(&Mapping) -> bool) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (v4, v6) = &mut *guard;
        for family in [v4, v6] {
            let dropped: Vec<u128> = family
                .live
                .iter()
                .filter(|(_, m)| !keep(m))
                .map(|(o, _)| *o)
                .collect();
            for o in dropped {
                family.live.remove(&o);
                family.quarantined.insert(o, now + self.quarantine);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(v4: &str, capacity: usize) -> MappingTable {
        MappingTable::new(
            v4.parse().unwrap(),
            "fd23:6f70:656e::/120".parse().unwrap(),
            Duration::from_secs(10),
            capacity,
        )
    }

    fn ports(p: &[u16]) -> Arc<[u16]> {
        Arc::from(p)
    }

    #[test]
    fn defaults_parse_and_avoid_what_guards_block() {
        let v4: Ipv4Net = DEFAULT_POOL_V4.parse().unwrap();
        let v6: Ipv6Net = DEFAULT_POOL_V6.parse().unwrap();
        let a = v4.network();
        assert!(!a.is_private() && !a.is_loopback() && !a.is_link_local());
        assert!(!crate::addr_class::is_cloud_metadata(IpAddr::V4(a)));
        assert!(
            v6.network().segments()[0] & 0xfe00 == 0xfc00,
            "unique local"
        );
    }

    #[test]
    fn map_reuse_lookup_ports_and_expiry() {
        let t = table("198.18.0.0/24", 8);
        let now = Instant::now();
        let redis = ports(&[6379]);
        let a = t
            .map(false, "cache.internal", EndpointId(3), &redis, 1, now)
            .unwrap();
        assert_eq!(
            a.addr,
            "198.18.0.1".parse::<IpAddr>().unwrap(),
            "first address skipped"
        );
        let again = t
            .map(false, "cache.internal", EndpointId(3), &redis, 1, now)
            .unwrap();
        assert_eq!(
            again.addr, a.addr,
            "same name, endpoint, generation: same address"
        );
        let other_gen = t
            .map(false, "cache.internal", EndpointId(3), &redis, 2, now)
            .unwrap();
        assert_ne!(
            other_gen.addr, a.addr,
            "a new generation gets a new address"
        );
        assert_eq!(
            t.lookup(a.addr, 6379, now).unwrap().name.as_ref(),
            "cache.internal"
        );
        assert!(matches!(
            t.lookup(a.addr, 80, now),
            Err(MappingError::PortMismatch { port: 80, .. })
        ));
        assert!(matches!(
            t.lookup("198.18.0.200".parse().unwrap(), 6379, now),
            Err(MappingError::Unknown(_))
        ));
        assert!(matches!(
            t.lookup("10.0.0.1".parse().unwrap(), 6379, now),
            Err(MappingError::Unknown(_))
        ));
        let later = now + Duration::from_secs(11);
        assert!(matches!(
            t.lookup(a.addr, 6379, later),
            Err(MappingError::Expired(_))
        ));
    }

    #[test]
    fn bounded_and_quarantined_before_reuse() {
        // A /30: three usable slots.
        let t = table("198.18.0.0/30", 8);
        let now = Instant::now();
        let p = ports(&[443]);
        let issued: Vec<IpAddr> = (0..3)
            .map(|i| {
                t.map(false, &format!("n{i}.test"), EndpointId(i), &p, 1, now)
                    .unwrap()
                    .addr
            })
            .collect();
        assert_eq!(
            t.map(false, "n9.test", EndpointId(9), &p, 1, now),
            Err(MappingError::Exhausted),
            "the pool bounds live mappings"
        );
        // Expired at +10 s, quarantined for another 10 s: nothing to issue yet.
        let later = now + Duration::from_secs(11);
        assert_eq!(
            t.map(false, "n9.test", EndpointId(9), &p, 1, later),
            Err(MappingError::Exhausted),
            "quarantined addresses are not reissued"
        );
        let much_later = now + Duration::from_secs(22);
        let reused = t
            .map(false, "n9.test", EndpointId(9), &p, 1, much_later)
            .unwrap();
        assert!(issued.contains(&reused.addr), "reissued after quarantine");
        assert_eq!(
            t.lookup(reused.addr, 443, much_later)
                .unwrap()
                .name
                .as_ref(),
            "n9.test"
        );
        let small = table("198.18.0.0/24", 2);
        for i in 0..2 {
            small
                .map(false, &format!("c{i}"), EndpointId(i), &p, 1, now)
                .unwrap();
        }
        assert_eq!(
            small.map(false, "c9", EndpointId(9), &p, 1, now),
            Err(MappingError::Exhausted),
            "capacity bounds live mappings"
        );
    }

    #[test]
    fn reload_drops_what_the_new_policy_does_not_back() {
        let t = table("198.18.0.0/24", 8);
        let now = Instant::now();
        let p = ports(&[5432]);
        let kept = t
            .map(false, "db.internal", EndpointId(1), &p, 1, now)
            .unwrap();
        let gone = t
            .map(true, "old.internal", EndpointId(2), &p, 1, now)
            .unwrap();
        assert!(gone.addr.is_ipv6());
        t.retain(now, |m| m.endpoint == EndpointId(1));
        assert!(t.lookup(kept.addr, 5432, now).is_ok());
        assert!(matches!(
            t.lookup(gone.addr, 5432, now),
            Err(MappingError::Unknown(_))
        ));
    }
}
