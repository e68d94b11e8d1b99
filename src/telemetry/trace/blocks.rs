//! Attributes that stay the same from request to request, written once and copied after:
//! each endpoint's part of a client span.

use super::wire::{address, key, span_int, span_text, write_all, Out};
use std::net::SocketAddr;
use std::sync::Arc;

/// Endpoints a worker keeps written; a new one past these takes the place of the oldest.
const MAX_ENDPOINTS: usize = 16;

/// The client-span attributes (`server.address`, `server.port`, `portcullis.upstream`) of
/// the endpoints a worker sent to lately.
#[derive(Default)]
pub(super) struct EndpointBlocks {
    entries: Vec<(SocketAddr, Arc<str>, Vec<u8>)>,
    /// The entry a new endpoint replaces once the list is full.
    oldest: usize,
}

impl EndpointBlocks {
    /// Writes the attributes of `endpoint` of `upstream`.
    pub(super) fn write(&mut self, out: &mut Out, endpoint: SocketAddr, upstream: &Arc<str>) {
        let known = self.entries.iter().position(|(at, name, _)| {
            *at == endpoint && (Arc::ptr_eq(name, upstream) || name == upstream)
        });
        let index = known.unwrap_or_else(|| self.add(endpoint, upstream));
        match self.entries.get(index) {
            Some((_, _, block)) => out.put(block),
            None => endpoint_attributes(out, endpoint, upstream),
        }
    }

    fn add(&mut self, endpoint: SocketAddr, upstream: &Arc<str>) -> usize {
        let block = write_all(|out| endpoint_attributes(out, endpoint, upstream));
        let entry = (endpoint, Arc::clone(upstream), block);
        if self.entries.len() < MAX_ENDPOINTS {
            self.entries.push(entry);
            return self.entries.len() - 1;
        }
        let index = self.oldest % MAX_ENDPOINTS;
        self.oldest = index + 1;
        if let Some(slot) = self.entries.get_mut(index) {
            *slot = entry;
        }
        index
    }
}

fn endpoint_attributes(out: &mut Out, endpoint: SocketAddr, upstream: &str) {
    let mut room = [0u8; 64];
    let ip = address(&mut room, endpoint.ip());
    span_text(out, key!("server.address"), ip);
    let port = endpoint.port().into();
    span_int(out, key!("server.port"), port);
    let name = upstream.as_bytes();
    span_text(out, key!("portcullis.upstream"), name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_written_once_per_endpoint_and_replaced_oldest_first() {
        let mut blocks = EndpointBlocks::default();
        let users: Arc<str> = Arc::from("users");
        let written = |blocks: &mut EndpointBlocks, port: u16, upstream: &Arc<str>| {
            let endpoint = SocketAddr::from(([10, 0, 0, 1], port));
            let cached = write_all(|out| blocks.write(out, endpoint, upstream));
            let direct = write_all(|out| endpoint_attributes(out, endpoint, upstream));
            assert_eq!(cached, direct, "{port} {upstream}");
        };
        for round in 0..3 {
            for port in 1..=MAX_ENDPOINTS as u16 + 4 {
                written(&mut blocks, port, &users);
            }
            assert_eq!(blocks.entries.len(), MAX_ENDPOINTS, "{round}");
        }
        // The same address under another upstream is another block.
        let orders: Arc<str> = Arc::from("orders");
        written(&mut blocks, 1, &orders);
        written(&mut blocks, 1, &users);
    }
}
