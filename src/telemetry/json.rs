//! The JSON log line (`--log-format json`, what the install runs), written
//! field by field.
//!
//! tracing-subscriber's JSON formatter drives a serde serializer through an
//! adapter per line; under load that was 8 % of the server's CPU, one line
//! per admission. [`Line`] writes the same line directly: the same keys in
//! the same order (`timestamp`, `level`, the event's fields with `message`
//! first, `target`), strings escaped as serde_json escapes them, numbers and
//! bools bare. An event inside a span, or one forwarded from the `log`
//! crate, goes to the stock formatter, which knows how to write those (the
//! controllers' spans, the libraries' records); a test pins that both write
//! the same line for the same event.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format: flattened fields, like
/// `fmt().json().flatten_event(true)`.
pub struct Line {
    stock: Format<Json, SystemTime>,
}

impl Line {
    pub fn new() -> Self {
        Self {
            stock: format::format().json().flatten_event(true),
        }
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let in_span = event.parent().is_some() || ctx.lookup_current().is_some();
        if in_span || meta.fields().field("log.target").is_some() {
            return self.stock.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.writer.write_char(',')?;
        string(self.writer, field.name())?;
        self.writer.write_char(':')
    }

    fn bare(&mut self, field: &Field, value: impl fmt::Display) {
        if self.result.is_ok() {
            self.result = self
                .key(field)
                .and_then(|()| write!(self.writer, "{value}"));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| string(self.writer, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| {
                self.writer.write_char('"')?;
                write!(Escaped(self.writer), "{value:?}")?;
                self.writer.write_char('"')
            });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.bare(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.bare(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.bare(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes a float (null when it is not finite).
        let text = serde_json::to_string(&value).unwrap_or_else(|_| "null".into());
        self.bare(field, text);
    }
}

/// `s` as a JSON string.
fn string(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(&mut *w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what serde_json escapes: `"`, `\` and the control characters
/// below U+0020 (`\b \t \n \f \r` short, the rest as `\u00XX`).
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::JsonFields;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// A subscriber writing [`Line`]s into `buf`.
    fn with_line(buf: &Buf) -> impl tracing::Subscriber + Send + Sync + use<> {
        tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(Line::new())
            .with_writer(buf.clone())
            .finish()
    }

    fn emit() {
        let uid = "a\"b\\c\nd\u{1}é";
        tracing::info!(
            webhook = "mutate-workloads",
            uid = %uid,
            kind = ?"Deployment",
            patch_ops = 4u64,
            delta = -3i64,
            ratio = 0.5f64,
            dry_run = false,
            "admission {}",
            "done"
        );
        tracing::warn!(reason = "x", "second");
    }

    /// The line with its timestamp's value cut out.
    fn without_time(line: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamp"].as_str().unwrap();
        line.replace(ts, "T")
    }

    #[test]
    fn writes_the_stock_formatters_line_byte_for_byte() {
        let ours = Buf::default();
        let stock = Buf::default();
        let fast = with_line(&ours);
        tracing::subscriber::with_default(fast, emit);
        let reference = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(stock.clone())
            .finish();
        tracing::subscriber::with_default(reference, emit);
        let ours = String::from_utf8(ours.0.lock().unwrap().clone()).unwrap();
        let stock = String::from_utf8(stock.0.lock().unwrap().clone()).unwrap();
        let ours: Vec<String> = ours.lines().map(without_time).collect();
        let stock: Vec<String> = stock.lines().map(without_time).collect();
        assert_eq!(ours.len(), 2);
        assert_eq!(ours, stock);
    }

    #[test]
    fn inside_a_span_the_stock_formatter_writes() {
        let ours = Buf::default();
        let fast = with_line(&ours);
        tracing::subscriber::with_default(fast, || {
            let _span = tracing::info_span!("reconciling object", object = "demo/app").entered();
            tracing::info!("inside");
        });
        let line = String::from_utf8(ours.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["message"], "inside");
        assert_eq!(v["span"]["object"], "demo/app");
    }
}
