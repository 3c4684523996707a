//! `Backoff`: how long a slot waits before restarting a crashed generation: 1 s, doubling
//! to 60 s over consecutive crashes, back to 1 s once the slot has served a minute.
//!
//! The minute is the slot's, not one generation's: it counts from when the slot last
//! got a live generation after having none (a crash, or a failed start that left it
//! without one), and a deploy that replaces the live generation does not restart it.
//! Counted per generation, a month of deploys each followed by an early crash (a worker
//! killed 10 s after going live, weeks apart) would add up, and the next crash would
//! leave the slot down for a minute though it had been healthy for weeks.

use std::time::{Duration, Instant};

/// Longest pause between restarts of a crashing generation.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A slot up this long resets the backoff.
const HEALTHY_RESET: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Backoff {
    /// Consecutive restarts without a healthy minute in between.
    attempts: u32,
    /// Since when the slot has had a live generation without a break; `None` while it
    /// has none.
    up_since: Option<Instant>,
}

impl Backoff {
    /// A generation went live (a deploy's replacing the one before keeps the slot up).
    pub fn live(&mut self, now: Instant) {
        self.up_since.get_or_insert(now);
    }

    /// The live generation crashed: the slot is down, and the count starts again if it
    /// had been up a minute.
    pub fn crashed(&mut self, now: Instant) {
        self.forgive(now);
        self.up_since = None;
    }

    /// A start failed and left the slot with no live generation.
    pub fn down(&mut self) {
        self.up_since = None;
    }

    /// The live generation is stopped on purpose before the next starts
    /// (`app.overlap = false`): a restart that follows (the start failing brings its
    /// release back) starts from 1 s again if the slot had been up a minute.
    pub fn replacing(&mut self, now: Instant) {
        self.forgive(now);
    }

    /// The pause before the next restart, which counts as one more in a row.
    pub fn next(&mut self) -> Duration {
        let delay = pause(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    fn forgive(&mut self, now: Instant) {
        if self
            .up_since
            .is_some_and(|since| now.saturating_duration_since(since) >= HEALTHY_RESET)
        {
            self.attempts = 0;
        }
    }
}

/// The pause before restart number `attempts + 1` in a row: 1 s, doubling, at most 60 s.
fn pause(attempts: u32) -> Duration {
    Duration::from_secs(1 << attempts.min(6)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|n| pause(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(pause(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_crash_loop_doubles_the_pause() {
        let (mut backoff, t0) = (Backoff::default(), Instant::now());
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            backoff.live(now);
            now += secs(5);
            backoff.crashed(now);
            let pause = backoff.next();
            pauses.push(pause.as_secs());
            now += pause;
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn early_crashes_weeks_apart_do_not_add_up() {
        // A month of daily deploys; every fourth day the new generation is killed 10 s
        // after it went live, and its restart runs until the next deploy.
        let (mut backoff, mut now) = (Backoff::default(), Instant::now());
        backoff.live(now);
        let mut pauses = Vec::new();
        for day in 1..=30 {
            now += secs(86_400);
            backoff.live(now);
            if day % 4 == 0 {
                now += secs(10);
                backoff.crashed(now);
                let pause = backoff.next();
                pauses.push(pause.as_secs());
                now += pause;
                backoff.live(now);
            }
        }
        assert_eq!(pauses, [1; 7], "each crash is the first in days");
    }

    #[test]
    fn a_failed_start_that_leaves_the_slot_down_is_no_healthy_minute() {
        let (mut backoff, t0) = (Backoff::default(), Instant::now());
        backoff.live(t0);
        backoff.replacing(t0 + secs(600));
        backoff.down();
        assert_eq!(backoff.next(), secs(1));
        // The release brought back goes live and crashes at once: still in a row.
        backoff.live(t0 + secs(601));
        backoff.crashed(t0 + secs(603));
        assert_eq!(backoff.next(), secs(2));
    }
}
