//! The allocator's settings for a daemon that runs for months: what a burst of large
//! bodies took goes back to the system once freed.
//!
//! glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB),
//! so after one mirrored 9 MiB upload every later block of that size came from the
//! threads' arenas, which keep what is freed for their next allocations: 40 mirrored
//! uploads of 9 MiB at once, three times, left the daemon at 502 MiB of RSS for good
//! (18 MiB before).
//! A fixed threshold of 64 KiB keeps every block from it up (a copy's body, a connection's
//! read buffer past its first growth) in a mapping of its own, unmapped when freed, and
//! the arenas give their top back past the same: 16 MiB after the same bursts. The
//! requests of the data path allocate far less than that each (see README "Benchmarks").
//!
//! Small blocks are another matter: an arena gives back only its top, and the buffers of
//! thousands of connections freed in any order leave its middle free but mapped. Five
//! bursts of 3,000 connections left 173 MiB, 6,000 left 272 MiB, for good; so
//! [`trim`] gives the free pages of every arena back, every [`TRIM_EVERY`].

/// Blocks of this size and up get a mapping of their own; arenas trim past it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD: libc::c_int = 64 << 10;

/// Sets the allocator up for the daemon, early, before its threads start. Only on glibc,
/// whose thresholds these are.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters (under its own lock).
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) != 1
            || libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD) != 1
        {
            tracing::debug!(
                "mallopt refused the allocator settings: freed memory may stay with the daemon"
            );
        }
    }
}

/// How often [`trim`] runs: freed memory goes back within this, and an idle daemon's
/// trim finds nothing to do.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The daemon's task that trims every [`TRIM_EVERY`].
pub async fn keep_trimmed() {
    loop {
        tokio::time::sleep(TRIM_EVERY).await;
        trim();
    }
}

/// Gives the free pages of the allocator's arenas back to the system (`malloc_trim`),
/// middles included. Only on glibc.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory (under the arenas' own locks).
    unsafe {
        libc::malloc_trim(0);
    }
}
