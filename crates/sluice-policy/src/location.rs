//! A YAML path → (line, column) index built from yaml-rust2's marked event
//! stream. Paths look like `network_policies.github.endpoints[0].host`; the
//! document root is the empty path. Public so that other YAML inputs of the
//! product (`sluice test` case files) report `FILE:LINE:COL: message` the
//! same way the policy does.

use std::collections::HashMap;
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::error::Diagnostic;

/// 1-based (line, column) positions of every node, keyed by path.
#[derive(Debug, Default)]
pub struct LocationIndex {
    values: HashMap<String, (usize, usize)>,
    keys: HashMap<String, (usize, usize)>,
}

impl LocationIndex {
    /// Builds the index. A document yaml-rust2 cannot parse yields an empty
    /// index (serde_yaml reports the syntax error itself).
    #[must_use]
    pub fn build(src: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(src);
        if parser.load(&mut builder, false).is_err() {
            return Self::default();
        }
        builder.index
    }

    /// Position of the value at `path`, or of its nearest recorded ancestor.
    #[must_use]
    pub fn value(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return (0, 0),
            }
        }
    }

    /// Position of the mapping key for `path`; the value position if `path`
    /// is a sequence element or unknown.
    #[must_use]
    pub fn key(&self, path: &str) -> (usize, usize) {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }
}

/// A serde_yaml error (syntax, type, unknown or missing field) as one
/// diagnostic at the parser's own location, without the " at line N column
/// M" fragment in the message.
#[must_use]
pub fn yaml_error(file: &Arc<str>, e: &serde_yaml::Error) -> Diagnostic {
    let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    Diagnostic {
        file: Arc::clone(file),
        line,
        col,
        message: strip_location(&e.to_string()),
    }
}

/// Removes serde_yaml/libyaml " at line N column M" fragments (the location
/// is reported separately).
pub(crate) fn strip_location(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 9..];
        let mut words = after.splitn(4, ' ');
        let is_loc = words
            .next()
            .is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit()))
            && words.next() == Some("column");
        let col = words.next().unwrap_or("");
        let digits = col.bytes().take_while(u8::is_ascii_digit).count();
        if is_loc && digits > 0 {
            let skip = after.find("column ").map_or(0, |c| c + 7 + digits);
            rest = &after[skip..];
        } else {
            out.push_str(" at line ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The parent of a path: strips a trailing `[i]` or `.key`.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return Some(&path[..i]);
        }
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

/// Joins a mapping key onto a path.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins a sequence index onto a path.
pub(crate) fn join_idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        fresh: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    index: LocationIndex,
}

fn pos(mark: Marker) -> (usize, usize) {
    (mark.line(), mark.col() + 1)
}

impl Builder {
    /// Handles the start of a node; returns its path, or `None` when the node
    /// is a mapping key (recorded as the key of the next value).
    fn node_path(&mut self, mark: Marker, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = join_idx(path, *next);
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, fresh }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    // yaml-rust2 marks a block mapping at its first `:`; the
                    // first key is where the mapping visibly starts.
                    if std::mem::take(fresh) {
                        if let Some(v) = self.index.values.get_mut(path.as_str()) {
                            *v = (*v).min(pos(mark));
                        }
                    }
                    let k = scalar.unwrap_or("?").to_owned();
                    let full = join(path, &k);
                    self.index.keys.entry(full).or_insert_with(|| pos(mark));
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref value, ..) => {
                if let Some(p) = self.node_path(mark, Some(value)) {
                    self.index.values.entry(p).or_insert_with(|| pos(mark));
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.node_path(mark, None) {
                    self.index.values.entry(p).or_insert_with(|| pos(mark));
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                // A collection used as a mapping key: give it a throwaway path.
                let path = match self.node_path(mark, None) {
                    Some(p) => {
                        self.index
                            .values
                            .entry(p.clone())
                            .or_insert_with(|| pos(mark));
                        p
                    }
                    None => "\u{0}complex-key".to_owned(),
                };
                self.stack.push(if is_map {
                    Frame::Map {
                        path,
                        key: None,
                        fresh: true,
                    }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}
