//! X-Forwarded-For / Forwarded with `trusted_proxies`: which client the gateway believes, and
//! what it tells the upstream. Oracles: an untrusted peer is its own client and cannot put
//! anything of its own in the forwarded fields; behind a trusted peer the client is an entry
//! of the chain right of which there are trusted proxies only; a trusted chain is kept and
//! the peer appended.

use super::fields::header_lines;
use crate::proxy::headers::{client_address, is_trusted, set_forwarded};
use http::header::FORWARDED;
use http::HeaderValue;

use ipnet::IpNet;
use std::net::IpAddr;

const TRUSTED: [&str; 3] = ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"];
const PEERS: [&str; 4] = ["10.1.2.3", "203.0.113.7", "192.0.2.1", "2001:db8::5"];

pub fn forwarded(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let trusted: Vec<IpNet> = TRUSTED.iter().filter_map(|net| net.parse().ok()).collect();
    let peer: IpAddr = match PEERS[usize::from(choice) % PEERS.len()].parse() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let headers = header_lines(rest);
    let peer_trusted = is_trusted(&trusted, peer);
    let client = client_address(&trusted, peer, &headers);
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    if !peer_trusted {
        assert_eq!(client, peer, "an untrusted peer named another client");
    } else if client != peer {
        let at = chain.iter().rposition(|ip| *ip == client);
        let at = at.unwrap_or_else(|| panic!("{client} is not in the chain {chain:?}"));
        let all_trusted = chain.iter().all(|ip| is_trusted(&trusted, *ip));
        assert!(
            chain[at + 1..].iter().all(|ip| is_trusted(&trusted, *ip)),
            "{client} has untrusted entries right of it in {chain:?}"
        );
        assert!(
            !is_trusted(&trusted, client) || all_trusted,
            "{client} is a trusted proxy"
        );
    }
    let sent_forwarded = headers.get(FORWARDED).cloned();
    let peer_text =
        HeaderValue::from_str(&peer.to_string()).unwrap_or(HeaderValue::from_static("-"));
    let host = headers.get(http::header::HOST).cloned();
    let mut out = headers.clone();
    set_forwarded(&mut out, &peer_text, "https", peer_trusted, host.clone());
    let xff: Vec<&HeaderValue> = out.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff.len(), 1, "X-Forwarded-For sent {} times", xff.len());
    let xff = xff[0].to_str().unwrap_or_default();
    if peer_trusted {
        assert!(
            xff.ends_with(peer_text.to_str().unwrap_or_default()),
            "{xff}"
        );
        assert_eq!(out.get(FORWARDED), sent_forwarded.as_ref());
    } else {
        assert_eq!(xff, peer_text.to_str().unwrap_or_default());
        assert_eq!(
            out.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
        assert_eq!(out.get("x-forwarded-host"), host.as_ref());
        assert!(out.get(FORWARDED).is_none(), "a client's Forwarded went on");
    }
}
