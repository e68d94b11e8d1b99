//! The open-file limit. Every client connection is a file, and so is every upstream
//! connection; the usual soft limit (1024) is far below `max_connections`. As Go's runtime and
//! HAProxy do, the soft limit is raised to the hard limit at start. A hard limit too low for
//! `max_connections` is only logged: the gateway still serves what it can, and refuses
//! connections it has no file for, as it refuses any failed accept.

/// Files besides client connections: upstream connections, listeners, logs, the config watch.
const HEADROOM: u64 = 1024;

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub(crate) fn raise(max_connections: usize) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid `rlimit` for getrlimit and setrlimit to read and write.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        let hard = limit.rlim_max;
        if limit.rlim_cur < hard {
            let wanted = libc::rlimit {
                rlim_cur: hard,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                limit.rlim_cur = hard;
            }
        }
        limit.rlim_cur
    };
    let needed = max_connections as u64 + HEADROOM;
    if raised < needed {
        tracing::warn!(
            open_files = raised,
            needed,
            max_connections,
            "the open-file limit leaves no room for max_connections client connections and the \
             upstream ones: raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower \
             max_connections"
        );
    }
    Some(raised)
}
