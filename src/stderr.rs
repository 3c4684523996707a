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
//! once and drop the rest (a build's output is all in its log). At the end ([`finish`]),
//! a hook that dropped some waits up to [`FINAL_WAIT`] once more, to say so and give its
//! own lines that were dropped again: the steps that name the build and the release, and
//! the verdict, which a push client paused for a while (Ctrl-S, a stalled SSH link)
//! never saw, nor that anything was missing.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The longest a write waits for a reader that takes nothing: a pusher on a slow link
/// still reads a pipe's 64 KiB in that time.
const STALL: Duration = Duration::from_secs(10);

/// How long [`finish`] waits for a reader that took nothing, to say what it missed.
const FINAL_WAIT: Duration = Duration::from_secs(30);

/// A write has waited `STALL` in vain: no write waits any more.
static STALLED: AtomicBool = AtomicBool::new(false);

/// stderr is the pusher's non-blocking pipe ([`nonblocking`]): lines are kept for
/// [`finish`].
static KEEPING: AtomicBool = AtomicBool::new(false);

/// Bytes dropped so far.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// The last byte that went out was a newline (or none went out yet).
static AT_LINE_START: AtomicBool = AtomicBool::new(true);

/// What ends a line of the pusher's that was cut short.
const CUT: &[u8] = b" (cut short)\n";

/// bluegreen's own lines (each write is one, see [`write_all`]) that were dropped, whole
/// or in part, each at most [`KEPT`] bytes: the last [`MISSED_LINES`] of them, to give
/// again. A build's output (indented) is not kept: its log has all of it.
static MISSED: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());

/// The most of a line kept to give again: the verdict and the error line, and the step
/// lines that name the release and the build.
const KEPT: usize = 3072;

/// How many of the lines dropped are kept to give again: a push's steps and verdict.
const MISSED_LINES: usize = 8;

/// The last write, at most [`KEPT`] bytes of it: given again after [`MISSED`] when it is
/// not the last of those (it came through), so that the verdict stays the pusher's last
/// line.
static LAST: Mutex<Vec<u8>> = Mutex::new(Vec::new());

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

/// Writes `text` and a newline to stderr in one write (see [`Lossy`]): a note or a
/// refusal a command prints, where `eprintln!` would panic on a closed stderr.
pub fn line(text: &str) {
    write_all(format!("{text}\n").as_bytes());
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
        KEEPING.store(true, Ordering::Relaxed);
    }
}

/// At the end: if any output was dropped, waits up to [`FINAL_WAIT`] for the reader to
/// take more, then says how much it missed and gives again the last of bluegreen's own
/// lines that were dropped ([`MISSED`]).
pub fn finish() {
    // Only the hook's stderr (the pusher's pipe) is kept: a daemon's or a command's that
    // failed has no reader to tell.
    let dropped = DROPPED.load(Ordering::Relaxed);
    if !KEEPING.swap(false, Ordering::Relaxed) || dropped == 0 {
        return;
    }
    let missed = MISSED.lock().expect("no panic holds it");
    // After a line cut short, on a line of its own.
    let mut said = match AT_LINE_START.load(Ordering::Relaxed) {
        true => String::new(),
        false => String::from_utf8_lossy(CUT).into_owned(),
    };
    said.push_str(&format!(
        "({dropped} bytes of this push's output were not shown here: the push client did not read them in time"
    ));
    let last = as_line(&LAST.lock().expect("no panic holds it"));
    let last_again = missed.back() != Some(&last);
    match (missed.is_empty(), last_again) {
        (true, _) => said.push_str(")\n"),
        (false, false) => said.push_str("; bluegreen's own lines among them:)\n"),
        (false, true) => {
            said.push_str("; bluegreen's own lines among them, then its last line again:)\n")
        }
    }
    for line in missed.iter() {
        said.push_str(&String::from_utf8_lossy(line));
    }
    if !missed.is_empty() && last_again {
        said.push_str(&String::from_utf8_lossy(&last));
    }
    STALLED.store(false, Ordering::Relaxed);
    write_within(said.as_bytes(), FINAL_WAIT);
}

/// Writes `line` to stderr, waiting at most `STALL` for room while nothing is taken. Each
/// writer gives it whole lines (the hook's output goes through a `LineWriter`, and a
/// build's lines, the log's events and the error line each come in one piece), so that
/// a stalled pipe, which takes a write of up to 4 KiB whole or not at all, keeps lines
/// whole.
fn write_all(line: &[u8]) {
    // A line of the pusher's cut short (a stall took part of it): marked, and ended, so
    // that this one does not run on from it. Written with it, in one piece.
    let marked;
    let buf = match KEEPING.load(Ordering::Relaxed) && !AT_LINE_START.load(Ordering::Relaxed) {
        true => {
            marked = [CUT, line].concat();
            &marked[..]
        }
        false => line,
    };
    let written = write_within(buf, STALL);
    if written < buf.len() {
        DROPPED.fetch_add(buf.len() - written, Ordering::Relaxed);
    }
    if written > 0 {
        AT_LINE_START.store(buf[written - 1] == b'\n', Ordering::Relaxed);
    }
    if !KEEPING.load(Ordering::Relaxed) {
        return;
    }
    // The line itself, without the mark of the one before.
    let kept = &line[..line.len().min(KEPT)];
    if written < buf.len() && !line.starts_with(b"  ") {
        let mut missed = MISSED.lock().expect("no panic holds it");
        if missed.len() == MISSED_LINES {
            missed.pop_front();
        }
        missed.push_back(as_line(kept));
    }
    let mut last = LAST.lock().expect("no panic holds it");
    last.clear();
    last.extend_from_slice(kept);
}

/// `bytes` ended by a newline, as a line given again is.
fn as_line(bytes: &[u8]) -> Vec<u8> {
    let mut line = bytes.to_vec();
    if line.last() != Some(&b'\n') {
        line.push(b'\n');
    }
    line
}

/// Writes `buf` to stderr, waiting at most `stall` for room while nothing is taken;
/// how much of it was written.
fn write_within(buf: &[u8], stall: Duration) -> usize {
    let stderr = std::io::stderr();
    let mut stderr = stderr.lock();
    let mut rest = buf;
    let mut deadline = None;
    while !rest.is_empty() {
        match stderr.write(rest) {
            Ok(0) => break,
            Ok(n) => {
                rest = &rest[n..];
                deadline = None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if STALLED.load(Ordering::Relaxed) {
                    break;
                }
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + stall);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    STALLED.store(true, Ordering::Relaxed);
                    break;
                }
                let fd = std::io::stderr();
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(
                    &mut fds,
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                );
            }
            Err(_) => break,
        }
    }
    buf.len() - rest.len()
}
