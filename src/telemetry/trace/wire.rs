//! Protobuf wire format, as much of it as the span writer needs: varints, fields and
//! `KeyValue` attributes, written straight into a byte buffer. Attribute keys are encoded when
//! compiling (`key!`), and an attribute whose lengths all fit in one byte (nearly every one)
//! is written without working out varints.

use prost::encoding::encoded_len_varint;
use std::io::Write as _;
use std::net::IpAddr;

const VARINT: u64 = 0;
pub(super) const FIXED64: u64 = 1;
pub(super) const LEN: u64 = 2;

/// The key byte of `Span.attributes` (field 9, length-delimited).
const SPAN_ATTRIBUTE: u8 = 9 << 3 | LEN as u8;
/// The key byte of `Resource.attributes` (field 1, length-delimited).
pub(super) const RESOURCE_ATTRIBUTE: u8 = 1 << 3 | LEN as u8;

/// `AnyValue` fields: `string_value = 1`, `bool_value = 2`, `int_value = 3`.
const STRING_VALUE: u8 = 1 << 3 | LEN as u8;
const BOOL_VALUE: u8 = 2 << 3;
const INT_VALUE: u8 = 3 << 3;

/// An attribute's key with the protobuf around it worked out when compiling: the `key = 1`
/// field and the key of the `value = 2` field that follows it.
macro_rules! key {
    ($name:literal) => {{
        const HEAD: [u8; $name.len() + 3] = $crate::telemetry::trace::wire::key_head($name);
        &HEAD
    }};
}
pub(super) use key;

/// `0x0a len name 0x12` for a key name shorter than 120 bytes.
pub(crate) const fn key_head<const N: usize>(name: &str) -> [u8; N] {
    let bytes = name.as_bytes();
    // A longer name could need a two-byte length, in the key or in a short attribute around
    // it; this fails the build instead.
    assert!(bytes.len() < 120, "attribute key too long");
    let mut out = [0u8; N];
    out[0] = 0x0a;
    out[1] = bytes.len() as u8;
    let mut i = 0;
    while i < bytes.len() {
        out[2 + i] = bytes[i];
        i += 1;
    }
    out[N - 1] = 0x12;
    out
}

/// Bytes a length-delimited field of `len` bytes takes with a one-byte key.
#[inline]
pub(super) fn len_field(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A byte buffer written at a cursor. The buffer is initialized ahead of the cursor, so a
/// write is one bounds check and a copy. A write past the end is not done but noted: the
/// caller grows the buffer and writes its piece again (`Out::short`).
pub(super) struct Out {
    buf: Vec<u8>,
    at: usize,
    short: bool,
}

impl Out {
    pub(super) fn new(len: usize) -> Out {
        Out {
            buf: vec![0; len],
            at: 0,
            short: false,
        }
    }

    /// Where the next byte goes.
    #[inline(always)]
    pub(super) fn at(&self) -> usize {
        self.at
    }

    /// True when a write since the last `rewind` did not fit.
    #[inline(always)]
    pub(super) fn short(&self) -> bool {
        self.short
    }

    /// Goes back to `at` (forgetting what was written after it) and makes room for at least
    /// `more` bytes after it.
    pub(super) fn rewind(&mut self, at: usize, more: usize) {
        self.at = at;
        self.short = false;
        let wanted = at + more;
        if wanted > self.buf.len() {
            self.buf.resize(wanted.max(2 * self.buf.len()), 0);
        }
    }

    #[inline(always)]
    pub(super) fn byte(&mut self, byte: u8) {
        match self.buf.get_mut(self.at) {
            Some(slot) => *slot = byte,
            None => self.short = true,
        }
        self.at += 1;
    }

    #[inline(always)]
    pub(super) fn put(&mut self, bytes: &[u8]) {
        if let Some(room) = self.room(bytes.len()) {
            room.copy_from_slice(bytes);
        }
    }

    /// The next `len` bytes, for the caller to fill, with the cursor moved past them: a
    /// piece of several parts is written after one bounds check.
    #[inline(always)]
    pub(super) fn room(&mut self, len: usize) -> Option<&mut [u8]> {
        let at = self.at;
        self.at += len;
        let room = self.buf.get_mut(at..at + len);
        self.short |= room.is_none();
        room
    }

    /// The next `N` bytes, as `room` gives them, for pieces of a fixed size.
    #[inline(always)]
    pub(super) fn fixed<const N: usize>(&mut self) -> Option<&mut [u8; N]> {
        self.room(N).and_then(|room| room.try_into().ok())
    }

    /// Overwrites bytes already written at `at`.
    #[inline(always)]
    pub(super) fn patch(&mut self, at: usize, bytes: &[u8]) {
        if let Some(room) = self.buf.get_mut(at..at + bytes.len()) {
            room.copy_from_slice(bytes);
        }
    }

    #[inline(always)]
    pub(super) fn varint(&mut self, value: u64) {
        if value < 0x80 {
            self.byte(value as u8);
        } else if value < 0x4000 {
            self.put(&[value as u8 | 0x80, (value >> 7) as u8]);
        } else if value < 0x20_0000 {
            // Ports and most lengths end here.
            let bytes = [
                value as u8 | 0x80,
                (value >> 7) as u8 | 0x80,
                (value >> 14) as u8,
            ];
            self.put(&bytes);
        } else {
            self.long_varint(value);
        }
    }

    /// The rarer varints of four bytes or more, kept out of line.
    #[inline(never)]
    fn long_varint(&mut self, value: u64) {
        let mut bytes = [0u8; 10];
        let used = varint_into(&mut bytes, value);
        self.put(&bytes[..used]);
    }

    /// What was written, from `from`.
    pub(super) fn written(&self, from: usize) -> &[u8] {
        self.buf.get(from..self.at).unwrap_or_default()
    }

    /// The buffer, cut at the cursor.
    pub(super) fn into_vec(mut self) -> Vec<u8> {
        self.buf.truncate(self.at);
        self.buf
    }
}

/// Runs `write` on a new buffer until what it writes fits; what it wrote.
pub(super) fn write_all(mut write: impl FnMut(&mut Out)) -> Vec<u8> {
    let mut out = Out::new(256);
    loop {
        write(&mut out);
        if !out.short() {
            return out.into_vec();
        }
        let more = 2 * out.at();
        out.rewind(0, more);
    }
}

/// `value` as a protobuf varint at the start of `out`; the bytes used.
#[inline]
pub(super) fn varint_into(out: &mut [u8; 10], mut value: u64) -> usize {
    let mut i = 0;
    while value >= 0x80 {
        out[i] = (value as u8) | 0x80;
        value >>= 7;
        i += 1;
    }
    out[i] = value as u8;
    i + 1
}

#[inline(always)]
pub(super) fn field_key(out: &mut Out, tag: u64, wire: u64) {
    out.varint(tag << 3 | wire);
}

#[inline(always)]
pub(super) fn bytes_field(out: &mut Out, tag: u64, bytes: &[u8]) {
    field_key(out, tag, LEN);
    out.varint(bytes.len() as u64);
    out.put(bytes);
}

#[inline(always)]
pub(super) fn varint_field(out: &mut Out, tag: u64, value: u64) {
    field_key(out, tag, VARINT);
    out.varint(value);
}

/// A `KeyValue { key, value: AnyValue { string_value } }` under the field key byte `field`
/// (`SPAN_ATTRIBUTE`, `RESOURCE_ATTRIBUTE`); `head` comes from `key!`.
#[inline(always)]
pub(super) fn text_attribute<const N: usize>(
    out: &mut Out,
    field: u8,
    head: &[u8; N],
    text: &[u8],
) {
    // value { string_value } and the pair, when every length takes one byte.
    let any_len = 2 + text.len();
    let pair_len = N + 1 + any_len;
    if pair_len < 0x80 {
        if let Some(room) = out.room(2 + pair_len) {
            let (start, value) = room.split_at_mut(2 + N + 3);
            start[0] = field;
            start[1] = pair_len as u8;
            start[2..2 + N].copy_from_slice(head);
            start[2 + N..].copy_from_slice(&[any_len as u8, STRING_VALUE, text.len() as u8]);
            value.copy_from_slice(text);
        }
    } else {
        long_text_attribute(out, field, head, text);
    }
}

/// A text attribute with a length of two bytes or more.
#[inline(never)]
fn long_text_attribute(out: &mut Out, field: u8, head: &[u8], text: &[u8]) {
    let any_len = len_field(text.len());
    let pair_len = head.len() + encoded_len_varint(any_len as u64) + any_len;
    out.byte(field);
    out.varint(pair_len as u64);
    out.put(head);
    out.varint(any_len as u64);
    out.byte(STRING_VALUE);
    out.varint(text.len() as u64);
    out.put(text);
}

/// A `KeyValue` whose value is `int_value` (negative numbers take ten bytes, as protobuf
/// has it).
#[inline(always)]
fn int_attribute<const N: usize>(out: &mut Out, field: u8, head: &[u8; N], int: i64) {
    let any_len = 1 + encoded_len_varint(int as u64);
    out.byte(field);
    out.varint((N + 1 + any_len) as u64);
    out.put(head);
    out.put(&[any_len as u8, INT_VALUE]);
    out.varint(int as u64);
}

/// A `KeyValue` whose value is `bool_value`.
#[inline(always)]
fn bool_attribute<const N: usize>(out: &mut Out, field: u8, head: &[u8; N], flag: bool) {
    // Key names are under 120 bytes (`key!`), so the pair's length takes one byte.
    if let Some(room) = out.room(N + 5) {
        room[0] = field;
        room[1] = (N + 3) as u8;
        room[2..2 + N].copy_from_slice(head);
        room[2 + N..].copy_from_slice(&[2, BOOL_VALUE, u8::from(flag)]);
    }
}

/// A span attribute with a text value.
#[inline(always)]
pub(super) fn span_text<const N: usize>(out: &mut Out, head: &[u8; N], text: &[u8]) {
    text_attribute(out, SPAN_ATTRIBUTE, head, text);
}

/// A span attribute with an integer value.
#[inline(always)]
pub(super) fn span_int<const N: usize>(out: &mut Out, head: &[u8; N], int: i64) {
    int_attribute(out, SPAN_ATTRIBUTE, head, int);
}

/// A span attribute with a boolean value.
#[inline(always)]
pub(super) fn span_flag<const N: usize>(out: &mut Out, head: &[u8; N], flag: bool) {
    bool_attribute(out, SPAN_ATTRIBUTE, head, flag);
}

/// `0`..=`255` in decimal, for writing IPv4 addresses by table.
const OCTETS: [([u8; 3], u8); 256] = octet_table();

const fn octet_table() -> [([u8; 3], u8); 256] {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut n = 0;
    while n < 256 {
        let digits = [(n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8];
        let len = if n >= 100 {
            3
        } else if n >= 10 {
            2
        } else {
            1
        };
        let mut text = [0u8; 3];
        let mut i = 0;
        while i < len {
            text[i] = b'0' + digits[3 - len + i];
            i += 1;
        }
        table[n] = (text, len as u8);
        n += 1;
    }
    table
}

/// An IP address printed into `room` without allocating: IPv4 by table, the rarer IPv6
/// through `Display`.
pub(super) fn address(room: &mut [u8; 64], ip: IpAddr) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut end = 0;
            for octet in v4.octets() {
                let (text, len) = OCTETS[usize::from(octet)];
                room[end..end + 3].copy_from_slice(&text);
                end += usize::from(len);
                room[end] = b'.';
                end += 1;
            }
            &room[..end - 1]
        }
        IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut room[..]);
            let _ = write!(cursor, "{v6}");
            let end = cursor.position() as usize;
            &room[..end]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message as _;

    fn expected(key: &str, value: any_value::Value) -> Vec<u8> {
        let span = Span {
            attributes: vec![KeyValue {
                key: key.into(),
                value: Some(AnyValue { value: Some(value) }),
                ..Default::default()
            }],
            ..Default::default()
        };
        span.encode_to_vec()
    }

    #[test]
    fn attributes_encode_as_the_generated_types_do() {
        for len in [
            0usize, 1, 90, 103, 104, 105, 127, 128, 200, 16_383, 16_384, 70_000,
        ] {
            let text = "v".repeat(len);
            let buf = write_all(|out| {
                text_attribute(out, SPAN_ATTRIBUTE, key!("url.path"), text.as_bytes())
            });
            let string = any_value::Value::StringValue(text.clone());
            assert_eq!(buf, expected("url.path", string), "{len}");
        }
        for int in [0i64, 1, 127, 128, 200, 404, 65_535, i64::MAX, -1] {
            let buf = write_all(|out| int_attribute(out, SPAN_ATTRIBUTE, key!("server.port"), int));
            let value = any_value::Value::IntValue(int);
            assert_eq!(buf, expected("server.port", value), "{int}");
        }
        for flag in [true, false] {
            let buf = write_all(|out| {
                bool_attribute(out, SPAN_ATTRIBUTE, key!("portcullis.cache"), flag)
            });
            let value = any_value::Value::BoolValue(flag);
            assert_eq!(buf, expected("portcullis.cache", value), "{flag}");
        }
    }

    #[test]
    fn varints_encode_as_prost_does() {
        for value in [0u64, 1, 127, 128, 300, 16_383, 16_384, 1 << 21, u64::MAX] {
            let mut expected = Vec::new();
            prost::encoding::encode_varint(value, &mut expected);
            assert_eq!(write_all(|out| out.varint(value)), expected, "{value}");
        }
    }

    #[test]
    fn addresses_print_as_display_does() {
        let mut room = [0u8; 64];
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.30.40",
            "1.22.100.9",
            "::1",
            "2001:db8::7",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(address(&mut room, ip), text.as_bytes());
        }
    }
}
