//! JSON-lines audit sinks backed by a dedicated writer thread.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use crate::event::OcsfEvent;

/// Capacity, in lines, of the queue between [`AuditSink::emit`] and the
/// writer thread.
pub const QUEUE_CAPACITY: usize = 4096;

/// Upper bound on the bytes gathered into one `write` call by the writer.
const BATCH_BYTES: usize = 64 * 1024;

/// After draining the queue the writer sleeps this long before looking
/// again, instead of blocking on the queue at once: events arriving
/// meanwhile are queued without waking it (a blocked writer costs every
/// emitter a futex wake and a context switch per event). Only when the
/// queue is still empty after the linger does the writer block. So under
/// load one wake-up writes a batch, and an event reaches the OS at most
/// this much later.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

struct Shared {
    dropped: AtomicU64,
    warned: AtomicBool,
}

impl Shared {
    fn record_failure(&self, lines: u64, err: &dyn std::fmt::Display) {
        self.dropped.fetch_add(lines, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, "audit log write failed; further failures are only counted");
        }
    }
}

struct Inner {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
}

/// How events are written: OCSF JSON lines (for machines, the default) or one
/// human line each (`pretty`, coloured or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditFormat {
    /// One OCSF JSON object per line.
    #[default]
    Json,
    /// [`OcsfEvent::pretty`] lines.
    Pretty {
        /// ANSI colours.
        color: bool,
    },
}

/// Called with every emitted event, on the emitting thread, before it is
/// queued (e.g. `sluice run`'s terminal reporter). Must be quick.
pub type EventObserver = Arc<dyn Fn(&OcsfEvent) + Send + Sync>;

/// Destination of OCSF audit events, one JSON object per line.
///
/// Cheap to clone; clones share one writer thread and queue. Lines are handed
/// to a dedicated writer thread through a bounded queue of
/// [`QUEUE_CAPACITY`] lines, so memory stays bounded and the caller never
/// waits for I/O while the queue has room. **When the queue is full,
/// [`emit`](Self::emit) blocks until the writer catches up: events are never
/// silently discarded.** Write errors never panic; they are reported once
/// with `tracing::warn!` and counted in [`dropped_writes`](Self::dropped_writes).
///
/// Call [`flush`](Self::flush) before exit: it returns once everything queued
/// so far has been written.
#[derive(Clone)]
pub struct AuditSink {
    inner: Option<Arc<Inner>>,
    /// Counter for a sink that is disabled or failed to start.
    fallback: Arc<Shared>,
    format: AuditFormat,
    observer: Option<EventObserver>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("enabled", &self.is_enabled())
            .field("dropped_writes", &self.dropped_writes())
            .finish()
    }
}

impl AuditSink {
    /// A sink that discards every event (no `--audit-log`).
    pub fn disabled() -> Self {
        Self {
            inner: None,
            fallback: Arc::new(new_shared()),
            format: AuditFormat::Json,
            observer: None,
        }
    }

    /// This sink writing `format` instead of JSON lines.
    #[must_use]
    pub fn with_format(mut self, format: AuditFormat) -> Self {
        self.format = format;
        self
    }

    /// This sink also handing every event to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: EventObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// A sink appending to `path` (as [`file`](Self::file)) that keeps it under
    /// `max_bytes`: when a write would pass that, the file is renamed to
    /// `<path>.1` (replacing an older one) and a new one is started, so the log
    /// never takes more than about twice `max_bytes`.
    ///
    /// # Errors
    /// Opening the file.
    pub fn file_bounded(path: impl AsRef<Path>, max_bytes: u64) -> io::Result<Self> {
        let path = path.as_ref().to_owned();
        let file = open_private(&path)?;
        let size = file.metadata()?.len();
        Self::spawn(Box::new(BoundedFile {
            path,
            file,
            size,
            max_bytes: max_bytes.max(1),
        }))
    }

    /// A sink writing to standard output. If the writer thread cannot be
    /// started a warning is logged and a disabled sink is returned.
    pub fn stdout() -> Self {
        Self::spawn(Box::new(io::stdout())).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot start audit writer thread; audit log disabled");
            Self::disabled()
        })
    }

    /// A sink appending to the file at `path`, created if missing with mode
    /// `0600` (an existing regular file is also narrowed to `0600`).
    pub fn file(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::spawn(Box::new(open_private(path.as_ref())?))
    }

    /// An in-memory sink for tests, plus a handle to read back what was
    /// emitted.
    pub fn memory() -> (Self, MemorySinkHandle) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Self::spawn(Box::new(MemWriter(Arc::clone(&buf)))).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot start audit writer thread; memory sink disabled");
            Self::disabled()
        });
        let handle = MemorySinkHandle {
            sink: sink.clone(),
            buf,
        };
        (sink, handle)
    }

    fn spawn(writer: Box<dyn Write + Send>) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let shared = Arc::new(new_shared());
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sluice-audit".to_owned())
            .spawn(move || writer_loop(writer, &rx, &thread_shared))?;
        Ok(Self {
            inner: Some(Arc::new(Inner { tx, shared })),
            fallback: Arc::new(new_shared()),
            format: AuditFormat::Json,
            observer: None,
        })
    }

    /// Whether events are written anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `event` as one JSON line. Also logs its
    /// [`shorthand`](OcsfEvent::shorthand) at `debug` level (target
    /// `sluice::audit`). Blocks only while the queue is full.
    pub fn emit(&self, event: &OcsfEvent) {
        tracing::debug!(target: "sluice::audit", "OCSF {}", event.shorthand());
        if let Some(observe) = &self.observer {
            observe(event);
        }
        let Some(inner) = &self.inner else { return };
        let line = match self.format {
            AuditFormat::Json => match serde_json::to_string(event) {
                Ok(line) => line,
                Err(e) => return inner.shared.record_failure(1, &e),
            },
            AuditFormat::Pretty { color } => event.pretty(color),
        };
        if inner.tx.send(Msg::Line(line)).is_err() {
            inner
                .shared
                .record_failure(1, &"audit writer thread is gone");
        }
    }

    /// Waits until every event queued before this call has been written and
    /// the underlying writer flushed. Returns immediately for a disabled sink.
    pub fn flush(&self) {
        let Some(inner) = &self.inner else { return };
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if inner.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }

    /// Number of lines that could not be written (I/O or serialization
    /// errors).
    pub fn dropped_writes(&self) -> u64 {
        let shared = self.inner.as_ref().map_or(&self.fallback, |i| &i.shared);
        shared.dropped.load(Ordering::Relaxed)
    }
}

/// Opens `path` for appending, created with mode `0600` if missing (an existing
/// regular file is narrowed to `0600`).
fn open_private(path: &Path) -> io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        let meta = file.metadata()?;
        if meta.is_file() && meta.permissions().mode() & 0o777 != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        options.open(path)
    }
}

/// A file that is rotated to `<path>.1` before it would pass `max_bytes`.
struct BoundedFile {
    path: std::path::PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
}

impl Write for BoundedFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = open_private(&self.path)?;
            self.size = 0;
        }
        let n = self.file.write(data)?;
        self.size += u64::try_from(n).unwrap_or(u64::MAX);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn new_shared() -> Shared {
    Shared {
        dropped: AtomicU64::new(0),
        warned: AtomicBool::new(false),
    }
}

/// Writes `batch` (holding `lines` lines) and clears it, counting failures.
fn write_batch(writer: &mut dyn Write, batch: &mut Vec<u8>, lines: &mut u64, shared: &Shared) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = writer.write_all(batch) {
        shared.record_failure(*lines, &e);
    }
    batch.clear();
    *lines = 0;
}

/// The writer thread: drains the queue in batches until every sender is gone.
fn writer_loop(mut writer: Box<dyn Write + Send>, rx: &Receiver<Msg>, shared: &Shared) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut lines = 0u64;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => {
                    batch.extend_from_slice(line.as_bytes());
                    batch.push(b'\n');
                    lines += 1;
                    if batch.len() >= BATCH_BYTES {
                        write_batch(&mut *writer, &mut batch, &mut lines, shared);
                    }
                }
                Msg::Flush(ack) => {
                    write_batch(&mut *writer, &mut batch, &mut lines, shared);
                    if let Err(e) = writer.flush() {
                        shared.record_failure(0, &e);
                    }
                    let _ = ack.send(());
                }
            }
            match rx.try_recv() {
                Ok(msg) => next = Some(msg),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }
        // Queue momentarily empty: push what we have to the OS.
        write_batch(&mut *writer, &mut batch, &mut lines, shared);
        if let Err(e) = writer.flush() {
            shared.record_failure(0, &e);
        }
        std::thread::sleep(LINGER);
    }
}

/// `Write` into a shared in-memory buffer.
struct MemWriter(Arc<Mutex<Vec<u8>>>);

impl Write for MemWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads back what an [`AuditSink::memory`] sink has written (tests only).
#[derive(Clone)]
pub struct MemorySinkHandle {
    sink: AuditSink,
    buf: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for MemorySinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySinkHandle").finish_non_exhaustive()
    }
}

impl MemorySinkHandle {
    /// Flushes the sink, then returns every emitted event in order, parsed
    /// back from its JSON line.
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Flushes the sink, then returns the raw emitted lines in order.
    pub fn lines(&self) -> Vec<String> {
        self.sink.flush();
        let buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buf)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
