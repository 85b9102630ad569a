//! The `pretty` audit format: one line per event for a person at a terminal,
//! `HH:MM:SS VERDICT what (who) reason`, coloured unless told not to.

use std::fmt::Write as _;

use crate::enums::Disposition;
use crate::event::OcsfEvent;
use crate::time::epoch_millis;

/// The one-line account of a denial shared by `sluice run`'s terminal line
/// and the `hint` of HTTP denial bodies: `denied WHAT (BINARY, pid N): REASON`.
#[must_use]
pub fn denial_line(what: &str, who: Option<(&str, u64)>, reason: Option<&str>) -> String {
    let mut out = format!("denied {what}");
    if let Some((name, pid)) = who {
        let _ = write!(out, " ({name}, pid {pid})");
    }
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        out.push_str(": ");
        out.push_str(r);
    }
    out
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl OcsfEvent {
    /// The event as one human line (UTC time of day, verdict, message, actor
    /// and reason), with ANSI colours when `color`.
    #[must_use]
    pub fn pretty(&self, color: bool) -> String {
        let secs = epoch_millis(self.time) / 1000 % 86_400;
        let (verdict, tint) = match self.disposition {
            Some(Disposition::Allowed) => ("ALLOW", GREEN),
            Some(Disposition::Blocked) => ("DENY", RED),
            _ => ("-", DIM),
        };
        let mut out = String::new();
        let paint = |out: &mut String, tint: &str, text: &str| {
            if color {
                let _ = write!(out, "{tint}{text}{RESET}");
            } else {
                out.push_str(text);
            }
        };
        paint(
            &mut out,
            DIM,
            &format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
        );
        out.push(' ');
        paint(&mut out, tint, &format!("{verdict:<5}"));
        out.push(' ');
        out.push_str(self.message.as_deref().unwrap_or(self.class.name()));
        if let Some(p) = &self.actor {
            let name = p.path.rsplit('/').next().unwrap_or(&p.path);
            let _ = write!(out, " ({name}, pid {})", p.pid);
        }
        if let Some(detail) = &self.status_detail {
            out.push_str(" — ");
            paint(&mut out, DIM, detail);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use crate::{Action, Activity, EventClass, OcsfEvent, ProcessInfo};

    use super::*;

    fn event(disposition: Disposition) -> OcsfEvent {
        OcsfEvent::new(EventClass::NetworkActivity, Activity::Open)
            .time(UNIX_EPOCH + Duration::from_secs(1_764_490_000))
            .action(Action::Denied)
            .disposition(disposition)
            .dst_endpoint("example.com", 443)
            .actor_process(ProcessInfo {
                path: "/usr/bin/curl".into(),
                pid: 1234,
                ancestors: vec![],
            })
            .message("CONNECT denied example.com:443")
            .status_detail("no policy matches example.com:443")
    }

    #[test]
    fn denial_lines() {
        assert_eq!(
            denial_line("CONNECT a:443", Some(("curl", 7)), Some("no policy")),
            "denied CONNECT a:443 (curl, pid 7): no policy"
        );
        assert_eq!(
            denial_line("GET a:80/x", None, Some("")),
            "denied GET a:80/x"
        );
    }

    /// Snapshots of the format: plain and coloured.
    #[test]
    fn pretty_lines() {
        assert_eq!(
            event(Disposition::Blocked).pretty(false),
            "08:06:40 DENY  CONNECT denied example.com:443 (curl, pid 1234) — no policy matches example.com:443"
        );
        assert_eq!(
            event(Disposition::Blocked).pretty(true),
            "\x1b[2m08:06:40\x1b[0m \x1b[31mDENY \x1b[0m CONNECT denied example.com:443 (curl, pid 1234) — \x1b[2mno policy matches example.com:443\x1b[0m"
        );
        let load = OcsfEvent::new(EventClass::DeviceConfigStateChange, Activity::Log)
            .time(UNIX_EPOCH)
            .message("Policy loaded: generation 1 from p.yaml");
        assert_eq!(
            load.pretty(false),
            "00:00:00 -     Policy loaded: generation 1 from p.yaml"
        );
    }
}
