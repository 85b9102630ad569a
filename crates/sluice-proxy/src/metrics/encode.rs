//! The Prometheus text exposition format, version 0.0.4: `# HELP` and
//! `# TYPE` per family, one line per series, histograms as cumulative
//! `_bucket{le=...}` series plus `_sum` and `_count`. Label values come from
//! closed enums (never from traffic) but are escaped all the same.

use std::fmt::Write as _;

use super::histogram::Snapshot;

/// The content type of the encoding.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family is, as `# TYPE` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// Appends families to a text buffer.
pub(super) struct Encoder {
    out: String,
}

impl Encoder {
    pub(super) fn new() -> Self {
        Self {
            out: String::with_capacity(8 * 1024),
        }
    }

    pub(super) fn finish(self) -> String {
        self.out
    }

    /// `# HELP` and `# TYPE` of family `name`.
    pub(super) fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One series: `name{labels} value`.
    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Number) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        value.write(&mut self.out);
        self.out.push('\n');
    }

    /// A histogram's series (the family header written before).
    pub(super) fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Snapshot) {
        for (le, count) in &h.cumulative {
            let le = le.map_or_else(|| "+Inf".to_owned(), format_float);
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {count}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", format_float(h.sum_seconds));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", h.count);
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }
}

/// A sample value.
pub(super) trait Number {
    fn write(self, out: &mut String);
}

impl Number for u64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Number for i64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

/// A float as Prometheus reads it (Rust's shortest round-trip form; the
/// special values spelled as the format wants).
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::{Histogram, DECISION_BOUNDS};
    use std::time::Duration;

    #[test]
    fn counter_gauge_and_histogram_lines() {
        let mut e = Encoder::new();
        e.family("sluice_x_total", "Things.\nMore", Kind::Counter);
        e.sample("sluice_x_total", &[("a", "b"), ("c", "q\"\\")], 3u64);
        e.family("sluice_g", "A gauge.", Kind::Gauge);
        e.sample("sluice_g", &[], -1i64);
        let h = Histogram::new(&DECISION_BOUNDS[..3]);
        h.observe(Duration::from_nanos(1500));
        h.observe(Duration::from_secs(1));
        e.family("sluice_h_seconds", "A histogram.", Kind::Histogram);
        e.histogram("sluice_h_seconds", &[("s", "t")], &h.snapshot());
        assert_eq!(
            e.finish(),
            "# HELP sluice_x_total Things.\\nMore\n\
             # TYPE sluice_x_total counter\n\
             sluice_x_total{a=\"b\",c=\"q\\\"\\\\\"} 3\n\
             # HELP sluice_g A gauge.\n\
             # TYPE sluice_g gauge\n\
             sluice_g -1\n\
             # HELP sluice_h_seconds A histogram.\n\
             # TYPE sluice_h_seconds histogram\n\
             sluice_h_seconds_bucket{s=\"t\",le=\"0.000001\"} 0\n\
             sluice_h_seconds_bucket{s=\"t\",le=\"0.0000025\"} 1\n\
             sluice_h_seconds_bucket{s=\"t\",le=\"0.000005\"} 1\n\
             sluice_h_seconds_bucket{s=\"t\",le=\"+Inf\"} 2\n\
             sluice_h_seconds_sum{s=\"t\"} 1.0000015\n\
             sluice_h_seconds_count{s=\"t\"} 2\n"
        );
    }

    #[test]
    fn unlabelled_histogram() {
        let mut e = Encoder::new();
        let h = Histogram::new(&DECISION_BOUNDS[..1]);
        e.histogram("h", &[], &h.snapshot());
        assert_eq!(
            e.finish(),
            "h_bucket{le=\"0.000001\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"
        );
    }

    #[test]
    fn floats() {
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(10.0), "10");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }
}
