//! One DNS query in, one answer out (design §6.1): a name an eligible endpoint
//! matches gets a synthetic address (A from the IPv4 pool, AAAA from the IPv6
//! pool) and the mapping is recorded before the answer exists; every other
//! name, and every query that is not one plain A/AAAA question (several
//! questions, ANY, TXT, other classes or opcodes, oversized messages), gets
//! `REFUSED`. Nothing here sends a query anywhere: an ineligible label never
//! reaches a resolver.

use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::synthetic::{Mapping, MappingTable};
use sluice_policy::EndpointId;

/// Largest message handled (OpenShell's bound); longer ones are dropped.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// What makes a name eligible for a synthetic address.
pub trait Eligibility {
    /// The endpoint (and its ports, and the policy generation) that makes
    /// `name` (lower case, no trailing dot) eligible, if any.
    fn eligible(&self, name: &str) -> Option<(EndpointId, Arc<[u16]>, u64)>;
}

/// What [`answer`] made of a message.
#[derive(Debug)]
pub enum Answer {
    /// A synthetic address for an eligible name (`mapping` is `None` for an
    /// eligible name asked for another address family than the pools serve).
    Synthetic {
        wire: Vec<u8>,
        mapping: Option<Mapping>,
    },
    /// `REFUSED`, with the name asked for (`-` if none).
    Refused { wire: Vec<u8>, name: String },
    /// Not a DNS query at all: no answer.
    Dropped,
}

fn refused(msg: &Message, name: String) -> Answer {
    let mut r = Message::new();
    r.set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(false)
        .set_response_code(ResponseCode::Refused)
        .add_queries(msg.queries().to_vec());
    match r.to_vec() {
        Ok(wire) => Answer::Refused { wire, name },
        Err(_) => Answer::Dropped,
    }
}

/// A well-formed question: the message, the name asked for, and whether it is
/// an AAAA (else A) question; or the answer a query gets before eligibility
/// matters (`REFUSED` for every other shape, nothing for non-queries).
fn question(query: &[u8]) -> Result<(Message, String, bool), Answer> {
    if query.len() > MAX_MESSAGE_BYTES {
        return Err(Answer::Dropped);
    }
    let Ok(msg) = Message::from_vec(query) else {
        return Err(Answer::Dropped);
    };
    if msg.message_type() != MessageType::Query {
        return Err(Answer::Dropped);
    }
    let [q] = msg.queries() else {
        return Err(refused(&msg, "-".into()));
    };
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if msg.op_code() != OpCode::Query || q.query_class() != DNSClass::IN {
        return Err(refused(&msg, name));
    }
    let v6 = match q.query_type() {
        RecordType::A => false,
        RecordType::AAAA => true,
        _ => return Err(refused(&msg, name)),
    };
    Ok((msg, name, v6))
}

/// `REFUSED` for every query, as the resolver of a sandbox with no eligible
/// names answers; non-queries get nothing.
#[must_use]
pub fn refuse(query: &[u8]) -> Answer {
    match question(query) {
        Ok((msg, name, _)) => refused(&msg, name),
        Err(answer) => answer,
    }
}

/// Answers `query` (see the module docs), issuing mappings from `table`.
#[must_use]
pub fn answer(
    query: &[u8],
    eligibility: &impl Eligibility,
    table: &MappingTable,
    now: Instant,
) -> Answer {
    let (msg, name, v6) = match question(query) {
        Ok(q) => q,
        Err(answer) => return answer,
    };
    let Some(q) = msg.queries().first() else {
        return Answer::Dropped;
    };
    let Some((endpoint, ports, generation)) = eligibility.eligible(&name) else {
        return refused(&msg, name);
    };
    let Ok(mapping) = table.map(v6, &name, endpoint, &ports, generation, now) else {
        // No address to give: refuse rather than guess (SERVFAIL would invite retries).
        return refused(&msg, name);
    };
    let ttl = u32::try_from(table.ttl().as_secs()).unwrap_or(30);
    let rdata = match mapping.addr {
        std::net::IpAddr::V4(a) => RData::A(a.into()),
        std::net::IpAddr::V6(a) => RData::AAAA(a.into()),
    };
    let mut r = Message::new();
    r.set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(false)
        .set_response_code(ResponseCode::NoError)
        .add_queries(msg.queries().to_vec())
        .add_answer(Record::from_rdata(q.name().clone(), ttl, rdata));
    match r.to_vec() {
        Ok(wire) => Answer::Synthetic {
            wire,
            mapping: Some(mapping),
        },
        Err(_) => Answer::Dropped,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;

    struct OnlyCache;

    impl Eligibility for OnlyCache {
        fn eligible(&self, name: &str) -> Option<(EndpointId, Arc<[u16]>, u64)> {
            (name == "cache.internal").then(|| (EndpointId(7), Arc::from(&[6379u16][..]), 3))
        }
    }

    fn table() -> MappingTable {
        MappingTable::new(
            super::super::synthetic::DEFAULT_POOL_V4.parse().unwrap(),
            super::super::synthetic::DEFAULT_POOL_V6.parse().unwrap(),
            Duration::from_secs(10),
            64,
        )
    }

    fn query(name: &str, rtype: RecordType) -> Vec<u8> {
        super::super::tests::query(name, rtype, 99)
    }

    #[test]
    fn eligible_names_get_a_synthetic_address_and_a_mapping() {
        let t = table();
        let now = Instant::now();
        for (rtype, v6) in [(RecordType::A, false), (RecordType::AAAA, true)] {
            let Answer::Synthetic { wire, mapping } =
                answer(&query("Cache.Internal.", rtype), &OnlyCache, &t, now)
            else {
                panic!("eligible name not answered");
            };
            let m = mapping.expect("mapping");
            assert_eq!(
                (m.addr.is_ipv6(), m.endpoint, m.generation),
                (v6, EndpointId(7), 3)
            );
            let reply = Message::from_vec(&wire).unwrap();
            assert_eq!(reply.id(), 99);
            assert_eq!(reply.response_code(), ResponseCode::NoError);
            assert_eq!(reply.answers().len(), 1);
            assert_eq!(reply.answers()[0].ttl(), 10);
            let got = match reply.answers()[0].data() {
                RData::A(a) => std::net::IpAddr::V4(a.0),
                RData::AAAA(a) => std::net::IpAddr::V6(a.0),
                other => panic!("{other:?}"),
            };
            assert_eq!(got, m.addr);
            assert_eq!(
                t.lookup(m.addr, 6379, now).unwrap().name.as_ref(),
                "cache.internal"
            );
        }
    }

    #[test]
    fn everything_else_is_refused_or_dropped() {
        let t = table();
        let now = Instant::now();
        for (name, rtype) in [
            ("example.com.", RecordType::A),
            ("secret-data.exfil.test.", RecordType::AAAA),
            ("cache.internal.", RecordType::TXT),
            ("cache.internal.", RecordType::ANY),
            ("cache.internal.", RecordType::MX),
        ] {
            let a = answer(&query(name, rtype), &OnlyCache, &t, now);
            let Answer::Refused { wire, .. } = a else {
                panic!("{name} {rtype}: {a:?}");
            };
            let reply = Message::from_vec(&wire).unwrap();
            assert_eq!(reply.response_code(), ResponseCode::Refused);
            assert!(reply.answers().is_empty());
        }
        let mut two = Message::from_vec(&query("cache.internal.", RecordType::A)).unwrap();
        two.add_query(Query::query(
            Name::from_ascii("b.test.").unwrap(),
            RecordType::A,
        ));
        assert!(matches!(
            answer(&two.to_vec().unwrap(), &OnlyCache, &t, now),
            Answer::Refused { .. }
        ));
        for junk in [Vec::new(), vec![0; 5], vec![0xff; MAX_MESSAGE_BYTES + 1]] {
            assert!(matches!(
                answer(&junk, &OnlyCache, &t, now),
                Answer::Dropped
            ));
        }
    }

    /// Random and mutated messages: never a panic, never an answer record for
    /// anything but the eligible name.
    #[test]
    fn arbitrary_bytes_never_panic_or_answer_ineligible_names() {
        let t = table();
        let now = Instant::now();
        let seed = query("cache.internal.", RecordType::A);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..20_000 {
            let mut msg = if i % 2 == 0 {
                seed.clone()
            } else {
                (0..(next() % 64)).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if !msg.is_empty() {
                    let at = (next() as usize) % msg.len();
                    msg[at] = next() as u8;
                }
            }
            if let Answer::Synthetic { wire, .. } = answer(&msg, &OnlyCache, &t, now) {
                let reply = Message::from_vec(&wire).unwrap();
                for r in reply.answers() {
                    assert_eq!(
                        r.name()
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                        "cache.internal"
                    );
                }
            }
        }
    }
}
