//! One request, top to bottom: `handler` checks it, routes it and answers or forwards it;
//! `forward` prepares the upstream request and relays the exchange.

mod background;
mod conn;
mod forward;
mod handler;

pub use background::Background;
pub use conn::{ConnCounter, ConnInfo, ConnSlot};
pub use handler::handle;
