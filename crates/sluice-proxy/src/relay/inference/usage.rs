//! Token counts from a backend's answer: a whole JSON body, or the `data:`
//! payloads of a server-sent-event stream as they pass. Both OpenAI
//! (`prompt_tokens`/`completion_tokens`, `input_tokens`/`output_tokens` in
//! the Responses API) and Anthropic (`message_start` carries the input
//! count, `message_delta` the running output count) shapes are read. The
//! scanner is bounded: an SSE line longer than [`MAX_LINE`] is skipped.

use serde_json::Value;

/// Longest SSE line kept for scanning.
const MAX_LINE: usize = 1024 * 1024;

/// Token counts seen so far (`None`: the backend did not report them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) input: Option<u64>,
    pub(crate) output: Option<u64>,
}

impl Usage {
    /// Takes the counts of one JSON document (a body or one event).
    pub(crate) fn observe(&mut self, doc: &Value) {
        for usage in [
            doc.get("usage"),
            doc.pointer("/message/usage"),
            doc.pointer("/response/usage"),
        ]
        .into_iter()
        .flatten()
        {
            let count = |keys: [&str; 2]| keys.iter().find_map(|k| usage.get(*k)?.as_u64());
            if let Some(n) = count(["prompt_tokens", "input_tokens"]) {
                self.input = Some(n);
            }
            if let Some(n) = count(["completion_tokens", "output_tokens"]) {
                self.output = Some(n);
            }
        }
    }

    /// Takes the counts of a whole JSON body (anything else is ignored).
    pub(crate) fn observe_body(&mut self, body: &[u8]) {
        if let Ok(doc) = serde_json::from_slice::<Value>(body) {
            self.observe(&doc);
        }
    }
}

/// Splits an SSE byte stream into lines and reads `usage` from `data:`
/// payloads that mention it.
#[derive(Debug, Default)]
pub(crate) struct SseUsage {
    line: Vec<u8>,
    /// The current line is over [`MAX_LINE`]: dropped up to its end.
    skipping: bool,
    pub(crate) usage: Usage,
}

impl SseUsage {
    /// Feeds the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            if !self.skipping && self.line.len() + nl <= MAX_LINE {
                self.line.extend_from_slice(&bytes[..nl]);
                let line = std::mem::take(&mut self.line);
                self.scan(&line);
                self.line = line;
            }
            self.line.clear();
            self.skipping = false;
            bytes = &bytes[nl + 1..];
        }
        if self.skipping {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.line.clear();
            self.skipping = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn scan(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if !contains(data, b"usage") {
            return;
        }
        if let Ok(doc) = serde_json::from_slice::<Value>(data) {
            self.usage.observe(&doc);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(body: &str) -> Usage {
        let mut u = Usage::default();
        u.observe_body(body.as_bytes());
        u
    }

    #[test]
    fn json_bodies() {
        let cases = [
            (
                r#"{"usage":{"prompt_tokens":7,"completion_tokens":3}}"#,
                (Some(7), Some(3)),
            ),
            (
                r#"{"usage":{"input_tokens":9,"output_tokens":4}}"#,
                (Some(9), Some(4)),
            ),
            (
                r#"{"usage":{"prompt_tokens":5,"total_tokens":5}}"#,
                (Some(5), None),
            ),
            (r#"{"id":"x"}"#, (None, None)),
            ("not json", (None, None)),
        ];
        for (body, (input, output)) in cases {
            assert_eq!(usage(body), Usage { input, output }, "{body}");
        }
    }

    #[test]
    fn anthropic_stream_split_anywhere() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n",
            "event: message_delta\r\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":6}}\r\n\r\n",
        );
        for split in 0..stream.len() {
            let mut s = SseUsage::default();
            s.feed(&stream.as_bytes()[..split]);
            s.feed(&stream.as_bytes()[split..]);
            assert_eq!(
                s.usage,
                Usage {
                    input: Some(12),
                    output: Some(6)
                },
                "split at {split}"
            );
        }
    }

    #[test]
    fn openai_stream_and_responses_api() {
        let mut s = SseUsage::default();
        s.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
        s.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n");
        assert_eq!(
            s.usage,
            Usage {
                input: Some(3),
                output: Some(2)
            }
        );
        let mut r = SseUsage::default();
        r.feed(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":8,\"output_tokens\":5}}}\n\n");
        assert_eq!(
            r.usage,
            Usage {
                input: Some(8),
                output: Some(5)
            }
        );
    }

    #[test]
    fn an_overlong_line_is_skipped_not_kept() {
        let mut s = SseUsage::default();
        let long = vec![b'x'; MAX_LINE + 10];
        s.feed(b"data: ");
        s.feed(&long);
        assert!(s.line.is_empty());
        s.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1}}\n");
        assert_eq!(s.usage.input, Some(1));
    }
}
