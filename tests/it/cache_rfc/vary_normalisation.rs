//! §4.1: equivalent values of a selecting header select the same stored variant.

use super::*;

#[tokio::test]
async fn whitespace_line_splits_order_and_case_do_not_split_variants() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 1h }"));
    let mut client = Client::http1(gw.addr()).await;
    let path = "/n?cc=max-age:600&vary=accept-encoding";
    fetch(&mut client, path, &[("accept-encoding", "gzip, br")]).await;
    let same: [&[(&str, &str)]; 4] = [
        &[("accept-encoding", "br,gzip")],
        &[("accept-encoding", "BR ,  GZIP")],
        &[("accept-encoding", "gzip"), ("accept-encoding", "br")],
        &[("accept-encoding", "gzip,, br")],
    ];
    for headers in same {
        assert_eq!(
            x_cache(&fetch(&mut client, path, headers).await),
            "HIT",
            "{headers:?}"
        );
    }
    assert_eq!(
        x_cache(&fetch(&mut client, path, &[("accept-encoding", "gzip")]).await),
        "MISS"
    );
    // Other headers: whitespace and line splits are folded, order still counts.
    let path = "/f?cc=max-age:600&vary=x-flavour";
    fetch(&mut client, path, &[("x-flavour", "a,b")]).await;
    assert_eq!(
        x_cache(&fetch(&mut client, path, &[("x-flavour", "a, b")]).await),
        "HIT"
    );
    assert_eq!(
        x_cache(&fetch(&mut client, path, &[("x-flavour", "a"), ("x-flavour", "b")]).await),
        "HIT"
    );
    assert_eq!(
        x_cache(&fetch(&mut client, path, &[("x-flavour", "b,a")]).await),
        "MISS"
    );
}
