//! stderr that neither fails nor blocks for good: where the logs, the errors and the
//! hook's `remote:` lines go.
//!
//! A write error loses the line, never the process: tracing-subscriber reports a failed
//! write on stderr itself, with `eprintln!`, which panics when stderr is what failed; the
//! panic report fails the same way, and the process aborts (exit 134, workers orphaned).
//!
//! The hook's stderr is a pipe to git's receive-pack, which passes it to the pusher. When
//! the pusher is gone (a killed `git push`, a dropped SSH session), receive-pack keeps the
//! pipe open but stops reading it: once it is full, a plain write blocks for good, and the
//! hook with it, holding its slot's push turn and its build's lock. So the hook makes its
//! stderr non-blocking ([`nonblocking`]), and a write waits at most [`STALL`] for the
//! pipe to take more; after one such stall, writes take what the pipe has room for at
//! once and drop the rest (a build's output is all in its log).

use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The longest a write waits for a reader that takes nothing: a pusher on a slow link
/// still reads a pipe's 64 KiB in that time.
const STALL: Duration = Duration::from_secs(10);

/// A write has waited `STALL` in vain: no write waits any more.
static STALLED: AtomicBool = AtomicBool::new(false);

/// stderr, as this module writes it.
pub struct Lossy;

impl Write for Lossy {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Makes stderr, when it is a pipe, non-blocking: fd 2 becomes a file description of the
/// pipe opened anew, so that whoever shares the one it had (git) keeps it as it was. With
/// no `/proc`, or no reader left, stderr stays as it is.
pub fn nonblocking() {
    let fifo = std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.file_type().is_fifo());
    if !fifo {
        return;
    }
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/proc/self/fd/2");
    if let Ok(pipe) = opened {
        let _ = nix::unistd::dup2_stderr(pipe);
    }
}

/// Writes `buf` to stderr, waiting at most `STALL` for room while nothing is taken.
fn write_all(buf: &[u8]) {
    let stderr = std::io::stderr();
    let mut stderr = stderr.lock();
    let mut rest = buf;
    let mut deadline = None;
    while !rest.is_empty() {
        match stderr.write(rest) {
            Ok(0) => return,
            Ok(n) => {
                rest = &rest[n..];
                deadline = None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if STALLED.load(Ordering::Relaxed) {
                    return;
                }
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + STALL);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    STALLED.store(true, Ordering::Relaxed);
                    return;
                }
                let fd = std::io::stderr();
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(
                    &mut fds,
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                );
            }
            Err(_) => return,
        }
    }
}
