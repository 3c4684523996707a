//! The control API's open connections, at most [`MAX`] of them. At the cap, a new caller
//! takes the place of the oldest connection with no request under way (one between
//! requests, or one that never finished sending its head) instead of waiting in the
//! backlog: a local process that holds connections open, idle, must not lock
//! `bluegreen status`, `switch` and the hook's verdicts out until they time out.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The most connections the control API holds open at once; more wait in the listen
/// backlog, holding no file of the daemon's, while each open one has a request under
/// way. Files are what the data path's cap keeps free for the control API, the workers
/// and the logs (`accept::RESERVED_FILES`): a local process that opened connections
/// without end took them all, and the front stalled.
pub const MAX: usize = 64;

#[derive(Default)]
pub struct Conns {
    /// In the order they were accepted; each is held by its connection's task too.
    open: Vec<Arc<Conn>>,
    /// Told when a connection's last request under way is answered.
    turned_idle: Arc<Notify>,
}

pub struct Conn {
    under_way: AtomicUsize,
    /// Asked to give its place to a new connection.
    giving_way: AtomicBool,
    give_way: Notify,
    turned_idle: Arc<Notify>,
}

impl Conns {
    /// Whether a new connection can be taken now: below the cap, or in the place of one
    /// with nothing under way (those giving way close within `control::GIVE_WAY`; at most
    /// as many again are open meanwhile).
    pub fn room(&mut self) -> bool {
        self.open.retain(|conn| Arc::strong_count(conn) > 1);
        self.open.len() < MAX
            || (self.open.len() < 2 * MAX && self.open.iter().any(|conn| conn.can_give_way()))
    }

    /// Returns once a connection may have turned idle (check [`Self::room`] again).
    pub async fn turned_idle(&self) {
        self.turned_idle.notified().await;
    }

    /// The place of a new connection; at the cap, the oldest idle one is asked to give
    /// way.
    pub fn open(&mut self) -> Arc<Conn> {
        self.open.retain(|conn| Arc::strong_count(conn) > 1);
        let open = self
            .open
            .iter()
            .filter(|c| !c.giving_way.load(Ordering::Relaxed));
        if open.count() >= MAX {
            if let Some(idle) = self.open.iter().find(|conn| conn.can_give_way()) {
                idle.giving_way.store(true, Ordering::Relaxed);
                idle.give_way.notify_one();
            }
        }
        let conn = Arc::new(Conn {
            under_way: AtomicUsize::new(0),
            giving_way: AtomicBool::new(false),
            give_way: Notify::new(),
            turned_idle: self.turned_idle.clone(),
        });
        self.open.push(conn.clone());
        conn
    }
}

impl Conn {
    fn can_give_way(&self) -> bool {
        self.under_way.load(Ordering::Relaxed) == 0 && !self.giving_way.load(Ordering::Relaxed)
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

pub struct UnderWay(Arc<Conn>);

impl Drop for UnderWay {
    fn drop(&mut self) {
        if self.0.under_way.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.turned_idle.notify_one();
        }
    }
}
