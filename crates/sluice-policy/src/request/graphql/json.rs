//! A small strict JSON (RFC 8259) reader for GraphQL request bodies.
//!
//! Bounded nesting, no panics, UTF-8 only. Objects keep their members in
//! order (duplicates included) so that callers can reject a duplicated key
//! they care about instead of silently picking one.

/// Deepest nesting of arrays and objects accepted.
pub(crate) const MAX_DEPTH: usize = 128;

/// A parsed JSON value. Numbers are validated but not kept.
#[derive(Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool,
    Number,
    String(String),
    Array(Vec<Self>),
    Object(Vec<(String, Self)>),
}

/// Why a lookup failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The key occurs more than once.
    Duplicate,
}

impl Value {
    /// The single member named `key` of an object (`None` when absent or
    /// when `self` is not an object).
    pub(crate) fn get(&self, key: &str) -> Result<Option<&Self>, Lookup> {
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
}

/// Parses one complete JSON text (surrounding whitespace allowed).
pub(crate) fn parse(input: &[u8]) -> Option<Value> {
    let mut p = Parser { b: input, i: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    (p.i == p.b.len()).then_some(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
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

    fn value(&mut self, depth: usize) -> Option<Value> {
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Value::String),
            b't' => self.lit(b"true").map(|()| Value::Bool),
            b'f' => self.lit(b"false").map(|()| Value::Bool),
            b'n' => self.lit(b"null").map(|()| Value::Null),
            b'-' | b'0'..=b'9' => self.number().map(|()| Value::Number),
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        let mut members = Vec::new();
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(Value::Object(members));
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let k = self.string()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth)?;
            members.push((k, v));
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(Value::Object(members));
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
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
        assert_eq!(v.get("x"), Ok(Some(&Value::Number)));
        assert_eq!(v.get("y"), Ok(None));
    }
}
