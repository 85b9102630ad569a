//! Command-line interface (design §5.2).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_proxy::adapter::policy_dns::eligible::TransparentMode;
use sluice_proxy::adapter::policy_dns::synthetic::{DEFAULT_POOL_V4, DEFAULT_POOL_V6};
use sluice_proxy::relay::middleware::grpc::Registration;

/// sluice: a policy-enforcing egress gateway for sandboxed agents.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the proxy (CONNECT and forward HTTP) on a policy file.
    Serve(ServeCmdArgs),
    /// Validate policy files; errors as FILE:LINE:COL: message.
    Check(CheckArgs),
    /// Print the decision a policy would make for a hypothetical request, as JSON.
    Explain(ExplainArgs),
    /// Run decision test cases (intent → expected decision) against a policy.
    ///
    /// Exit 0 when every case passes, 1 when any fails, 2 when the cases
    /// cannot be run (invalid policy or cases file).
    Test(TestArgs),
    /// The sandbox CA used for TLS termination.
    Ca(CaArgs),
    /// Run CMD in a network namespace whose only way out is sluice.
    Run(RunArgs),
    /// The policy proposals queue: list, show, approve or reject (every
    /// gateway on the store applies an approval to its own policy).
    Proposals(ProposalsArgs),
    /// Provider profiles: the embedded catalog, one profile, or lint a file.
    Profiles(ProfilesArgs),
    /// Install the pod's egress fence (nftables, in the current network
    /// namespace) for the Kubernetes sidecar shape: run it in an init
    /// container with NET_ADMIN.
    SidecarInit(SidecarInitArgs),
}

/// `sluice serve`: the proxy, and the sidecar listeners of the Kubernetes shape.
#[derive(Debug, Args)]
pub(crate) struct ServeCmdArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    #[command(flatten)]
    pub(crate) sidecar: SidecarListenArgs,
}

/// What `serve` answers besides the proxy when it runs as a pod's sidecar
/// (what `run` serves inside its sandbox).
#[derive(Debug, Args)]
#[command(next_help_heading = "Sidecar listeners (Kubernetes; see docs/kubernetes.md)")]
pub(crate) struct SidecarListenArgs {
    /// Serve policy DNS (UDP and TCP) on ADDR, e.g. 127.0.0.1:5353, where the
    /// pod's fence redirects the workload's DNS; a loopback address also
    /// listens on the other family's loopback, same port, when it can.
    #[arg(long, value_name = "ADDR")]
    pub(crate) dns_listen: Option<SocketAddr>,
    /// Serve the transparent listener on ADDR, e.g. 127.0.0.1:15001, where the
    /// pod's fence redirects TCP to synthetic addresses (needs --dns-listen,
    /// whose answers they are); loopback also on the other family, as above.
    #[arg(long, value_name = "ADDR", requires = "dns_listen")]
    pub(crate) transparent_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub(crate) capture: CaptureArgs,
}

/// Policy DNS's synthetic addresses (`run`; `serve` with --transparent-listen).
#[derive(Debug, Clone, Args)]
pub(crate) struct CaptureArgs {
    /// Which endpoint names policy DNS answers with synthetic addresses, so
    /// proxy-unaware clients reach them through transparent capture: `tcp`
    /// (endpoints with `protocol: tcp`, `redis` or `postgres`), `all` (every endpoint name; TLS is
    /// terminated where the endpoint is inspected), `off` (every query
    /// refused).
    #[arg(long, value_name = "tcp|all|off", default_value = "tcp", value_parser = parse_transparent)]
    pub(crate) transparent: TransparentMode,
    /// IPv4 pool of synthetic addresses.
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_POOL_V4)]
    pub(crate) synthetic_v4: ipnet::Ipv4Net,
    /// IPv6 pool of synthetic addresses.
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_POOL_V6)]
    pub(crate) synthetic_v6: ipnet::Ipv6Net,
    /// Lifetime of a synthetic address (DNS TTL, 1-30 s); a connection to it
    /// after that is refused until the name is resolved again.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub(crate) synthetic_ttl: u64,
}

/// `sluice sidecar-init`: the pod's fence.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("fenced").required(true).args(["workload_uid", "exclude_uid"])))]
pub(crate) struct SidecarInitArgs {
    /// Fence the sockets of this UID, the workload's (repeatable).
    #[arg(long, value_name = "UID")]
    pub(crate) workload_uid: Vec<u32>,
    /// Instead of --workload-uid: fence the sockets of every UID except this
    /// one (sluice's; repeatable, e.g. for another trusted sidecar).
    #[arg(long, value_name = "UID", conflicts_with = "workload_uid")]
    pub(crate) exclude_uid: Vec<u32>,
    /// Port of `sluice serve --listen` on the pod's loopback (HTTP_PROXY).
    #[arg(long, value_name = "PORT", default_value_t = 3128)]
    pub(crate) proxy_port: u16,
    /// Port of `sluice serve --dns-listen` on the pod's loopback: DNS (UDP and
    /// TCP port 53, to any address) is redirected there.
    #[arg(long, value_name = "PORT", default_value_t = 5353)]
    pub(crate) dns_port: u16,
    /// Port of `sluice serve --transparent-listen` on the pod's loopback: TCP
    /// to the synthetic pools is redirected there.
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    pub(crate) transparent_port: u16,
    /// No transparent capture (and no DNS redirect): the workload reaches the
    /// network only through HTTP(S)_PROXY; its DNS is fenced.
    #[arg(long)]
    pub(crate) proxy_only: bool,
    /// IPv4 pool of synthetic addresses (as given to `sluice serve`).
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_POOL_V4)]
    pub(crate) synthetic_v4: ipnet::Ipv4Net,
    /// IPv6 pool of synthetic addresses (as given to `sluice serve`).
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_POOL_V6)]
    pub(crate) synthetic_v6: ipnet::Ipv6Net,
    /// A loopback TCP port the fenced sockets may also reach (the workload's
    /// own local servers; repeatable). Every other loopback port is fenced.
    #[arg(long, value_name = "PORT")]
    pub(crate) allow_loopback_port: Vec<u16>,
    /// Print the nftables script instead of installing it.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ProposalsArgs {
    #[command(subcommand)]
    pub(crate) action: ProposalsAction,
    /// The store: `postgres://...`, default the SQLite file in the state dir
    /// (or `SLUICE_STORE`, which keeps a password out of the process list).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "SLUICE_STORE",
        hide_env_values = true
    )]
    pub(crate) store: Option<String>,
    /// State directory of the gateway whose SQLite store is meant.
    #[arg(long, global = true)]
    pub(crate) state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProposalsAction {
    /// Proposals as JSON lines, newest first.
    List {
        /// Only this status: pending, approved or rejected.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One proposal as JSON.
    Show { id: String },
    /// Approve a pending proposal.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Who decides (recorded in the history).
        #[arg(long, default_value = "cli")]
        actor: String,
    },
    /// Reject a pending proposal.
    Reject {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value = "cli")]
        actor: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Who CMD runs as: USER[:GROUP], names or numbers. Default: the user who
    /// invoked sudo (SUDO_UID/SUDO_GID); required when sluice runs as root
    /// without sudo. `root` keeps uid 0, still without any capability.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub(crate) user: Option<String>,
    /// Start even when a `{file: ...}` secret source is readable by CMD's user.
    #[arg(long)]
    pub(crate) allow_readable_secret_files: bool,
    /// At exit, write the policy with every suggestion applied (what would
    /// have allowed this run's denials) to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) suggest_policy: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) capture: CaptureArgs,
    /// The command to run inside the sandbox, after `--`.
    #[arg(last = true, required = true)]
    pub(crate) cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CaArgs {
    #[command(subcommand)]
    pub(crate) action: CaAction,
    /// Where the CA key and certificate live (created on first use; key mode 0600).
    #[arg(long, global = true)]
    pub(crate) state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaAction {
    /// Create the CA if it does not exist yet, and print where it is.
    Init {
        /// Also write the public trust files workloads read into DIR (mode
        /// 0644; never the key): `ca.pem` (the CA), `ca-bundle.pem` (system
        /// roots + the CA), `certs/` (hashed) and `java-cacerts.jks`.
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
    },
    /// Print the CA certificate (PEM); with --bundle, system roots followed by the CA.
    Show {
        #[arg(long)]
        bundle: bool,
    },
}

/// The default state directory: `/var/lib/sluice` for root, else `$HOME/.local/state/sluice`.
pub(crate) fn default_state_dir() -> PathBuf {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    match std::env::var_os("HOME") {
        Some(home) if !root => PathBuf::from(home).join(".local/state/sluice"),
        _ => PathBuf::from("/var/lib/sluice"),
    }
}

/// Default of `--max-connections`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// `--log-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// OCSF JSON, one object per line.
    Json,
    /// One human line per event (coloured on a terminal unless NO_COLOR is set).
    Pretty,
}

/// `--identity` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum IdentityArg {
    /// Resolve the client process; deny when it cannot be resolved.
    Required,
    /// Decide by endpoint only; a policy with `binaries` is refused (they
    /// could not be enforced). Identity is recorded as intentionally unavailable.
    EndpointOnly,
}

fn parse_transparent(s: &str) -> Result<TransparentMode, String> {
    s.parse()
}

/// `NAME=IP`, like curl's `--resolve`.
#[derive(Clone, Debug)]
pub(crate) struct AddHost {
    pub(crate) name: String,
    pub(crate) ip: IpAddr,
}

fn parse_add_host(s: &str) -> Result<AddHost, String> {
    let (name, ip) = s.split_once('=').ok_or("expected NAME=IP")?;
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err("empty NAME".into());
    }
    let ip = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|e| format!("invalid IP: {e}"))?;
    Ok(AddHost { name, ip })
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Policy file (OpenShell-format YAML, version 1). Reloaded on SIGHUP and on change.
    /// Optional with --profile (the policy is then the attached profiles alone).
    #[arg(long, required_unless_present = "profile")]
    pub(crate) policy: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) profiles: ProfileArgs,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:3128")]
    pub(crate) listen: SocketAddr,
    /// OCSF audit log: a file path, or `-` for stdout. Default: stdout for
    /// `serve`; for `run`, `<state-dir>/audit.jsonl` (size-bounded), so that
    /// stdout stays CMD's.
    #[arg(long, value_name = "PATH|-")]
    pub(crate) audit_log: Option<String>,
    /// Format of the audit log: OCSF JSON lines, or one human line per event.
    /// Default: `pretty` when the log goes to a terminal, else `json`.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
    /// More output: `serve` logs at info (-v) or debug (-vv); `run` also prints
    /// allowed connections (-v) and logs at info (-vv). SLUICE_LOG/RUST_LOG win.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Less output: `run` prints no denial lines and no summary.
    #[arg(short, long, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Pin NAME to IP before DNS (repeatable; repeat a name for several addresses).
    #[arg(long = "add-host", value_parser = parse_add_host)]
    pub(crate) add_host: Vec<AddHost>,
    /// Whether binary identity is required.
    #[arg(long, value_enum, default_value = "required")]
    pub(crate) identity: IdentityArg,
    /// Do not fall back to the system resolver for names without --add-host.
    #[arg(long)]
    pub(crate) no_system_dns: bool,
    /// DNS resolution deadline, seconds.
    #[arg(long, default_value_t = 5)]
    pub(crate) dns_timeout: u64,
    /// Ask this DNS server (UDP, A/AAAA) for names without --add-host,
    /// instead of the system resolver.
    #[arg(long, value_name = "IP:PORT")]
    pub(crate) dns_server: Option<SocketAddr>,
    /// Deadline for a client's request head, seconds (slowloris bound).
    #[arg(long, value_name = "SECS")]
    pub(crate) head_timeout: Option<u64>,
    /// Longest stall inside a request or response body, seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) body_idle_timeout: Option<u64>,
    /// Upstream dial deadline, seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) dial_timeout: u64,
    /// Close raw tunnels idle for this many seconds.
    #[arg(long, default_value_t = 600)]
    pub(crate) tunnel_idle_timeout: u64,
    /// Most concurrent client connections [default: 16384].
    #[arg(long)]
    pub(crate) max_connections: Option<usize>,
    /// State directory (sandbox CA for TLS termination). Default: /var/lib/sluice (root).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// Extra trust roots (PEM) for upstream TLS, on top of webpki and system roots (repeatable).
    #[arg(long = "upstream-ca")]
    pub(crate) upstream_ca: Vec<PathBuf>,
    /// How often to check the policy file for changes, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub(crate) policy_poll_ms: u64,
    /// Register a middleware service the policy's `network_middlewares` can
    /// name: `NAME=URL[,timeout=DUR][,max_payload_bytes=N]`, URL
    /// `http://host:port` (plaintext gRPC) or `https://host:port`
    /// (repeatable). Each is described at start; an unreachable one stops it.
    #[arg(long = "middleware", value_name = "NAME=URL[,...]", value_parser = parse_middleware)]
    pub(crate) middleware: Vec<Registration>,
    /// Trust roots (PEM) for `https://` middleware services, instead of the
    /// webpki roots.
    #[arg(long = "middleware-ca", value_name = "PEM")]
    pub(crate) middleware_ca: Option<PathBuf>,
    /// Where policy proposals are queued: `postgres://USER:PASS@HOST:PORT/DB`
    /// (shared by several gateways), default an SQLite file in the state dir.
    /// `SLUICE_STORE` works too and keeps a password out of the process list.
    #[arg(long, value_name = "URL", env = "SLUICE_STORE", hide_env_values = true)]
    pub(crate) store: Option<String>,
    /// Serve the operator console on ADDR (a loopback address unless
    /// --console-public): proposals, approvals, live denials.
    #[arg(long, value_name = "ADDR")]
    pub(crate) console: Option<SocketAddr>,
    /// Read the console's access token from FILE instead of making one.
    #[arg(long, value_name = "FILE", requires = "console")]
    pub(crate) console_token_file: Option<PathBuf>,
    /// Allow --console on a non-loopback address.
    #[arg(long, requires = "console")]
    pub(crate) console_public: bool,
    /// Serve Prometheus metrics on ADDR (`GET /metrics`), with liveness
    /// (`/healthz`) and readiness (`/readyz`) probes. No authentication;
    /// nothing secret is exposed. Port 0 picks a free port (printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<SocketAddr>,
    /// This gateway's name in proposals' history (default: the host name;
    /// `run`: the sandbox namespace).
    #[arg(long, value_name = "NAME")]
    pub(crate) gateway_name: Option<String>,
}

fn parse_middleware(s: &str) -> Result<Registration, String> {
    s.parse()
        .map_err(|e: sluice_proxy::relay::middleware::grpc::RegistrationError| e.to_string())
}

/// `sluice profiles`.
#[derive(Debug, Args)]
pub(crate) struct ProfilesArgs {
    #[command(subcommand)]
    pub(crate) command: ProfilesCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProfilesCommand {
    /// The embedded catalog, one profile per line.
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: TableFormat,
    },
    /// One profile: a catalog id or a profile file.
    Show {
        #[arg(value_name = "ID|FILE")]
        profile: sluice_policy::profile::ProfileRef,
        #[arg(long, value_enum, default_value = "table")]
        format: TableFormat,
    },
    /// Validate profile files (errors as FILE:LINE:COL: message); exit 1 on any error.
    Lint {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: TableFormat,
    },
}

/// Human table or JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TableFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Policy files to validate.
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// Profiles (and their secrets) attached to each file, as `serve`/`run`
    /// would attach them.
    #[command(flatten)]
    pub(crate) profiles: ProfileArgs,
    /// Also check that the runtime mode can enforce everything the policy
    /// asks for (the capability contract): `serve`, `run` or `sidecar`.
    #[arg(long, value_enum)]
    pub(crate) mode: Option<ModeArg>,
    /// With `--mode`: the identity setting the policy will run under.
    #[arg(long, value_enum, default_value = "required", requires = "mode")]
    pub(crate) identity: IdentityArg,
    /// With `--mode`: a middleware service name that will be registered
    /// (`--middleware NAME=URL` on the gateway). Repeatable.
    #[arg(long = "middleware", value_name = "NAME", requires = "mode")]
    pub(crate) middleware: Vec<String>,
}

/// `sluice check --mode` values: the runtime modes the binary ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ModeArg {
    /// `sluice serve`: explicit proxy only.
    Serve,
    /// `sluice run`: transparent capture (default `--transparent tcp`) and the metadata loopback.
    Run,
    /// `sluice serve` with the sidecar listeners (`--dns-listen`, `--transparent-listen`).
    Sidecar,
}

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// Policy file (optional with --profile). Secret values are not read:
    /// decisions do not depend on them.
    #[arg(long, required_unless_present = "profile")]
    pub(crate) policy: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) profiles: ProfileArgs,
    /// Executable path of the hypothetical caller (omit to ignore binaries).
    #[arg(long)]
    pub(crate) binary: Option<String>,
    /// Ancestor executable paths of the caller, parent first (repeatable).
    #[arg(long)]
    pub(crate) ancestor: Vec<String>,
    /// HTTP method of the hypothetical request.
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// HTTP path (and query) of the hypothetical request.
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// Request body, for endpoints whose rules read it (GraphQL, JSON-RPC,
    /// MCP); `@FILE` reads it from FILE.
    #[arg(long, value_name = "TEXT|@FILE")]
    pub(crate) body: Option<String>,
    /// Content-Type of the body.
    #[arg(long, default_value = "application/json")]
    pub(crate) content_type: String,
    /// Destination host.
    pub(crate) host: String,
    /// Destination port.
    pub(crate) port: u16,
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// Cases file (YAML): `cases:`, each with name, host, port, expect
    /// (allow|deny) and optionally binary, ancestors, method, path, body,
    /// content_type, policy.
    pub(crate) cases: PathBuf,
    /// Policy file (optional with --profile). Secret values are not read:
    /// decisions do not depend on them.
    #[arg(long, required_unless_present = "profile")]
    pub(crate) policy: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) profiles: ProfileArgs,
    /// Output: one line per case and a summary, or a JSON array of results.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: TestFormat,
}

/// `sluice test --format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TestFormat {
    /// `ok   NAME` / `FAIL NAME: why`, then `N passed, M failed`.
    Text,
    /// An array of result objects.
    Json,
}

/// `--profile` and `--secret`: provider profiles attached from the command line.
#[derive(Debug, Args)]
pub(crate) struct ProfileArgs {
    /// Attach a provider profile: an id of the embedded catalog (`sluice profiles
    /// list`) or a profile file (a path with a `/` or a .yaml suffix). Repeatable.
    #[arg(long = "profile", value_name = "ID|FILE")]
    pub(crate) profile: Vec<sluice_policy::profile::ProfileRef>,
    /// Where a profile credential's value comes from: NAME is one of the
    /// credential's `env_vars` (or PROFILE.CREDENTIAL). Repeatable. The sandbox
    /// only ever sees a placeholder under each of its `env_vars`.
    #[arg(long = "secret", value_name = "NAME=env:VAR|file:PATH")]
    pub(crate) secret: Vec<sluice_policy::profile::SecretBinding>,
}

impl ProfileArgs {
    /// What every load applies.
    pub(crate) fn options(&self) -> sluice_policy::ProfileOptions {
        sluice_policy::ProfileOptions {
            profiles: self.profile.clone(),
            secrets: self.secret.clone(),
            policy_dir: None,
        }
    }

    /// Loads `policy` (or, without one, the profiles alone) with `secrets`.
    pub(crate) fn load(
        &self,
        policy: Option<&std::path::Path>,
        secrets: &dyn sluice_policy::SecretSource,
    ) -> Result<sluice_policy::Loaded, sluice_policy::LoadError> {
        let options = self.options();
        match policy {
            Some(path) => sluice_policy::load_file_with_profiles(path, 1, secrets, &options),
            None => sluice_policy::load_str_with_profiles(
                sluice_policy::profile::PROFILES_ONLY_POLICY,
                PROFILES_ONLY,
                1,
                secrets,
                &options,
            ),
        }
    }
}

impl ServeArgs {
    /// How messages name the policy: its file, or `(profiles)` without one.
    pub(crate) fn policy_name(&self) -> String {
        self.policy
            .as_ref()
            .map_or_else(|| PROFILES_ONLY.to_owned(), |p| p.display().to_string())
    }
}

/// The origin of the policy when only profiles are attached.
pub(crate) const PROFILES_ONLY: &str = "(profiles)";
