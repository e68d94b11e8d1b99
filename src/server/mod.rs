//! Accepting client connections and serving HTTP on them.

mod listener;
mod shutdown;

pub(crate) use listener::{accept_loop, bind, ListenerInfo};
pub(crate) use shutdown::Shutdown;
