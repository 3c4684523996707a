//! `Metrics`: counters and the upstream latency histogram, rendered as Prometheus text.
//!
//! Plain atomics on the request path; rendering walks them on demand. The set is small
//! and fixed, so it is written out here rather than through a metrics registry. Each
//! proxy thread counts its requests in a [`Traffic`] of its own, on cache lines no other
//! thread writes: shared counters bounced between the cores on every request.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use crate::slot::Slot;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Status classes: 1xx..5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The labels of [`GenerationOutcome`], in its order.
const GENERATION_OUTCOMES: [&str; 4] = ["started", "failed", "crashed", "restarted"];
/// The labels of [`SwitchCause`], in its order.
const SWITCH_CAUSES: [&str; 4] = ["api", "front", "heartbeat", "cli"];
/// The labels of [`MirrorOutcome`], in its order.
const MIRROR_OUTCOMES: [&str; 8] = [
    "sent",
    "standby_down",
    "queue_full",
    "too_large",
    "active_failed",
    "non_2xx",
    "error",
    "stale",
];

/// What became of a generation, as `bluegreen_generations_total` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerationOutcome {
    /// It went live.
    Started,
    /// A start that did not.
    Failed,
    /// It exited while live.
    Crashed,
    /// A restart (after a crash or a failed start) began, which `/status` counts as the
    /// slot's `restarts`.
    Restarted,
}

/// Who asked for a switch, as `bluegreen_switches_total`, the events and `state.json`'s
/// last switch name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchCause {
    /// A caller of the control API other than bluegreen's own commands.
    Api,
    /// The front's `switch_path`.
    Front,
    /// The heartbeat, moving traffic off a failing active slot.
    Heartbeat,
    /// `bluegreen switch`.
    Cli,
}

impl SwitchCause {
    pub fn as_str(self) -> &'static str {
        SWITCH_CAUSES[self as usize]
    }
}

impl std::fmt::Display for SwitchCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a write with mirroring on, as `bluegreen_mirror_total` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorOutcome {
    /// Its copy reached the standby, which answered 2xx.
    Sent,
    /// The standby had no live generation.
    StandbyDown,
    /// `mirror.queue`, or the bound on the copies' memory, was full.
    QueueFull,
    /// Its body is larger than `mirror.max_body`.
    TooLarge,
    /// The active did not take it (an error, a non-2xx/3xx answer): nothing to copy.
    ActiveFailed,
    /// The standby answered other than 2xx.
    Non2xx,
    /// The copy could not be sent or its answer read.
    Error,
    /// Still queued when a switch made the standby the active.
    Stale,
}

impl MirrorOutcome {
    pub fn as_str(self) -> &'static str {
        MIRROR_OUTCOMES[self as usize]
    }
}

impl std::fmt::Display for MirrorOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The daemon's state at a scrape, as gauges: what an operator alerts on besides rates.
#[derive(Default)]
pub struct Gauges {
    pub in_flight: [u64; 2],
    /// Tunnels open (WebSocket and other upgrades), draining generations' included.
    pub tunnels: [u64; 2],
    /// Each slot's live generation, 0 for none.
    pub live_generation: [u64; 2],
    /// A live generation whose last check passed.
    pub healthy: [bool; 2],
    pub active: Option<Slot>,
    /// Seconds since the Unix epoch.
    pub last_switch: Option<f64>,
    pub mirror_queued: u64,
    pub config_reload_ok: bool,
}

/// The `slot` label of the requests the front answered before any slot took them, and
/// their row in [`Traffic`]'s counters, after the slots'.
const UNROUTED: &str = "none";
const UNROUTED_ROW: usize = Slot::ALL.len();

/// One proxy thread's request counters.
#[derive(Default)]
#[repr(align(128))]
pub struct Traffic {
    /// Per slot, then [`UNROUTED`]'s.
    requests: [[AtomicU64; 5]; UNROUTED_ROW + 1],
    /// Per slot: a blue and a green release answer at their own speed.
    latency_buckets: [[AtomicU64; BUCKETS.len()]; 2],
    latency_count: [AtomicU64; 2],
    latency_sum_micros: [AtomicU64; 2],
}

impl Traffic {
    pub fn request(&self, slot: Slot, status: u16) {
        self.count(slot.index(), status);
    }

    /// A request the front answered itself before any slot took it: no active slot, or
    /// its target refused.
    pub fn unrouted(&self, status: u16) {
        self.count(UNROUTED_ROW, status);
    }

    fn count(&self, row: usize, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[row][class].fetch_add(1, Relaxed);
    }

    pub fn latency(&self, slot: Slot, took: Duration) {
        let secs = took.as_secs_f64();
        let s = slot.index();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[s][i].fetch_add(1, Relaxed);
        }
        self.latency_count[s].fetch_add(1, Relaxed);
        self.latency_sum_micros[s].fetch_add(took.as_micros() as u64, Relaxed);
    }
}

pub struct Metrics {
    /// When the daemon started: a scrape sees a restart (its counters start again at 0).
    started: SystemTime,
    /// One per proxy thread.
    traffic: Box<[Traffic]>,
    generations: [[AtomicU64; GENERATION_OUTCOMES.len()]; 2],
    switches: [AtomicU64; SWITCH_CAUSES.len()],
    /// Switches asked for (or tried by the heartbeat) that did not happen.
    switches_refused: [AtomicU64; SWITCH_CAUSES.len()],
    heartbeat_failures: [AtomicU64; 2],
    /// Pushes the hook reported as not deployed (they made no release).
    not_deployed: [AtomicU64; 2],
    mirror: [AtomicU64; MIRROR_OUTCOMES.len()],
}

impl Metrics {
    /// Metrics with request counters for `threads` proxy threads.
    pub fn new(threads: usize) -> Metrics {
        Metrics {
            started: SystemTime::now(),
            traffic: (0..threads.max(1)).map(|_| Traffic::default()).collect(),
            generations: Default::default(),
            switches: Default::default(),
            switches_refused: Default::default(),
            heartbeat_failures: Default::default(),
            not_deployed: Default::default(),
            mirror: Default::default(),
        }
    }

    /// When the daemon started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Proxy thread `n`'s request counters.
    pub fn traffic(&self, n: usize) -> &Traffic {
        &self.traffic[n % self.traffic.len()]
    }

    /// A counter summed over every proxy thread.
    fn total(&self, counter: impl Fn(&Traffic) -> &AtomicU64) -> u64 {
        self.traffic.iter().map(|t| counter(t).load(Relaxed)).sum()
    }

    pub fn generation(&self, slot: Slot, outcome: GenerationOutcome) {
        self.generations[slot.index()][outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn switch(&self, cause: SwitchCause) {
        self.switches[cause as usize].fetch_add(1, Relaxed);
    }

    pub fn switch_refused(&self, cause: SwitchCause) {
        self.switches_refused[cause as usize].fetch_add(1, Relaxed);
    }

    pub fn heartbeat_failure(&self, slot: Slot) {
        self.heartbeat_failures[slot.index()].fetch_add(1, Relaxed);
    }

    pub fn not_deployed(&self, slot: Slot) {
        self.not_deployed[slot.index()].fetch_add(1, Relaxed);
    }

    pub fn mirror(&self, outcome: MirrorOutcome) {
        self.mirror[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Mirror counters by outcome, for `/status`.
    pub fn mirror_counts(&self) -> Vec<(&'static str, u64)> {
        MIRROR_OUTCOMES
            .iter()
            .zip(&self.mirror)
            .map(|(n, c)| (*n, c.load(Relaxed)))
            .collect()
    }

    /// Prometheus text format, with the daemon's state as `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let in_flight = gauges.in_flight;
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "# HELP bluegreen_build_info The running bluegreen's version, always 1.\n# TYPE bluegreen_build_info gauge\nbluegreen_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        let since_epoch = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let _ = writeln!(w, "# HELP bluegreen_start_time_seconds When the daemon started, in seconds since the Unix epoch.\n# TYPE bluegreen_start_time_seconds gauge\nbluegreen_start_time_seconds {}", since_epoch.as_secs_f64());
        let _ = writeln!(w, "# HELP bluegreen_requests_total Requests answered, by slot and status class (slot \"{UNROUTED}\": by the front before any slot took them).\n# TYPE bluegreen_requests_total counter");
        let rows = Slot::ALL.map(Slot::name).into_iter().chain([UNROUTED]);
        for (row, slot) in rows.enumerate() {
            for (i, class) in CLASSES.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "bluegreen_requests_total{{slot=\"{slot}\",class=\"{class}\"}} {}",
                    self.total(|t| &t.requests[row][i])
                );
            }
        }
        let _ = writeln!(w, "# HELP bluegreen_upstream_seconds Time to the upstream's response head, by slot.\n# TYPE bluegreen_upstream_seconds histogram");
        for slot in Slot::ALL {
            let s = slot.index();
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += self.total(|t| &t.latency_buckets[s][i]);
                let _ = writeln!(
                    w,
                    "bluegreen_upstream_seconds_bucket{{slot=\"{slot}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let total = self.total(|t| &t.latency_count[s]);
            let _ = writeln!(
                w,
                "bluegreen_upstream_seconds_bucket{{slot=\"{slot}\",le=\"+Inf\"}} {total}"
            );
            let _ = writeln!(
                w,
                "bluegreen_upstream_seconds_sum{{slot=\"{slot}\"}} {}",
                self.total(|t| &t.latency_sum_micros[s]) as f64 / 1e6
            );
            let _ = writeln!(
                w,
                "bluegreen_upstream_seconds_count{{slot=\"{slot}\"}} {total}"
            );
        }
        let _ = writeln!(w, "# HELP bluegreen_in_flight Requests in flight, by slot (its draining generations' too).\n# TYPE bluegreen_in_flight gauge");
        for slot in Slot::ALL {
            let _ = writeln!(
                w,
                "bluegreen_in_flight{{slot=\"{slot}\"}} {}",
                in_flight[slot.index()]
            );
        }
        let per_slot = |w: &mut String, name: &str, help: &str, value: &dyn Fn(Slot) -> u64| {
            let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} gauge");
            for slot in Slot::ALL {
                let _ = writeln!(w, "{name}{{slot=\"{slot}\"}} {}", value(slot));
            }
        };
        per_slot(
            w,
            "bluegreen_tunnels",
            "Tunnels open (WebSocket and other upgrades), by slot (its draining generations' too); a drain does not wait for them.",
            &|slot| gauges.tunnels[slot.index()],
        );
        per_slot(
            w,
            "bluegreen_active",
            "1 for the slot the front sends to.",
            &|slot| u64::from(gauges.active == Some(slot)),
        );
        per_slot(
            w,
            "bluegreen_live_generation",
            "The slot's live generation, 0 for none.",
            &|slot| gauges.live_generation[slot.index()],
        );
        per_slot(
            w,
            "bluegreen_healthy",
            "1 while the slot has a live generation that passed its last check.",
            &|slot| u64::from(gauges.healthy[slot.index()]),
        );
        if let Some(at) = gauges.last_switch {
            let _ = writeln!(w, "# HELP bluegreen_last_switch_timestamp_seconds When the front last switched slots, in seconds since the Unix epoch.\n# TYPE bluegreen_last_switch_timestamp_seconds gauge\nbluegreen_last_switch_timestamp_seconds {at}");
        }
        let _ = writeln!(w, "# HELP bluegreen_config_last_reload_successful 0 when the last SIGHUP's config was refused (the running config stays).\n# TYPE bluegreen_config_last_reload_successful gauge\nbluegreen_config_last_reload_successful {}", u64::from(gauges.config_reload_ok));
        let _ = writeln!(w, "# HELP bluegreen_mirror_queued Mirrored copies waiting to be sent.\n# TYPE bluegreen_mirror_queued gauge\nbluegreen_mirror_queued {}", gauges.mirror_queued);
        let _ = writeln!(w, "# HELP bluegreen_generations_total Generations, by slot and outcome: started (went live), failed (not ready), crashed (exited while live), restarted (a restart began).\n# TYPE bluegreen_generations_total counter");
        for slot in Slot::ALL {
            for (outcome, count) in GENERATION_OUTCOMES
                .iter()
                .zip(&self.generations[slot.index()])
            {
                let _ = writeln!(
                    w,
                    "bluegreen_generations_total{{slot=\"{slot}\",outcome=\"{outcome}\"}} {}",
                    count.load(Relaxed)
                );
            }
        }
        let _ = writeln!(w, "# HELP bluegreen_switches_total Switches, by cause.\n# TYPE bluegreen_switches_total counter");
        for (cause, count) in SWITCH_CAUSES.iter().zip(&self.switches) {
            let _ = writeln!(
                w,
                "bluegreen_switches_total{{cause=\"{cause}\"}} {}",
                count.load(Relaxed)
            );
        }
        let _ = writeln!(w, "# HELP bluegreen_switches_refused_total Switches that did not happen, by who asked: refused (no live generation to switch to, the target failed the health gate or the heartbeat's check, the migration failed, a deploy went live while it ran, too many switches already waiting) or failed (the state could not be written).\n# TYPE bluegreen_switches_refused_total counter");
        for (cause, count) in SWITCH_CAUSES.iter().zip(&self.switches_refused) {
            let _ = writeln!(
                w,
                "bluegreen_switches_refused_total{{cause=\"{cause}\"}} {}",
                count.load(Relaxed)
            );
        }
        let _ = writeln!(w, "# HELP bluegreen_heartbeat_failures_total Failed heartbeat checks, by slot.\n# TYPE bluegreen_heartbeat_failures_total counter");
        for slot in Slot::ALL {
            let _ = writeln!(
                w,
                "bluegreen_heartbeat_failures_total{{slot=\"{slot}\"}} {}",
                self.heartbeat_failures[slot.index()].load(Relaxed)
            );
        }
        let _ = writeln!(w, "# HELP bluegreen_pushes_not_deployed_total Pushes that failed before they made a release (a build, a checkout), by slot.\n# TYPE bluegreen_pushes_not_deployed_total counter");
        for slot in Slot::ALL {
            let _ = writeln!(
                w,
                "bluegreen_pushes_not_deployed_total{{slot=\"{slot}\"}} {}",
                self.not_deployed[slot.index()].load(Relaxed)
            );
        }
        let _ = writeln!(w, "# HELP bluegreen_mirror_total Mirrored writes, by outcome.\n# TYPE bluegreen_mirror_total counter");
        for (outcome, count) in self.mirror_counts() {
            let _ = writeln!(w, "bluegreen_mirror_total{{outcome=\"{outcome}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `QueueFull` is `queue_full`: each label array is in its enum's order.
    #[test]
    fn each_label_is_its_variants_name() {
        let snake = |name: String| {
            let mut out = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        };
        use GenerationOutcome as G;
        for (n, outcome) in [G::Started, G::Failed, G::Crashed, G::Restarted]
            .into_iter()
            .enumerate()
        {
            assert_eq!(outcome as usize, n);
            assert_eq!(GENERATION_OUTCOMES[n], snake(format!("{outcome:?}")));
        }
        use SwitchCause as S;
        for (n, cause) in [S::Api, S::Front, S::Heartbeat, S::Cli]
            .into_iter()
            .enumerate()
        {
            assert_eq!(cause as usize, n);
            assert_eq!(cause.as_str(), snake(format!("{cause:?}")));
        }
        use MirrorOutcome as M;
        let all = [
            M::Sent,
            M::StandbyDown,
            M::QueueFull,
            M::TooLarge,
            M::ActiveFailed,
            M::Non2xx,
            M::Error,
            M::Stale,
        ];
        for (n, outcome) in all.into_iter().enumerate() {
            assert_eq!(outcome as usize, n);
            assert_eq!(
                outcome.as_str(),
                snake(format!("{outcome:?}")).replace("non2xx", "non_2xx")
            );
        }
    }

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::new(2);
        m.traffic(0).request(Slot::Green, 503);
        m.traffic(0).unrouted(503);
        m.traffic(1).unrouted(503);
        m.traffic(1).unrouted(400);
        m.traffic(0).latency(Slot::Blue, Duration::from_millis(3));
        m.traffic(1).latency(Slot::Blue, Duration::from_millis(30));
        m.traffic(1).latency(Slot::Green, Duration::from_millis(2));
        m.mirror(MirrorOutcome::QueueFull);
        let text = m.render(&Gauges {
            in_flight: [0, 2],
            live_generation: [7, 0],
            healthy: [true, false],
            active: Some(Slot::Blue),
            ..Gauges::default()
        });
        assert!(text
            .contains("bluegreen_active{slot=\"blue\"} 1\nbluegreen_active{slot=\"green\"} 0\n"));
        assert!(text.contains("bluegreen_live_generation{slot=\"blue\"} 7\n"));
        assert!(text.contains("bluegreen_healthy{slot=\"green\"} 0\n"));
        assert!(text.contains("bluegreen_config_last_reload_successful 0\n"));
        assert!(!text.contains("bluegreen_last_switch_timestamp_seconds"));
        assert!(text.contains("bluegreen_requests_total{slot=\"green\",class=\"5xx\"} 1"));
        assert!(text.contains("bluegreen_requests_total{slot=\"blue\",class=\"5xx\"} 0"));
        assert!(text.contains("bluegreen_requests_total{slot=\"none\",class=\"5xx\"} 2"));
        assert!(text.contains("bluegreen_requests_total{slot=\"none\",class=\"4xx\"} 1"));
        let has = |line: &str| text.contains(&format!("\n{line}\n"));
        assert!(has(
            "bluegreen_upstream_seconds_bucket{slot=\"blue\",le=\"0.0025\"} 0"
        ));
        assert!(has(
            "bluegreen_upstream_seconds_bucket{slot=\"blue\",le=\"0.005\"} 1"
        ));
        assert!(has(
            "bluegreen_upstream_seconds_bucket{slot=\"blue\",le=\"0.05\"} 2"
        ));
        assert!(has(
            "bluegreen_upstream_seconds_bucket{slot=\"green\",le=\"0.0025\"} 1"
        ));
        assert!(has("bluegreen_upstream_seconds_count{slot=\"blue\"} 2"));
        assert!(has("bluegreen_upstream_seconds_count{slot=\"green\"} 1"));
        assert!(
            has("bluegreen_upstream_seconds_sum{slot=\"green\"} 0.002"),
            "{text}"
        );
        assert!(text.contains("bluegreen_in_flight{slot=\"green\"} 2"));
        assert!(text.contains("bluegreen_mirror_total{outcome=\"queue_full\"} 1"));
        let version = format!(
            "bluegreen_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        assert!(text.contains("\nbluegreen_start_time_seconds 1"), "{text}");
    }
}
