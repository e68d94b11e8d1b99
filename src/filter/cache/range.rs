//! Byte ranges (RFC 9110 §14) answered from a stored complete response. Only one range is
//! served as a 206; anything the cache does not serve gets the whole response, as a server
//! that ignores `Range` would answer.

use http::header::{ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, Method};
use std::ops::Range;

/// What a request gets from a stored response of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    /// The whole response: no usable `Range`, or an `If-Range` that does not hold.
    Whole,
    /// `206` with these bytes.
    Part(Range<usize>),
    /// `416`: no byte of the range exists.
    Unsatisfiable,
}

/// The selection for a request with `request` headers from a stored `200` with `stored`
/// headers and a body of `len` bytes (RFC 9110 §14.2: `GET` only; one `Range` line in bytes;
/// an invalid or multi-range set is ignored; `If-Range` must match exactly).
pub(crate) fn select(
    method: &Method,
    request: &HeaderMap,
    stored: &HeaderMap,
    len: usize,
) -> Selection {
    if method != Method::GET {
        return Selection::Whole;
    }
    let mut lines = request.get_all(RANGE).iter();
    let (Some(range), None) = (lines.next(), lines.next()) else {
        return Selection::Whole;
    };
    if !if_range_holds(request, stored) {
        return Selection::Whole;
    }
    match range.to_str().ok().and_then(parse_single) {
        None => Selection::Whole,
        Some(spec) => spec
            .resolve(len as u64)
            .map_or(Selection::Unsatisfiable, |range| {
                Selection::Part(range.start as usize..range.end as usize)
            }),
    }
}

/// One `range-spec` of a `bytes` range set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last`, or `first-` (to the end).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl Spec {
    /// The bytes it selects from `len`, or `None` when none exist.
    fn resolve(self, len: u64) -> Option<Range<u64>> {
        match self {
            Spec::From { first, last } if first < len => {
                let end = last.map_or(len, |last| last.saturating_add(1).min(len));
                Some(first..end)
            }
            Spec::From { .. } => None,
            Spec::Suffix(0) => None,
            Spec::Suffix(n) if len > 0 => Some(len.saturating_sub(n)..len),
            Spec::Suffix(_) => None,
        }
    }
}

/// `bytes=SPEC` with exactly one range-spec (whitespace around it allowed); `None` for other
/// units, several ranges, or anything that is not the grammar.
fn parse_single(value: &str) -> Option<Spec> {
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return None;
    };
    let (first, last) = spec.split_once('-')?;
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(Spec::Suffix(number(last)?)),
        (false, true) => Some(Spec::From {
            first: number(first)?,
            last: None,
        }),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            (first <= last).then_some(Spec::From {
                first,
                last: Some(last),
            })
        }
        (true, true) => None,
    }
}

/// `If-Range` (RFC 9110 §13.1.5): absent, or a strong entity tag equal to the stored one, or a
/// date equal to the stored `Last-Modified`.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(condition) = request.get(IF_RANGE) else {
        return true;
    };
    let Ok(condition) = condition.to_str() else {
        return false;
    };
    let condition = condition.trim();
    if condition.starts_with('"') {
        return stored
            .get(ETAG)
            .is_some_and(|etag| etag.as_bytes() == condition.as_bytes());
    }
    if condition.starts_with("W/") {
        return false;
    }
    match (
        httpdate::parse_http_date(condition),
        stored.get(LAST_MODIFIED).and_then(|v| v.to_str().ok()),
    ) {
        (Ok(wanted), Some(modified)) => httpdate::parse_http_date(modified).ok() == Some(wanted),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn pick(range: &str, len: usize) -> Selection {
        let mut request = HeaderMap::new();
        request.insert(RANGE, HeaderValue::from_str(range).unwrap());
        select(&Method::GET, &request, &HeaderMap::new(), len)
    }

    #[test]
    fn single_ranges_suffixes_and_open_ends() {
        let cases = [
            ("bytes=0-9", Selection::Part(0..10)),
            ("bytes=95-", Selection::Part(95..100)),
            ("bytes=-3", Selection::Part(97..100)),
            ("bytes=-500", Selection::Part(0..100)),
            ("bytes=90-200", Selection::Part(90..100)),
            ("Bytes = 1-1 ", Selection::Part(1..2)),
            ("bytes=99-99", Selection::Part(99..100)),
        ];
        for (range, expected) in cases {
            assert_eq!(pick(range, 100), expected, "{range}");
        }
    }

    #[test]
    fn nothing_to_serve_is_416_and_nonsense_is_ignored() {
        for range in ["bytes=100-", "bytes=-0", "bytes=200-300"] {
            assert_eq!(pick(range, 100), Selection::Unsatisfiable, "{range}");
        }
        assert_eq!(pick("bytes=-1", 0), Selection::Unsatisfiable);
        for range in [
            "bytes=5-2",
            "bytes=abc",
            "bytes=-",
            "bytes=+1-2",
            "bytes=1-2-3",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes 0-1",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(pick(range, 100), Selection::Whole, "{range}");
        }
    }
}
