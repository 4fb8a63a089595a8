//! Logging setup shared by every subcommand.
//!
//! Lines go to stderr. A long-running server can switch to [`background`]
//! writing: each line is handed to a writer thread that writes whatever has
//! queued up in one system call, so the request path never blocks on a slow
//! log pipe and a burst of admissions costs a few writes, not one each. When
//! the queue is full a line is written directly (slower, never dropped), and
//! the guard drains the queue when the server stops.

use std::io::Write;
use std::sync::RwLock;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Lines queued for the writer thread, when one runs.
static QUEUE: RwLock<Option<SyncSender<Vec<u8>>>> = RwLock::new(None);

/// Lines a burst may queue before writers fall back to writing directly.
const QUEUE_LINES: usize = 16 * 1024;

/// Installs the global tracing subscriber; `RUST_LOG` overrides the `info` default.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, never in collected logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| Line(Vec::with_capacity(256)));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// One formatted line, sent on drop.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.0);
        if line.is_empty() {
            return;
        }
        let unsent = {
            let queue = QUEUE.read().unwrap_or_else(|e| e.into_inner());
            match queue.as_ref() {
                None => line,
                Some(tx) => match tx.try_send(line) {
                    Ok(()) => return,
                    // Queue full (or writer gone): write it here, never drop it.
                    Err(TrySendError::Full(l) | TrySendError::Disconnected(l)) => l,
                },
            }
        };
        let _ = std::io::stderr().lock().write_all(&unsent);
    }
}

/// Writes through a background thread until the guard is dropped, which
/// writes out everything still queued.
#[must_use = "logs are written in the background only while the guard lives"]
pub struct Background {
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts background writing (see the module docs).
pub fn background() -> Background {
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_LINES);
    let thread = std::thread::Builder::new()
        .name("stash-log".into())
        .spawn(move || drain(rx))
        .ok();
    if thread.is_some() {
        *QUEUE.write().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }
    Background { thread }
}

fn drain(rx: Receiver<Vec<u8>>) {
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Ok(line) = rx.recv() {
        batch.extend_from_slice(&line);
        while batch.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let _ = std::io::stderr().lock().write_all(&batch);
        batch.clear();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // New lines go straight to stderr; the thread ends once the queue is empty.
        QUEUE.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
