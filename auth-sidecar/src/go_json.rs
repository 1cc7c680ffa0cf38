//! JSON string escaping exactly as Go's `encoding/json` does it with HTML escaping on (the default of
//! both `json.Marshal` and `json.Encoder`), which is what the reference hashes and writes.
//!
//! Differences from `serde_json`: `<`, `>`, `&` become `\u003c`, `\u003e`, `\u0026`; U+2028 and U+2029
//! become `\u2028` and `\u2029`. Shared with `serde_json`: `"` and `\` are backslash-escaped,
//! `\b \f \n \r \t` use their short forms (Go ≥ 1.22), other control characters are `\u00xx` with
//! lower-case hex, everything else (DEL, other non-ASCII) is written raw.

/// Calls `emit` with the pieces of `s` escaped as the inside of a Go JSON string literal. Runs of bytes
/// that need no escaping are emitted in one call, so feeding a hasher or a buffer costs no copy.
pub fn escape(s: &str, mut emit: impl FnMut(&[u8])) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let mut unicode_escape = *b"\\u00\0\0";
        let (replacement, width): (&[u8], usize) = match bytes[i] {
            b'"' => (b"\\\"", 1),
            b'\\' => (b"\\\\", 1),
            b'\x08' => (b"\\b", 1),
            b'\x0c' => (b"\\f", 1),
            b'\n' => (b"\\n", 1),
            b'\r' => (b"\\r", 1),
            b'\t' => (b"\\t", 1),
            b @ (b'<' | b'>' | b'&' | 0x00..=0x1F) => {
                unicode_escape[4] = HEX[usize::from(b >> 4)];
                unicode_escape[5] = HEX[usize::from(b & 0xF)];
                (&unicode_escape, 1)
            }
            // U+2028 and U+2029 are E2 80 A8 and E2 80 A9 in UTF-8.
            0xE2 if bytes[i..].starts_with(&[0xE2, 0x80, 0xA8]) => (b"\\u2028", 3),
            0xE2 if bytes[i..].starts_with(&[0xE2, 0x80, 0xA9]) => (b"\\u2029", 3),
            _ => {
                i += 1;
                continue;
            }
        };
        emit(&bytes[start..i]);
        emit(replacement);
        i += width;
        start = i;
    }
    emit(&bytes[start..]);
}

/// Appends `s` as a quoted Go JSON string to `out`.
pub fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape(s, |piece| out.extend_from_slice(piece));
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(s: &str) -> String {
        let mut out = Vec::new();
        push_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_go() {
        let cases: &[(&str, &str)] = &[
            ("plain", r#""plain""#),
            ("<>&", r#""\u003c\u003e\u0026""#),
            ("a\u{2028}b\u{2029}c", r#""a\u2028b\u2029c""#),
            ("\"\\", r#""\"\\""#),
            ("\u{8}\u{c}\n\r\t", r#""\b\f\n\r\t""#),
            ("\u{0}\u{1f}", r#""\u0000\u001f""#),
            ("\u{7f}é€😀", "\"\u{7f}é€😀\""),
            // E2 80 A7 is U+2027, which Go leaves raw.
            ("\u{2027}", "\"\u{2027}\""),
            ("wss://h/?a=1&b=2", r#""wss://h/?a=1\u0026b=2""#),
        ];
        for (raw, expected) in cases {
            assert_eq!(quoted(raw), *expected, "escaping of {raw:?}");
            // Whatever the escaping, it is valid JSON for the same string.
            assert_eq!(serde_json::from_str::<String>(&quoted(raw)).unwrap(), *raw);
        }
    }
}
