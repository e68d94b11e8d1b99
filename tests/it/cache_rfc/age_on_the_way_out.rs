//! §4.2.3 and §5.1: the `Age` sent with a stored response includes the age it arrived with.

use super::*;

#[tokio::test]
async fn a_hit_carries_the_age_the_response_arrived_with() {
    let origin = origin().await;
    let gw = gateway(&config(origin.addr, "{ ttl: 30s }"));
    let mut client = Client::http1(gw.addr()).await;
    fetch(&mut client, "/a?cc=max-age:600&h.age=42", &[]).await;
    let hit = fetch(&mut client, "/a?cc=max-age:600&h.age=42", &[]).await;
    assert_eq!(x_cache(&hit), "HIT");
    let age = age_of(&hit);
    assert!((42..45).contains(&age), "Age {age}");
    assert_eq!(hit.headers.get_all("age").iter().count(), 1);
}

#[tokio::test]
async fn after_a_304_the_age_is_the_304s() {
    let origin = origin().await;
    // `h.age` is left out of the key, so one URL gets answers of different ages.
    let gw = gateway(&config(origin.addr, "{ query: { ignore: [h.age] } }"));
    let mut client = Client::http1(gw.addr()).await;
    // Stored one second before it goes stale.
    fetch(&mut client, "/r?cc=max-age:60&etag=v1&h.age=59", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Revalidated: the origin's 304 says the response is 7 seconds old.
    let revalidated = fetch(&mut client, "/r?cc=max-age:60&etag=v1&h.age=7", &[]).await;
    assert_eq!(x_cache(&revalidated), "REVALIDATED");
    assert_eq!(origin.count("/r 304"), 1);
    let age = age_of(&revalidated);
    assert!((7..10).contains(&age), "Age {age} after a 304 with Age 7");
    let hit = fetch(&mut client, "/r?cc=max-age:60&etag=v1&h.age=7", &[]).await;
    assert_eq!(x_cache(&hit), "HIT");
    assert!((7..10).contains(&age_of(&hit)));
}
