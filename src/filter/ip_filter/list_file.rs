//! A prefix list kept in a file that another tool writes (a blocklist). The file is read again
//! every `interval` on the control runtime and compared by content, so an atomic rename is
//! seen as well as an edit. A file that cannot be read or has a bad line leaves the last good
//! list in place, logs why and counts the failure (once per bad content or outage).

use super::prefixes::{parse_list, PrefixSet};
use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub(crate) struct ListFile {
    path: PathBuf,
    current: ArcSwap<PrefixSet>,
    failures: Counter,
    /// The content read at start, until the watching task takes it.
    seed: Mutex<Option<Vec<u8>>>,
}

impl ListFile {
    /// Reads `path` now. The config check already found it readable and valid; should it
    /// have changed since, an unreadable or bad file starts as an empty list (and is counted).
    pub(crate) fn new(path: &Path, failures: Counter) -> ListFile {
        let content = std::fs::read(path).unwrap_or_default();
        let list = ListFile {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(PrefixSet::default()),
            failures,
            seed: Mutex::new(None),
        };
        list.apply(&content);
        *list.seed.lock().unwrap_or_else(|e| e.into_inner()) = Some(content);
        list
    }

    /// Starts re-reading the file every `interval` on `control`, until the list is dropped.
    /// Only the first call starts a task (a list carried over a reload is already watched).
    pub(crate) fn watch(self: &Arc<Self>, interval: Duration, control: &tokio::runtime::Handle) {
        let seed = self.seed.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(content) = seed {
            control.spawn(watch(Arc::downgrade(self), content, interval));
        }
    }

    pub(crate) fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.current.load().contains(ip)
    }

    /// Parses `content` and swaps it in; on a bad line keeps the list as it is.
    fn apply(&self, content: &[u8]) {
        let parsed = std::str::from_utf8(content)
            .map_err(|_| "not UTF-8 text".to_string())
            .and_then(parse_list);
        match parsed {
            Ok(prefixes) => {
                let set = PrefixSet::new(&prefixes);
                tracing::info!(
                    file = %self.path.display(),
                    prefixes = prefixes.len(),
                    ranges = set.ranges(),
                    "ip_filter list loaded"
                );
                self.current.store(Arc::new(set));
            }
            Err(error) => self.failed(&error),
        }
    }

    fn failed(&self, error: &str) {
        self.failures.inc();
        tracing::warn!(file = %self.path.display(), %error, "ip_filter list not applied; the last good list stays");
    }
}

/// Each new content is applied (or refused) once; a file that stays unreadable counts once.
async fn watch(list: Weak<ListFile>, mut last: Vec<u8>, interval: Duration) {
    let mut unreadable = false;
    loop {
        tokio::time::sleep(interval).await;
        let Some(list) = list.upgrade() else {
            return;
        };
        match tokio::fs::read(&list.path).await {
            Ok(content) => {
                unreadable = false;
                if content != last {
                    list.apply(&content);
                    last = content;
                }
            }
            Err(error) if !unreadable => {
                unreadable = true;
                list.failed(&format!("cannot read: {error}"));
            }
            Err(_) => {}
        }
    }
}
