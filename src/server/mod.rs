//! Accepting client connections and serving HTTP on them.

mod listener;

pub use listener::{accept_loop, bind, stopped, ConnCounter};
