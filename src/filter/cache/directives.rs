//! `Cache-Control` directives as a shared cache reads them: the list syntax with quoted
//! strings, delta-seconds, and what invalid or repeated freshness means.

use http::header::CACHE_CONTROL;
use http::HeaderMap;
use std::time::Duration;

/// The `Age` a cache uses when the received value overflows (RFC 9111 §1.2.2).
pub(super) const AGE_OVERFLOW: Duration = Duration::from_secs(1 << 31);

/// The `Cache-Control` directives a shared cache acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
    pub(crate) must_understand: bool,
    /// Request: stale answers are acceptable up to this many seconds past their freshness
    /// (`u64::MAX` when no number is given).
    pub(crate) max_stale: Option<u64>,
    /// Request: the answer must stay fresh for at least this many more seconds.
    pub(crate) min_fresh: Option<u64>,
    /// Request: answer from the cache or not at all (504).
    pub(crate) only_if_cached: bool,
    /// Intermediaries must not change the content (no compression).
    pub(crate) no_transform: bool,
}

impl Directives {
    /// All `Cache-Control` fields of `headers`, comma lists merged; names are
    /// case-insensitive; `private="x"` and `no-cache="x"` count as the plain directive (the
    /// stricter reading).
    pub(crate) fn of(headers: &HeaderMap) -> Directives {
        Directives::parse(
            headers
                .get_all(CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    }

    /// Directives from field lines in the `Cache-Control` syntax: commas inside a quoted
    /// string do not separate directives, and quoted values are unquoted.
    pub(crate) fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Directives {
        let mut d = Directives::default();
        for text in lines {
            for directive in list_items(text) {
                let (name, arg) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(unquote(arg.trim()))),
                    None => (directive, None),
                };
                d.set(&name.to_ascii_lowercase(), arg.as_deref());
            }
        }
        d
    }

    /// Records one directive; `arg` is its value, if it has one. A freshness value that is
    /// not a number, or that contradicts an earlier one, makes the response stale (RFC 9111
    /// §4.2.1 lets a cache treat invalid or repeated freshness so); other unusable numbers
    /// are ignored.
    pub(crate) fn set(&mut self, name: &str, arg: Option<&str>) {
        let seconds = || arg.and_then(delta_seconds);
        let freshness = |earlier: Option<u64>| {
            let value = seconds().unwrap_or(0);
            match earlier {
                Some(earlier) if earlier != value => Some(0),
                _ => Some(value),
            }
        };
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "max-age" => self.max_age = freshness(self.max_age),
            "s-maxage" => self.s_maxage = freshness(self.s_maxage),
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "stale-while-revalidate" => self.stale_while_revalidate = seconds(),
            "stale-if-error" => self.stale_if_error = seconds(),
            "must-understand" => self.must_understand = true,
            "max-stale" => {
                self.max_stale = match arg {
                    None => Some(u64::MAX),
                    Some(_) => seconds().or(self.max_stale),
                }
            }
            "min-fresh" => self.min_fresh = seconds().or(self.min_fresh),
            "only-if-cached" => self.only_if_cached = true,
            "no-transform" => self.no_transform = true,
            _ => {}
        }
    }
}

/// delta-seconds (RFC 9111 §1.2.2): digits only; a value too large to count is 2^31.
fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .map_or(AGE_OVERFLOW.as_secs(), |n| n.min(AGE_OVERFLOW.as_secs())),
    )
}

/// The trimmed, non-empty items of a comma-separated list, where a comma inside a quoted
/// string (with its backslash escapes) separates nothing.
pub(crate) fn list_items(text: &str) -> ListItems<'_> {
    ListItems { rest: text }
}

pub(crate) struct ListItems<'a> {
    rest: &'a str,
}

impl<'a> Iterator for ListItems<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        while !self.rest.is_empty() {
            let (mut quoted, mut escaped) = (false, false);
            let mut end = self.rest.len();
            for (at, byte) in self.rest.bytes().enumerate() {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => {
                        end = at;
                        break;
                    }
                    _ => {}
                }
            }
            let item = self.rest[..end].trim();
            self.rest = self.rest.get(end + 1..).unwrap_or("");
            if !item.is_empty() {
                return Some(item);
            }
        }
        None
    }
}

/// A directive's value without its quotes and escapes.
fn unquote(value: &str) -> std::borrow::Cow<'_, str> {
    match value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        Some(inner) if inner.contains('\\') => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or(c)
                } else {
                    c
                });
            }
            out.into()
        }
        Some(inner) => inner.into(),
        None => value.into(),
    }
}
