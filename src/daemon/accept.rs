//! The data path's threads: one acceptor hands each new connection to the least busy
//! proxy thread, which serves it with hyper from then on.
//!
//! A proxy thread runs a single-threaded tokio runtime with its own upstream [`Pool`]: a
//! request is served from read to answer on one thread, with no hand-off and no shared
//! lock (as nginx's worker processes do). The acceptor gives each connection to the
//! proxy thread with the fewest open ones, so keep-alive clients spread evenly over the cores; when every
//! thread accepted for itself, whichever woke first took most of a burst of connects
//! and one core did two thirds of the work.
//!
//! Each listener accepts once its `open` turns true (`serve` opens it when the slot it
//! routes to has settled); until then connections wait in the listen backlog. Once
//! `shutdown` turns true the acceptor closes the listeners (new connects are refused, or
//! under socket activation left in the backlog for the next daemon) and each proxy thread
//! lets its connections finish their current request, up to `app.drain_timeout` (as it is
//! at the stop: a SIGHUP may have changed it): each answer from then on says
//! `Connection: close`, and a connection that sends nothing for a second is closed.
//! Upgraded connections (tunnels) are not waited for: they close with the thread.
//!
//! Open connections are capped by the file limit (see [`connection_limit`]): each takes
//! a file for itself and one for its upstream connection, and the daemon must keep files
//! for its control API, workers and logs. At the cap, the proxy threads close their idle
//! connections (no request or answer under way: keep-alive ones between requests, ones
//! that sent nothing yet), as nginx does, and new connections wait in the kernel's
//! listen backlog until there is room; running out of files instead failed requests with
//! 502s and killed the control API's accept thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::head_timer::HeadTimer;
use super::headers::Peer;
use super::idle::{unread, IdleStream};
use super::pool::Pool;
use super::proxy::{self, ClientConn, Local};
use super::Daemon;
use crate::slot::Slot;

/// The longest a client may take to send a request head, and stay idle between requests
/// (`router.client_timeout` if shorter).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head accepted (hyper answers 431 beyond it).
const MAX_HEAD: usize = 64 * 1024;
/// How often a proxy thread closes the upstream connections idle for too long.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// TCP keepalive on client connections: after this long without traffic the kernel
/// probes the client, every `KEEPALIVE_INTERVAL`, and closes the connection after
/// `KEEPALIVE_PROBES` unanswered ones. A client that vanished without closing (a phone
/// that lost its network) would otherwise hold its tunnel open until the generation stops.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Listener {
    Front,
    Slot(Slot),
}

/// A connection on its way from the acceptor to a proxy thread.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    which: Listener,
}

/// One open connection on its proxy thread's count, until the last holder lets go: the
/// connection's task, and the tunnel an upgrade hands the connection to (hyper's
/// connection ends at the upgrade, while the tunnel still holds both sockets). Each
/// request holds it too, until its answer has been sent (see `proxy::Tracked`).
pub struct Counted(Arc<AtomicUsize>);

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
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a proxy thread's connections are told: carry on, close if idle (a new round each
/// time the cap is reached), or finish their current request and close.
type Told = u64;
const STOP: Told = u64::MAX;

/// The acceptor's side of a proxy thread.
struct Thread {
    tx: mpsc::UnboundedSender<Accepted>,
    /// Connections given to this thread and not closed yet.
    open: Arc<AtomicUsize>,
    /// Tells its connections to close if idle.
    tell: Arc<watch::Sender<Told>>,
}

/// Files kept out of the connections' reach: the control API, worker pipes, logs, the
/// file watch, and the health checks' connections.
const RESERVED_FILES: u64 = 256;

/// Raises this process's soft file limit to its hard limit (1024 is the usual soft
/// default, systemd's too) and returns how many connections may be open at once: half
/// of what is left after `RESERVED_FILES`, one file for the client, one upstream.
pub fn connection_limit() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 512;
    };
    let limit = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            tracing::warn!("cannot raise the file limit from {soft} to {hard}: {e}");
            soft
        }
    };
    // At least a few, whatever the limit: the daemon is of no use with none.
    (limit.saturating_sub(RESERVED_FILES) / 2).clamp(16, 1 << 20) as usize
}

/// The running data path, as `start` returns it.
pub struct Started {
    /// The proxy threads and the acceptor: they end once `shutdown` has turned true and
    /// every connection is done.
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// A message from each proxy thread once, after `shutdown`, no connection of it can
    /// start a new request: each has closed after an answer that said `Connection:
    /// close`, or sent nothing for a second and was told to finish.
    told: mpsc::Receiver<()>,
    proxies: usize,
}

impl Started {
    /// Waits until every proxy thread has told its connections to finish (see `told`).
    pub async fn all_told(&mut self) {
        for _ in 0..self.proxies {
            if self.told.recv().await.is_none() {
                break;
            }
        }
    }
}

/// Starts `threads` proxy threads and the acceptor.
pub fn start(
    listeners: Vec<(std::net::TcpListener, Listener, watch::Receiver<bool>)>,
    threads: usize,
    daemon: &Arc<Daemon>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Started> {
    let mut handles = Vec::new();
    let mut proxies = Vec::new();
    let (told_tx, told) = mpsc::channel(threads.max(1));
    for n in 0..threads.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let tell = Arc::new(watch::channel(0).0);
        proxies.push(Thread {
            tx,
            open: open.clone(),
            tell: tell.clone(),
        });
        let (daemon, stop) = (daemon.clone(), shutdown.clone());
        let runtime = runtime()?;
        let told = told_tx.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("bluegreen-proxy-{n}"))
                .spawn(move || {
                    runtime.block_on(serve_thread(n, rx, (open, tell, told), daemon, stop))
                })?,
        );
    }
    let runtime = runtime()?;
    let shutdown = shutdown.clone();
    let limit = connection_limit();
    tracing::debug!("at most {limit} connections open at once");
    handles.push(
        std::thread::Builder::new()
            .name("bluegreen-accept".into())
            .spawn(move || runtime.block_on(accept(listeners, proxies, shutdown, limit)))?,
    );
    Ok(Started {
        threads: handles,
        told,
        proxies: threads.max(1),
    })
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Accepts on every listener, each from when its `open` turns true, until `shutdown`;
/// then closes them and lets the proxy threads finish (dropping `threads` ends their
/// queues).
async fn accept(
    listeners: Vec<(std::net::TcpListener, Listener, watch::Receiver<bool>)>,
    threads: Vec<Thread>,
    shutdown: watch::Receiver<bool>,
    limit: usize,
) {
    let threads = Arc::new(threads);
    let full = Arc::new(crate::logging::Sparse::default());
    let mut tasks = Vec::new();
    for (listener, which, open) in listeners {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(listener = ?which, "cannot serve: {e}");
                continue;
            }
        };
        tasks.push(tokio::spawn(accept_on(
            listener,
            (which, open),
            threads.clone(),
            shutdown.clone(),
            (limit, full.clone()),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn accept_on(
    listener: TcpListener,
    (which, mut opened): (Listener, watch::Receiver<bool>),
    threads: Arc<Vec<Thread>>,
    mut shutdown: watch::Receiver<bool>,
    (limit, full): (usize, Arc<crate::logging::Sparse>),
) {
    tokio::select! {
        opened = opened.wait_for(|open| *open) => if opened.is_err() {
            return;
        },
        _ = shutdown.changed() => return,
    }
    let failing = crate::logging::Sparse::default();
    loop {
        while open(&threads) >= limit {
            // Idle connections make room: a round at most once a second, whichever
            // listener is waiting (`full` is shared), so keep-alive survives at the cap.
            if full.admit().is_some() {
                for thread in threads.iter() {
                    thread.tell.send_modify(|told| {
                        if *told != STOP {
                            *told += 1;
                        }
                    });
                }
                tracing::warn!(
                    "{limit} connections open, the most the file limit allows: idle ones are closed, new ones wait in the listen backlog"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => hand_over(&threads, stream, peer, which),
                Err(e) => {
                    // Out of file descriptors and the like: wait, never give up the listener.
                    if let Some(held) = failing.admit() {
                        tracing::warn!(listener = ?which, "accept failed: {e}{}", crate::logging::held(held));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// Connections open on every proxy thread.
fn open(threads: &[Thread]) -> usize {
    threads.iter().map(|t| t.open.load(Ordering::Relaxed)).sum()
}

/// Gives the connection to the proxy thread with the fewest open connections.
fn hand_over(threads: &[Thread], stream: TcpStream, peer: SocketAddr, which: Listener) {
    let _ = stream.set_nodelay(true);
    if let Err(e) = keepalive(&stream) {
        tracing::debug!(listener = ?which, "cannot set TCP keepalive: {e}");
    }
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(listener = ?which, "cannot hand over a connection: {e}");
            return;
        }
    };
    let Some(thread) = threads
        .iter()
        .min_by_key(|t| t.open.load(Ordering::Relaxed))
    else {
        return;
    };
    thread.open.fetch_add(1, Ordering::Relaxed);
    let accepted = Accepted {
        stream,
        peer,
        which,
    };
    if thread.tx.send(accepted).is_err() {
        thread.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Turns on TCP keepalive (see `KEEPALIVE_IDLE`).
fn keepalive(stream: &TcpStream) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(stream, sockopt::KeepAlive, &true)?;
    setsockopt(
        stream,
        sockopt::TcpKeepIdle,
        &(KEEPALIVE_IDLE.as_secs() as u32),
    )?;
    setsockopt(
        stream,
        sockopt::TcpKeepInterval,
        &(KEEPALIVE_INTERVAL.as_secs() as u32),
    )?;
    setsockopt(stream, sockopt::TcpKeepCount, &KEEPALIVE_PROBES)
}

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
async fn serve_thread(
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
    // own would). Each connection holds a clone of `done_tx`, so `done_rx` ends once the
    // last one has closed.
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
        let counted = Arc::new(Counted(open.clone()));
        let (close_tx, close_rx) = oneshot::channel();
        // Added now: only rounds of closing from here on concern it.
        let key = lock(&closable).add(Closable {
            close: close_tx,
            counted: Arc::downgrade(&counted),
            fd: stream.as_raw_fd(),
            since: Instant::now(),
        });
        let peer = Peer::new(peer);
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
        let (registered, done) = (
            Registered {
                open: closable.clone(),
                key,
            },
            done_tx.clone(),
        );
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
            drop(done);
        });
    }
    sweeper.abort();
    tell.send_replace(STOP);
    let _ = closer.await;
    drop(done_tx);
    // Read now: a SIGHUP since the start may have changed it.
    let grace = local.daemon.config().app.drain_timeout;
    tokio::select! {
        _ = done_rx.recv() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("connections still open after the drain timeout"),
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
