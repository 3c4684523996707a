//! The control API's open connections, at most [`MAX`] of them. At the cap, a new caller
//! is taken in and the oldest connection open for [`IDLE_AFTER`] gives way: at once if
//! it has had nothing under way for that long (one between requests, or one that never
//! finished sending its head), else with its next answer, which says `Connection: close`
//! (or once it has been idle that long, if no request comes). A local process that holds
//! connections open, idle or polling on them, must not lock `bluegreen status`, `switch`
//! and the hook's verdicts out until they time out: 70 monitors asking every 0.9 s on
//! their own connections did, when only an idle one gave way. A caller that just
//! connected keeps its place: it is about to send its request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The most connections the control API holds open at once, besides those giving way;
/// more wait in the listen backlog, holding no file of the daemon's. Files are what the
/// data path's cap keeps free for the control API, the workers and the logs
/// (`accept::RESERVED_FILES`): a local process that opened connections without end took
/// them all, and the front stalled.
pub const MAX: usize = 64;

/// How long a connection keeps its place whatever it does, and how long one must have
/// had nothing under way to be closed at once: a caller that just connected is about to
/// send its request, and one between requests may be sending its next.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// The open connections, in the order they were accepted.
#[derive(Default)]
pub struct Conns {
    /// Each is held by its connection's task too: one held here only has ended.
    open: Vec<Arc<Conn>>,
}

/// One open connection's place.
pub struct Conn {
    /// When it was accepted.
    opened: Instant,
    /// Requests it has under way (hyper has read their heads, their answers are not made).
    under_way: AtomicUsize,
    /// Since when it has had none under way.
    idle_since: Mutex<Instant>,
    /// It was asked to give its place (it no longer counts against the cap).
    giving_way: AtomicBool,
    /// Tells its task it was asked to, and, from then on, that a request of it ended.
    look_again: Notify,
}

impl Conns {
    /// Whether a new connection can be taken now: below the cap, or in the place of one
    /// open for `IDLE_AFTER` (those giving way close within moments or with their next
    /// answer; at most as many again are open meanwhile). Otherwise, the moment one will
    /// have been open that long, if one will.
    pub fn room(&mut self) -> Result<(), Option<Instant>> {
        self.open.retain(|conn| Arc::strong_count(conn) > 1);
        if self.taking_place().count() < MAX {
            return Ok(());
        }
        if self.open.len() >= 2 * MAX {
            return Err(None);
        }
        // The oldest first: its time comes first.
        match self
            .taking_place()
            .next()
            .map(|conn| conn.opened + IDLE_AFTER)
        {
            Some(at) if at <= Instant::now() => Ok(()),
            soonest => Err(soonest),
        }
    }

    /// The place of a new connection; at the cap, one open for `IDLE_AFTER` is asked to
    /// give way: one idle that long first (it closes at once), else one with nothing
    /// under way (it closes with its next answer, or within a second), else the oldest.
    pub fn open(&mut self) -> Arc<Conn> {
        self.open_at(Instant::now())
    }

    /// [`Self::open`], at `now`.
    fn open_at(&mut self, now: Instant) -> Arc<Conn> {
        self.open.retain(|conn| Arc::strong_count(conn) > 1);
        if self.taking_place().count() >= MAX {
            let aged: Vec<_> = self
                .taking_place()
                .filter(|conn| conn.opened + IDLE_AFTER <= now)
                .collect();
            let chosen = aged
                .iter()
                .find(|conn| conn.may_close_at().is_some_and(|at| at <= now))
                .or_else(|| aged.iter().find(|conn| !conn.busy()))
                .or_else(|| aged.first());
            if let Some(chosen) = chosen {
                chosen.giving_way.store(true, Ordering::Relaxed);
                chosen.look_again.notify_one();
            }
        }
        let conn = Arc::new(Conn {
            opened: now,
            under_way: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
            giving_way: AtomicBool::new(false),
            look_again: Notify::new(),
        });
        self.open.push(conn.clone());
        conn
    }

    /// The connections that count against the cap, oldest first: not those giving way.
    fn taking_place(&self) -> impl Iterator<Item = &Arc<Conn>> {
        self.open.iter().filter(|conn| !conn.giving_way())
    }
}

impl Conn {
    /// When it may be closed at once: `IDLE_AFTER` into its idle time; none while a
    /// request is under way.
    pub fn may_close_at(&self) -> Option<Instant> {
        let since = *self.idle_since.lock().expect("no panic holds it");
        (!self.busy()).then_some(since + IDLE_AFTER)
    }

    /// Whether a request is under way on it.
    pub fn busy(&self) -> bool {
        self.under_way.load(Ordering::Relaxed) > 0
    }

    /// Whether it was asked to give its place: its answers from then on close it.
    pub fn giving_way(&self) -> bool {
        self.giving_way.load(Ordering::Relaxed)
    }

    /// A request under way on it, until the guard is dropped (its answer made).
    pub fn request(self: &Arc<Conn>) -> UnderWay {
        self.under_way.fetch_add(1, Ordering::Relaxed);
        UnderWay(self.clone())
    }

    /// Returns once it is asked to give its place to a new connection, and, once asked,
    /// each time a request of it ends (see [`Self::may_close_at`] again).
    pub async fn look_again(&self) {
        self.look_again.notified().await;
    }
}

/// A request under way on a connection: it counts as busy until this is dropped.
pub struct UnderWay(Arc<Conn>);

impl UnderWay {
    /// Whether its answer is to close the connection: it gives its place.
    pub fn closes(&self) -> bool {
        self.0.giving_way()
    }
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        let conn = &self.0;
        *conn.idle_since.lock().expect("no panic holds it") = Instant::now();
        conn.under_way.fetch_sub(1, Ordering::Relaxed);
        if conn.giving_way() {
            conn.look_again.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap filled with connections opened `age` ago.
    fn full(age: Duration) -> (Conns, Vec<Arc<Conn>>) {
        let mut conns = Conns::default();
        let then = Instant::now() - age;
        let held = (0..MAX).map(|_| conns.open_at(then)).collect();
        (conns, held)
    }

    #[test]
    fn at_the_cap_callers_that_just_connected_keep_their_places() {
        let (mut conns, _held) = full(Duration::ZERO);
        let Err(Some(at)) = conns.room() else {
            panic!("room at the cap with none open for a second")
        };
        assert!(at > Instant::now());
    }

    #[test]
    fn at_the_cap_a_poller_gives_way_with_its_next_answer() {
        let (mut conns, held) = full(2 * IDLE_AFTER);
        // Each has just been answered (none idle for a second); the oldest is busy.
        let mut under_way: Vec<_> = held.iter().map(|conn| conn.request()).collect();
        let _busy = under_way.remove(0);
        drop(under_way);
        assert_eq!(conns.room(), Ok(()));
        let _new = conns.open();
        // The second oldest, with nothing under way, not the busy oldest.
        assert!(!held[0].giving_way() && held[1].giving_way());
        assert_eq!(held.iter().filter(|conn| conn.giving_way()).count(), 1);
        assert!(held[1].may_close_at().unwrap() > Instant::now());
        // Still at the cap: the next caller takes another's place.
        assert_eq!(conns.room(), Ok(()));
        let _next = conns.open();
        assert_eq!(held.iter().filter(|conn| conn.giving_way()).count(), 2);
    }
}
