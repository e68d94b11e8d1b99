//! Accepting client connections and serving HTTP on them.

mod listener;
mod shutdown;

pub use listener::{accept_loop, bind, ListenerInfo};
pub use shutdown::Shutdown;
