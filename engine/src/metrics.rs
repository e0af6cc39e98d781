//! The engine's own measurements, exposed by the API at `/metrics` (Prometheus text format).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
pub struct EngineMetrics {
    /// Seconds from taking an inbox event to its changeset committed.
    pub pipeline_seconds: Histogram,
    /// Sends by result: `sent`, `retry`, `failed`, `window_closed`.
    pub sends: Family<Labels, Counter>,
    /// Rule conditions, templates or `set` values that failed to evaluate.
    pub rule_errors: Counter,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            // 50 µs … ~1.6 s.
            pipeline_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            sends: Family::default(),
            rule_errors: Counter::default(),
        }
    }
}

impl EngineMetrics {
    pub fn send_result(&self, result: &'static str) {
        self.sends.get_or_create(&vec![("result", result)]).inc();
    }

    /// Adds these metrics (shared, not copied) to `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "switchyard_pipeline_seconds",
            "Time to process one inbox event, decision and commit",
            self.pipeline_seconds.clone(),
        );
        r.register(
            "switchyard_sends",
            "Outbound sends by result",
            self.sends.clone(),
        );
        r.register(
            "switchyard_rule_errors",
            "Rule conditions, templates and set values that failed to evaluate",
            self.rule_errors.clone(),
        );
    }
}
