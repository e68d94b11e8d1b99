//! W3C Trace Context (`traceparent`, `tracestate`): reading what a client sent, and writing
//! what goes upstream. Anything that does not parse exactly is treated as absent, so it is
//! replaced, never forwarded as it came.

use http::header::{Entry, HeaderName, HOST};
use http::{HeaderMap, HeaderValue};

pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` kept (the W3C minimum vendors must pass on); a longer one is
/// dropped whole rather than cut.
const MAX_TRACESTATE_BYTES: usize = 512;
/// List members a `tracestate` may hold.
const MAX_TRACESTATE_MEMBERS: usize = 32;

pub(crate) type TraceId = [u8; 16];
pub(crate) type SpanId = [u8; 8];

/// A parent context from a client's `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parent {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) sampled: bool,
}

/// The field lines of one header name, taken out of a request.
#[derive(Default)]
pub(crate) struct Fields {
    first: Option<HeaderValue>,
    rest: Vec<HeaderValue>,
}

/// What one pass over a request's fields found: whether it carries trace context, and its
/// `Host`. One pass over a few fields costs less than three hashed lookups.
pub(crate) struct Seen {
    parent: bool,
    state: bool,
    pub(crate) host: Option<HeaderValue>,
}

pub(crate) fn scan(headers: &HeaderMap) -> Seen {
    let mut seen = Seen {
        parent: false,
        state: false,
        host: None,
    };
    for (name, value) in headers {
        if name == HOST {
            if seen.host.is_none() {
                seen.host = Some(value.clone());
            }
        } else if name == TRACEPARENT {
            seen.parent = true;
        } else if name == TRACESTATE {
            seen.state = true;
        }
    }
    seen
}

impl Seen {
    /// The client's `traceparent` fields, taken out of `headers`; `None` when it sent none
    /// (most requests: nothing to take or drop).
    pub(crate) fn take_parents(&self, headers: &mut HeaderMap) -> Option<Fields> {
        self.parent.then(|| take(headers, &TRACEPARENT))
    }

    /// The client's `tracestate` fields, taken out of `headers`; `None` when it sent none.
    pub(crate) fn take_states(&self, headers: &mut HeaderMap) -> Option<Fields> {
        self.state.then(|| take(headers, &TRACESTATE))
    }
}

/// Removes every `name` field from `headers` (one lookup) and returns them in order.
fn take(headers: &mut HeaderMap, name: &'static HeaderName) -> Fields {
    match headers.entry(name) {
        Entry::Occupied(entry) => {
            let (_, mut values) = entry.remove_entry_mult();
            let first = values.next();
            Fields {
                first,
                rest: values.collect(),
            }
        }
        Entry::Vacant(_) => Fields::default(),
    }
}

/// The parent the `traceparent` fields give: exactly one that parses; `None` otherwise
/// (missing, repeated, malformed, all-zero ids, version `ff`).
pub(crate) fn parent(fields: &Fields) -> Option<Parent> {
    if !fields.rest.is_empty() {
        return None;
    }
    parse_traceparent(fields.first.as_ref()?.as_bytes())
}

fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    // version "-" trace-id "-" parent-id "-" flags; later versions may append "-" fields.
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    match version {
        0x00 if value.len() != 55 => return None,
        0xff => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    for (i, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    for (i, byte) in span_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Two lowercase hex digits (uppercase is not valid in `traceparent`).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

/// The client's `tracestate` (its fields joined), when every list member is well formed and
/// it fits; `None` otherwise.
pub(crate) fn state(fields: Fields) -> Option<HeaderValue> {
    let first = fields.first?;
    let joined: Option<Vec<u8>> = (!fields.rest.is_empty()).then(|| {
        let mut all = first.as_bytes().to_vec();
        for field in &fields.rest {
            all.push(b',');
            all.extend_from_slice(field.as_bytes());
        }
        all
    });
    let text = std::str::from_utf8(joined.as_deref().unwrap_or(first.as_bytes())).ok()?;
    if text.len() > MAX_TRACESTATE_BYTES || !valid_state(text) {
        return None;
    }
    match joined {
        Some(bytes) => HeaderValue::from_bytes(&bytes).ok(),
        None => Some(first),
    }
}

/// `key=value` list members, comma separated (empty members allowed), keys unique.
fn valid_state(text: &str) -> bool {
    let mut keys: Vec<&str> = Vec::new();
    for member in text.split(',').map(|m| m.trim_matches([' ', '\t'])) {
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = member.split_once('=') else {
            return false;
        };
        if !valid_key(key) || !valid_value(value) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
        if keys.len() > MAX_TRACESTATE_MEMBERS {
            return false;
        }
    }
    !keys.is_empty()
}

/// `simple-key` or `tenant@system`: lowercase letters, digits, `_ - * /`, starting with a
/// letter or digit.
fn valid_key(key: &str) -> bool {
    let simple = |part: &str, most: usize| {
        let bytes = part.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= most
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes.iter().all(|&b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        None => simple(key, 256),
        Some((tenant, system)) => simple(tenant, 241) && simple(system, 14),
    }
}

/// Printable ASCII without `,` and `=`, not ending in a space, at most 256 characters.
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

/// `00-{trace}-{span}-{flags}`, in lowercase hex.
pub(crate) fn traceparent(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> HeaderValue {
    let mut text = [0u8; 55];
    text[..3].copy_from_slice(b"00-");
    write_hex(&mut text[3..35], trace_id);
    text[35] = b'-';
    write_hex(&mut text[36..52], span_id);
    text[52..].copy_from_slice(if sampled { b"-01" } else { b"-00" });
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `bytes` as lowercase hex into `out` (twice as long), a digit pair per byte by table.
pub(crate) fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, &byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
}

/// Every byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = hex_pairs();

const fn hex_pairs() -> [[u8; 2]; 256] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
        byte += 1;
    }
    table
}

/// A random id that is not all zeros.
pub(crate) fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let mut id = [0u8; N];
        fastrand::fill(&mut id);
        if id != [0; N] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn traceparent_parses_exactly() {
        let read = parse_traceparent(VALID.as_bytes()).unwrap();
        assert!(read.sampled);
        assert_eq!(
            read.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(traceparent(&read.trace_id, &read.span_id, true), VALID);
        let unsampled = VALID.replace("-01", "-00");
        assert!(!parse_traceparent(unsampled.as_bytes()).unwrap().sampled);
        // A later version may carry more fields; its first four are read.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
        }
        // Two traceparent fields: neither is believed.
        let parent_of = |fields: &[(&str, &str)]| parent(&take(&mut headers(fields), &TRACEPARENT));
        assert!(parent_of(&[("traceparent", VALID)]).is_some());
        assert!(parent_of(&[("traceparent", VALID), ("traceparent", VALID)]).is_none());
    }

    #[test]
    fn tracestate_is_kept_only_when_well_formed() {
        let state_of = |mut map: HeaderMap| state(take(&mut map, &TRACESTATE));
        let one = headers(&[("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7")]);
        assert_eq!(
            state_of(one).unwrap(),
            "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"
        );
        let two = headers(&[
            ("tracestate", "congo=a"),
            ("tracestate", "vendor@tenant1=b"),
        ]);
        assert_eq!(state_of(two).unwrap(), "congo=a,vendor@tenant1=b");
        for bad in [
            "congo",
            "Congo=a",
            "congo=a,congo=b",
            "congo=a=b",
            "congo=",
            "=a",
            ",",
            "congo=a\u{7f}",
        ] {
            let map = match HeaderValue::from_str(bad) {
                Ok(_) => headers(&[("tracestate", bad)]),
                Err(_) => continue,
            };
            assert_eq!(state_of(map), None, "{bad:?}");
        }
        let long = (0..40)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(state_of(headers(&[("tracestate", &long)])), None);
        let huge = format!("k={}", "v".repeat(600));
        assert_eq!(state_of(headers(&[("tracestate", &huge)])), None);
    }

    #[test]
    fn ids_are_never_zero() {
        for _ in 0..1000 {
            assert_ne!(random_id::<8>(), [0; 8]);
        }
    }
}
