//! §4.2.1 and §5.2.2: how long a response is fresh. `s-maxage` over `max-age` over `Expires`;
//! directive spellings a cache must read, and invalid or contradictory freshness read as
//! stale (never as the route's `ttl`). The route here sets a `ttl`, so a response wrongly read
//! as having no freshness at all would be stored.

use super::*;

fn cc(value: &str) -> String {
    format!("h.cache-control={}", enc(value))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` in the two obsolete formats recipients must accept
/// (RFC 9110 §5.6.7): RFC 850 and asctime.
fn obsolete_formats(imf: &str) -> (String, String) {
    let parts: Vec<&str> = imf.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let (weekday, day, month, year, time) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    let long_day = match weekday {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    let rfc850 = format!("{long_day}, {day}-{month}-{} {time} GMT", &year[2..]);
    let asctime = format!(
        "{weekday} {month} {:>2} {time} {year}",
        day.trim_start_matches('0')
    );
    (rfc850, asctime)
}

#[tokio::test]
async fn directive_spellings_and_invalid_values() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
    let mut client = Client::http1(gw.addr()).await;
    let cases = [
        ("max-age=60", true),
        ("MAX-AGE=60", true),
        ("max-age=\"60\"", true),
        ("max-age=60, max-age=60", true),
        ("max-age=99999999999999999999", true),
        ("s-maxage=60, max-age=0", true),
        ("public, ext=\"a, b\", max-age=60", true),
        // Not a number, or two different values: stale.
        ("max-age=60, max-age=10", false),
        ("max-age=abc", false),
        ("max-age=-1", false),
        ("max-age=1.5", false),
        ("max-age", false),
        ("s-maxage=0, max-age=60", false),
        // A quoted comma does not start a directive.
        ("max-age=0, ext=\"x, max-age=600\"", false),
    ];
    for (i, (value, fresh)) in cases.iter().enumerate() {
        let path = format!("/cc{i}");
        let target = format!("{path}?{}", cc(value));
        fetch(&mut client, &target, &[]).await;
        let second = fetch(&mut client, &target, &[]).await;
        assert_eq!(x_cache(&second) == "HIT", *fresh, "{value}");
        assert_eq!(origin.count(&path), if *fresh { 1 } else { 2 }, "{value}");
    }
}

#[tokio::test]
async fn expires_in_every_date_format_and_invalid_ones() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
    let mut client = Client::http1(gw.addr()).await;
    let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(600));
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(600));
    let (rfc850, asctime) = obsolete_formats(&future);
    let expires = |value: &str| format!("h.expires={}", enc(value));
    let cases = [
        (expires(&future), true),
        (expires(&rfc850), true),
        (expires(&asctime), true),
        (expires(&past), false),
        (expires("0"), false),
        (expires("-1"), false),
        (expires("soon"), false),
        // Two lines: which one was meant is unknown.
        (format!("{}&{}", expires(&future), expires(&future)), false),
        // max-age wins over Expires, both ways.
        (format!("{}&{}", expires(&future), cc("max-age=0")), false),
        (format!("{}&{}", expires(&past), cc("max-age=60")), true),
    ];
    for (i, (query, fresh)) in cases.iter().enumerate() {
        let path = format!("/ex{i}");
        let target = format!("{path}?{query}");
        fetch(&mut client, &target, &[]).await;
        let second = fetch(&mut client, &target, &[]).await;
        assert_eq!(x_cache(&second) == "HIT", *fresh, "{query}");
    }
}
