//! OCSF 1.8 enumerations used by sluice events: classes, activities, actions,
//! dispositions, severities and statuses.

/// The OCSF event classes sluice emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventClass {
    /// Network Activity (4001, category 4 "Network Activity"): CONNECT tunnels,
    /// bypass attempts, listener start-up.
    NetworkActivity,
    /// HTTP Activity (4002, category 4 "Network Activity"): forward-proxy and
    /// in-tunnel HTTP requests.
    HttpActivity,
    /// DNS Activity (4003, category 4 "Network Activity"): policy DNS answers
    /// (`sluice run`'s synthetic addresses).
    DnsActivity,
    /// Detection Finding (2004, category 2 "Findings"): security findings such
    /// as proxy bypass or credential misuse.
    DetectionFinding,
    /// API Activity (6003, category 6 "Application Activity"): inference calls.
    ApiActivity,
    /// Device Config State Change (5019, category 5 "Discovery"): policy loads
    /// and reloads.
    DeviceConfigStateChange,
}

impl EventClass {
    /// OCSF `class_uid`.
    pub const fn uid(self) -> u32 {
        match self {
            Self::NetworkActivity => 4001,
            Self::HttpActivity => 4002,
            Self::DnsActivity => 4003,
            Self::DetectionFinding => 2004,
            Self::ApiActivity => 6003,
            Self::DeviceConfigStateChange => 5019,
        }
    }

    /// OCSF `class_name`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NetworkActivity => "Network Activity",
            Self::HttpActivity => "HTTP Activity",
            Self::DnsActivity => "DNS Activity",
            Self::DetectionFinding => "Detection Finding",
            Self::ApiActivity => "API Activity",
            Self::DeviceConfigStateChange => "Device Config State Change",
        }
    }

    /// OCSF `category_uid`.
    pub const fn category_uid(self) -> u32 {
        match self {
            Self::NetworkActivity | Self::HttpActivity | Self::DnsActivity => 4,
            Self::DetectionFinding => 2,
            Self::ApiActivity => 6,
            Self::DeviceConfigStateChange => 5,
        }
    }

    /// OCSF `category_name`.
    pub const fn category_name(self) -> &'static str {
        match self {
            Self::NetworkActivity | Self::HttpActivity | Self::DnsActivity => "Network Activity",
            Self::DetectionFinding => "Findings",
            Self::ApiActivity => "Application Activity",
            Self::DeviceConfigStateChange => "Discovery",
        }
    }

    /// Prefix used in the one-line shorthand (`NET`, `HTTP`, `FINDING`, ...).
    pub const fn shorthand(self) -> &'static str {
        match self {
            Self::NetworkActivity => "NET",
            Self::HttpActivity => "HTTP",
            Self::DnsActivity => "DNS",
            Self::DetectionFinding => "FINDING",
            Self::ApiActivity => "API",
            Self::DeviceConfigStateChange => "CONFIG",
        }
    }
}

/// OCSF activity (`activity_id` / `activity_name`).
///
/// Activity ids are class-specific in OCSF, so the numeric id is obtained with
/// [`Activity::id_in`]:
///
/// | variant | 4001 / 4002 | 2004 | 6003 | 5019 |
/// |---|---|---|---|---|
/// | `Unknown` | 0 | 0 | 0 | 0 |
/// | `Open` / `Close` / `Reset` / `Fail` / `Refuse` / `Traffic` / `Listen` | 1 / 2 / 3 / 4 / 5 / 6 / 7 | – | – | – |
/// | `Create` | – | 1 | 1 | – |
/// | `Read` | – | – | 2 | – |
/// | `Update` | – | 2 | 3 | – |
/// | `Close` | 2 | 3 | – | – |
/// | `Delete` | – | – | 4 | – |
/// | `Log` / `Collect` | – | – | – | 1 / 2 |
/// | `Other` | 99 | 99 | 99 | 99 |
///
/// HTTP Activity (4002) events reuse the Network Activity ids, as OpenShell
/// does (its catalogue uses `Other`, `Refuse` and `Fail` for 4002). Policy
/// loads and reloads (5019) use `Log`; findings (2004) use `Create`. A
/// variant used with a class it does not belong to ("–" above) falls back to
/// its id in the first class listing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activity {
    /// 0, all classes.
    Unknown,
    /// 1, network: a connection was opened (or refused at open).
    Open,
    /// Network 2, finding 3.
    Close,
    /// 3, network.
    Reset,
    /// 4, network.
    Fail,
    /// 5, network.
    Refuse,
    /// 6, network.
    Traffic,
    /// 7, network: a listener started.
    Listen,
    /// 1, finding and API activity.
    Create,
    /// 2, API activity.
    Read,
    /// Finding 2, API activity 3.
    Update,
    /// 4, API activity.
    Delete,
    /// 1, device config state change: the state was discovered via a log.
    Log,
    /// 2, device config state change: the state was collected.
    Collect,
    /// 99, all classes.
    Other,
}

impl Activity {
    /// The OCSF `activity_id` of this activity within `class`.
    pub const fn id_in(self, class: EventClass) -> u8 {
        match (self, class) {
            (Self::Unknown, _) => 0,
            (Self::Other, _) => 99,
            (Self::Close, EventClass::DetectionFinding) => 3,
            (Self::Update, EventClass::DetectionFinding) => 2,
            (Self::Open | Self::Create | Self::Log, _) => 1,
            (Self::Close | Self::Read | Self::Collect, _) => 2,
            (Self::Reset | Self::Update, _) => 3,
            (Self::Fail | Self::Delete, _) => 4,
            (Self::Refuse, _) => 5,
            (Self::Traffic, _) => 6,
            (Self::Listen, _) => 7,
        }
    }

    /// OCSF `activity_name`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Open => "Open",
            Self::Close => "Close",
            Self::Reset => "Reset",
            Self::Fail => "Fail",
            Self::Refuse => "Refuse",
            Self::Traffic => "Traffic",
            Self::Listen => "Listen",
            Self::Create => "Create",
            Self::Read => "Read",
            Self::Update => "Update",
            Self::Delete => "Delete",
            Self::Log => "Log",
            Self::Collect => "Collect",
            Self::Other => "Other",
        }
    }
}

/// Declares a simple id/name enum with `id()` and `name()`.
macro_rules! id_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $id:literal, $label:literal;)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)+
        }

        impl $name {
            /// The OCSF numeric id.
            pub const fn id(self) -> u8 {
                match self { $(Self::$var => $id,)+ }
            }

            /// The OCSF caption.
            pub const fn name(self) -> &'static str {
                match self { $(Self::$var => $label,)+ }
            }
        }
    };
}

id_enum! {
    /// OCSF `action_id` / `action` (security-control profile).
    Action {
        /// 0.
        Unknown = 0, "Unknown";
        /// 1: the activity was allowed.
        Allowed = 1, "Allowed";
        /// 2: the activity was denied.
        Denied = 2, "Denied";
        /// 3: the activity was observed but neither allowed nor denied.
        Observed = 3, "Observed";
        /// 4: the activity was modified (e.g. credential injection).
        Modified = 4, "Modified";
        /// 99: e.g. an L7 `allow_upgrade` decision.
        Other = 99, "Other";
    }
}

id_enum! {
    /// OCSF `disposition_id` / `disposition`.
    Disposition {
        /// 0.
        Unknown = 0, "Unknown";
        /// 1.
        Allowed = 1, "Allowed";
        /// 2.
        Blocked = 2, "Blocked";
        /// 15.
        Detected = 15, "Detected";
        /// 25.
        Rejected = 25, "Rejected";
        /// 99.
        Other = 99, "Other";
    }
}

id_enum! {
    /// OCSF `severity_id` / `severity`.
    Severity {
        /// 0.
        Unknown = 0, "Unknown";
        /// 1.
        Informational = 1, "Informational";
        /// 2.
        Low = 2, "Low";
        /// 3.
        Medium = 3, "Medium";
        /// 4.
        High = 4, "High";
        /// 5.
        Critical = 5, "Critical";
        /// 6.
        Fatal = 6, "Fatal";
    }
}

id_enum! {
    /// OCSF `status_id` / `status`.
    Status {
        /// 0.
        Unknown = 0, "Unknown";
        /// 1.
        Success = 1, "Success";
        /// 2.
        Failure = 2, "Failure";
        /// 99.
        Other = 99, "Other";
    }
}

impl Severity {
    /// Short label used in the shorthand line (`INFO`, `LOW`, `MED`, ...).
    pub const fn short(self) -> &'static str {
        match self {
            Self::Unknown => "UNK",
            Self::Informational => "INFO",
            Self::Low => "LOW",
            Self::Medium => "MED",
            Self::High => "HIGH",
            Self::Critical => "CRIT",
            Self::Fatal => "FATAL",
        }
    }
}
