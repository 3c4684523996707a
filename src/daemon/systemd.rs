//! sd_notify: tell systemd when the daemon is ready, reloading, stopping, and alive, and
//! how long its start and stop may take.
//!
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;

pub fn ready() {
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
}

/// A reload is over (READY=1), and how it went, for `systemctl status` (STATUS=).
pub fn reloaded(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// How a reload went, for `systemctl status` (STATUS=) alone: one read before READY=1
/// (while the first generations get ready), which must not say the daemon is ready.
pub fn status(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Status(status)]);
}

pub fn reloading() {
    let now = NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0));
    let _ = sd_notify::notify(false, &[NotifyState::Reloading, now]);
}

/// Added to what the daemon asks systemd for at its start and stop: the steps around
/// the waits the config sets (binding, the keep-alive second, the runtime's end).
pub const MARGIN: Duration = Duration::from_secs(10);

/// Asks for `time` more before the start, or the stop, under way times out
/// (EXTEND_TIMEOUT_USEC): it only ever lengthens the unit's TimeoutStartSec= or
/// TimeoutStopSec=, so the config's timeouts, not the unit's, bound what the daemon
/// waits for. At most u32 microseconds (71 minutes), as systemd reads it.
pub fn extend_timeout(time: Duration) {
    let usec = u32::try_from(time.as_micros()).unwrap_or(u32::MAX);
    let _ = sd_notify::notify(false, &[NotifyState::ExtendTimeoutUsec(usec)]);
}

pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// How often to ping the watchdog (half of `WatchdogSec`), if systemd set one. As
/// sd_watchdog_enabled(3) reads it: `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another
/// process (sd-notify's `watchdog_enabled` also wants `WATCHDOG_PID` present).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

pub fn watchdog() {
    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
}

/// What systemd gave the daemon alone, removed from the env of what it starts (workers,
/// the migrate step): its notify socket and watchdog, and the names of the sockets it
/// passed (`LISTEN_PID` and `LISTEN_FDS` are gone once the sockets are taken, but
/// `LISTEN_FDNAMES` stays).
pub fn keep_from(command: &mut tokio::process::Command) {
    for name in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ] {
        command.env_remove(name);
    }
}
