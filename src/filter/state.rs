//! Filter state beyond one snapshot's life, and the parts of filters the admin API reads.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

/// Which piece of carried state: its kind, where it sits (`owner`: a route, a named filter, a
/// file; `slot`: a position or an upstream) and `id`, which holds every parameter the state
/// depends on. A reload carries the state over exactly when the new config yields the same id;
/// the same id on the same place with another id means the state starts fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateKey {
    pub(crate) kind: &'static str,
    pub(crate) owner: String,
    pub(crate) slot: String,
    pub(crate) id: String,
}

/// Filter state that outlives one snapshot: limiter tables, breaker states. Keyed by
/// [`StateKey::id`], so a reload that leaves a filter unchanged carries its state over, and any
/// change starts it fresh.
#[derive(Default)]
pub(crate) struct FilterStates(HashMap<String, (StateKey, Arc<dyn Any + Send + Sync>)>);

impl FilterStates {
    /// The state under `key` from `prev` (the outgoing snapshot's), or a new one from `make`;
    /// either way also kept in `self` for the next reload.
    pub(crate) fn carry<T: Send + Sync + 'static>(
        &mut self,
        prev: Option<&FilterStates>,
        key: StateKey,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let found = self
            .0
            .get(&key.id)
            .or_else(|| prev.and_then(|p| p.0.get(&key.id)))
            .and_then(|(_, state)| Arc::clone(state).downcast::<T>().ok());
        let state = found.unwrap_or_else(|| Arc::new(make()));
        let kept = Arc::clone(&state) as Arc<dyn Any + Send + Sync>;
        self.0.insert(key.id.clone(), (key, kept));
        state
    }

    /// The keys of every piece of state held.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &StateKey> {
        self.0.values().map(|(key, _)| key)
    }
}

/// Runtime parts of the snapshot's filters that the admin API shows or acts on (breakers,
/// cache stores), by owner. Each kind's `admin.rs` picks out its own type, so the snapshot
/// and the admin API need no field per kind.
#[derive(Default)]
pub(crate) struct Exposed(Vec<(String, Arc<dyn Any + Send + Sync>)>);

impl Exposed {
    /// Lists `part` under `owner`, once (a named filter's state is built for several routes).
    pub(crate) fn add<T: Send + Sync + 'static>(&mut self, owner: &str, part: &Arc<T>) {
        let known = self
            .0
            .iter()
            .any(|(_, known)| std::ptr::addr_eq(Arc::as_ptr(known), Arc::as_ptr(part)));
        if !known {
            self.0.push((
                owner.to_string(),
                Arc::clone(part) as Arc<dyn Any + Send + Sync>,
            ));
        }
    }

    /// The parts of type `T`, with their owners, in build order.
    pub(crate) fn of<T: 'static>(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0
            .iter()
            .filter_map(|(owner, part)| part.downcast_ref::<T>().map(|t| (owner.as_str(), t)))
    }
}
