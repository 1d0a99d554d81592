//! Counters declared once: a struct of `u64` fields whose every field carries its metric name,
//! help text and report label, and the list of those descriptions.
//!
//! [`counters!`](crate::counters) generates both, so the summary report and the Prometheus
//! registration are produced from the same list (`export/report.rs`, `export/metrics.rs`) and a
//! counter added to a stage's struct appears in both without another edit.

/// What a counter counts, for grouping in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// Work done (packets, flows, records).
    Volume,
    /// Something skipped, dropped, evicted or lost; a non-zero value deserves a look.
    Loss,
}

/// One counter as the report and the exporter describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    /// The struct field.
    pub field: &'static str,
    /// Prometheus name (a counter: ends in `_total`).
    pub metric: &'static str,
    /// Prometheus help text (also the field's doc comment).
    pub help: &'static str,
    /// Words in the summary report, e.g. "flows evicted".
    pub label: &'static str,
    pub kind: CounterKind,
}

/// A struct of counters and its [`Counter`] list.
///
/// ```ignore
/// counters! {
///     /// Doc of the struct.
///     pub struct Stats {
///         flows_evicted: Loss, "trustwatch_flows_evicted_total", "flows evicted",
///             "Flows evicted because the flow table was full.";
///     }
/// }
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $field:ident : $kind:ident, $metric:literal, $label:literal, $help:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
        $vis struct $name {
            $( #[doc = $help] pub $field: u64, )*
        }

        impl $name {
            /// Every counter of this struct, in declaration order.
            pub const COUNTERS: &'static [$crate::base::Counter] = &[
                $( $crate::base::Counter {
                    field: stringify!($field),
                    metric: $metric,
                    help: $help,
                    label: $label,
                    kind: $crate::base::CounterKind::$kind,
                }, )*
            ];

            /// Adds `other`'s counts to these (the parts of a parallel run).
            pub fn add(&mut self, other: &Self) {
                $( self.$field += other.$field; )*
            }

            /// Each counter with its value, in declaration order.
            pub fn values(&self) -> impl Iterator<Item = (&'static $crate::base::Counter, u64)> {
                Self::COUNTERS.iter().zip([$( self.$field ),*])
            }
        }
    };
}
