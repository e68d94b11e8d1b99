//! Traffic management: routes matched by header fields, cookies and query parameters.

use crate::support::*;
use std::time::Duration;

/// Routes that answer with their own name, one per kind of condition, above a catch-all.
const MATCH_ROUTES: &str = "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
routes:\n\
\x20 - { name: cookie, match: { cookies: [{ name: canary, value: \"yes\" }] }, respond: { body: cookie } }\n\
\x20 - { name: cookie-present, match: { cookies: [{ name: beta }] }, respond: { body: cookie-present } }\n\
\x20 - { name: query, match: { query: [{ name: v, value: \"2\" }] }, respond: { body: query } }\n\
\x20 - { name: query-regex, match: { query: [{ name: tenant, regex: \"[a-z]+\" }] }, respond: { body: query-regex } }\n\
\x20 - { name: header, match: { headers: [{ name: x-canary, value: \"1\" }] }, respond: { body: header } }\n\
\x20 - { name: header-regex, match: { headers: [{ name: x-tenant, regex: \"[a-z]+\" }] }, respond: { body: header-regex } }\n\
\x20 - { name: header-present, match: { headers: [{ name: x-debug }] }, respond: { body: header-present } }\n\
\x20 - { name: all, respond: { body: all } }\n";

async fn routed(client: &mut Client, path: &str, header: Option<(&str, &str)>) -> String {
    let mut request = req("GET", path);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    client.request(request.body(empty()).unwrap()).await.text()
}

#[tokio::test]
async fn routes_match_by_cookie_query_parameter_and_header() {
    let gw = gateway(MATCH_ROUTES);
    let mut c = Client::http1(gw.addr()).await;
    let cookie = |value| Some(("cookie", value));
    assert_eq!(routed(&mut c, "/", cookie("canary=yes")).await, "cookie");
    assert_eq!(
        routed(&mut c, "/", cookie("a=1; canary=yes")).await,
        "cookie"
    );
    assert_eq!(routed(&mut c, "/", cookie("canary=no")).await, "all");
    // Cookie names are case-sensitive, and a value is compared as sent.
    assert_eq!(routed(&mut c, "/", cookie("Canary=yes")).await, "all");
    assert_eq!(routed(&mut c, "/", cookie("canary=yes2")).await, "all");
    assert_eq!(routed(&mut c, "/", cookie("beta=")).await, "cookie-present");

    assert_eq!(routed(&mut c, "/x?v=2", None).await, "query");
    assert_eq!(routed(&mut c, "/x?a=1&v=%32", None).await, "query");
    assert_eq!(routed(&mut c, "/x?v=3&v=2", None).await, "query");
    assert_eq!(routed(&mut c, "/x?v=3", None).await, "all");
    assert_eq!(routed(&mut c, "/x?vv=2", None).await, "all");
    // An encoded `&` or `=` is data: no parameter `v` here.
    assert_eq!(routed(&mut c, "/x?a=1%26v%3D2", None).await, "all");
    assert_eq!(routed(&mut c, "/x?tenant=acme", None).await, "query-regex");
    assert_eq!(routed(&mut c, "/x?tenant=ACME", None).await, "all");
    assert_eq!(routed(&mut c, "/x?tenant=acme1", None).await, "all");

    assert_eq!(routed(&mut c, "/", Some(("x-canary", "1"))).await, "header");
    assert_eq!(routed(&mut c, "/", Some(("x-canary", "11"))).await, "all");
    assert_eq!(
        routed(&mut c, "/", Some(("x-tenant", "acme"))).await,
        "header-regex"
    );
    assert_eq!(routed(&mut c, "/", Some(("x-tenant", "Acme"))).await, "all");
    assert_eq!(
        routed(&mut c, "/", Some(("x-debug", ""))).await,
        "header-present"
    );
    assert_eq!(routed(&mut c, "/", None).await, "all");
}

#[tokio::test]
async fn the_route_table_shows_the_conditions() {
    let gw = gateway(MATCH_ROUTES);
    let routes = get(gw.admin(), "/routes").await.json();
    let shown: Vec<String> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["match"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        shown.contains(&"prefix=/ cookie:canary=yes".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"prefix=/ query:tenant~[a-z]+".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"prefix=/ header:x-debug".to_string()),
        "{shown:?}"
    );
}

#[test]
fn match_conditions_are_checked_with_their_key_paths() {
    let errors = config_errors(
        "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
         routes:\n\
         \x20 - name: a\n    match:\n      cookies: [{ name: \"bad name\" }, { name: c, value: x, regex: y }]\n      query: [{ name: \"\" }, { name: q, regex: \"(\" }]\n    respond: { body: a }\n",
    );
    assert_eq!(
        errors,
        [
            "routes[0].match.cookies[0].name: invalid cookie name \"bad name\" (line 5)",
            "routes[0].match.cookies[1]: use either value or regex, not both (line 5)",
            "routes[0].match.query[0].name: invalid query parameter name \"\" (line 6)",
            "routes[0].match.query[1].regex: invalid regex \"(\": unclosed group (line 6)",
        ]
    );
}

/// Two upstreams `v1` and `v2` and one route splitting between them.
fn split_yaml(v1: SocketAddr, v2: SocketAddr, weights: (u32, u32), extra: &str) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n\
         \x20 v1: {{ discovery: {{ static: [{v1}] }}, timeouts: {{ connect: 1s, response: 2s, idle: 2s }} }}\n\
         \x20 v2: {{ discovery: {{ static: [{v2}] }}, timeouts: {{ connect: 1s, response: 2s, idle: 2s }} }}\n\
         routes:\n\
         \x20 - name: api\n    upstream:\n      split: [{{ upstream: v1, weight: {} }}, {{ upstream: v2, weight: {} }}]\n{extra}",
        weights.0, weights.1
    )
}

use std::collections::HashMap;
use std::net::SocketAddr;

/// Which upstream saw each path, by the paths each recorded.
fn served_by(v1: &Upstream, v2: &Upstream) -> HashMap<String, &'static str> {
    let mut out = HashMap::new();
    for (up, name) in [(v1, "v1"), (v2, "v2")] {
        for seen in up.seen() {
            out.insert(seen.path, name);
        }
    }
    out
}

#[tokio::test]
async fn a_weighted_split_sends_each_upstream_its_share() {
    let (v1, v2) = (upstream().run().await, upstream().run().await);
    let gw = gateway(&split_yaml(v1.addr, v2.addr, (90, 10), ""));
    let mut client = Client::http1(gw.addr()).await;
    for i in 0..2000 {
        assert_eq!(client.get(&format!("/r/{i}")).await.status, 200);
    }
    let share = v2.requests() as f64 / 2000.0;
    assert_eq!(v1.requests() + v2.requests(), 2000);
    assert!((0.07..=0.13).contains(&share), "v2 got {share}");
    let metrics = get(gw.admin(), "/metrics").await.text();
    let line = format!(
        "split_requests_total{{route=\"api\",upstream=\"v2\"}} {}",
        v2.requests()
    );
    assert!(metrics.contains(&line), "{line} not in metrics");
    let routes = get(gw.admin(), "/routes").await.json();
    assert_eq!(routes["routes"][0]["action"], "split v1:90,v2:10");
}

#[tokio::test]
async fn a_zero_weight_drains_an_upstream() {
    let (v1, v2) = (upstream().run().await, upstream().run().await);
    let gw = gateway(&split_yaml(v1.addr, v2.addr, (0, 1), ""));
    let mut client = Client::http1(gw.addr()).await;
    for i in 0..200 {
        assert_eq!(client.get(&format!("/r/{i}")).await.status, 200);
    }
    assert_eq!((v1.requests(), v2.requests()), (0, 200));
}

/// Sends `/k/{key}/{round}` with cookie `user={key}` for each key; returns each key's upstream.
async fn assign(
    gw: &TestGateway,
    v1: &Upstream,
    v2: &Upstream,
    keys: std::ops::Range<usize>,
    round: usize,
) -> Vec<&'static str> {
    assign_by(gw, v1, v2, keys, round, |key| {
        ("cookie", format!("user={key}"))
    })
    .await
}

/// As [`assign`], with the header field `key_field` makes for each key.
async fn assign_by(
    gw: &TestGateway,
    v1: &Upstream,
    v2: &Upstream,
    keys: std::ops::Range<usize>,
    round: usize,
    key_field: impl Fn(usize) -> (&'static str, String),
) -> Vec<&'static str> {
    let mut client = Client::http1(gw.addr()).await;
    for key in keys.clone() {
        let (name, value) = key_field(key);
        let request = req("GET", &format!("/k/{key}/{round}"))
            .header(name, value)
            .body(empty())
            .unwrap();
        assert_eq!(client.request(request).await.status, 200);
    }
    let served = served_by(v1, v2);
    keys.map(|key| served[&format!("/k/{key}/{round}")])
        .collect()
}

#[tokio::test]
async fn sticky_keys_keep_their_upstream_and_moving_weight_moves_only_its_share() {
    let (v1, v2) = (upstream().run().await, upstream().run().await);
    let sticky = "      sticky: { cookie: user }\n";
    let gw = gateway(&split_yaml(v1.addr, v2.addr, (90, 10), sticky));
    let first = assign(&gw, &v1, &v2, 0..1000, 0).await;
    let again = assign(&gw, &v1, &v2, 0..1000, 1).await;
    assert_eq!(first, again, "a sticky key changed upstream");
    let on_v2 = first.iter().filter(|u| **u == "v2").count();
    assert!((60..=140).contains(&on_v2), "{on_v2} of 1000 keys on v2");

    // A reload that leaves the weights alone keeps every assignment.
    gw.reload(&split_yaml(
        v1.addr,
        v2.addr,
        (90, 10),
        &format!(
            "{sticky}  - {{ name: other, match: {{ path: /other }}, respond: {{ body: x }} }}\n"
        ),
    ))
    .unwrap();
    let reloaded = assign(&gw, &v1, &v2, 0..1000, 2).await;
    assert_eq!(
        first, reloaded,
        "a reload without weight changes moved keys"
    );

    // 10 → 20: about a tenth of the keys move, all of them from v1 to v2.
    gw.reload(&split_yaml(v1.addr, v2.addr, (80, 20), sticky))
        .unwrap();
    let raised = assign(&gw, &v1, &v2, 0..1000, 3).await;
    let moved: Vec<usize> = (0..1000).filter(|&k| first[k] != raised[k]).collect();
    assert!(
        (80..=120).contains(&moved.len()),
        "{} of 1000 keys moved",
        moved.len()
    );
    assert!(moved.iter().all(|&k| raised[k] == "v2"), "a key left v2");
}

#[tokio::test]
async fn stickiness_by_a_verified_claim_or_the_client_address() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";
    let token = |sub: usize| {
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let claims = serde_json::json!({"sub": format!("user-{sub}"), "exp": exp});
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    let (v1, v2) = (upstream().run().await, upstream().run().await);
    // The breaker needs the target before the route's action: the token is verified first,
    // so the claim is there when the target is chosen.
    let by_claim = format!(
        "      sticky: {{ claim: sub }}\n    filters:\n      - jwt: {{ provider: main }}\n      - circuit_breaker: {{}}\njwt_providers:\n  main: {{ algorithms: [HS256], secret: {SECRET} }}\n"
    );
    let by_address = "      sticky: { client_ip: true }\ntrusted_proxies: [127.0.0.1/32]\n";
    type KeyField = Box<dyn Fn(usize) -> (&'static str, String)>;
    let cases: [(String, KeyField); 2] = [
        (
            by_claim,
            Box::new(move |k| ("authorization", format!("Bearer {}", token(k)))),
        ),
        (
            by_address.to_string(),
            Box::new(|k| ("x-forwarded-for", format!("10.0.{}.{}", k / 256, k % 256))),
        ),
    ];
    for (round, (sticky, key_field)) in cases.into_iter().enumerate() {
        let gw = gateway(&split_yaml(v1.addr, v2.addr, (50, 50), &sticky));
        let first = assign_by(&gw, &v1, &v2, 0..200, 2 * round, &key_field).await;
        let again = assign_by(&gw, &v1, &v2, 0..200, 2 * round + 1, &key_field).await;
        assert_eq!(first, again, "{sticky}");
        let on_v2 = first.iter().filter(|u| **u == "v2").count();
        assert!(
            (50..=150).contains(&on_v2),
            "{on_v2} of 200 on v2 with {sticky}"
        );
    }
}

#[tokio::test]
async fn requests_without_the_sticky_key_are_spread_by_weight() {
    let (v1, v2) = (upstream().run().await, upstream().run().await);
    let gw = gateway(&split_yaml(
        v1.addr,
        v2.addr,
        (50, 50),
        "      sticky: { header: x-user }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    for i in 0..400 {
        assert_eq!(client.get(&format!("/r/{i}")).await.status, 200);
    }
    assert!(
        v1.requests() > 120 && v2.requests() > 120,
        "{} / {}",
        v1.requests(),
        v2.requests()
    );
}

#[tokio::test]
async fn each_upstream_of_a_split_has_its_own_circuit_breaker() {
    let v1 = upstream().run().await;
    let dead = dead_address();
    let gw = gateway(&split_yaml(
        v1.addr,
        dead,
        (50, 50),
        "      sticky: { header: x-user }\n    filters:\n      - circuit_breaker: { consecutive_failures: 3, open_for: 30s }\n",
    ));
    let mut client = Client::http1(gw.addr()).await;
    let mut statuses: HashMap<usize, Vec<http::StatusCode>> = HashMap::new();
    for round in 0..6 {
        for user in 0..20 {
            let request = req("GET", &format!("/u/{user}/{round}"))
                .header("x-user", user.to_string())
                .body(empty())
                .unwrap();
            statuses
                .entry(user)
                .or_default()
                .push(client.request(request).await.status);
        }
    }
    let served = served_by(&v1, &v1);
    let on_v1: Vec<usize> = (0..20)
        .filter(|u| served.contains_key(&format!("/u/{u}/0")))
        .collect();
    assert!(!on_v1.is_empty() && on_v1.len() < 20, "{on_v1:?}");
    for (user, list) in &statuses {
        if on_v1.contains(user) {
            assert!(
                list.iter().all(|s| *s == 200),
                "user {user} on v1: {list:?}"
            );
        } else {
            // Failures open v2's breaker: 502s, then 503 at once.
            assert_eq!(
                list.last().map(|s| s.as_u16()),
                Some(503),
                "user {user} on v2: {list:?}"
            );
        }
    }
    let breaker_states = |metrics: &str| {
        ["v1", "v2"].map(|up| {
            let line = format!("circuit_breaker_state{{route=\"api\",upstream=\"{up}\"}} ");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .map(str::to_string)
        })
    };
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(
        breaker_states(&metrics),
        [Some("0".into()), Some("1".into())]
    );

    // New weights keep each upstream's state: v2's breaker stays open, v1's pooled
    // connection is reused.
    let connections = v1.connections();
    gw.reload(&split_yaml(
        v1.addr,
        dead,
        (60, 40),
        "      sticky: { header: x-user }\n    filters:\n      - circuit_breaker: { consecutive_failures: 3, open_for: 30s }\n",
    ))
    .unwrap();
    let metrics = get(gw.admin(), "/metrics").await.text();
    assert_eq!(
        breaker_states(&metrics),
        [Some("0".into()), Some("1".into())]
    );
    let mut client = Client::http1(gw.addr()).await;
    for user in 0..20 {
        let request = req("GET", &format!("/u/{user}/after"))
            .header("x-user", user.to_string())
            .body(empty())
            .unwrap();
        let status = client.request(request).await.status;
        assert!(status == 200 || status == 503, "user {user}: {status}");
    }
    assert_eq!(
        v1.connections(),
        connections,
        "the reload dropped v1's pool"
    );
}

#[test]
fn split_mistakes_are_reported_with_key_paths() {
    let errors = config_errors(
        "listeners: [{ name: http, address: 127.0.0.1:0 }]\n\
         upstreams:\n  v1: { discovery: { static: [127.0.0.1:1] } }\n\
         routes:\n\
         \x20 - name: a\n    upstream: { split: [{ upstream: v1, weight: 0 }, { upstream: v3, weight: 0 }, { upstream: v1, weight: 0 }] }\n\
         \x20 - name: b\n    upstream: { split: [], sticky: { cookie: 1 } }\n\
         \x20 - name: c\n    upstream: { split: [{ upstream: v1, weight: -1 }], stick: x }\n\
         \x20 - name: d\n    upstream: [v1]\n",
    );
    assert_eq!(
        errors,
        [
            "routes[0].upstream.split[1].upstream: route \"a\" names unknown upstream \"v3\" (known: v1) (line 6)",
            "routes[0].upstream.split[2].upstream: upstream \"v1\" is listed twice (line 6)",
            "routes[0].upstream.split: weights sum to 0: at least one upstream needs a weight above 0 (line 6)",
            "routes[1].upstream.split: must list at least one upstream (line 8)",
            "routes[1].upstream.sticky: expected { header: NAME }, { cookie: NAME }, { claim: NAME } or { client_ip: true } (line 8)",
            "routes[2].upstream.split[0].weight: invalid value: integer `-1`, expected u32 (line 10)",
            "routes[2].upstream.stick: unknown field `stick`, expected `split` or `sticky` (line 10)",
            "routes[3].upstream: invalid type: sequence, expected an upstream's name or { split: [{ upstream: NAME, weight: N }, ...] } (line 12)",
        ]
    );
}

#[tokio::test]
async fn a_background_cache_refresh_on_a_split_goes_to_a_target_drawn_by_weight() {
    use crate::support::origin::{fetch, origin};
    let origin = origin().await;
    let drained = upstream().run().await;
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  drained: {{ discovery: {{ static: [{}] }} }}\n  origin: {{ discovery: {{ static: [{}] }} }}\n\
         routes:\n\
         \x20 - name: site\n    upstream: {{ split: [{{ upstream: drained, weight: 0 }}, {{ upstream: origin, weight: 1 }}] }}\n\
         \x20   filters: [{{ cache: {{ stale_while_revalidate: 1m }} }}]\n",
        drained.addr, origin.addr
    );
    let gw = gateway(&yaml);
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(
        fetch(&mut client, "/w?cc=max-age:1", &[]).await.text(),
        "/w #1 enc="
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = fetch(&mut client, "/w?cc=max-age:1", &[]).await;
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while origin.count("/w") < 2 {
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The drained target (weight 0) never got the refresh.
    assert_eq!(drained.requests(), 0);
}
