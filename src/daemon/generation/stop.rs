//! Draining and stopping a generation: in-flight requests first, then SIGTERM to the
//! whole process group, SIGKILL after the grace time, and what it left outside the group.

use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::daemon::workers;

use super::Generation;

impl Generation {
    /// Lets in-flight requests finish, up to `drain`; how many were still in flight
    /// then, which the stop that follows cuts off.
    pub async fn drain(&self, drain: Duration) -> u64 {
        self.stopping.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + drain;
        while self.in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.in_flight.get();
        if left > 0 {
            let _ = self.cut_after.set(drain);
        }
        left
    }

    /// SIGTERM to the whole group, SIGKILL after `grace`; returns once the group is gone,
    /// and what it left outside the group (`workers::reap_strays`) too. Those get their
    /// SIGTERM with the group's, so a stop takes one `grace` at most, and so do the groups
    /// it was found to run when it went live (`adopted`); what the group starts outside
    /// itself while it stops is stopped after it.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        let strays = || {
            let (layout, pid) = (self.layout.clone(), self.pid);
            let generation = format!("{}/{}", self.slot, self.id);
            tokio::task::spawn_blocking(move || {
                workers::reap_strays(&layout, &generation, pid, grace)
            })
        };
        let alongside = strays();
        let adopted = std::mem::take(&mut *self.adopted.lock().expect("no panic holds it"));
        let adopted = tokio::task::spawn_blocking(move || workers::stop_adopted(&adopted, grace));
        let group = Pid::from_raw(self.pid as i32);
        if workers::group_alive(self.pid) {
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while workers::group_alive(self.pid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if workers::group_alive(self.pid) {
                tracing::warn!(slot = %self.slot, generation = self.id, pid = self.pid, "still running {} after SIGTERM: SIGKILL to its group", humantime::format_duration(grace));
                let _ = killpg(group, Signal::SIGKILL);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while workers::group_alive(self.pid) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        }
        workers::forget(&self.layout, self.pid);
        let _ = alongside.await;
        let _ = adopted.await;
        let _ = strays().await;
        tracing::info!(slot = %self.slot, generation = self.id, pid = self.pid, "stopped");
    }
}
