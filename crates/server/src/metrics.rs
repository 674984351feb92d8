//! Prometheus metrics: request counts and latency histograms by route
//! (the matched path, never the raw URL, so ids don't explode the series),
//! method and status; cache hits, misses and sizes; requests in flight and
//! open event streams. Rendered as text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::cache::CacheStats;

const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

type ByRoute = BTreeMap<String, BTreeMap<(&'static str, u16), Series>>;

#[derive(Default)]
pub struct Metrics {
    /// By route, then (method, status): a request's lookup borrows its route
    /// instead of copying it.
    series: Mutex<ByRoute>,
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let method: &'static str = match method {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "HEAD" => "HEAD",
            "OPTIONS" => "OPTIONS",
            _ => "OTHER",
        };
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let by_route = match series.get_mut(route) {
            Some(by_route) => by_route,
            None => series.entry(route.to_owned()).or_default(),
        };
        let entry = by_route.entry((method, status)).or_default();
        entry.count += 1;
        entry.sum += seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                entry.buckets[i] += 1;
            }
        }
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP orgplane_http_requests_total HTTP requests by route, method and status.\n");
        out.push_str("# TYPE orgplane_http_requests_total counter\n");
        for (route, (method, status), s) in flatten(&series) {
            let _ = writeln!(
                out,
                "orgplane_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {}",
                s.count
            );
        }
        out.push_str(
            "# HELP orgplane_http_request_duration_seconds HTTP request latency by route, method and status.\n",
        );
        out.push_str("# TYPE orgplane_http_request_duration_seconds histogram\n");
        for (route, (method, status), s) in flatten(&series) {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "orgplane_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(out, "orgplane_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "orgplane_http_request_duration_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "orgplane_http_request_duration_seconds_count{{{labels}}} {}", s.count);
        }
        out
    }
}

/// Every series in (route, method, status) order.
fn flatten(series: &ByRoute) -> impl Iterator<Item = (&String, &(&'static str, u16), &Series)> {
    series.iter().flat_map(|(route, by)| by.iter().map(move |(key, s)| (route, key, s)))
}

/// Hits, misses and entries of each cache, as counters and a gauge labelled `cache`.
pub fn render_caches(out: &mut String, caches: &[(&str, CacheStats)]) {
    out.push_str("# HELP orgplane_cache_hits_total Lookups answered from the cache, by cache.\n");
    out.push_str("# TYPE orgplane_cache_hits_total counter\n");
    for (name, stats) in caches {
        let _ = writeln!(out, "orgplane_cache_hits_total{{cache=\"{name}\"}} {}", stats.hits);
    }
    out.push_str("# HELP orgplane_cache_misses_total Lookups that found no fresh entry, by cache.\n");
    out.push_str("# TYPE orgplane_cache_misses_total counter\n");
    for (name, stats) in caches {
        let _ = writeln!(out, "orgplane_cache_misses_total{{cache=\"{name}\"}} {}", stats.misses);
    }
    out.push_str("# HELP orgplane_cache_entries Entries held, by cache (approximate).\n");
    out.push_str("# TYPE orgplane_cache_entries gauge\n");
    for (name, stats) in caches {
        let _ = writeln!(out, "orgplane_cache_entries{{cache=\"{name}\"}} {}", stats.entries);
    }
}

/// The load gauges of `crate::limits`.
pub fn render_load(out: &mut String, in_flight: usize, event_streams: usize) {
    out.push_str("# HELP orgplane_requests_in_flight Requests being handled (probes and scrapes aside).\n");
    out.push_str("# TYPE orgplane_requests_in_flight gauge\n");
    let _ = writeln!(out, "orgplane_requests_in_flight {in_flight}");
    out.push_str("# HELP orgplane_event_streams_open Open GET /v1/events/stream responses.\n");
    out.push_str("# TYPE orgplane_event_streams_open gauge\n");
    let _ = writeln!(out, "orgplane_event_streams_open {event_streams}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let m = Metrics::default();
        m.observe("GET", "/healthz", 200, Duration::from_micros(300));
        m.observe("GET", "/healthz", 200, Duration::from_millis(20));
        let text = m.render();
        assert!(
            text.contains("orgplane_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("le=\"0.025\"} 2"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
    }

    #[test]
    fn caches_render_one_series_per_cache() {
        let mut text = String::new();
        render_caches(&mut text, &[("entitlements", CacheStats { hits: 3, misses: 1, entries: 1 })]);
        assert!(text.contains("orgplane_cache_hits_total{cache=\"entitlements\"} 3\n"), "{text}");
        assert!(text.contains("orgplane_cache_misses_total{cache=\"entitlements\"} 1\n"), "{text}");
        assert!(
            text.contains("# TYPE orgplane_cache_entries gauge\norgplane_cache_entries{cache=\"entitlements\"} 1\n"),
            "{text}"
        );
    }
}
