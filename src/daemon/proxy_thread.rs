//! One proxy thread: serves with hyper the connections the acceptor gives it, keeps
//! count of them, closes the idle ones when told to (at the file limit's cap), and at a
//! stop lets each finish its current request (see `accept` for the whole data path).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::accept::Listener;
use super::head_timer::HeadTimer;
use super::headers::Peer;
use super::idle::{unread, IdleStream};
use super::pool::Pool;
use super::proxy::{self, ClientConn, Local};
use super::Daemon;

/// The longest a client may take to send a request head, and stay idle between requests
/// (`router.client_timeout` if shorter).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head accepted (hyper answers 431 beyond it).
const MAX_HEAD: usize = 64 * 1024;
/// How often a proxy thread closes the upstream connections idle for too long.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A connection on its way from the acceptor to a proxy thread.
pub struct Accepted {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub which: Listener,
}

/// One open connection on its proxy thread's count, until the last holder lets go: the
/// connection's task, and the tunnel an upgrade hands the connection to (hyper's
/// connection ends at the upgrade, while the tunnel still holds both sockets). Each
/// request holds it too, until its answer has been sent (see `tracked::Tracked`). It
/// holds a clone of the thread's `done` sender too: at a stop the thread waits for every
/// connection, a tunnel's included, so a worker's goodbye at its SIGTERM (a WebSocket
/// close frame) still reaches its client.
pub struct Counted {
    open: Arc<AtomicUsize>,
    _done: mpsc::Sender<()>,
}

impl Counted {
    /// No request, answer or tunnel under way: only the connection's task and its
    /// service hold it (one thread's runtime: the count cannot move meanwhile), no
    /// bytes of a next request wait unread on `fd` (hyper may not have been told of
    /// them yet), and it has been open for `IDLE_AFTER` (a client that just connected
    /// is about to send its request).
    fn idle(this: &Weak<Counted>, fd: RawFd, since: Instant) -> bool {
        this.strong_count() <= 2 && since.elapsed() >= IDLE_AFTER && unread(fd) == Some(0)
    }
}

/// How long a new connection is left to send its first request before it counts as idle,
/// and at a stop, every connection its next one.
const IDLE_AFTER: Duration = Duration::from_secs(1);
/// At a stop, how often the connections not told yet are looked at again.
const STOP_ROUND: Duration = Duration::from_millis(10);

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a proxy thread's connections are told: carry on, close if idle (a new round each
/// time the cap is reached), or finish their current request and close.
pub type Told = u64;
pub const STOP: Told = u64::MAX;

/// One proxy thread's open connections, as a round of closing sees them: what tells
/// whether each is idle, and the sender that tells it to close. A connection is in it
/// from when the thread takes it until it closes.
#[derive(Default)]
struct Open {
    next: u64,
    connections: HashMap<u64, Closable>,
}

/// One connection in `Open`.
struct Closable {
    close: oneshot::Sender<()>,
    counted: Weak<Counted>,
    fd: RawFd,
    since: Instant,
}

impl Open {
    fn add(&mut self, closable: Closable) -> u64 {
        self.next += 1;
        self.connections.insert(self.next, closable);
        self.next
    }

    /// Tells the idle connections to close (all of them with `all`).
    fn close(&mut self, all: bool) {
        let told: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, c)| all || Counted::idle(&c.counted, c.fd, c.since))
            .map(|(key, _)| *key)
            .collect();
        for key in told {
            if let Some(closable) = self.connections.remove(&key) {
                let _ = closable.close.send(());
            }
        }
    }
}

/// Proxy thread number `thread`: serves the connections it is given until the acceptor
/// is gone, then lets them finish their current request (up to `app.drain_timeout`).
pub async fn serve_thread(
    thread: usize,
    mut rx: mpsc::UnboundedReceiver<Accepted>,
    (open, tell, all_told): (Arc<AtomicUsize>, Arc<watch::Sender<Told>>, mpsc::Sender<()>),
    daemon: Arc<Daemon>,
    stop: watch::Receiver<bool>,
) {
    let pool = Arc::new(Pool::default());
    let local = Arc::new(Local {
        pool: pool.clone(),
        stop,
        thread,
        routes: Default::default(),
        config: Mutex::new(daemon.config_copy()),
        daemon,
        quiet: Default::default(),
        stopping: Default::default(),
    });
    let sweeper = tokio::spawn({
        let pool = pool.clone();
        async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                pool.sweep();
            }
        }
    });
    // `tell` tells the connections to close if idle, or (`STOP`) to finish their current
    // request and close: one task hears it for the thread and tells each connection by
    // its own oneshot (which costs a connection's every wake-up less than a watch of its
    // own would). Each connection holds a clone of `done_tx` (in its `Counted`), so
    // `done_rx` ends once the last one has closed, tunnels included.
    let closable = Arc::new(Mutex::new(Open::default()));
    let closer = tokio::spawn({
        let (closable, mut told, all_told) = (closable.clone(), tell.subscribe(), all_told);
        let local = local.clone();
        async move {
            loop {
                let stop = told.changed().await.is_err() || *told.borrow_and_update() == STOP;
                if !stop {
                    lock(&closable).close(false);
                    continue;
                }
                // Each answer from now on says `Connection: close`, and a connection
                // closes after it: a keep-alive client learns it in the answer, and
                // sends its next request to the next daemon. Those that sent nothing
                // for `IDLE_AFTER` are closed (a request under way is finished).
                local.stopping.store(true, Ordering::Relaxed);
                let deadline = Instant::now() + IDLE_AFTER;
                while !lock(&closable).connections.is_empty() && Instant::now() < deadline {
                    tokio::time::sleep(STOP_ROUND).await;
                }
                lock(&closable).close(true);
                let _ = all_told.send(()).await;
                break;
            }
        }
    });
    let mut http = http1::Builder::new();
    http.max_buf_size(MAX_HEAD)
        .keep_alive(true)
        // Small heads and bodies go out in one write, not a vectored one per piece.
        .writev(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    while let Some(Accepted {
        stream,
        peer,
        which,
    }) = rx.recv().await
    {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(listener = ?which, "cannot serve a connection: {e}");
                continue;
            }
        };
        let counted = Arc::new(Counted {
            open: open.clone(),
            _done: done_tx.clone(),
        });
        let (close_tx, close_rx) = oneshot::channel();
        // Added now: only rounds of closing from here on concern it.
        let key = lock(&closable).add(Closable {
            close: close_tx,
            counted: Arc::downgrade(&counted),
            fd: stream.as_raw_fd(),
            since: Instant::now(),
        });
        let peer = Peer::new(peer);
        let fd = stream.as_raw_fd();
        let local = local.clone();
        // Read per connection: a reloaded value applies to the connections after it.
        let client_timeout = {
            let mut copy = local
                .config
                .lock()
                .expect("config copy lock: no panic holds it");
            local.daemon.refresh_config(&mut copy).router.client_timeout
        };
        let service = service_fn({
            let counted = counted.clone();
            move |request| {
                let client = ClientConn {
                    peer: peer.clone(),
                    fd,
                    which,
                    timeout: client_timeout,
                    counted: counted.clone(),
                };
                proxy::handle(request, client, local.clone())
            }
        });
        // With upgrades: a WebSocket handshake hands the connection over to a tunnel.
        let stream = IdleStream::new(stream, client_timeout);
        let connection = http
            .clone()
            .timer(HeadTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT.min(client_timeout))
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let registered = Registered {
            open: closable.clone(),
            key,
        };
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                biased;
                _ = connection.as_mut() => {}
                // Told to close, or the thread's closer is gone: finish and close.
                _ = close_rx => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(registered);
            drop(counted);
        });
    }
    sweeper.abort();
    tell.send_replace(STOP);
    let _ = closer.await;
    drop(done_tx);
    // Read now: a SIGHUP since the start may have changed the timeouts.
    let grace = super::stop::generations_stopped_within(&local.daemon);
    tokio::select! {
        _ = done_rx.recv() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(
            "connections still open {}s after the stop began (its drains and the workers' stops): cut",
            grace.as_secs()
        ),
    }
}

/// A connection's place in its thread's `Open`, given up when its task ends, a panic
/// included (the entry's file descriptor number may be another connection's next).
struct Registered {
    open: Arc<Mutex<Open>>,
    key: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.open).connections.remove(&self.key);
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    // No change to it can be left half-done by a panic: a poisoned one is whole.
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
