//! The data path's threads: one acceptor hands each new connection to the least busy
//! proxy thread, which serves it with hyper from then on.
//!
//! A proxy thread (`proxy_thread`) runs a single-threaded tokio runtime with its own
//! upstream pool: a request is served from read to answer on one thread, with no
//! hand-off and no shared lock (as nginx's worker processes do). The acceptor gives each
//! connection to the proxy thread with the fewest open ones, so keep-alive clients spread
//! evenly over the cores; when every thread accepted for itself, whichever woke first
//! took most of a burst of connects and one core did two thirds of the work.
//!
//! Each listener accepts once its `open` turns true (`serve` opens it when the slot it
//! routes to has settled); until then connections wait in the listen backlog. Once
//! `shutdown` turns true the acceptor closes the listeners (new connects are refused, or
//! under socket activation left in the backlog for the next daemon) and each proxy thread
//! lets its connections finish their current request, up to `app.drain_timeout` (as it is
//! at the stop: a SIGHUP may have changed it): each answer from then on says
//! `Connection: close`, and a connection that sends nothing for a second is closed.
//! Upgraded connections (tunnels) are waited for as well, up to the same limit: they end
//! as their generations stop (see `upgrade`), after what a worker says at its SIGTERM.
//!
//! Open connections are capped by the file limit (see [`connection_limit`]): each takes
//! a file for itself, one for its upstream connection and room for one more upstream
//! (kept idle in the pool, or on its way back to it while the client's next request
//! opens another; after a switch, the old active's, idle, and the new one's), and the
//! daemon must keep files for its control API, workers and logs. At the cap, the proxy
//! threads close their idle connections (no request or answer under way: keep-alive
//! ones between requests, ones that sent nothing yet), as nginx does, and new
//! connections wait in the kernel's listen backlog until there is room; running out of
//! files instead failed requests with 502s and killed the control API's accept thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::proxy_thread::{serve_thread, Accepted, Told, STOP};
use super::Daemon;
use crate::slot::Slot;

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

/// Files per client connection: its own, its upstream connection's, and one more
/// upstream (see the module's doc). With two, a switch under load at the cap took every
/// file and made a third of the requests 502s (`Too many open files`).
const FILES_PER_CONNECTION: u64 = 3;
/// Fewer connections than this at once, and the start says the file limit is low.
const FEW_CONNECTIONS: u64 = 128;
/// The fewest connections served at once: a file limit that leaves fewer is refused at
/// the start. Below it, the daemon served 16 whatever the limit, and under `ulimit -n
/// 64` most requests were `Too many open files` 502s.
const MIN_CONNECTIONS: u64 = 16;

/// Raises this process's soft file limit to its hard limit (1024 is the usual soft
/// default, systemd's too) and returns how many connections may be open at once: a
/// third of what is left after `RESERVED_FILES` (see `FILES_PER_CONNECTION`). A limit
/// that leaves fewer than `MIN_CONNECTIONS` is an error.
pub fn connection_limit() -> anyhow::Result<usize> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(512);
    };
    let limit = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            tracing::warn!("cannot raise the file limit from {soft} to {hard}: {e}");
            soft
        }
    };
    let connections = limit.saturating_sub(RESERVED_FILES) / FILES_PER_CONNECTION;
    let advice = RESERVED_FILES + FEW_CONNECTIONS * FILES_PER_CONNECTION;
    anyhow::ensure!(
        connections >= MIN_CONNECTIONS,
        "the file limit is {limit}: bluegreen keeps {RESERVED_FILES} for itself and {FILES_PER_CONNECTION} per connection, and serves no fewer than {MIN_CONNECTIONS} connections at once, which takes {}; raise it to {advice} or more (LimitNOFILE= in the unit, ulimit -n)",
        RESERVED_FILES + MIN_CONNECTIONS * FILES_PER_CONNECTION
    );
    if connections < FEW_CONNECTIONS {
        tracing::warn!(
            "the file limit is {limit}: bluegreen keeps {RESERVED_FILES} for itself and {FILES_PER_CONNECTION} per connection, so at most {connections} connections are served at once (the rest wait); raise it to {advice} or more (LimitNOFILE= in the unit, ulimit -n)"
        );
    }
    Ok(connections.min(1 << 20) as usize)
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

/// Starts `threads` proxy threads and the acceptor, which keeps at most `limit`
/// connections open (see [`connection_limit`]).
pub fn start(
    listeners: Vec<(std::net::TcpListener, Listener, watch::Receiver<bool>)>,
    threads: usize,
    limit: usize,
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
