//! Cache policy: `Cache-Control`, `Age`, `Expires`/`Date`, `Vary` and `If-None-Match` as the
//! cache filter reads them, and its storable and not-modified decisions. Oracles: never
//! storable with `no-store` (and always refused for it), `private`, `Set-Cookie`, `Vary: *`,
//! a 206 or an answer to credentials the response does not share; an invalid `Age` makes the
//! response stale, a valid one is counted in full; a 304 only for a tag the request names.

use super::fields::header_lines;
use crate::filter::cache::not_modified;
use crate::filter::cache::policy::{
    initial_age, received_age, storable, AuthorizedAnswers, Directives, Lifetimes, NotStored,
    ReceivedAge, Rules,
};
use http::header::{AGE, AUTHORIZATION, ETAG, IF_NONE_MATCH, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue, StatusCode};

use std::time::{Duration, SystemTime};

const STATUSES: [u16; 8] = [200, 203, 204, 206, 301, 404, 101, 500];

pub fn cache(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let status = StatusCode::from_u16(STATUSES[usize::from(choice) % STATUSES.len()])
        .unwrap_or(StatusCode::OK);
    let (request, response) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (header_lines(&rest[..at]), header_lines(&rest[at + 2..])),
        None => (HeaderMap::new(), header_lines(rest)),
    };
    let rules = Rules::untargeted(&response);
    let route = Lifetimes {
        ttl: (choice & 0x80 != 0).then_some(Duration::from_secs(30)),
        ttl_override: None,
        authorized: AuthorizedAnswers::Never,
    };
    let decision = storable(false, &request, status, &response, &rules, &route);
    let no_store = Directives::of(&request).no_store || rules.directives.no_store;
    assert_eq!(
        no_store,
        decision == Err(NotStored::NoStore),
        "no-store decided {decision:?}"
    );
    if decision.is_ok() {
        let res = &rules.directives;
        assert!(!res.private, "private stored");
        assert!(!response.contains_key(SET_COOKIE), "Set-Cookie stored");
        assert!(
            status != StatusCode::PARTIAL_CONTENT && !status.is_informational(),
            "{status} stored"
        );
        let vary_star = response
            .get_all(VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|name| name.trim() == "*"));
        assert!(!vary_star, "Vary: * stored");
        if request.contains_key(AUTHORIZATION) {
            assert!(
                res.public || res.s_maxage.is_some() || res.must_revalidate,
                "credentials' answer stored"
            );
        }
    }
    let age_lines: Vec<&HeaderValue> = response.get_all(AGE).iter().collect();
    let now = SystemTime::now();
    match (received_age(&response), age_lines.as_slice()) {
        (ReceivedAge::Absent, lines) => assert!(lines.is_empty()),
        (ReceivedAge::Valid(age), [line]) => {
            let digits = line.as_bytes();
            assert!(
                !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
                "Age {line:?} taken"
            );
            let initial = initial_age(&response, now);
            assert!(
                initial.is_some_and(|initial| initial >= age),
                "Age {age:?} lost: {initial:?}"
            );
        }
        (ReceivedAge::Valid(_), lines) => panic!("{} Age lines taken as one", lines.len()),
        (ReceivedAge::Invalid, _) => {
            assert_eq!(initial_age(&response, now), None, "invalid Age not stale")
        }
    }
    if request.contains_key(IF_NONE_MATCH) && not_modified(&request, &response) {
        let etag = response.get(ETAG).and_then(|e| e.to_str().ok()).map(opaque);
        let named = request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|list| {
                list.trim() == "*" || entity_tags(list).iter().any(|tag| Some(*tag) == etag)
            });
        assert!(
            named,
            "304 for {:?} against {etag:?}",
            request.get(IF_NONE_MATCH)
        );
    }
}

/// An entity tag without its weakness mark: what weak comparison compares. This and
/// `entity_tags` are written apart from the cache's own reading, as the oracle.
fn opaque(tag: &str) -> &str {
    let tag = tag.trim();
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// The entity tags of an `If-None-Match` list (RFC 9110 §8.8.3): `[W/]"…"`, comma separated,
/// where a comma inside the quotes belongs to the tag.
fn entity_tags(list: &str) -> Vec<&str> {
    let mut tags = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let body = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(inner) = body.strip_prefix('"') else {
            return tags;
        };
        let Some(end) = inner.find('"') else {
            return tags;
        };
        tags.push(&body[..end + 2]);
        rest = &inner[end + 1..];
    }
}
