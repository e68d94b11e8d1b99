//! Traffic management: routes matched by header fields, cookies and query parameters.

use crate::support::*;

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
