//! Reply bookkeeping: which upstream message answers which client command,
//! and where sluice's own replies go between them. Pure state, no I/O.
//!
//! Every client command leaves one [`Pending`] entry, in order: what the
//! upstream owes for a forwarded command ([`Expect`]), or a local reply for
//! a denied one. Local replies at the head are written at once; an upstream
//! message is matched to the head expectation unless it is out of band:
//! a RESP3 push (`>`), a RESP2 Pub/Sub message while subscribed
//! (`*3 message ...`), or a `MONITOR` line while monitoring. So each command
//! gets exactly its replies, in order, whatever the upstream interleaves.
//!
//! The connection state that decides what is out of band is tracked from
//! the upstream's own answers, in stream order: the protocol from `HELLO`'s
//! reply (a map is RESP3), subscriptions from the counts in subscribe and
//! unsubscribe confirmations, monitoring from `MONITOR`'s `+OK`, and a clean
//! slate from `+RESET`.

use std::collections::VecDeque;

use super::command::Pubsub;
use super::reply::{Message, Short};
use super::End;

/// What the upstream owes for one forwarded command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// One reply.
    One,
    /// One reply the client must not see (the `DISCARD` sluice sends for a
    /// transaction it aborted).
    Swallow,
    /// `left` confirmations of this kind (one per channel), or one error.
    Subscribe { kind: Pubsub, left: usize },
    /// As many confirmations as channels named; with none named, one per
    /// subscription of the kind when the upstream gets to it (at least one).
    Unsubscribe { kind: Pubsub, left: Option<usize> },
    /// One reply; a map switches to RESP3, an array to RESP2.
    Hello,
    /// One reply; `+RESET` clears the connection state.
    Reset,
    /// One reply; `+OK` starts monitoring.
    Monitor,
}

/// One client command's place in the reply order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    Reply(Expect),
    /// A reply sluice writes itself.
    Local(Vec<u8>),
    /// Close the client once everything before it was written.
    Close(End),
}

/// The ordered bookkeeping of one session (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Flow {
    queue: VecDeque<Pending>,
    resp3: bool,
    channels: i64,
    patterns: i64,
    shards: i64,
    monitor: bool,
}

/// First elements of the messages a subscribed RESP2 connection receives
/// out of band.
const PUBSUB_HEADS: &[&[u8]] = &[
    b"message",
    b"pmessage",
    b"smessage",
    b"subscribe",
    b"psubscribe",
    b"ssubscribe",
    b"unsubscribe",
    b"punsubscribe",
    b"sunsubscribe",
];

/// `<seconds>.<micros> [` : the start of a `MONITOR` line.
fn is_monitor_line(text: &Short) -> bool {
    let b = text.bytes();
    let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int == 0 || b.get(int) != Some(&b'.') {
        return false;
    }
    let frac = b[int + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    frac > 0 && b.get(int + 1 + frac..int + 3 + frac) == Some(b" [")
}

impl Flow {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push(&mut self, p: Pending) {
        self.queue.push_back(p);
    }

    pub(crate) fn extend(&mut self, batch: Vec<Pending>) {
        self.queue.extend(batch);
    }

    /// Entries not yet settled.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Appends the local replies now at the head to `out`; `Some(end)` when
    /// the head is a close (everything before it was written).
    pub(crate) fn drain_ready(&mut self, out: &mut Vec<u8>) -> Option<End> {
        loop {
            match self.queue.front() {
                Some(Pending::Local(_)) => {
                    if let Some(Pending::Local(bytes)) = self.queue.pop_front() {
                        out.extend_from_slice(&bytes);
                    }
                }
                Some(Pending::Close(end)) => return Some(*end),
                _ => return None,
            }
        }
    }

    /// Whether the head waits for an upstream reply.
    pub(crate) fn awaiting_reply(&self) -> bool {
        matches!(self.queue.front(), Some(Pending::Reply(_)))
    }

    /// Whether the next upstream message must be held back until it is
    /// classified (the head swallows its reply).
    pub(crate) fn holding(&self) -> bool {
        matches!(self.queue.front(), Some(Pending::Reply(Expect::Swallow)))
    }

    fn subscribed(&self) -> bool {
        self.channels + self.patterns + self.shards > 0
    }

    fn count(&self, kind: Pubsub) -> i64 {
        match kind {
            Pubsub::Channel => self.channels,
            Pubsub::Pattern => self.patterns,
            Pubsub::Shard => self.shards,
        }
    }

    /// A subscribe or unsubscribe confirmation: its count is the server's
    /// (channels + patterns for those two; shard channels on their own).
    fn confirmed(&mut self, head: &Short, n: Option<i64>) {
        let Some(n) = n else { return };
        let kind = [Pubsub::Channel, Pubsub::Pattern, Pubsub::Shard]
            .into_iter()
            .find(|k| head.is(k.subscribed()) || head.is(k.unsubscribed()));
        match kind {
            Some(Pubsub::Channel) => self.channels = (n - self.patterns).max(0),
            Some(Pubsub::Pattern) => self.patterns = (n - self.channels).max(0),
            Some(Pubsub::Shard) => self.shards = n.max(0),
            None => {}
        }
    }

    /// A complete upstream message: whether the client gets it (`false`:
    /// it answers a command sluice sent on its own).
    pub(crate) fn on_message(&mut self, m: &Message) -> bool {
        // A confirmation the head (un)subscribe is waiting for.
        let front = match self.queue.front() {
            Some(Pending::Reply(e)) => Some(*e),
            _ => None,
        };
        if let (Some(e), Some(head)) = (front, m.head()) {
            let kind = match e {
                Expect::Subscribe { kind, .. } if head.is(kind.subscribed()) => Some(kind),
                Expect::Unsubscribe { kind, .. } if head.is(kind.unsubscribed()) => Some(kind),
                _ => None,
            };
            if let Some(kind) = kind {
                let left = match e {
                    Expect::Subscribe { left, .. } => left,
                    Expect::Unsubscribe { left, .. } => left
                        .unwrap_or_else(|| usize::try_from(self.count(kind).max(1)).unwrap_or(1)),
                    _ => 1,
                };
                self.confirmed(head, m.third);
                let left = left.saturating_sub(1);
                match (left, self.queue.front_mut()) {
                    (0, _) => {
                        self.queue.pop_front();
                    }
                    (_, Some(Pending::Reply(Expect::Subscribe { left: l, .. }))) => *l = left,
                    (_, Some(Pending::Reply(Expect::Unsubscribe { left: l, .. }))) => {
                        *l = Some(left);
                    }
                    _ => {}
                }
                return true;
            }
        }
        // Out of band.
        if m.kind == b'>' {
            if let Some(head) = m.first.as_ref() {
                self.confirmed(head, m.third);
            }
            return true;
        }
        if !self.resp3 && self.subscribed() {
            if let Some(head) = m.head() {
                if PUBSUB_HEADS.iter().any(|h| head.is(h)) {
                    self.confirmed(head, m.third);
                    return true;
                }
            }
        }
        if self.monitor && m.kind == b'+' && is_monitor_line(&m.text) {
            return true;
        }
        // The reply to the head command.
        match self.queue.front() {
            Some(Pending::Reply(_)) => {}
            // Nothing asked for it (an error before the server closes): pass it on.
            _ => return true,
        }
        let Some(Pending::Reply(e)) = self.queue.pop_front() else {
            return true;
        };
        match e {
            Expect::Swallow => false,
            Expect::Hello => {
                match m.kind {
                    b'%' => self.resp3 = true,
                    b'*' => self.resp3 = false,
                    _ => {}
                }
                true
            }
            Expect::Reset => {
                if m.kind == b'+' && m.text.is(b"RESET") {
                    self.resp3 = false;
                    self.channels = 0;
                    self.patterns = 0;
                    self.shards = 0;
                    self.monitor = false;
                }
                true
            }
            Expect::Monitor => {
                if m.kind == b'+' && m.text.is(b"OK") {
                    self.monitor = true;
                }
                true
            }
            Expect::One | Expect::Subscribe { .. } | Expect::Unsubscribe { .. } => true,
        }
    }
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
