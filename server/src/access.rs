//! The access log's writing, shared by both services (`[log] access = true`): one JSON line per
//! request, on stdout or in a file, written off the request path.
//!
//! A request hands a small record to a bounded queue, never waiting: when the queue is full the
//! record is dropped and counted (`tokengate_access_log_dropped_total`). One writer thread formats
//! the records and writes them in batches. Each service has its own record ([`Line`]); every
//! value from outside goes through [`json_str`] (escaped) after [`crate::cut`] (bounded).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

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
    fn format(&self, out: &mut Vec<u8>, clock: &mut Clock);
}

/// The writer thread's clock face: RFC 3339 times in UTC with milliseconds, the date and time
/// of day made once per second (as nginx caches its time strings) and the milliseconds added.
///
/// A request notes only the [`Instant`] it arrived (which it takes anyway, for its duration);
/// the writer turns it into the time of day against the wall clock read once per round
/// ([`Clock::tick`]), so the request path reads the clock once less.
#[derive(Debug, Default)]
pub struct Clock {
    second: u64,
    /// `2026-12-04T18:30:00` for `second`.
    face: String,
    /// The wall clock (since the Unix epoch) and the monotonic clock, read together at the
    /// round's start.
    now: Option<(Duration, Instant)>,
}

impl Clock {
    /// Reads the clocks for the round's records.
    pub fn tick(&mut self) {
        self.now = Some(Self::read());
    }

    fn read() -> (Duration, Instant) {
        let wall = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (wall, Instant::now())
    }

    /// Appends the time of day of `instant` (earlier than the last [`Clock::tick`]).
    pub fn write_instant(&mut self, out: &mut Vec<u8>, instant: Instant) {
        let (wall, mono) = *self.now.get_or_insert_with(Self::read);
        self.write_since_epoch(
            out,
            wall.saturating_sub(mono.saturating_duration_since(instant)),
        );
    }

    /// Appends `time` as `2026-12-04T18:30:00.123Z`.
    pub fn write(&mut self, out: &mut Vec<u8>, time: SystemTime) {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.write_since_epoch(out, since);
    }

    fn write_since_epoch(&mut self, out: &mut Vec<u8>, since: Duration) {
        if since.as_secs() != self.second || self.face.is_empty() {
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(since.as_secs());
            self.face = humantime::format_rfc3339_seconds(whole).to_string();
            self.face.pop(); // the `Z`
            self.second = since.as_secs();
        }
        out.extend_from_slice(self.face.as_bytes());
        out.push(b'.');
        three_digits(out, since.subsec_millis());
        out.push(b'Z');
    }
}

/// `n` (below 1000) with leading zeros to three digits.
fn three_digits(out: &mut Vec<u8>, n: u32) {
    let n = n.min(999);
    let digits = [
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ];
    out.extend_from_slice(&digits);
}

/// Appends an integer (without the formatting machinery).
pub fn integer(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
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

/// What waits for the writer thread, behind one lock: records are pushed by value into a vector
/// the writer swaps for an empty one each round, so that handing a record over is a push under
/// an uncontended lock (no allocation, no wake-up while the writer is awake).
struct Queue<R> {
    records: Vec<R>,
    /// A file opened again (log rotation), to write to after the records queued before it.
    reopened: Option<Sink>,
    /// The writer waits on the condition variable: the next record wakes it.
    parked: bool,
    /// Write what is queued and stop (see [`AccessLog::close`]).
    closing: bool,
}

/// The queue and the writer's wake-up call.
struct Shared<R> {
    queue: Mutex<Queue<R>>,
    wake: Condvar,
    /// How many records may wait; more are dropped and counted.
    capacity: usize,
}

impl<R> Shared<R> {
    fn new(capacity: usize) -> Self {
        Shared {
            queue: Mutex::new(Queue {
                records: Vec::new(),
                reopened: None,
                parked: false,
                closing: false,
            }),
            wake: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<R>> {
        // A writer that panicked left the queue as it was: still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the queue and wakes the writer if it waits.
    fn update<T>(&self, change: impl FnOnce(&mut Queue<R>) -> T) -> T {
        let mut queue = self.lock();
        let done = change(&mut queue);
        let wake = std::mem::take(&mut queue.parked);
        drop(queue);
        if wake {
            self.wake.notify_one();
        }
        done
    }
}

/// A service's access log of records `R`: the queue's sending side, the writer thread, and
/// whether lines show the query.
pub struct AccessLog<R> {
    shared: Arc<Shared<R>>,
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
        let shared = Arc::new(Shared::new(QUEUE));
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&writer, sink))
            .map_err(|source| OpenError {
                file: path.to_owned(),
                source,
            })?;
        Ok(Some(Arc::new(AccessLog {
            shared,
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

    /// A log whose queue of `capacity` nobody empties.
    #[cfg(test)]
    fn stalled(dropped: Counter, capacity: usize) -> Self {
        AccessLog {
            shared: Arc::new(Shared::new(capacity)),
            path: "-".into(),
            query: false,
            dropped,
            thread: Mutex::new(None),
        }
    }

    /// Opens the file again (after log rotation moved it away); an error keeps the old one.
    /// The records queued so far still go to the old file.
    pub fn reopen(&self) -> Result<(), OpenError> {
        let sink = Sink::open(&self.path)?;
        self.shared.update(|queue| queue.reopened = Some(sink));
        Ok(())
    }

    /// Hands a record over without waiting; a full queue drops it and counts.
    pub fn send(&self, record: R) {
        // Not through `Shared::update`: a closure holding the record would copy it once more,
        // on every request.
        let mut queue = self.shared.lock();
        if queue.records.len() >= self.shared.capacity || queue.closing {
            drop(queue);
            self.dropped.inc();
            return;
        }
        queue.records.push(record);
        let wake = std::mem::take(&mut queue.parked);
        drop(queue);
        if wake {
            self.shared.wake.notify_one();
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
            self.shared.update(|queue| queue.closing = true);
            let _ = thread.join();
        }
    }
}

/// The writer thread: takes every queued record at once, formats them into a batch and writes
/// it (in pieces of [`WRITE_AT`]).
///
/// After a round that found records it sleeps a [`TICK`]: the records that arrive meanwhile are
/// taken in one go, and a request handing one over finds nobody to wake (no system call on the
/// request path). A round that found nothing waits on the condition variable, so an idle log
/// costs nothing.
fn write_lines<R: Line>(shared: &Shared<R>, mut sink: Sink) {
    let mut batch = Vec::with_capacity(WRITE_AT * 2);
    let mut clock = Clock::default();
    let mut taken: Vec<R> = Vec::new();
    loop {
        let (reopened, closing) = {
            let mut queue = shared.lock();
            while queue.records.is_empty() && queue.reopened.is_none() && !queue.closing {
                queue.parked = true;
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            std::mem::swap(&mut queue.records, &mut taken);
            (queue.reopened.take(), queue.closing)
        };
        let found = !taken.is_empty();
        clock.tick();
        for record in taken.drain(..) {
            record.format(&mut batch, &mut clock);
            if batch.len() >= WRITE_AT {
                flush(&mut batch, &mut sink);
            }
        }
        flush(&mut batch, &mut sink);
        if let Some(new) = reopened {
            sink = new;
        }
        if closing {
            return;
        }
        if found {
            std::thread::sleep(TICK);
        }
    }
}

/// Writes the batch, if any, and empties it.
fn flush(batch: &mut Vec<u8>, sink: &mut Sink) {
    if !batch.is_empty() {
        if let Err(e) = sink.write(batch) {
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

/// Appends an address as `Display` shows it; IPv4 without the formatting machinery, in one
/// push.
pub fn address(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                len += 1;
            }
            out.extend_from_slice(&text[..len]);
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends milliseconds with three decimals (in 64-bit arithmetic: `as_micros` is 128 bits).
pub fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.subsec_micros();
    integer(out, d.as_secs() * 1000 + u64::from(micros / 1000));
    out.push(b'.');
    three_digits(out, micros % 1000);
}

/// A string known to need no escaping (an id of our own alphabet, a name of ours, a value
/// `http` checked), quoted.
pub fn json_plain(out: &mut Vec<u8>, s: impl AsRef<[u8]>) {
    let s = s.as_ref();
    debug_assert!(plain(s), "{:?} needs escaping", String::from_utf8_lossy(s));
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

/// `null`, or `value` as `write` puts it.
pub fn or_null<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(value) => write(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string, or `null`.
pub fn json_opt(out: &mut Vec<u8>, s: Option<&str>) {
    or_null(out, s, json_str);
}

/// A JSON string: quotes, backslashes and control characters (line breaks, ANSI escapes)
/// escaped, so one record is always one line.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    // Most values are printable ASCII with nothing to escape: copied whole.
    if plain(s.as_bytes()) {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out.push(b'"');
}

/// A JSON string of bytes from outside (a header's value), cut to [`crate::MAX_LOGGED`]:
/// printable ASCII, the usual case, is copied whole; anything else is read as UTF-8 (invalid
/// sequences replaced) and escaped by [`json_str`].
pub fn json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let head = &bytes[..bytes.len().min(crate::MAX_LOGGED)];
    if plain(head) {
        out.push(b'"');
        out.extend_from_slice(head);
        out.push(b'"');
        return;
    }
    json_str(out, crate::cut(&String::from_utf8_lossy(bytes)));
}

/// Whether every byte is printable ASCII other than `"` and `\`: a JSON string as it is.
/// Eight bytes at a time, with the word tricks of "Bit Twiddling Hacks" (`haszero`, `hasless`).
fn plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let w = <[u8; 8]>::try_from(word).map_or(0, u64::from_le_bytes);
        // A byte of 0x80 or above; below 0x20 (exact, as no byte is above 0x7f); 0x7f, `"`, `\`.
        if w & HIGH != 0
            || w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0
            || has_zero(w ^ (ONES * 0x7f))
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_into_one_line() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\r\nd\u{1b}[31m\u{1}é\u{2028}");
        let out = String::from_utf8(out).unwrap_or_default();
        assert!(!out.contains('\n') && !out.contains('\r') && !out.contains('\u{1b}'));
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\u000d\\u000ad\\u001b[31m\\u0001é\\u2028\""
        );
    }

    #[test]
    fn plain_bytes_are_told_from_those_to_escape_at_every_position() {
        let printable: Vec<u8> = (0x20..0x7f).filter(|&b| b != b'"' && b != b'\\').collect();
        assert!(plain(&printable));
        for len in 0..20 {
            for at in 0..len {
                for bad in [0u8, 0x1b, b'\n', 0x1f, 0x7f, 0x80, 0xff, b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = bad;
                    assert!(!plain(&bytes), "{bad:#x} at {at} of {len}");
                }
            }
            assert!(plain(&vec![b'~'; len]));
        }
        let mut out = Vec::new();
        json_bytes(&mut out, b"curl/8 \xff\r\n");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "\"curl/8 \u{fffd}\\u000d\\u000a\""
        );
        out.clear();
        json_bytes(&mut out, &[b'x'; 1000]);
        assert_eq!(out.len(), crate::MAX_LOGGED + 2);
    }

    struct Text(&'static str);

    impl Line for Text {
        fn format(&self, out: &mut Vec<u8>, _: &mut Clock) {
            out.extend_from_slice(self.0.as_bytes());
            out.push(b'\n');
        }
    }

    #[test]
    fn times_and_durations_are_written_as_before() {
        let mut clock = Clock::default();
        let mut out = Vec::new();
        let time = std::time::UNIX_EPOCH + Duration::from_millis(1_796_418_137_042);
        clock.write(&mut out, time);
        assert_eq!(
            String::from_utf8_lossy(&out),
            humantime::format_rfc3339_millis(time).to_string()
        );
        out.clear();
        clock.write(&mut out, time + Duration::from_millis(900));
        assert_eq!(String::from_utf8_lossy(&out), "2026-12-04T21:02:17.942Z");
        out.clear();
        clock.write(&mut out, time + Duration::from_millis(1000));
        assert_eq!(String::from_utf8_lossy(&out), "2026-12-04T21:02:18.042Z");
        // A request's arrival, told against the wall clock read at the round's start.
        clock.tick();
        let (wall, mono) = clock.now.unwrap_or_else(Clock::read);
        let arrived = mono
            .checked_sub(Duration::from_millis(1500))
            .unwrap_or(mono);
        out.clear();
        clock.write_instant(&mut out, arrived);
        let expected = std::time::UNIX_EPOCH + wall - mono.duration_since(arrived);
        assert_eq!(
            String::from_utf8_lossy(&out),
            humantime::format_rfc3339_millis(expected).to_string()
        );
        out.clear();
        millis(&mut out, Duration::from_micros(41_207));
        assert_eq!(String::from_utf8_lossy(&out), "41.207");
        out.clear();
        millis(&mut out, Duration::from_micros(5));
        assert_eq!(String::from_utf8_lossy(&out), "0.005");
        out.clear();
        millis(&mut out, Duration::new(3, 2_999_999));
        assert_eq!(String::from_utf8_lossy(&out), "3002.999");
        for ip in [
            "10.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "100.10.9.199",
            "::1",
            "2001:db8::7",
        ] {
            out.clear();
            address(
                &mut out,
                ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            );
            assert_eq!(String::from_utf8_lossy(&out), ip);
        }
        out.clear();
        json_str(&mut out, "plain /api/x?y=1");
        assert_eq!(String::from_utf8_lossy(&out), "\"plain /api/x?y=1\"");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dropped = Counter::default();
        let writer = AccessLog::<Text>::stalled(dropped.clone(), 2);
        // With nobody reading, a waiting send would hang here.
        for _ in 0..10 {
            writer.send(Text("x"));
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
        writer.send(Text("one"));
        writer.send(Text("two"));
        writer.close();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(text, "one\ntwo\n");
        let _ = std::fs::remove_file(&file);
    }
}
