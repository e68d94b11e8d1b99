//! The macro behind the list of filter kinds in `filter/mod.rs`. From one line per kind it
//! declares the kind's module (its folder) and writes the `filters:` entry as YAML has it, the
//! validated [`FilterSpec`], and the dispatch to the folder: `KIND/config.rs` (`compile`) and
//! `KIND/build.rs` (`build`).

/// Whether a named filter is one instance or one per route that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// One instance for every route that names it (a named rate limit is one budget).
    Shared,
    /// Built for each route: it works for the route's upstream (a breaker's state).
    PerRoute,
    /// Built for each route, with its state kept under the filter's name (a named cache is
    /// one store, each route refreshing through its own upstream).
    PerRouteNamedState,
}

macro_rules! filter_kinds {
    ($( $vis:vis $key:ident: $variant:ident($raw:ty => $spec:ty), $sharing:ident; )*) => {
        $( $vis mod $key; )*

        /// One entry of a `filters:` list, as written: `use` of a named filter, or exactly
        /// one kind.
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct FilterEntry {
            #[serde(rename = "use")]
            pub(crate) use_name: Option<String>,
            $( pub $key: Option<$raw>, )*
        }

        /// A validated filter, ready to build.
        #[derive(Debug, Clone)]
        pub(crate) enum FilterSpec {
            $( $variant($spec), )*
        }

        /// The keys a `filters:` entry may have, for messages.
        pub(crate) const ENTRY_KEYS: &[&str] = &["use", $( stringify!($key), )*];

        impl FilterEntry {
            /// How many of its keys are set (exactly one is valid).
            pub(crate) fn keys_set(&self) -> usize {
                usize::from(self.use_name.is_some()) $( + usize::from(self.$key.is_some()) )*
            }

            /// Validates the kind that is set (`None` for a `use`, or when invalid).
            pub(crate) fn compile(
                self,
                path: &str,
                refs: &Refs,
                issues: &mut Issues,
            ) -> Option<FilterSpec> {
                $(
                    if let Some(raw) = self.$key {
                        let path = format!("{path}.{}", stringify!($key));
                        return $key::config::compile(raw, &path, refs, issues)
                            .map(FilterSpec::$variant);
                    }
                )*
                None
            }
        }

        impl FilterSpec {
            pub(crate) fn kind(&self) -> &'static str {
                match self {
                    $( FilterSpec::$variant(_) => stringify!($key), )*
                }
            }

            pub(crate) fn sharing(&self) -> Sharing {
                match self {
                    $( FilterSpec::$variant(_) => Sharing::$sharing, )*
                }
            }

            /// The runtime filter at `owner`/`position` (route or named filter, index in its
            /// list): which, with the spec, identifies state to carry over a reload.
            pub(crate) fn build(&self, ctx: &mut BuildCtx, owner: &str, position: usize) -> Arc<dyn Filter> {
                match self {
                    $( FilterSpec::$variant(spec) => $key::build::build(spec, ctx, owner, position), )*
                }
            }
        }
    };
}

pub(super) use filter_kinds;
