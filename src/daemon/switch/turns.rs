//! `Turns`: switches go one at a time, and only a few wait for their turn.
//!
//! Each switch waits for the one under way (its gate can take `heartbeat.timeout`, its
//! migration `switch.migrate_timeout`). Callers waiting without a bound held the control
//! API's connections (a script firing 100 switches at a slot whose gate hangs kept
//! `bluegreen status` waiting 15 s), so past [`MAX_WAITING`] an operator's switch is
//! refused at once, changing nothing. The heartbeat's own is never refused: it waits.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard};

/// The most switches that wait for the one under way.
pub const MAX_WAITING: usize = 8;

#[derive(Default)]
pub struct Turns {
    lock: Mutex<()>,
    waiting: AtomicUsize,
}

/// A waiting switch's place in the count, given up when its wait ends (its turn came,
/// or the wait was dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Turns {
    /// This switch's turn, once the one under way (and those ahead) are done; `None`
    /// at once when [`MAX_WAITING`] already wait and `may_refuse`.
    pub async fn take(&self, may_refuse: bool) -> Option<MutexGuard<'_, ()>> {
        if let Ok(turn) = self.lock.try_lock() {
            return Some(turn);
        }
        let waiting = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _place = Waiting(&self.waiting);
        if may_refuse && waiting >= MAX_WAITING {
            return None;
        }
        Some(self.lock.lock().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_bound_a_switch_is_refused_unless_it_must_wait() {
        let turns = std::sync::Arc::new(Turns::default());
        let under_way = turns.take(true).await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..MAX_WAITING {
            let turns = turns.clone();
            waiters.push(tokio::spawn(
                async move { turns.take(true).await.is_some() },
            ));
        }
        // Each spawned wait has counted itself once it is pending on the lock.
        while turns.waiting.load(Ordering::Relaxed) < MAX_WAITING {
            tokio::task::yield_now().await;
        }
        assert!(turns.take(true).await.is_none(), "one more was let wait");
        let heartbeat = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take(false).await.is_some() })
        };
        drop(under_way);
        for waiter in waiters {
            assert!(waiter.await.unwrap());
        }
        assert!(heartbeat.await.unwrap());
        assert_eq!(turns.waiting.load(Ordering::Relaxed), 0);
        assert!(turns.take(true).await.is_some());
    }
}
