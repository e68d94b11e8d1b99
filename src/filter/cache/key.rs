//! Cache keys. A URL's key is the owner (route or named filter), scheme, authority with its
//! port, path and normalised query; extra key parts and the credential digest follow it, and
//! a variant's key adds the request's values of the headers its response varies on.

use super::policy::AuthorizedAnswers;
use super::spec::Cache;
use crate::context::RequestCtx;
use crate::filter::rate_limit::KeyPart;
use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderName};

/// A header value as key text, one to one: bytes that are not plain ASCII, and `%` itself,
/// are written `%XX`. (Replacing invalid UTF-8 would let two different values share a key.)
fn key_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if bytes.iter().all(|b| b.is_ascii() && *b != b'%') {
        // All ASCII: valid UTF-8 as it is.
        return std::borrow::Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default());
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for &byte in bytes {
        if byte.is_ascii() && byte != b'%' {
            out.push(byte as char);
        } else {
            use std::fmt::Write as _;
            let _ = write!(out, "%{byte:02X}");
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The authority the request addressed: its target's, else its `Host`.
pub(super) fn request_host(req: &Parts) -> &str {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

/// Request headers whose list items are case-insensitive and unordered (each carries its own
/// weight), so `gzip, br` and `BR,gzip` select the same variant.
const NEGOTIATION_HEADERS: [HeaderName; 3] = [
    http::header::ACCEPT_ENCODING,
    http::header::ACCEPT_LANGUAGE,
    http::header::ACCEPT_CHARSET,
];

impl Cache {
    /// The key of a URL alone: owner, scheme, authority (with its port), path and query
    /// (normalised as configured). Every key stored for the URL starts with it, and an answer
    /// fetched for one scheme is never served on the other.
    pub(super) fn url_key(
        &self,
        scheme: &str,
        host: &str,
        path: &str,
        query: Option<&str>,
    ) -> String {
        let mut key = String::with_capacity(64);
        key.push_str(&self.owner);
        key.push('\u{1f}');
        key.push_str(scheme);
        key.push_str("://");
        key.push_str(&host.to_ascii_lowercase());
        key.push_str(path);
        if let Some(query) = query {
            let mut params: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    let name = p.split_once('=').map_or(*p, |(n, _)| n);
                    !self.spec.query.ignore.iter().any(|i| i == name)
                })
                .collect();
            if self.spec.query.sort {
                params.sort_unstable();
            }
            if !params.is_empty() {
                key.push('?');
                key.push_str(&params.join("&"));
            }
        }
        key
    }

    /// The URL's key: owner, host, path, query (normalised as configured), extra parts, and
    /// with `cache_authorized: per_credential` a digest of the request's `Authorization`.
    pub(super) fn key(&self, req: &Parts, ctx: &RequestCtx) -> Option<String> {
        let mut key = self.url_key(
            ctx.scheme,
            request_host(req),
            req.uri.path(),
            req.uri.query(),
        );
        for part in &self.spec.key {
            key.push('\u{1f}');
            match part {
                KeyPart::Header(name) => {
                    // Every value of a repeated header: the upstream may read any of them.
                    for (i, value) in req.headers.get_all(name).iter().enumerate() {
                        if i > 0 {
                            key.push_str(", ");
                        }
                        key.push_str(&key_text(value.as_bytes()));
                    }
                }
                KeyPart::Claim(name) => key.push_str(&ctx.claim(name)?),
                KeyPart::ClientIp => key.push_str(&ctx.client_ip.to_string()),
                KeyPart::Route => key.push_str(ctx.route_name().unwrap_or("")),
            }
        }
        if self.spec.lifetimes.authorized == AuthorizedAnswers::PerCredential {
            let mut credentials = req.headers.get_all(AUTHORIZATION).iter().peekable();
            if credentials.peek().is_some() {
                let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
                for value in credentials {
                    digest.update(value.as_bytes());
                    digest.update(b"\n");
                }
                key.push_str("\u{1f}credentials:");
                for byte in digest.finish().as_ref() {
                    use std::fmt::Write as _;
                    let _ = write!(key, "{byte:02x}");
                }
            }
        }
        Some(key)
    }

    /// The variant's key: the URL's key plus the request's values of the varying headers.
    pub(super) fn variant_key(key: &str, names: &[HeaderName], request: &HeaderMap) -> String {
        let mut variant = String::with_capacity(key.len() + 32);
        variant.push_str(key);
        for name in names {
            variant.push('\u{1e}');
            // Equivalent values select the same variant: field lines combined, list items
            // trimmed, empty ones dropped; for content negotiation headers, whose items are
            // case-insensitive and weighted by their own q values, also lowercased and sorted.
            let mut items: Vec<String> = Vec::new();
            for value in request.get_all(name) {
                let text = key_text(value.as_bytes());
                let words = text.split(',').map(|item| item.split_whitespace());
                items.extend(
                    words
                        .map(|item| item.collect::<Vec<_>>().join(" "))
                        .filter(|item| !item.is_empty()),
                );
            }
            if NEGOTIATION_HEADERS.contains(name) {
                for item in &mut items {
                    item.make_ascii_lowercase();
                    item.retain(|c| c != ' ');
                }
                items.sort_unstable();
            }
            variant.push_str(&items.join(","));
        }
        variant
    }
}

/// What `DELETE /cache` removes.
pub(crate) struct Purge<'a> {
    /// Only this cache filter's entries (its route or named filter).
    pub(crate) owner: Option<&'a str>,
    /// `host/path?query` exactly (every variant of it).
    pub(crate) url: Option<&'a str>,
    /// `host/path` prefix, or `/path` prefix on any host.
    pub(crate) prefix: Option<&'a str>,
}

impl Purge<'_> {
    /// Whether the stored `key` (owner, then host, path and query, then variant parts)
    /// matches.
    pub(crate) fn matches(&self, key: &str) -> bool {
        let Some((owner, rest)) = key.split_once('\u{1f}') else {
            return false;
        };
        if self.owner.is_some_and(|o| o != owner) {
            return false;
        }
        let url = rest.split(['\u{1e}', '\u{1f}']).next().unwrap_or("");
        // Purges name URLs without their scheme: both schemes' entries go.
        let url = url.split_once("://").map_or(url, |(_, rest)| rest);
        if let Some(wanted) = self.url {
            return url == wanted.to_ascii_lowercase();
        }
        match self.prefix {
            Some(prefix) if prefix.starts_with('/') => url
                .find('/')
                .is_some_and(|slash| url[slash..].starts_with(prefix)),
            Some(prefix) => url.starts_with(&prefix.to_ascii_lowercase()),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_is_one_to_one() {
        let values: [&[u8]; 6] = [b"token\xff", b"token\xfe", b"token%FF", b"token%", b"token", b"t\xc3\xa9"];
        let texts: Vec<String> = values.iter().map(|v| key_text(v).into_owned()).collect();
        for (i, a) in texts.iter().enumerate() {
            for b in &texts[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(texts[0], "token%FF");
        assert_eq!(texts[2], "token%25FF");
        assert_eq!(key_text(b"plain value"), "plain value");
    }
}
