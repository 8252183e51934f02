//! The access log's writing, shared by both services (`[log] access = true`): one JSON line per
//! request, on stdout or in a file, written off the request path.
//!
//! A request hands a small record to a bounded queue, never waiting: when the queue is full the
//! record is dropped and counted (`tokengate_access_log_dropped_total`). One writer thread formats
//! the records and writes them in batches. Each service has its own record ([`Line`]); every
//! value from outside goes through [`json_str`] (escaped) after [`crate::cut`] (bounded).

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

/// Records waiting for the writer; more are dropped and counted.
const QUEUE: usize = 16 * 1024;
/// The writer writes when it has this much formatted, or when the queue runs dry.
const WRITE_AT: usize = 64 * 1024;
/// How long the writer sleeps after a round that found records, gathering the next ones: the
/// most a line waits for its write while requests keep coming.
const TICK: Duration = Duration::from_millis(10);

/// `[log]`, the same on both services.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// One JSON line per request.
    #[serde(default)]
    pub access: bool,
    /// `-` (standard output, the default) or a file, opened for appending and opened again on
    /// `SIGUSR1` (after logrotate moved it away), as nginx does.
    #[serde(default = "stdout")]
    pub access_path: String,
    /// Log the query string too (it may carry personal data, so it is left out by default).
    #[serde(default)]
    pub access_query: bool,
}

fn stdout() -> String {
    "-".to_owned()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access: false,
            access_path: stdout(),
            access_query: false,
        }
    }
}

/// The access log's file cannot be opened.
#[derive(Debug)]
pub struct OpenError {
    /// The file.
    pub file: String,
    /// Why.
    pub source: std::io::Error,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "access log {}: {}", self.file, self.source)
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A record the writer thread turns into one line.
pub trait Line: Send + 'static {
    /// Appends the record as one JSON object and a line break; `clock` writes its time.
    fn format(&self, out: &mut String, clock: &mut Clock);
}

/// The writer thread's clock face: RFC 3339 times in UTC with milliseconds, the date and time
/// of day made once per second (as nginx caches its time strings) and the milliseconds added.
#[derive(Debug, Default)]
pub struct Clock {
    second: u64,
    /// `2026-12-04T18:30:00` for `second`.
    face: String,
}

impl Clock {
    /// Appends `time` as `2026-12-04T18:30:00.123Z`.
    pub fn write(&mut self, out: &mut String, time: std::time::SystemTime) {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        if since.as_secs() != self.second || self.face.is_empty() {
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(since.as_secs());
            self.face = humantime::format_rfc3339_seconds(whole).to_string();
            self.face.pop(); // the `Z`
            self.second = since.as_secs();
        }
        out.push_str(&self.face);
        out.push('.');
        three_digits(out, since.subsec_millis());
        out.push('Z');
    }
}

/// `n` (below 1000) with leading zeros to three digits.
fn three_digits(out: &mut String, n: u32) {
    let n = n.min(999);
    out.push(char::from(b'0' + (n / 100) as u8));
    out.push(char::from(b'0' + (n / 10 % 10) as u8));
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// Appends an integer (without the formatting machinery).
pub fn integer(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    fn open(path: &str) -> Result<Self, OpenError> {
        if path == "-" {
            return Ok(Sink::Stdout);
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Sink::File)
            .map_err(|source| OpenError {
                file: path.to_owned(),
                source,
            })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File(file) => file.write_all(bytes),
        }
    }
}

/// What the writer thread is handed.
enum Message<R> {
    Line(Box<R>),
    /// Open the file again (log rotation).
    Reopen(Sink),
    /// Write what is queued and stop (see [`AccessLog::close`]).
    Close,
}

/// A service's access log of records `R`: the sending side of the queue, the writer thread,
/// and whether lines show the query.
pub struct AccessLog<R> {
    queue: SyncSender<Message<R>>,
    path: String,
    query: bool,
    dropped: Counter,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl<R> std::fmt::Debug for AccessLog<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<R: Line> AccessLog<R> {
    /// The log `config` asks for, with its writer thread (`access_path` `-`: stdout); `None`
    /// when the access log is off. Records that find the queue full count in `dropped`.
    pub fn start(config: &LogConfig, dropped: Counter) -> Result<Option<Arc<Self>>, OpenError> {
        if !config.access {
            return Ok(None);
        }
        let path = config.access_path.as_str();
        let sink = Sink::open(path)?;
        let (queue, records) = std::sync::mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(records, sink))
            .map_err(|source| OpenError {
                file: path.to_owned(),
                source,
            })?;
        Ok(Some(Arc::new(AccessLog {
            queue,
            path: path.to_owned(),
            query: config.access_query,
            dropped,
            thread: Mutex::new(Some(thread)),
        })))
    }

    /// Whether lines show the query (`access_query`).
    pub fn query(&self) -> bool {
        self.query
    }

    /// A writer whose queue nobody empties, and the queue's receiving end.
    #[cfg(test)]
    fn stalled(dropped: Counter, queue: usize) -> (Self, Receiver<Message<R>>) {
        let (queue, records) = std::sync::mpsc::sync_channel(queue);
        let writer = AccessLog {
            queue,
            path: "-".into(),
            query: false,
            dropped,
            thread: Mutex::new(None),
        };
        (writer, records)
    }

    /// Opens the file again (after log rotation moved it away); an error keeps the old one.
    pub fn reopen(&self) -> Result<(), OpenError> {
        let sink = Sink::open(&self.path)?;
        // Waits if the queue is full: this is a signal handler's call, never a request's.
        let _ = self.queue.send(Message::Reopen(sink));
        Ok(())
    }

    /// Hands a record over without waiting; a full queue drops it and counts.
    pub fn send(&self, record: Box<R>) {
        match self.queue.try_send(Message::Line(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Lets the writer write what is queued and end (at shutdown): the log's last lines are not
    /// lost. Records handed over later are dropped.
    pub fn close(&self) {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // Queued behind every record handed over so far: the writer ends once they are written.
            let _ = self.queue.send(Message::Close);
            let _ = thread.join();
        }
    }
}

/// The writer thread: formats records into a batch and writes it when it is large or when no
/// more records wait.
///
/// After a round that found records it sleeps a [`TICK`] instead of waiting on the queue: the
/// records that arrive meanwhile are taken in one go, and a request handing one over finds
/// nobody to wake (no system call on the request path). A round that found nothing waits on the
/// queue, so an idle log costs nothing.
fn write_lines<R: Line>(records: Receiver<Message<R>>, mut sink: Sink) {
    let mut batch = String::with_capacity(WRITE_AT * 2);
    let mut clock = Clock::default();
    loop {
        let mut taken = false;
        loop {
            let message = match records.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    flush(&mut batch, &mut sink);
                    return;
                }
            };
            taken = true;
            if !take(message, &mut batch, &mut sink, &mut clock) {
                return;
            }
        }
        flush(&mut batch, &mut sink);
        if taken {
            std::thread::sleep(TICK);
            continue;
        }
        let message = match records.recv_timeout(Duration::from_secs(1)) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if !take(message, &mut batch, &mut sink, &mut clock) {
            return;
        }
    }
}

/// Formats or acts on one message; `false` when the writer is to stop (its batch written).
fn take<R: Line>(
    message: Message<R>,
    batch: &mut String,
    sink: &mut Sink,
    clock: &mut Clock,
) -> bool {
    match message {
        Message::Close => {
            flush(batch, sink);
            return false;
        }
        Message::Line(record) => record.format(batch, clock),
        Message::Reopen(new) => {
            flush(batch, sink);
            *sink = new;
        }
    }
    if batch.len() >= WRITE_AT {
        flush(batch, sink);
    }
    true
}

/// Writes the batch, if any, and empties it.
fn flush(batch: &mut String, sink: &mut Sink) {
    if !batch.is_empty() {
        if let Err(e) = sink.write(batch.as_bytes()) {
            tracing::warn!(error = %e, "access log write failed");
        }
        batch.clear();
    }
}

/// The HTTP version as a line shows it.
pub fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "other",
    }
}

/// Appends an address as `Display` shows it; IPv4 without the formatting machinery.
pub fn address(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                integer(out, octet);
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends milliseconds with three decimals.
pub fn millis(out: &mut String, d: Duration) {
    let micros = d.as_micros();
    integer(out, micros / 1000);
    out.push('.');
    three_digits(out, (micros % 1000) as u32);
}

/// A JSON string, or `null`.
pub fn json_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

/// A JSON string: quotes, backslashes and control characters (line breaks, ANSI escapes)
/// escaped, so one record is always one line.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    // Most values are printable ASCII with nothing to escape: copied whole.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_into_one_line() {
        let mut out = String::new();
        json_str(&mut out, "a\"b\\c\r\nd\u{1b}[31m\u{1}é\u{2028}");
        assert!(!out.contains('\n') && !out.contains('\r') && !out.contains('\u{1b}'));
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\u000d\\u000ad\\u001b[31m\\u0001é\\u2028\""
        );
    }

    struct Text(&'static str);

    impl Line for Text {
        fn format(&self, out: &mut String, _: &mut Clock) {
            out.push_str(self.0);
            out.push('\n');
        }
    }

    #[test]
    fn times_and_durations_are_written_as_before() {
        let mut clock = Clock::default();
        let mut out = String::new();
        let time = std::time::UNIX_EPOCH + Duration::from_millis(1_796_418_137_042);
        clock.write(&mut out, time);
        assert_eq!(out, humantime::format_rfc3339_millis(time).to_string());
        out.clear();
        clock.write(&mut out, time + Duration::from_millis(900));
        assert_eq!(out, "2026-12-04T21:02:17.942Z");
        out.clear();
        clock.write(&mut out, time + Duration::from_millis(1000));
        assert_eq!(out, "2026-12-04T21:02:18.042Z");
        out.clear();
        millis(&mut out, Duration::from_micros(41_207));
        assert_eq!(out, "41.207");
        out.clear();
        millis(&mut out, Duration::from_micros(5));
        assert_eq!(out, "0.005");
        for ip in [
            "10.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "2001:db8::7",
        ] {
            out.clear();
            address(
                &mut out,
                ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            );
            assert_eq!(out, ip);
        }
        out.clear();
        json_str(&mut out, "plain /api/x?y=1");
        assert_eq!(out, "\"plain /api/x?y=1\"");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dropped = Counter::default();
        let (writer, _queue) = AccessLog::<Text>::stalled(dropped.clone(), 2);
        // try_send: with nobody reading, a waiting send would hang here.
        for _ in 0..10 {
            writer.send(Box::new(Text("x")));
        }
        assert_eq!(dropped.get(), 8);
    }

    #[test]
    fn a_closed_writer_has_written_every_line() {
        let file = std::env::temp_dir().join(format!("tokengate-writer-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let config = LogConfig {
            access: true,
            access_path: file.to_str().unwrap_or("-").to_owned(),
            access_query: false,
        };
        let writer = AccessLog::start(&config, Counter::default());
        let writer = writer
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("off"));
        writer.send(Box::new(Text("one")));
        writer.send(Box::new(Text("two")));
        writer.close();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(text, "one\ntwo\n");
        let _ = std::fs::remove_file(&file);
    }
}
