//! A started daemon's first minutes: each listener accepts once its slot's first
//! generation has settled (live, or failed with nothing coming back; a slot with no
//! release at once), so a restarted daemon's clients wait in the listen backlog instead
//! of getting 503s; the front opens with the slot it routes to. A stop asked for
//! meanwhile is obeyed at once, and a SIGHUP is a reload as ever.

use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::SIGHUP;
use tokio::sync::{mpsc, oneshot, watch};

use super::serve::next_signal;
use super::{systemd, Daemon};
use crate::slot::Slot;
use crate::verdict::Verdict;

/// What opens each listener to connections once its slot has settled.
pub(super) struct Opens {
    pub front: watch::Sender<bool>,
    /// Blue's, then green's.
    pub slots: [watch::Sender<bool>; 2],
}

/// Opens each listener once its slot's first start (`firsts`, blue's then green's: the
/// verdict to wait for, none for a slot that starts nothing) has settled, within
/// `app.ready_timeout` and 5 s. True when a stop came first, whatever had settled.
pub(super) async fn open_when_settled(
    daemon: &Arc<Daemon>,
    opens: Opens,
    firsts: [Option<oneshot::Receiver<Verdict>>; 2],
    signals: &mut mpsc::UnboundedReceiver<i32>,
) -> bool {
    let wait = daemon.config().app.ready_timeout + Duration::from_secs(5);
    systemd::extend_timeout(wait + systemd::MARGIN);
    let restored = daemon.routing().0;
    let Opens { front, slots } = opens;
    let settle = |slot: Slot, verdict: Option<oneshot::Receiver<Verdict>>| {
        let (open, front) = (&slots[slot.index()], &front);
        async move {
            let deadline = tokio::time::Instant::now() + wait;
            let live = match verdict {
                Some(verdict) => matches!(
                    tokio::time::timeout_at(deadline, verdict).await,
                    Ok(Ok(verdict)) if verdict.live
                ),
                None => false,
            };
            // A failed first start is followed by another (the last live release brought
            // back, or the same one tried again, after the backoff's second): clients
            // wait for it in the backlog too, within the same wait (systemd's start
            // timeout counts it), rather than get 503s.
            let live = live || daemon.slots[slot.index()].comes_live(deadline).await;
            open.send_replace(true);
            if restored == Some(slot) {
                front.send_replace(true);
            }
            live
        }
    };
    let [first_blue, first_green] = firsts;
    let startup = async {
        let live = tokio::join!(
            settle(Slot::Blue, first_blue),
            settle(Slot::Green, first_green)
        );
        for (slot, live) in Slot::ALL.into_iter().zip([live.0, live.1]) {
            if live {
                daemon.adopt_if_none(slot);
            }
        }
        front.send_replace(true);
    };
    // A stop asked for while the first generations get ready is obeyed at once (systemd
    // would otherwise wait up to ready_timeout before the drain even starts).
    let stop_early = async {
        while let Some(signal) = next_signal(signals).await {
            if signal != SIGHUP {
                return;
            }
            // A task of its own: the startup ending meanwhile drops this loop, and the
            // reload (its settle wait) must finish all the same. Told to systemd as its
            // status only: RELOADING=1 and READY=1 around it would say the daemon is
            // ready before its slots are.
            let daemon = daemon.clone();
            let _ = tokio::spawn(async move {
                systemd::status(&super::config_reload::reload_config(&daemon).await);
            })
            .await;
        }
    };
    tokio::select! {
        _ = startup => false,
        _ = stop_early => true,
    }
}
