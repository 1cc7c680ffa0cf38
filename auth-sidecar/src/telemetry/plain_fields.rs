//! The text log format's field formatter: the text of tracing-subscriber's `DefaultFields`, byte for
//! byte, written more cheaply for the fields every request has.
//!
//! The fmt layer formats a span's fields when the span is created and again at every `record`, whether or
//! not a line is ever written inside it. The request span (`http::trace`) is created for every request and
//! gets two more fields recorded, while a successful request writes no line at the default level.
//! `DefaultFields` writes each field with `write!` and two `nu-ansi-term` paints (plain ones when colours
//! are off): about 5 % of a token request's user-space instructions (callgrind). Here a string that `{:?}`
//! would print unchanged between quotes, or a bool, is written with `write_str`, and an integer with one
//! plain `write!`; everything else (messages, errors, `Debug` values, strings needing escapes, raw
//! identifiers, colours) goes to `DefaultVisitor` itself. A property test compares the two formatters'
//! lines on generated values.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// The field formatter of the text format (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes the fields of one span, record or event, separated by spaces as `DefaultVisitor` does.
struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: the next field needs no separating space.
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Writes `name=` and then the value, if `DefaultVisitor` would write exactly that: no colours, not the
    /// message (written bare, and sanitised), not a raw identifier (written without its `r#`). Returns
    /// false, writing nothing, otherwise.
    fn write_plain(
        &mut self,
        field: &Field,
        value: impl FnOnce(&mut Writer<'_>) -> fmt::Result,
    ) -> bool {
        let name = field.name();
        if self.writer.has_ansi_escapes() || name == "message" || name.starts_with("r#") {
            return false;
        }
        if self.result.is_ok() {
            self.result = self.write_field(name, value);
        }
        true
    }

    fn write_field(
        &mut self,
        name: &str,
        value: impl FnOnce(&mut Writer<'_>) -> fmt::Result,
    ) -> fmt::Result {
        if !std::mem::take(&mut self.is_empty) {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(name)?;
        self.writer.write_char('=')?;
        value(&mut self.writer)
    }

    /// Lets `DefaultVisitor` write one field, continuing where this visitor stands.
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut inner = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut inner);
        self.result = inner.finish();
        // It writes every field it is given: it skips only `log.` fields, and only with tracing-subscriber's
        // `tracing-log` feature, which is off (the property test gives it such a field).
        self.is_empty = false;
    }
}

/// Whether `{:?}` prints `value` between quotes unchanged: printable ASCII other than `"` and `\`.
fn debug_prints_as_is(value: &str) -> bool {
    value
        .bytes()
        .all(|byte| matches!(byte, b' '..=b'~') && byte != b'"' && byte != b'\\')
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if debug_prints_as_is(value)
            && self.write_plain(field, |writer| {
                writer.write_char('"')?;
                writer.write_str(value)?;
                writer.write_char('"')
            })
        {
            return;
        }
        self.delegate(|inner| inner.record_str(field, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.write_plain(field, |writer| write!(writer, "{value}")) {
            self.delegate(|inner| inner.record_u64(field, value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.write_plain(field, |writer| write!(writer, "{value}")) {
            self.delegate(|inner| inner.record_i64(field, value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.write_plain(field, |writer| {
            writer.write_str(if value { "true" } else { "false" })
        }) {
            self.delegate(|inner| inner.record_bool(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(|inner| inner.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.delegate(|inner| inner.record_debug(field, value));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tracing::field::Empty;
    use tracing_subscriber::fmt::format::DefaultFields;

    use super::*;
    use crate::telemetry::LogBuffer;

    #[derive(Debug, thiserror::Error)]
    #[error("outer {0}")]
    struct Outer(String, #[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    /// Spans and events with every kind of field, as the service writes them and beyond.
    fn log_everything(text: &str, other: &str, unsigned: u64, signed: i64, flag: bool) {
        let span = tracing::info_span!(
            "request",
            route = text,
            id = unsigned,
            user_id = Empty,
            room = Empty
        );
        let _entered = span.enter();
        tracing::info!("plain message");
        span.record("user_id", other);
        tracing::info!(count = signed, ok = flag, name = other, "message {text}");
        span.record("room", text);
        let error = Outer(other.to_owned(), Inner);
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            r#type = text,
            "log.file" = other,
            shown = ?text,
            message = text,
        );
        tracing::error!(
            detail = %other,
            empty = "",
            big = u64::MAX,
            small = i64::MIN,
            "{other}"
        );
        let inner = tracing::debug_span!("inner", first = flag, text);
        inner.in_scope(|| tracing::info!(x = unsigned, "inside"));
    }

    /// What a subscriber with `fields` writes for [`log_everything`].
    fn lines<N>(fields: N, ansi: bool, values: (&str, &str, u64, i64, bool)) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .without_time()
            .with_ansi(ansi)
            .with_writer(move || writer.clone())
            .fmt_fields(fields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let (text, other, unsigned, signed, flag) = values;
            log_everything(text, other, unsigned, signed, flag);
        });
        buffer.text()
    }

    #[test]
    fn the_request_span_reads_as_with_the_default_formatter() {
        let values = ("/get_token", "@alice:example.com", 7, -3, true);
        let ours = lines(PlainFields, false, values);
        assert_eq!(ours, lines(DefaultFields::new(), false, values));
        assert!(
            ours.contains(
                r#"request{route="/get_token" id=7 user_id="@alice:example.com" room="/get_token"}"#
            ),
            "{ours}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text, including quotes, backslashes, control characters, ANSI escapes and non-ASCII, in any
        /// kind of field: the same lines as `DefaultFields`, with colours and without.
        #[test]
        fn lines_match_the_default_formatter(
            text in any::<String>(),
            other in "[ -~]{0,12}|\\PC{0,6}|[\"\\\\\u{1b}\n\t]{1,3}",
            unsigned in any::<u64>(),
            signed in any::<i64>(),
            flag in any::<bool>(),
            ansi in any::<bool>(),
        ) {
            let values = (text.as_str(), other.as_str(), unsigned, signed, flag);
            prop_assert_eq!(
                lines(PlainFields, ansi, values),
                lines(DefaultFields::new(), ansi, values)
            );
        }
    }
}
