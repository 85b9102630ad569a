//! The one strict JSON (RFC 8259) reader for policy-relevant request
//! bodies: GraphQL requests, JSON-RPC and MCP messages, and
//! GraphQL-over-WebSocket messages.
//!
//! Bounded nesting ([`MAX_DEPTH`]), no panics, UTF-8 only, strings compared
//! after unescaping. Objects keep their members in order, duplicates
//! included ([`parse`]), so that a caller can refuse a duplicated key it
//! looks up ([`Value::get`]); [`parse_unique`] refuses a duplicated key in
//! any object of the text. Where an upstream's parser would take the first
//! of two equal keys and another the last, policy must not pick one: the
//! ambiguity is refused.

use thiserror::Error;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 128;

/// A parsed JSON value. Numbers are validated and kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number's text, e.g. `-2.5e+3`.
    Number(String),
    String(String),
    Array(Vec<Self>),
    /// Members in order, duplicates kept (never any from [`parse_unique`]).
    Object(Vec<(String, Self)>),
}

/// Why a text was refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonError {
    /// Not JSON (syntax, invalid escape, lone surrogate, invalid UTF-8,
    /// control character in a string, trailing bytes).
    #[error("invalid JSON")]
    Invalid,
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than 128 levels")]
    TooDeep,
    /// Two members of one object have the same key (after unescaping).
    #[error("duplicate key in a JSON object")]
    DuplicateKey,
}

/// Why a lookup failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The key occurs more than once.
    Duplicate,
}

impl Value {
    /// The single member named `key` of an object (`None` when absent or
    /// when `self` is not an object).
    ///
    /// # Errors
    /// [`Lookup::Duplicate`] when the key occurs more than once.
    pub fn get(&self, key: &str) -> Result<Option<&Self>, Lookup> {
        let Self::Object(members) = self else {
            return Ok(None);
        };
        let mut found = None;
        for (k, v) in members {
            if k == key {
                if found.is_some() {
                    return Err(Lookup::Duplicate);
                }
                found = Some(v);
            }
        }
        Ok(found)
    }

    /// The same value as a `serde_json` value (numbers as `serde_json`
    /// reads their text; for a value from [`parse_unique`] nothing is
    /// lost). `None` for a number `serde_json` cannot represent (`1e400`).
    #[must_use]
    pub fn to_serde(&self) -> Option<serde_json::Value> {
        use serde_json::Value as S;
        Some(match self {
            Self::Null => S::Null,
            Self::Bool(b) => S::Bool(*b),
            Self::Number(text) => match serde_json::from_str::<S>(text).ok()? {
                n @ S::Number(_) => n,
                _ => return None,
            },
            Self::String(s) => S::String(s.clone()),
            Self::Array(items) => S::Array(
                items
                    .iter()
                    .map(Self::to_serde)
                    .collect::<Option<Vec<_>>>()?,
            ),
            Self::Object(members) => {
                let mut map = serde_json::Map::with_capacity(members.len());
                for (k, v) in members {
                    map.insert(k.clone(), v.to_serde()?);
                }
                S::Object(map)
            }
        })
    }
}

/// Parses one complete JSON text (surrounding whitespace allowed); objects
/// may repeat a key (see [`Value::get`]).
#[must_use]
pub fn parse(input: &[u8]) -> Option<Value> {
    read(input, false).ok()
}

/// Parses one complete JSON text and refuses a duplicated key in **any**
/// object, at any depth.
///
/// # Errors
/// [`JsonError`].
pub fn parse_unique(input: &[u8]) -> Result<Value, JsonError> {
    read(input, true)
}

fn read(input: &[u8], unique: bool) -> Result<Value, JsonError> {
    let mut p = Parser {
        b: input,
        i: 0,
        unique,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i == p.b.len() {
        Ok(v)
    } else {
        Err(JsonError::Invalid)
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    unique: bool,
}

/// Shorthand: anything `None` below is a syntax error.
trait OrInvalid<T> {
    fn invalid(self) -> Result<T, JsonError>;
}

impl<T> OrInvalid<T> for Option<T> {
    fn invalid(self) -> Result<T, JsonError> {
        self.ok_or(JsonError::Invalid)
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn lit(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek().invalid()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Value::String).invalid(),
            b't' => self.lit(b"true").map(|()| Value::Bool(true)).invalid(),
            b'f' => self.lit(b"false").map(|()| Value::Bool(false)).invalid(),
            b'n' => self.lit(b"null").map(|()| Value::Null).invalid(),
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                self.number().invalid()?;
                let text =
                    std::str::from_utf8(&self.b[start..self.i]).map_err(|_| JsonError::Invalid)?;
                Ok(Value::Number(text.to_owned()))
            }
            _ => Err(JsonError::Invalid),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.i += 1;
        let mut members = Vec::new();
        self.ws();
        if self.peek().invalid()? == b'}' {
            self.i += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.ws();
            if self.peek().invalid()? != b'"' {
                return Err(JsonError::Invalid);
            }
            let k = self.string().invalid()?;
            self.ws();
            if self.peek().invalid()? != b':' {
                return Err(JsonError::Invalid);
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth)?;
            members.push((k, v));
            self.ws();
            match self.peek().invalid()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    if self.unique && has_duplicate_key(&members) {
                        return Err(JsonError::DuplicateKey);
                    }
                    return Ok(Value::Object(members));
                }
                _ => return Err(JsonError::Invalid),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek().invalid()? == b']' {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            match self.peek().invalid()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(JsonError::Invalid),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let end = self.i.checked_add(4)?;
        let s = std::str::from_utf8(self.b.get(self.i..end)?).ok()?;
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i = end;
        u32::from_str_radix(s, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return None,
                _ => out.push(c),
            }
        }
    }

    /// After `\u`: one code point, combining a surrogate pair; lone
    /// surrogates are rejected.
    fn unicode_escape(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) {
            self.lit(b"\\u")?;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return None;
            }
            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
        } else {
            char::from_u32(hi)
        }
    }
}

/// Whether two members share a key (sorting, so `O(n log n)` for any size).
fn has_duplicate_key(members: &[(String, Value)]) -> bool {
    if members.len() < 2 {
        return false;
    }
    let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2).any(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in [
            "{}",
            "[]",
            " {\"a\": [1, -2.5e+3, true, false, null, \"x\\u00e9\\ud83d\\ude00\"]} ",
            "0",
            "\"\\/\"",
        ] {
            assert!(parse(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "\"\\ud800\"",
            "\"\t\"",
            "nul",
            "{} x",
            "'a'",
            "\"\\x\"",
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).is_none());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_some());
    }

    #[test]
    fn duplicate_keys_are_visible() {
        let v = parse(br#"{"query":"a","query":"b","x":1}"#).unwrap();
        assert_eq!(v.get("query"), Err(Lookup::Duplicate));
        assert_eq!(v.get("x"), Ok(Some(&Value::Number("1".into()))));
        assert_eq!(v.get("y"), Ok(None));
    }

    /// Duplicate keys at every depth and in every disguise are refused by
    /// `parse_unique`; distinct keys and duplicates in different objects pass.
    #[test]
    fn duplicate_key_table() {
        let cases: &[(&str, Result<(), JsonError>)] = &[
            (
                r#"{"method":"a","method":"b"}"#,
                Err(JsonError::DuplicateKey),
            ),
            (
                r#"{"method":"a","x":1,"method":"a"}"#,
                Err(JsonError::DuplicateKey),
            ),
            (
                r#"{"params":{"name":"a","name":"b"}}"#,
                Err(JsonError::DuplicateKey),
            ),
            (
                r#"[{"a":1},{"b":{"c":[{"d":1,"d":2}]}}]"#,
                Err(JsonError::DuplicateKey),
            ),
            // Escapes are decoded before keys are compared.
            (
                r#"{"method":"a","m\u0065thod":"b"}"#,
                Err(JsonError::DuplicateKey),
            ),
            (r#"{"a\/b":1,"a/b":2}"#, Err(JsonError::DuplicateKey)),
            (r#"{"":1,"":2}"#, Err(JsonError::DuplicateKey)),
            // Keys differ in case, or only in the same key in sibling objects.
            (r#"{"method":"a","Method":"b"}"#, Ok(())),
            (r#"[{"method":"a"},{"method":"b"}]"#, Ok(())),
            (r#"{"a":{"k":1},"b":{"k":1}}"#, Ok(())),
            (r#"{"k":{"k":{"k":1}}}"#, Ok(())),
            // Other refusals keep their own error.
            (r#"{"a":1,}"#, Err(JsonError::Invalid)),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_unique(text.as_bytes()).map(|_| ()), want, "{text}");
            // `parse` keeps duplicates for the caller to see.
            assert_eq!(
                parse(text.as_bytes()).is_some(),
                want != &Err(JsonError::Invalid),
                "{text}"
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse_unique(deep.as_bytes()), Err(JsonError::TooDeep));
        // Many members: still caught (and fast).
        let mut wide: String = (0..20_000).map(|i| format!("\"k{i}\":{i},")).collect();
        wide.insert(0, '{');
        wide.push_str("\"k19999\":0}");
        assert_eq!(parse_unique(wide.as_bytes()), Err(JsonError::DuplicateKey));
    }

    #[test]
    fn to_serde_keeps_every_value() {
        let text =
            r#"{"id":-2.5e+3,"n":12345678901234567890,"s":"x\u00e9","a":[true,false,null],"o":{}}"#;
        let ours = parse_unique(text.as_bytes()).unwrap().to_serde().unwrap();
        let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(parse_unique(b"1e400").unwrap().to_serde(), None);
    }
}
