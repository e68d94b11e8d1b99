//! Accepting client connections and serving HTTP on them.

mod idle;
mod lent;
mod listener;
mod open_files;
mod park;
mod shutdown;

pub(crate) use listener::{accept_loop, bind, ListenerInfo};
pub(crate) use open_files::raise as raise_open_files;
pub(crate) use shutdown::Shutdown;
