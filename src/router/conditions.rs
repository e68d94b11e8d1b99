//! Conditions on a request's header fields, cookies and query parameters that a route may add
//! to its host, path and methods. Each is present, exact or an anchored regex; a field given
//! several times matches when any of its values does.
//!
//! Cookies are compared as sent (RFC 6265 defines no decoding). Query parameters are split on
//! `&` and the first `=` before decoding, then decoded as browsers encode forms (`%XX`, `+` for
//! a space), so `?v=2`, `?v=%32` and `?a=1&v=2` all carry `v` = `2`, and an encoded `%26` or
//! `%3D` never splits a pair.

use http::{HeaderMap, HeaderName};
use regex::Regex;
use std::borrow::Cow;

/// What a field's value must be.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Present,
    Exact(Box<[u8]>),
    /// Anchored to the whole value; a value that is not UTF-8 never matches.
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::Exact(expected) => **expected == *value,
            ValueMatch::Regex(regex) => std::str::from_utf8(value).is_ok_and(|s| regex.is_match(s)),
        }
    }
}

/// One condition of a route's `match`.
#[derive(Debug, Clone)]
pub enum Condition {
    Header(HeaderName, ValueMatch),
    Cookie(Box<str>, ValueMatch),
    Query(Box<str>, ValueMatch),
}

/// The parts of a request the conditions read.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
}

impl Condition {
    pub(crate) fn matches(&self, fields: Fields<'_>) -> bool {
        match self {
            Condition::Header(name, want) => fields
                .headers
                .get_all(name)
                .iter()
                .any(|v| want.matches(v.as_bytes())),
            Condition::Cookie(name, want) => {
                cookies(fields.headers, name).any(|v| want.matches(v.as_bytes()))
            }
            Condition::Query(name, want) => fields.query.is_some_and(|query| {
                query_values(query, name.as_bytes()).any(|v| want.matches(&v))
            }),
        }
    }
}

/// Every value of cookie `name` in the request's `Cookie` headers, in order.
pub(crate) fn cookies<'h, 'n>(
    headers: &'h HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'h str> + use<'h, 'n> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Every decoded value of query parameter `name` (itself compared decoded); a parameter
/// without `=` has the empty value.
pub(crate) fn query_values<'q, 'n>(
    query: &'q str,
    name: &'n [u8],
) -> impl Iterator<Item = Cow<'q, [u8]>> + use<'q, 'n> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (*form_decode(key) == *name).then(|| form_decode(value))
        })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a `%` not
/// followed by two hex digits stays as it is.
fn form_decode(text: &str) -> Cow<'_, [u8]> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(text.as_bytes());
    }
    let spaced = text.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&spaced).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn query(q: &str, name: &str) -> Vec<String> {
        query_values(q, name.as_bytes())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .collect()
    }

    #[test]
    fn query_parameters_are_split_before_decoding() {
        assert_eq!(query("v=2", "v"), ["2"]);
        assert_eq!(query("a=1&v=%32&v=3", "v"), ["2", "3"]);
        assert_eq!(query("v", "v"), [""]);
        assert_eq!(query("x=a+b%20c", "x"), ["a b c"]);
        assert_eq!(query("%76=2", "v"), ["2"]);
        // An encoded separator is data, not structure.
        assert_eq!(query("a=1%26v%3D2", "v"), Vec::<String>::new());
        assert_eq!(query("a=1%26v%3D2", "a"), ["1&v=2"]);
        assert_eq!(query("vv=2&&=3", "v"), Vec::<String>::new());
        assert_eq!(query("v=%zz", "v"), ["%zz"]);
    }

    #[test]
    fn cookies_by_exact_name_across_fields() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=1; canary=yes"));
        headers.append("cookie", HeaderValue::from_static("Canary=no;canary=again"));
        assert_eq!(
            cookies(&headers, "canary").collect::<Vec<_>>(),
            ["yes", "again"]
        );
        assert_eq!(cookies(&headers, "Canary").collect::<Vec<_>>(), ["no"]);
        assert_eq!(cookies(&headers, "b").count(), 0);
    }

    #[test]
    fn any_value_of_a_repeated_field_matches() {
        let mut headers = HeaderMap::new();
        headers.append("x-v", HeaderValue::from_static("1"));
        headers.append("x-v", HeaderValue::from_static("2"));
        let fields = Fields {
            headers: &headers,
            query: Some("v=1&v=2"),
        };
        let two = || ValueMatch::Exact(b"2".to_vec().into_boxed_slice());
        assert!(Condition::Header(HeaderName::from_static("x-v"), two()).matches(fields));
        assert!(Condition::Query("v".into(), two()).matches(fields));
        let regex = ValueMatch::Regex(Regex::new("^(?:[0-9])$").unwrap());
        assert!(Condition::Query("v".into(), regex).matches(fields));
        assert!(!Condition::Query("w".into(), ValueMatch::Present).matches(fields));
        let none = Fields {
            headers: &headers,
            query: None,
        };
        assert!(!Condition::Query("v".into(), ValueMatch::Present).matches(none));
    }
}
