//! A seeded generator for the property tests of the parsers (no external
//! crate): random and mutated inputs, reproducible from the printed seed.

/// xorshift64*.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Bytes biased toward RESP's alphabet.
    pub(crate) fn bytes(&mut self, max: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"*$+-:_,#!=(%~>|.;?\r\n0123456789 \"'\\xGETSgets";
        let n = self.below(max + 1);
        (0..n)
            .map(|_| {
                if self.chance(4) {
                    self.next() as u8
                } else {
                    *self.pick(ALPHABET)
                }
            })
            .collect()
    }

    /// `input` with a few random edits: flipped, inserted, removed and
    /// duplicated bytes, truncation.
    pub(crate) fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..=self.below(4) {
            let at = if v.is_empty() { 0 } else { self.below(v.len()) };
            match self.below(5) {
                0 if !v.is_empty() => v[at] ^= 1 << self.below(8),
                1 => {
                    let b = *self.pick(b"*$\r\n-?0123456789:");
                    v.insert(at, b);
                }
                2 if !v.is_empty() => {
                    v.remove(at);
                }
                3 if !v.is_empty() => {
                    let end = (at + self.below(8)).min(v.len());
                    let dup = v[at..end].to_vec();
                    v.splice(at..at, dup);
                }
                _ => v.truncate(at),
            }
        }
        v
    }
}

/// Random seeds per run, from the environment when given
/// (`SLUICE_PROP_SEED`), so that a failure can be replayed.
pub(crate) fn seed() -> u64 {
    std::env::var("SLUICE_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            h.finish()
        })
}
