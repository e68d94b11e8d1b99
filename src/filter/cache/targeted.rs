//! Targeted cache control (RFC 9213): response fields such as `CDN-Cache-Control` that give
//! one class of caches directives of its own. The first field on the route's list that is
//! present, valid and not empty replaces `Cache-Control` and `Expires` for this cache.

use super::policy::{list_items, Directives, Rules};
use http::{HeaderMap, HeaderName};

/// A field on the target list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A Dictionary Structured Field (RFC 9651), as RFC 9213 defines them:
    /// `CDN-Cache-Control` or a cache-specific name.
    Structured(HeaderName),
    /// `Surrogate-Control` (Edge Architecture 1.0), in the `Cache-Control` list syntax, with
    /// `max-age=N+M` (M seconds of stale use on error) and per-device `;name` targets.
    Surrogate,
}

/// The device name `Surrogate-Control` directives may target.
pub(crate) const SURROGATE_DEVICE: &str = "portcullis";

impl Target {
    pub(crate) fn of(name: HeaderName) -> Target {
        if name == "surrogate-control" {
            Target::Surrogate
        } else {
            Target::Structured(name)
        }
    }

    pub(crate) fn name(&self) -> HeaderName {
        match self {
            Target::Structured(name) => name.clone(),
            Target::Surrogate => HeaderName::from_static("surrogate-control"),
        }
    }

    /// The field's directives, when it is present, valid and not empty.
    fn directives(&self, response: &HeaderMap) -> Option<Directives> {
        match self {
            Target::Structured(name) => structured(response, name),
            Target::Surrogate => surrogate(response),
        }
    }
}

/// The response's rules for a cache with `targets`: the first targeted field that applies,
/// else `Cache-Control` and `Expires`.
pub(crate) fn rules(response: &HeaderMap, targets: &[Target]) -> Rules {
    targets
        .iter()
        .find_map(|target| target.directives(response))
        .map(|directives| Rules {
            directives,
            targeted: true,
        })
        .unwrap_or_else(|| Rules::untargeted(response))
}

/// A targeted field parsed as a Dictionary (its lines joined). A parse error or an empty
/// dictionary means the field is ignored. Members are mapped as RFC 9213 §2.1 infers:
/// directives without a value are Boolean true, `private` and `no-cache` may instead carry a
/// String of field names (read as the plain directive), and delta-seconds are non-negative
/// Integers; a member of any other type is not used. Parameters are ignored.
fn structured(response: &HeaderMap, name: &HeaderName) -> Option<Directives> {
    let mut lines = response.get_all(name).iter();
    let first = lines.next()?;
    let mut text = first.as_bytes().to_vec();
    for line in lines {
        text.extend_from_slice(b", ");
        text.extend_from_slice(line.as_bytes());
    }
    let dictionary: sfv::Dictionary = sfv::Parser::new(&text).parse().ok()?;
    if dictionary.is_empty() {
        return None;
    }
    let mut directives = Directives::default();
    for (key, member) in &dictionary {
        let sfv::ListEntry::Item(item) = member else {
            continue;
        };
        let key = key.as_str();
        let value = &item.bare_item;
        if let Some(seconds) = value.as_integer().map(i64::from) {
            if seconds >= 0 && takes_seconds(key) {
                directives.set(key, Some(&seconds.to_string()));
            }
        } else if !takes_seconds(key)
            && (value.as_boolean() == Some(true)
                || (value.as_string().is_some() && matches!(key, "private" | "no-cache")))
        {
            directives.set(key, None);
        }
    }
    Some(directives)
}

/// Directives whose value is a number of seconds.
fn takes_seconds(name: &str) -> bool {
    matches!(
        name,
        "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error"
    )
}

/// `Surrogate-Control`: directives for another device (`;other`) are skipped,
/// `no-store-remote` counts as `no-store` (this cache is not the one next to the client), and
/// `max-age=N+M` allows M seconds of stale use when the origin fails.
fn surrogate(response: &HeaderMap) -> Option<Directives> {
    let mut directives = Directives::default();
    let mut any = false;
    let lines = response.get_all("surrogate-control").iter();
    for text in lines.filter_map(|v| v.to_str().ok()) {
        for item in list_items(text) {
            let (directive, device) = match item.split_once(';') {
                Some((directive, device)) => (directive.trim(), Some(device.trim())),
                None => (item, None),
            };
            if device.is_some_and(|d| !d.eq_ignore_ascii_case(SURROGATE_DEVICE)) {
                continue;
            }
            any = true;
            let (name, arg) = match directive.split_once('=') {
                Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                None => (directive, None),
            };
            match (name.to_ascii_lowercase().as_str(), arg) {
                ("no-store-remote", _) => directives.set("no-store", None),
                ("max-age", Some(arg)) => {
                    let (fresh, stale) = arg.split_once('+').unwrap_or((arg, ""));
                    directives.set("max-age", Some(fresh));
                    if !stale.is_empty() {
                        directives.set("stale-if-error", Some(stale));
                    }
                }
                (name, arg) => directives.set(name, arg),
            }
        }
    }
    any.then_some(directives)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn response(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn cdn() -> Vec<Target> {
        vec![Target::of(HeaderName::from_static("cdn-cache-control"))]
    }

    #[test]
    fn a_valid_targeted_field_replaces_cache_control() {
        let res = response(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=60, must-revalidate"),
        ]);
        let rules = rules(&res, &cdn());
        assert!(rules.targeted);
        assert_eq!(rules.directives.max_age, Some(60));
        assert!(rules.directives.must_revalidate && !rules.directives.no_store);
    }

    #[test]
    fn invalid_or_empty_targeted_fields_are_ignored() {
        // Not a Dictionary (uppercase key, trailing comma, bad token), or empty.
        for bad in ["MAX-AGE=60", "max-age=60,", "max-age=6 0", ""] {
            let res = response(&[("cache-control", "max-age=5"), ("cdn-cache-control", bad)]);
            let rules = rules(&res, &cdn());
            assert!(!rules.targeted, "{bad:?}");
            assert_eq!(rules.directives.max_age, Some(5), "{bad:?}");
        }
    }

    #[test]
    fn members_of_the_wrong_type_are_not_used() {
        let res = response(&[(
            "cdn-cache-control",
            "max-age=1.5, s-maxage=\"60\", no-store=?0, private=\"x\", stale-if-error=-1",
        )]);
        let d = rules(&res, &cdn()).directives;
        assert_eq!(
            (d.max_age, d.s_maxage, d.stale_if_error),
            (None, None, None)
        );
        assert!(!d.no_store && d.private);
        // A directive that is not registered still makes the field valid ("none").
        let res = response(&[("cache-control", "no-store"), ("cdn-cache-control", "none")]);
        assert_eq!(rules(&res, &cdn()).directives, Directives::default());
    }

    #[test]
    fn the_first_valid_field_on_the_list_wins() {
        let targets = vec![
            Target::of(HeaderName::from_static("portcullis-cache-control")),
            Target::of(HeaderName::from_static("cdn-cache-control")),
        ];
        let res = response(&[
            ("portcullis-cache-control", "max-age=1,"),
            ("cdn-cache-control", "max-age=2"),
        ]);
        assert_eq!(rules(&res, &targets).directives.max_age, Some(2));
    }

    #[test]
    fn surrogate_control_with_device_targets_and_stale_time() {
        let targets = vec![Target::Surrogate];
        let res = response(&[(
            "surrogate-control",
            "max-age=60+300, no-store;other-cdn, content=\"ESI/1.0\"",
        )]);
        let d = rules(&res, &targets).directives;
        assert_eq!((d.max_age, d.stale_if_error), (Some(60), Some(300)));
        assert!(!d.no_store);
        let res = response(&[("surrogate-control", "no-store-remote")]);
        assert!(rules(&res, &targets).directives.no_store);
        let res = response(&[("surrogate-control", "max-age=9;portcullis")]);
        assert_eq!(rules(&res, &targets).directives.max_age, Some(9));
    }
}
