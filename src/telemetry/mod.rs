//! Logging setup shared by every subcommand.
//!
//! Lines go to stderr. A long-running server can switch to [`background`]
//! writing: formatted lines are appended to a shared buffer that a writer
//! thread empties every few milliseconds in one system call, so the request
//! path neither blocks on a slow log pipe nor pays a write (and a wake-up of
//! the log reader) per admission. A buffer that grows past a limit is written
//! out by whoever fills it, so lines are never dropped and stay in order; the
//! guard writes out the rest when the server stops.

mod json;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::format::JsonFields;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Lines waiting for the writer thread, when one runs.
static BUFFER: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// The writer thread, to wake it early.
static WRITER: Mutex<Option<std::thread::Thread>> = Mutex::new(None);

/// Size at which the writer thread is woken early.
const WAKE_AT: usize = 256 * 1024;

/// Size past which a line is written by its caller (the log pipe is not
/// keeping up: back-pressure rather than unbounded memory).
const HARD_CAP: usize = 16 * 1024 * 1024;

/// How often the writer thread empties the buffer.
const INTERVAL: Duration = Duration::from_millis(20);

/// Installs the global tracing subscriber; `RUST_LOG` overrides the `info` default.
pub fn init(format: LogFormat) {
    let builder = builder();
    let _ = match format {
        // Field values come from requests (uid, names): a newline in one
        // must not start a line of the sender's choosing.
        LogFormat::Text => builder.fmt_fields(escaped_fields()).try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(json::Line::new())
            .try_init(),
    };
}

/// The subscriber [`init`] installs, as a dispatcher of its own (to
/// compare the formats in one process, as the decision bench does).
pub fn dispatch(format: LogFormat) -> tracing::Dispatch {
    let builder = builder();
    match format {
        LogFormat::Text => builder.fmt_fields(escaped_fields()).finish().into(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(json::Line::new())
            .finish()
            .into(),
    }
}

type Builder = tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    tracing_subscriber::EnvFilter,
    fn() -> Sink,
>;

fn builder() -> Builder {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, never in collected logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(sink as fn() -> Sink)
}

fn sink() -> Sink {
    Sink
}

/// The text format's fields as `DefaultFields` writes them (`message`
/// bare, the rest `name=value`, space-separated), with control characters
/// escaped.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(
        |w: &mut tracing_subscriber::fmt::format::Writer<'_>,
         field: &tracing::field::Field,
         value: &dyn std::fmt::Debug| {
            if field.name() != "message" {
                let name = field.name();
                write!(w, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
            }
            // Escaped as it is written: no copy of the value per field.
            std::fmt::Write::write_fmt(&mut Escaping(w), format_args!("{value:?}"))
        },
    )
    .delimited(" ")
}

/// Writes through [`escape_controls`].
struct Escaping<'a, 'w>(&'a mut tracing_subscriber::fmt::format::Writer<'w>);

impl std::fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write_str(&escape_controls(s))
    }
}

/// `s` with every control character (and the Unicode line and paragraph
/// separators) written as an escape: `\n`, `\r`, `\t`, `\u{1b}`; so a
/// value always stays on its line.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !s.chars().any(needs) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Where a formatted line goes: the buffer while a writer thread runs, else
/// stderr.
struct Sink;

fn lock() -> std::sync::MutexGuard<'static, Option<Vec<u8>>> {
    BUFFER.lock().unwrap_or_else(|e| e.into_inner())
}

impl Write for Sink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut guard = lock();
        match guard.as_mut() {
            Some(buffer) if buffer.len() < HARD_CAP => {
                buffer.extend_from_slice(line);
                if buffer.len() >= WAKE_AT {
                    drop(guard);
                    if let Some(t) = WRITER.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                        t.unpark();
                    }
                }
            }
            Some(_) => {
                drop(guard);
                std::io::stderr().lock().write_all(line)?;
            }
            None => {
                drop(guard);
                std::io::stderr().lock().write_all(line)?;
            }
        }
        Ok(line.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes through a background thread until dropped; dropping writes out
/// everything still buffered and returns to direct writes.
#[must_use = "logs are written in the background only while the guard lives"]
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts background writing (see the module docs).
pub fn background() -> Background {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    *lock() = Some(Vec::with_capacity(64 * 1024));
    let thread = std::thread::Builder::new()
        .name("stash-log".into())
        .spawn(move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::park_timeout(INTERVAL);
                write_out();
            }
        })
        .ok();
    match &thread {
        Some(t) => *WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.thread().clone()),
        None => *lock() = None,
    }
    Background { stop, thread }
}

/// Takes what is buffered and writes it outside the lock, so loggers never
/// wait on the log pipe.
fn write_out() {
    let batch = {
        let mut guard = lock();
        match guard.as_mut().filter(|b| !b.is_empty()) {
            Some(buffer) => std::mem::replace(buffer, Vec::with_capacity(64 * 1024)),
            None => return,
        }
    };
    let _ = std::io::stderr().lock().write_all(&batch);
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        WRITER.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Back to direct writes and the rest written, in one step, so no
        // line lands in a buffer nobody empties.
        let rest = lock().take();
        if let Some(rest) = rest.filter(|r| !r.is_empty()) {
            let _ = std::io::stderr().lock().write_all(&rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain-uid"), "plain-uid");
        assert_eq!(
            escape_controls("a\nFORGED\r\tb\u{1b}[31m\u{2028}"),
            "a\\nFORGED\\r\\tb\\u{1b}[31m\\u{2028}"
        );
        assert!(!escape_controls("x\n\u{85}y").contains(['\n', '\u{85}']));
    }
}
