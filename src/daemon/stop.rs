//! The daemon's stop (SIGTERM, SIGINT): stop accepting, route the requests already sent,
//! drain every generation and stop it (with mirroring on, the standby last, once the
//! active has answered its writes and their copies are sent), then give the control
//! API and the mirror's log their last words.

use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{accept, supervisor, systemd, Daemon};
use crate::fsops;
use crate::slot::Slot;

/// At a stop, the longest the slots keep routing while the proxy threads read the
/// requests sent on the connections they accepted (each is given a second to send one).
const STOP_TELL_WAIT: Duration = Duration::from_secs(3);
/// At a stop, once every generation is stopped, the longest the control API is given to
/// write the answers it owes (reloads and switches the stop cut short).
const CONTROL_TELL_WAIT: Duration = Duration::from_secs(2);
/// At a stop, once every generation is stopped, the longest the mirror's sender is given
/// to be done with the copies still queued (each fails at once: no slot routes now), so
/// that the log tells each one before the daemon ends.
const MIRROR_TELL_WAIT: Duration = Duration::from_secs(1);
/// At a stop with mirroring on, the longest the mirror's queue is given to reach the
/// standby once the active has answered its writes: a standby slower than the writes
/// would otherwise hold the restart (and the clients waiting in the listen backlog)
/// for the whole queue. What is left is logged and counted as not mirrored.
const MIRROR_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The longest a stop may take to drain and stop every generation, as a proxy thread
/// waits for its connections: until then a worker's last words at its SIGTERM (a
/// WebSocket's close frame, the end of an event stream) reach its clients, and a request
/// its stop cuts is answered 502, as at a deploy. Cut at the drain's end, they got a
/// closed connection before the workers heard of the stop. Connections end sooner as
/// their workers stop; what is left then is cut.
pub(super) fn generations_stopped_within(daemon: &Daemon) -> Duration {
    let app = &daemon.config().app;
    let drains = if daemon.mirroring() { 2 } else { 1 };
    STOP_TELL_WAIT + drains * app.drain_timeout + MIRROR_FLUSH_WAIT + 3 * app.stop_timeout
}

/// What `serve` started, which the stop ends.
pub(super) struct Running {
    /// Turned true, it tells every part that the daemon stops.
    pub stop_tx: watch::Sender<bool>,
    /// The signals still to come.
    pub signals: mpsc::UnboundedReceiver<i32>,
    /// The proxy threads, which tell when they have read the requests already sent.
    pub listeners: accept::Started,
    /// Each slot's supervisor task, ended once its generations are stopped.
    pub supervisors: Vec<JoinHandle<()>>,
    /// The control API's task, given its last answers' time.
    pub control: JoinHandle<()>,
}

/// Stops the daemon; true once it has.
pub(super) async fn stop(daemon: &Arc<Daemon>, running: Running) -> anyhow::Result<bool> {
    let Running {
        stop_tx,
        mut signals,
        mut listeners,
        supervisors,
        control,
    } = running;
    systemd::stopping();
    // For a client this daemon no longer answers: why (see `client`).
    if let Err(e) = fsops::write_atomic(&daemon.layout.stopping_mark(), b"") {
        tracing::debug!("cannot mark the stop: {e:#}");
    }
    {
        // The drain, then a generation's group and what it left outside it, then what
        // it started outside itself while stopping (each up to stop_timeout), after the
        // wait for requests already sent; the last leftovers' reap after the runtime.
        // With mirroring on, the standby's drain begins once the active's drain and the
        // mirror's queue are over (within one drain_timeout and MIRROR_FLUSH_WAIT).
        systemd::extend_timeout(
            generations_stopped_within(daemon)
                + MIRROR_TELL_WAIT
                + CONTROL_TELL_WAIT
                + systemd::MARGIN,
        );
    }
    daemon.events.record(
        "stop",
        None,
        false,
        "stopping: draining every generation".into(),
    );
    // A signal during the stop is told, not met with silence: a second Ctrl-C, or a
    // reload, while the drain runs for up to drain_timeout.
    let drain_timeout = daemon.config().app.drain_timeout;
    let during_stop = tokio::spawn(async move {
        while let Some(signal) = signals.recv().await {
            let name = match signal {
                SIGHUP => "SIGHUP",
                SIGINT => "SIGINT",
                _ => "SIGTERM",
            };
            tracing::warn!(
                "{name} ignored: the daemon is stopping already (it drains requests in flight, up to app.drain_timeout {}, then stops the workers)",
                humantime::format_duration(drain_timeout)
            );
        }
    });
    let _ = stop_tx.send(true);
    // Requests already sent on accepted connections are read and routed (so counted in
    // flight and drained) before the slots stop routing: cleared first, they got 503s.
    let _ = tokio::time::timeout(STOP_TELL_WAIT, listeners.all_told()).await;
    // With mirroring on, the standby stops last: it takes the copies of the writes the
    // active is still answering, and then those still queued. Stopped together, those
    // copies found no standby (each restart lost them).
    let mirrored = daemon.routing().0.filter(|_| daemon.mirroring());
    let mut done = Vec::new();
    for slot in Slot::ALL
        .into_iter()
        .filter(|&slot| Some(slot.other()) != mirrored)
    {
        done.push(shut_down(daemon, slot));
    }
    if let Some(active) = mirrored {
        let by = tokio::time::Instant::now() + daemon.config().app.drain_timeout;
        answered(daemon, active, by).await;
        let flush_by = tokio::time::Instant::now() + MIRROR_FLUSH_WAIT;
        if !daemon.mirror.flush(flush_by).await {
            tracing::warn!(
                "the mirror's queue was not all sent to {} within {}s of the stop: stopping it",
                active.other(),
                MIRROR_FLUSH_WAIT.as_secs()
            );
        }
        done.push(shut_down(daemon, active.other()));
    }
    for rx in done {
        let _ = rx.await;
    }
    // A number a full disk kept out of state.json is recorded now, if the disk allows:
    // the next daemon must not hand it out again.
    daemon.record_generation();
    let _ = tokio::task::spawn_blocking(move || {
        for thread in listeners.threads {
            let _ = thread.join();
        }
    })
    .await;
    // The copies not sent are counted, and their lines held back by the once-a-second
    // limit told, before the runtime ends: else the last second's went unsaid.
    let _ = daemon
        .mirror
        .flush(tokio::time::Instant::now() + MIRROR_TELL_WAIT)
        .await;
    daemon.mirror.tell_held();
    let queued = daemon.mirror.queued();
    if queued > 0 {
        tracing::warn!("{queued} mirrored writes were still queued at shutdown and were not sent to the standby");
    }
    for supervisor in supervisors {
        supervisor.abort();
    }
    during_stop.abort();
    // A reload's caller waits on its supervisor, gone now: its answer, "the daemon is
    // stopping", is written before the runtime ends.
    if tokio::time::timeout(CONTROL_TELL_WAIT, control)
        .await
        .is_err()
    {
        tracing::warn!("the control API's callers were not all answered before the stop");
    }
    // A migration cut off by the stop (its switch given up, its caller told) gets its
    // SIGTERM's grace.
    let _ = tokio::task::spawn_blocking(super::migrate::wait_stopped).await;
    let _ = fsops::remove_any(&daemon.layout.stopping_mark());
    tracing::info!("stopped");
    Ok(true)
}

/// Tells `slot`'s supervisor to stop its generations; the receiver hears when they are.
fn shut_down(daemon: &Daemon, slot: Slot) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    let _ = daemon.slots[slot.index()]
        .tx
        .send(supervisor::Msg::Shutdown(tx));
    rx
}

/// Waits until `slot` routes nothing and the generations it drains have no request in
/// flight (so every copy of a write it answered is queued), or until `deadline`.
async fn answered(daemon: &Daemon, slot: Slot, deadline: tokio::time::Instant) {
    let handle = &daemon.slots[slot.index()];
    while tokio::time::Instant::now() < deadline {
        let busy = {
            let (live, status) = handle.live_and_status();
            live.is_some() || status.draining.iter().any(|g| g.in_flight.get() > 0)
        };
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
