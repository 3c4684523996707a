//! The control API's open connections, at most [`MAX`] of them. At the cap, a new caller
//! takes the place of the oldest connection that has had no request under way for
//! [`IDLE_AFTER`] (one between requests, or one that never finished sending its head)
//! instead of waiting in the backlog: a local process that holds connections open, idle,
//! must not lock `bluegreen status`, `switch` and the hook's verdicts out until they time
//! out. A caller that just connected, or whose request is under way, keeps its place.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The most connections the control API holds open at once, besides those closing to
/// make room; more wait in the listen backlog, holding no file of the daemon's. Files are
/// what the data path's cap keeps free for the control API, the workers and the logs
/// (`accept::RESERVED_FILES`): a local process that opened connections without end took
/// them all, and the front stalled.
pub const MAX: usize = 64;

/// How long a connection must have had nothing under way to give its place: a caller
/// that just connected is about to send its request.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// The open connections, in the order they were accepted.
#[derive(Default)]
pub struct Conns {
    /// Each is held by its connection's task too: one held here only has ended.
    open: Vec<Arc<Conn>>,
    /// Told when a connection's last request under way is answered: the accept loop,
    /// waiting at the cap, looks again.
    turned_idle: Arc<Notify>,
}

/// One open connection's place.
pub struct Conn {
    /// Requests it has under way (hyper has read their heads, their answers are not made).
    under_way: AtomicUsize,
    /// Since when it has had none under way.
    idle_since: Mutex<Instant>,
    /// It was asked to give its place (it no longer counts against the cap).
    giving_way: AtomicBool,
    /// How it is asked to.
    give_way: Notify,
    turned_idle: Arc<Notify>,
}

impl Conns {
    /// Whether a new connection can be taken now: below the cap, or in the place of an
    /// idle one (those giving way close within moments; at most as many again are open
    /// meanwhile). Otherwise, the moment an idle one may give way, if one will.
    pub fn room(&mut self) -> Result<(), Option<Instant>> {
        self.open.retain(|conn| Arc::strong_count(conn) > 1);
        if self.taking_place().count() < MAX {
            return Ok(());
        }
        if self.open.len() >= 2 * MAX {
            return Err(None);
        }
        let now = Instant::now();
        let soonest = self
            .taking_place()
            .filter_map(|conn| conn.may_give_way_at())
            .min();
        match soonest {
            Some(at) if at <= now => Ok(()),
            soonest => Err(soonest),
        }
    }

    /// Returns once a connection may have turned idle (ask [`Self::room`] again).
    pub async fn turned_idle(&self) {
        self.turned_idle.notified().await;
    }

    /// The place of a new connection; at the cap, the oldest idle one is asked to give
    /// way.
    pub fn open(&mut self) -> Arc<Conn> {
        self.open.retain(|conn| Arc::strong_count(conn) > 1);
        if self.taking_place().count() >= MAX {
            let now = Instant::now();
            let idle = self
                .taking_place()
                .find(|conn| conn.may_give_way_at().is_some_and(|at| at <= now));
            if let Some(idle) = idle {
                idle.giving_way.store(true, Ordering::Relaxed);
                idle.give_way.notify_one();
            }
        }
        let conn = Arc::new(Conn {
            under_way: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            giving_way: AtomicBool::new(false),
            give_way: Notify::new(),
            turned_idle: self.turned_idle.clone(),
        });
        self.open.push(conn.clone());
        conn
    }

    /// The connections that count against the cap: not those giving way.
    fn taking_place(&self) -> impl Iterator<Item = &Arc<Conn>> {
        self.open
            .iter()
            .filter(|conn| !conn.giving_way.load(Ordering::Relaxed))
    }
}

impl Conn {
    /// When it may give its place: `IDLE_AFTER` into its idle time; none while a request
    /// is under way.
    fn may_give_way_at(&self) -> Option<Instant> {
        let since = *self.idle_since.lock().expect("no panic holds it");
        (self.under_way.load(Ordering::Relaxed) == 0).then_some(since + IDLE_AFTER)
    }

    /// Whether a request is under way on it.
    pub fn busy(&self) -> bool {
        self.under_way.load(Ordering::Relaxed) > 0
    }

    /// A request under way on it, until the guard is dropped (its answer made).
    pub fn request(self: &Arc<Conn>) -> UnderWay {
        self.under_way.fetch_add(1, Ordering::Relaxed);
        UnderWay(self.clone())
    }

    /// Returns once it is asked to give its place to a new connection.
    pub async fn asked_to_give_way(&self) {
        self.give_way.notified().await;
    }
}

/// A request under way on a connection: it keeps its place until this is dropped.
pub struct UnderWay(Arc<Conn>);

impl Drop for UnderWay {
    fn drop(&mut self) {
        let conn = &self.0;
        *conn.idle_since.lock().expect("no panic holds it") = Instant::now();
        if conn.under_way.fetch_sub(1, Ordering::Relaxed) == 1 {
            conn.turned_idle.notify_one();
        }
    }
}
