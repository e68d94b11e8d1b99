//! RFC 9111 for a shared cache: what may be stored, for how long it is fresh, and how old a
//! stored response is. Pure functions over headers, so each rule is tested on its own.

use super::directives::AGE_OVERFLOW;
pub(crate) use super::directives::{list_items, Directives};
use http::header::{AGE, AUTHORIZATION, DATE, ETAG, EXPIRES, LAST_MODIFIED, SET_COOKIE, VARY};
use http::{HeaderMap, StatusCode};
use std::time::{Duration, SystemTime};

/// The caching rules a response gives this cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Rules {
    pub(crate) directives: Directives,
    /// They come from a targeted field (RFC 9213): `Cache-Control` and `Expires` do not count.
    pub(crate) targeted: bool,
}

impl Rules {
    /// The rules of `Cache-Control` and `Expires` alone.
    pub(crate) fn untargeted(response: &HeaderMap) -> Rules {
        Rules {
            directives: Directives::of(response),
            targeted: false,
        }
    }
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1, "heuristically
/// cacheable").
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses whose caching semantics this cache implements (for `must-understand`): the
/// heuristically cacheable ones and the temporary redirects.
fn understood(status: StatusCode) -> bool {
    heuristically_cacheable(status) || matches!(status.as_u16(), 302 | 303 | 307)
}

/// An HTTP date header, if present and valid.
pub(crate) fn date(headers: &HeaderMap, name: http::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?).ok()
}

/// The freshness the response itself states: `s-maxage`, else `max-age`, else `Expires`
/// minus `Date` (an invalid `Expires` means already stale; a targeted field ignores it).
pub(crate) fn explicit_freshness(headers: &HeaderMap, rules: &Rules) -> Option<Duration> {
    let cc = &rules.directives;
    if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(seconds));
    }
    if rules.targeted {
        return None;
    }
    let mut lines = headers.get_all(EXPIRES).iter();
    let expires = lines.next()?;
    // Two Expires lines: no way to tell which is meant, so stale (RFC 9111 §4.2.1).
    if lines.next().is_some() {
        return Some(Duration::ZERO);
    }
    let Some(expires) = expires
        .to_str()
        .ok()
        .and_then(|t| httpdate::parse_http_date(t).ok())
    else {
        return Some(Duration::ZERO);
    };
    let date = date(headers, DATE).unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// A response's own `Age` field (RFC 9111 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceivedAge {
    Absent,
    Valid(Duration),
    /// Anything but one field line of digits (a word, a sign, a fraction, a list,
    /// parameters, two lines): the response counts as stale rather than new.
    Invalid,
}

/// The received `Age`; values too large to count are capped as RFC 9111 §1.2.2 says.
pub(crate) fn received_age(headers: &HeaderMap) -> ReceivedAge {
    let mut lines = headers.get_all(AGE).iter();
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return if headers.contains_key(AGE) {
            ReceivedAge::Invalid
        } else {
            ReceivedAge::Absent
        };
    };
    let digits = value.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return ReceivedAge::Invalid;
    }
    let seconds = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .map_or(AGE_OVERFLOW, Duration::from_secs);
    ReceivedAge::Valid(seconds.min(AGE_OVERFLOW))
}

/// Share of the time since `Last-Modified` a response is taken to stay fresh (RFC 9111
/// §4.2.2 suggests 10%), and the most that is ever assumed.
const HEURISTIC_FRACTION: u32 = 10;
const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

/// Heuristic freshness for a response without explicit freshness: a tenth of the time since
/// it was last modified (by its own `Date`), at most a day; `None` without a usable
/// `Last-Modified` or when that rounds to nothing.
fn last_modified_heuristic(response: &HeaderMap) -> Option<Duration> {
    let modified = date(response, LAST_MODIFIED)?;
    let now = date(response, DATE).unwrap_or_else(SystemTime::now);
    let fresh = now.duration_since(modified).ok()? / HEURISTIC_FRACTION;
    (!fresh.is_zero()).then(|| fresh.min(HEURISTIC_MAX))
}

/// How old the response already was when it arrived: the larger of its `Age` and the time
/// since its `Date` (RFC 9111 §4.2.3, without the request delay). `None` when its `Age` is
/// invalid: such a response counts as stale.
pub(crate) fn initial_age(headers: &HeaderMap, arrived: SystemTime) -> Option<Duration> {
    let age = match received_age(headers) {
        ReceivedAge::Absent => Duration::ZERO,
        ReceivedAge::Valid(age) => age,
        ReceivedAge::Invalid => return None,
    };
    let apparent = date(headers, DATE)
        .and_then(|date| arrived.duration_since(date).ok())
        .unwrap_or_default();
    Some(age.max(apparent))
}

/// The route's say in freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    /// Used when the response states no freshness.
    pub(crate) ttl: Option<Duration>,
    /// Used whatever the response states.
    pub(crate) ttl_override: Option<Duration>,
    pub(crate) authorized: AuthorizedAnswers,
}

/// `cache_authorized`: what happens to answers to requests that carry `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum AuthorizedAnswers {
    /// RFC 9111 §3.5: stored only when the response allows sharing (`public`, `s-maxage`,
    /// `must-revalidate`), and then shared.
    #[default]
    Never,
    /// Stored, keyed by the credentials: an answer is only ever served to a request with the
    /// same `Authorization` value.
    PerCredential,
    /// Stored and shared by everyone, as if public: for content that is the same for every
    /// caller (the route says so).
    Shared,
}

/// Why a response was not stored (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    SetCookie,
    Authorized,
    VaryStar,
    NoFreshness,
    /// Stale from the start (`no-cache`, `max-age=0`, an `Expires` not after its `Date`) and
    /// without a validator to revalidate it with.
    MustRevalidateNow,
    /// Its age on arrival already exceeds its freshness, or its `Age` is invalid.
    StaleOnArrival,
    /// Its `Content-Length` is over the route's `max_object_size`.
    TooLarge,
}

impl NotStored {
    /// Whether the response itself is the reason, so that the next answer for the same key
    /// is likely not storable either (a `HEAD` or credentials are the request's doing).
    pub(crate) fn is_the_responses(self) -> bool {
        !matches!(self, NotStored::Method | NotStored::Authorized)
    }
}

/// Whether the response has a validator a stored copy can be revalidated with.
fn has_validator(response: &HeaderMap) -> bool {
    response.contains_key(ETAG) || response.contains_key(LAST_MODIFIED)
}

/// Whether a response to a request with `request` headers may be stored, and for how long it
/// is fresh (`rules` are the response's, from [`Rules::untargeted`] or a targeted field). A
/// response that is stale from the start is stored, with no freshness, only when it has a
/// validator: every use revalidates it (RFC 9111 §4.3).
pub(crate) fn storable(
    head_only: bool,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    rules: &Rules,
    lifetimes: &Lifetimes,
) -> Result<Duration, NotStored> {
    if head_only {
        return Err(NotStored::Method);
    }
    let req = Directives::of(request);
    let res = &rules.directives;
    if req.no_store || res.no_store {
        return Err(NotStored::NoStore);
    }
    if res.private {
        return Err(NotStored::Private);
    }
    if response.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if request.contains_key(AUTHORIZATION)
        && lifetimes.authorized == AuthorizedAnswers::Never
        && !(res.public || res.s_maxage.is_some() || res.must_revalidate)
    {
        return Err(NotStored::Authorized);
    }
    if response
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim() == "*")
    {
        return Err(NotStored::VaryStar);
    }
    if status == StatusCode::PARTIAL_CONTENT || status.is_informational() {
        return Err(NotStored::Status);
    }
    // RFC 9111 §5.2.2.3: a status whose caching rules the cache does not know is not stored.
    if res.must_understand && !understood(status) {
        return Err(NotStored::Status);
    }
    if let Some(forced) = lifetimes.ttl_override {
        return Ok(forced);
    }
    // no-cache: may be stored, but must be revalidated before every use (§5.2.2.4).
    let stated = if res.no_cache {
        Some(Duration::ZERO)
    } else {
        explicit_freshness(response, rules)
    };
    match stated {
        Some(fresh) if fresh.is_zero() && has_validator(response) => Ok(Duration::ZERO),
        Some(fresh) if fresh.is_zero() => Err(NotStored::MustRevalidateNow),
        Some(fresh) => Ok(fresh),
        None if heuristically_cacheable(status) => lifetimes
            .ttl
            .or_else(|| last_modified_heuristic(response))
            .ok_or(NotStored::NoFreshness),
        None => Err(NotStored::Status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const ROUTE: Lifetimes = Lifetimes {
        ttl: Some(Duration::from_secs(30)),
        ttl_override: None,
        authorized: AuthorizedAnswers::Never,
    };

    fn decide(
        req: &[(&str, &str)],
        status: u16,
        res: &[(&str, &str)],
    ) -> Result<Duration, NotStored> {
        decide_on(&ROUTE, req, status, res)
    }

    fn decide_on(
        route: &Lifetimes,
        req: &[(&str, &str)],
        status: u16,
        res: &[(&str, &str)],
    ) -> Result<Duration, NotStored> {
        let res = headers(res);
        storable(
            false,
            &headers(req),
            StatusCode::from_u16(status).unwrap(),
            &res,
            &Rules::untargeted(&res),
            route,
        )
    }

    #[test]
    fn directives_parse_merged_and_case_insensitive() {
        let cc = Directives::of(&headers(&[
            ("cache-control", "Public, MAX-AGE=60"),
            (
                "cache-control",
                "s-maxage=\"120\", stale-if-error=300, private=\"set-cookie\"",
            ),
        ]));
        assert!(cc.public && cc.private);
        assert_eq!(
            (cc.max_age, cc.s_maxage, cc.stale_if_error),
            (Some(60), Some(120), Some(300))
        );
    }

    #[test]
    fn commas_in_quoted_strings_and_invalid_or_repeated_freshness() {
        let parse = |text: &str| Directives::parse([text]);
        let d = parse(r#"max-age=5, ext="a, max-age=600, \"b, no-store", private="x""#);
        assert_eq!(d.max_age, Some(5));
        assert!(!d.no_store && d.private);
        for stale in [
            "max-age=abc",
            "max-age=-1",
            "max-age=1.5",
            "max-age",
            "max-age=",
            "max-age=60, max-age=10",
        ] {
            assert_eq!(parse(stale).max_age, Some(0), "{stale}");
        }
        assert_eq!(parse("max-age=60, max-age=60").max_age, Some(60));
        assert_eq!(parse("max-age=\"60\"").max_age, Some(60));
        assert_eq!(
            parse("max-age=99999999999999999999999").max_age,
            Some(AGE_OVERFLOW.as_secs())
        );
        assert_eq!(parse("stale-if-error=x").stale_if_error, None);
        let items: Vec<&str> = list_items(r#" a, ,b="1,2" ,c="\",", "#).collect();
        assert_eq!(items, ["a", r#"b="1,2""#, r#"c="\",""#]);
    }

    #[test]
    fn freshness_prefers_s_maxage_then_max_age_then_expires_then_the_route() {
        assert_eq!(
            decide(&[], 200, &[("cache-control", "max-age=60, s-maxage=5")]),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            decide(&[], 200, &[("cache-control", "max-age=60")]),
            Ok(Duration::from_secs(60))
        );
        let date = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let expires =
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_090));
        assert_eq!(
            decide(&[], 200, &[("date", &date), ("expires", &expires)]),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(
            decide(&[], 200, &[("expires", "0")]),
            Err(NotStored::MustRevalidateNow)
        );
        assert_eq!(decide(&[], 200, &[]), Ok(Duration::from_secs(30)));
        // A 500 is only stored with explicit freshness.
        assert_eq!(decide(&[], 500, &[]), Err(NotStored::Status));
        assert_eq!(
            decide(&[], 500, &[("cache-control", "max-age=5")]),
            Ok(Duration::from_secs(5))
        );
    }

    #[test]
    fn what_is_never_stored() {
        assert_eq!(
            decide(&[("cache-control", "no-store")], 200, &[]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            decide(&[], 200, &[("cache-control", "no-store, max-age=60")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            decide(&[], 200, &[("cache-control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            decide(&[], 200, &[("set-cookie", "a=b")]),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            decide(&[], 200, &[("vary", "accept, *")]),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            decide(&[], 206, &[("cache-control", "max-age=60")]),
            Err(NotStored::Status)
        );
        assert_eq!(
            decide(&[], 200, &[("cache-control", "no-cache")]),
            Err(NotStored::MustRevalidateNow)
        );
    }

    #[test]
    fn stale_from_the_start_is_kept_only_with_a_validator() {
        for cc in ["no-cache", "max-age=0", "no-cache, max-age=60"] {
            assert_eq!(
                decide(&[], 200, &[("cache-control", cc), ("etag", "\"v\"")]),
                Ok(Duration::ZERO),
                "{cc}"
            );
            assert_eq!(
                decide(&[], 200, &[("cache-control", cc)]),
                Err(NotStored::MustRevalidateNow),
                "{cc}"
            );
        }
        assert_eq!(
            decide(
                &[],
                200,
                &[
                    ("expires", "0"),
                    ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
                ]
            ),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn authorized_requests_need_the_response_to_allow_sharing() {
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            decide(&auth, 200, &[("cache-control", "max-age=60")]),
            Err(NotStored::Authorized)
        );
        assert!(decide(&auth, 200, &[("cache-control", "public, max-age=60")]).is_ok());
        assert!(decide(&auth, 200, &[("cache-control", "s-maxage=60")]).is_ok());
        let route = Lifetimes {
            authorized: AuthorizedAnswers::PerCredential,
            ..ROUTE
        };
        assert!(decide_on(&route, &auth, 200, &[]).is_ok());
    }

    #[test]
    fn ttl_override_replaces_stated_freshness() {
        let route = Lifetimes {
            ttl_override: Some(Duration::from_secs(7)),
            ..ROUTE
        };
        assert_eq!(
            decide_on(&route, &[], 200, &[("cache-control", "max-age=600")]),
            Ok(Duration::from_secs(7))
        );
        // Never for what must not be shared.
        assert_eq!(
            decide_on(&route, &[], 200, &[("cache-control", "private")]),
            Err(NotStored::Private)
        );
    }

    #[test]
    fn age_is_the_larger_of_age_and_date() {
        let arrived = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let date = httpdate::fmt_http_date(arrived - Duration::from_secs(20));
        assert_eq!(
            initial_age(&headers(&[("date", &date), ("age", "5")]), arrived),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            initial_age(&headers(&[("date", &date), ("age", "50")]), arrived),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            initial_age(&HeaderMap::new(), arrived),
            Some(Duration::ZERO)
        );
        assert_eq!(initial_age(&headers(&[("age", "x")]), arrived), None);
    }

    #[test]
    fn only_a_single_run_of_digits_is_a_valid_age() {
        assert_eq!(received_age(&HeaderMap::new()), ReceivedAge::Absent);
        assert_eq!(
            received_age(&headers(&[("age", "0")])),
            ReceivedAge::Valid(Duration::ZERO)
        );
        assert_eq!(
            received_age(&headers(&[("age", "99999999999999999999999")])),
            ReceivedAge::Valid(AGE_OVERFLOW)
        );
        for bad in ["", "x", "-1", "1.0", "1,2", "1;a=b", "+1", " 1x"] {
            assert_eq!(
                received_age(&headers(&[("age", bad)])),
                ReceivedAge::Invalid,
                "{bad:?}"
            );
        }
        assert_eq!(
            received_age(&headers(&[("age", "1"), ("age", "1")])),
            ReceivedAge::Invalid
        );
    }
}
