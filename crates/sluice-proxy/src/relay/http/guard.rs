//! The streaming body backstop: refuses a reserved credential marker in a
//! request body before its bytes are written upstream.
//!
//! The scan sees the body as the upstream will decode it, not as it is
//! framed on the wire: the payload is one stream (a tail of the previous
//! bytes is carried across reads **and** chunk boundaries, so a marker
//! split over two chunks is caught), and each chunk-size line (with its
//! extensions) and trailer field is checked on its own.

use sluice_policy::placeholder;

use super::body::BodyError;

/// Longest body the request loop reads ahead (without consuming it) to
/// check for markers before anything of the request goes upstream; larger
/// bodies are checked as they stream.
pub(crate) const PREFETCH_LIMIT: usize = 256 * 1024;

/// The marker scan of one request body (a no-op when off).
#[derive(Debug)]
pub(crate) struct MarkerScan {
    enabled: bool,
    /// The last `MAX_MARKER_LEN - 1` payload bytes seen.
    tail: Vec<u8>,
}

impl MarkerScan {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            tail: Vec::new(),
        }
    }

    /// A scan that checks nothing (responses, already checked bodies).
    pub(crate) fn off() -> Self {
        Self::new(false)
    }

    /// The next payload bytes, in order. Fails when a marker ends in them,
    /// wherever it started in the payload so far.
    pub(crate) fn payload(&mut self, bytes: &[u8]) -> Result<(), BodyError> {
        if !self.enabled || bytes.is_empty() {
            return Ok(());
        }
        let keep = placeholder::MAX_MARKER_LEN - 1;
        // A marker across the boundary starts in the tail and ends within
        // the first `keep` new bytes; any other one lies inside `bytes`.
        let mut seam = Vec::with_capacity(self.tail.len() + keep);
        seam.extend_from_slice(&self.tail);
        seam.extend_from_slice(&bytes[..bytes.len().min(keep)]);
        if placeholder::contains_marker(&seam) || placeholder::contains_marker(bytes) {
            return Err(BodyError::Marker);
        }
        if bytes.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - keep..]);
        } else {
            self.tail = seam;
            let cut = self.tail.len().saturating_sub(keep);
            self.tail.drain(..cut);
        }
        Ok(())
    }

    /// One framing line (chunk size with extensions, or a trailer field),
    /// checked on its own: it is not part of the payload.
    pub(crate) fn line(&self, line: &[u8]) -> Result<(), BodyError> {
        if self.enabled && placeholder::contains_marker(line) {
            return Err(BodyError::Marker);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKERS: [&str; 5] = [
        "sluice:resolve:env:NAME",
        "openshell:resolve:env:NAME",
        "SLUICE:Resolve:ENV:",
        "openshell%3Aresolve%3Aenv%3ANAME",
        "OPENSHELL-RESOLVE-ENV-NAME",
    ];

    /// Every way to cut a marker into 2 and 3 pieces, fed as payload pieces.
    #[test]
    fn every_split_of_a_marker_is_caught() {
        for marker in MARKERS {
            let text = format!("{{\"t\": \"{marker}\"}}");
            let b = text.as_bytes();
            for i in 0..=b.len() {
                for j in i..=b.len() {
                    let mut scan = MarkerScan::new(true);
                    let result = [&b[..i], &b[i..j], &b[j..]]
                        .iter()
                        .try_for_each(|piece| scan.payload(piece));
                    assert!(
                        matches!(result, Err(BodyError::Marker)),
                        "{text:?} cut at {i}, {j}"
                    );
                }
            }
        }
    }

    /// One byte at a time, after a long clean prefix.
    #[test]
    fn byte_by_byte_after_clean_payload() {
        let mut scan = MarkerScan::new(true);
        scan.payload(&[b'x'; 100_000]).unwrap();
        let marker = b"openshell%3Aresolve%3Aenv%3A";
        let first_err = marker
            .iter()
            .position(|byte| scan.payload(std::slice::from_ref(byte)).is_err());
        assert_eq!(first_err, Some(marker.len() - 1));
    }

    #[test]
    fn clean_payload_and_off_scan_pass() {
        let mut scan = MarkerScan::new(true);
        for piece in [
            "sluice:",
            "resolve",
            ":env",
            " no marker here",
            "sluice%3Aresolve",
        ] {
            scan.payload(piece.as_bytes()).unwrap();
        }
        let mut off = MarkerScan::off();
        off.payload(b"sluice:resolve:env:X").unwrap();
        off.line(b"5;x=sluice:resolve:env:X").unwrap();
    }

    #[test]
    fn framing_lines_are_checked_alone() {
        let scan = MarkerScan::new(true);
        assert!(scan.line(b"5;ext=sluice:resolve:env:X").is_err());
        assert!(scan.line(b"X-Trailer: openshell:resolve:env:Y").is_err());
        assert!(scan.line(b"1a;ext=1").is_ok());
    }
}
