//! Finding the request's token: in the places its providers read from, exactly once.

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::HeaderName;

/// Why a token was refused: logged, never told to the client in detail.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    /// The request carries its token ambiguously (a repeated field, several places).
    Malformed(&'static str),
    Invalid(&'static str),
    /// The token names a `kid` no current key has.
    UnknownKid,
    Forbidden(&'static str),
    /// No key set has ever been loaded (the JWKS endpoint has been unreachable).
    Unavailable,
}

/// Where a provider's tokens are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

/// The one token the request carries in the given places. A place that holds more than one
/// value (two `Authorization` headers, two cookies or query parameters of the same name), or
/// two places holding different tokens, is a malformed request (RFC 6750 §3.1): the gateway
/// would verify one value while the upstream might read the other.
pub(crate) fn find_token<'r>(req: &'r Parts, sources: &[TokenSource]) -> Result<&'r str, Refusal> {
    let mut found: Option<&str> = None;
    for source in sources {
        let token = match source {
            TokenSource::Bearer => only(req.headers.get_all(AUTHORIZATION).iter())?
                .and_then(crate::context::bearer)
                .and_then(|token| std::str::from_utf8(token).ok())
                .map(str::trim),
            TokenSource::Header(name) => only(req.headers.get_all(name).iter())?
                .and_then(|v| v.to_str().ok())
                .map(str::trim),
            TokenSource::Cookie(name) => only(crate::router::cookies(&req.headers, name))?,
            TokenSource::Query(name) => only(query_values(req.uri.query().unwrap_or(""), name))?,
        };
        match (found, token.filter(|t| !t.is_empty())) {
            (Some(first), Some(other)) if first != other => {
                return Err(Refusal::Malformed("different tokens in several places"))
            }
            (None, Some(token)) => found = Some(token),
            _ => {}
        }
    }
    found.ok_or(Refusal::Missing)
}

/// The single item of `items`, `None` when there is none; more than one is refused.
fn only<T>(mut items: impl Iterator<Item = T>) -> Result<Option<T>, Refusal> {
    let first = items.next();
    match items.next() {
        Some(_) => Err(Refusal::Malformed("token field repeated")),
        None => Ok(first),
    }
}

/// The values of query parameter `name`. Names are compared after percent-decoding, so
/// `access%5Ftoken` counts as a second `access_token` (as an upstream that decodes sees it).
fn query_values<'q, 'n>(
    query: &'q str,
    name: &'n str,
) -> impl Iterator<Item = &'q str> + use<'q, 'n> {
    query.split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        percent_decoded_eq(key, name).then_some(value)
    })
}

/// Whether `encoded`, percent-decoded (and `+` read as a space), equals `plain`.
fn percent_decoded_eq(encoded: &str, plain: &str) -> bool {
    let (mut bytes, mut want) = (encoded.as_bytes(), plain.as_bytes());
    loop {
        let (byte, rest) = match bytes {
            [] => return want.is_empty(),
            [b'%', h, l, rest @ ..] => match (hex(*h), hex(*l)) {
                (Some(h), Some(l)) => (h << 4 | l, rest),
                _ => (b'%', &bytes[1..]),
            },
            [b'+', rest @ ..] => (b' ', rest),
            [b, rest @ ..] => (*b, rest),
        };
        match want {
            [w, more @ ..] if *w == byte => (bytes, want) = (rest, more),
            _ => return false,
        }
    }
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}
