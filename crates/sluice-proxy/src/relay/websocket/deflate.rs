//! permessage-deflate (RFC 7692): parsing the negotiated parameters and
//! bounded inflation of client messages.

use flate2::{Decompress, FlushDecompress, Status};

/// Negotiated permessage-deflate parameters (from the 101 response's
/// `Sec-WebSocket-Extensions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deflate {
    pub client_no_context_takeover: bool,
    pub server_no_context_takeover: bool,
    pub client_max_window_bits: u8,
    pub server_max_window_bits: u8,
}

/// Parse the `permessage-deflate` element of a `Sec-WebSocket-Extensions`
/// response value. `None` when it is absent or malformed (unknown or
/// repeated parameter, window bits outside 8..=15, more than one element):
/// the relay then rejects compressed frames (RSV1) as a protocol error,
/// which fails closed. Other extensions in the value are ignored here.
pub fn parse_deflate_extension(header_value: &str) -> Option<Deflate> {
    let mut found = None;
    for element in header_value.split(',') {
        let mut parts = element.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(parse_params(parts)?);
    }
    found
}

fn parse_params<'a>(params: impl Iterator<Item = &'a str>) -> Option<Deflate> {
    let mut d = Deflate {
        client_no_context_takeover: false,
        server_no_context_takeover: false,
        client_max_window_bits: 15,
        server_max_window_bits: 15,
    };
    let mut seen = [false; 4];
    for param in params {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let slot = match key.to_ascii_lowercase().as_str() {
            "client_no_context_takeover" if value.is_none() => {
                d.client_no_context_takeover = true;
                0
            }
            "server_no_context_takeover" if value.is_none() => {
                d.server_no_context_takeover = true;
                1
            }
            "client_max_window_bits" => {
                d.client_max_window_bits = window_bits(value?)?;
                2
            }
            "server_max_window_bits" => {
                d.server_max_window_bits = window_bits(value?)?;
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(d)
}

fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Why a compressed message could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The output would exceed the cap (close 1009).
    TooBig,
    /// Not a valid deflate stream (close 1002).
    Corrupt,
}

/// The trailer that RFC 7692 §7.2.2 strips from every compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
/// Output is grown at most this much at a time.
const CHUNK: usize = 64 * 1024;

/// Inflates one peer's compressed messages, keeping the LZ77 window between
/// messages unless that peer announced no context takeover.
pub(crate) struct Inflater {
    inner: Decompress,
    no_context_takeover: bool,
}

impl Inflater {
    pub(crate) fn new(no_context_takeover: bool) -> Self {
        Self {
            // Raw deflate with the full 32 KiB window: inflating with a larger
            // window than the sender's is always correct.
            inner: Decompress::new(false),
            no_context_takeover,
        }
    }

    /// Inflate one message's payload, never producing more than `cap` bytes.
    pub(crate) fn inflate(
        &mut self,
        compressed: &[u8],
        cap: usize,
    ) -> Result<Vec<u8>, InflateError> {
        if self.no_context_takeover {
            self.inner.reset(false);
        }
        let mut out = Vec::new();
        let result = self.feed(compressed, cap, &mut out).and_then(|ended| {
            if ended {
                Ok(true)
            } else {
                self.feed(&TAIL, cap, &mut out)
            }
        });
        match result {
            // A final block ends the stream: the next message starts afresh.
            Ok(true) => {
                self.inner.reset(false);
                Ok(out)
            }
            Ok(false) => Ok(out),
            Err(e) => {
                // The window is out of sync with the sender now; the relay
                // closes the connection anyway.
                self.inner.reset(false);
                Err(e)
            }
        }
    }

    /// Feed `input`; `Ok(true)` if the deflate stream ended (final block).
    fn feed(&mut self, input: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<bool, InflateError> {
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                let room = (cap + 1).saturating_sub(out.len()).clamp(1, CHUNK);
                out.reserve(room);
            }
            let (in_before, out_before) = (self.inner.total_in(), self.inner.total_out());
            let status = self
                .inner
                .decompress_vec(&input[pos..], out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let consumed = usize::try_from(self.inner.total_in() - in_before)
                .map_err(|_| InflateError::Corrupt)?;
            let produced = self.inner.total_out() - out_before;
            pos += consumed;
            if out.len() > cap {
                return Err(InflateError::TooBig);
            }
            match status {
                Status::StreamEnd => return Ok(true),
                Status::Ok | Status::BufError => {}
            }
            let out_full = out.len() == out.capacity();
            if pos >= input.len() && !out_full {
                return Ok(false);
            }
            if consumed == 0 && produced == 0 && !out_full {
                return Err(InflateError::Corrupt);
            }
        }
    }
}

/// Compress one message the way a permessage-deflate sender does (sync
/// flush, trailer stripped). Test helper for building client frames.
#[cfg(test)]
pub(crate) fn deflate_message(c: &mut flate2::Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut pos = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(CHUNK);
        }
        let before = c.total_in();
        c.compress_vec(&data[pos..], &mut out, flate2::FlushCompress::Sync)
            .expect("compress");
        pos += (c.total_in() - before) as usize;
        if pos >= data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression};

    #[test]
    fn parses_extension_values() {
        let d = parse_deflate_extension("permessage-deflate").unwrap();
        assert_eq!(d.client_max_window_bits, 15);
        assert!(!d.client_no_context_takeover);
        let d = parse_deflate_extension(
            "x-foo, permessage-deflate; client_no_context_takeover; server_max_window_bits=\"10\"",
        )
        .unwrap();
        assert!(d.client_no_context_takeover && !d.server_no_context_takeover);
        assert_eq!(
            (d.server_max_window_bits, d.client_max_window_bits),
            (10, 15)
        );
        for bad in [
            "",
            "x-foo",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; unknown",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; client_no_context_takeover=1",
        ] {
            assert_eq!(parse_deflate_extension(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trip_with_context_takeover() {
        let mut c = Compress::new(Compression::default(), false);
        let mut inf = Inflater::new(false);
        for msg in ["hello hello hello", "hello again, hello", ""] {
            let z = deflate_message(&mut c, msg.as_bytes());
            assert_eq!(inf.inflate(&z, 1024).unwrap(), msg.as_bytes());
        }
    }

    #[test]
    fn round_trip_without_context_takeover() {
        let mut inf = Inflater::new(true);
        for msg in ["abcabcabc", "abcabcabc"] {
            let mut c = Compress::new(Compression::default(), false);
            let z = deflate_message(&mut c, msg.as_bytes());
            assert_eq!(inf.inflate(&z, 1024).unwrap(), msg.as_bytes());
        }
    }

    #[test]
    fn bomb_stopped_at_cap() {
        let mut c = Compress::new(Compression::best(), false);
        let big = vec![b'a'; 8 * 1024 * 1024];
        let z = deflate_message(&mut c, &big);
        assert!(z.len() < 64 * 1024);
        let mut inf = Inflater::new(false);
        assert_eq!(inf.inflate(&z, 4096), Err(InflateError::TooBig));
        // Exactly at the cap is fine.
        let mut inf = Inflater::new(false);
        assert_eq!(inf.inflate(&z, big.len()).map(|v| v.len()), Ok(big.len()));
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut inf = Inflater::new(false);
        assert_eq!(
            inf.inflate(&[0xFF, 0xFF, 0xFF], 1024),
            Err(InflateError::Corrupt)
        );
    }
}
