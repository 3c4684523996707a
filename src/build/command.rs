//! The build command: run without a shell in its own process group, bounded by
//! `build.timeout` and stopped by a stopping signal to the hook (see `Interrupt`), its
//! output (stdout and stderr interleaved as written) copied line by line to the pusher
//! and the build log, its last lines kept to say why it failed.
//!
//! The pusher gets the lines from a thread of their own ([`forward`]): a push client that
//! stops reading (a terminal paused with Ctrl-S, a stalled SSH link) held the build on
//! its output pipe, up to 10 s (see `stderr`), and that wait counted against
//! `build.timeout`. Lines the pusher is too slow for are dropped past a bound, and it is
//! told how many; the log has them all, up to [`LOG_LIMIT`].

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::argv;
use crate::config::BuildConfig;
use crate::interrupt::Interrupt;
use crate::lines::{Lines, Tail};

/// Environment variable set on every build: its temp folder. The next push finds by it
/// what the build of a SIGKILLed hook still runs, wherever its processes work.
pub use crate::config::BUILD_MARKER as MARKER;

/// How many of a failed build's last lines its reason quotes.
const QUOTED: usize = 3;

/// How often the wait for the build looks for a stopping signal (see `Interrupt`).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);
/// How long build output may stay silent after the build ended before the copy stops.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How long after the build ended its output is copied at most: a process it left
/// running outside its group that writes without pause would otherwise hold the hook
/// (and its push) forever.
const OUTPUT_LIMIT: Duration = Duration::from_secs(10);
/// The most memory build output waiting for a slow pusher may take; lines past it are
/// dropped (and counted, and said).
const FORWARD_BYTES: usize = 8 << 20;
/// How often the pusher is told at most that lines were dropped.
const TELL_EVERY: Duration = Duration::from_secs(1);
/// How long after the build ended its lines still go to the pusher: a slow but steady
/// reader (10 KB/s) took minutes to take 8 MiB, and the push held its turn and the
/// tree's build meanwhile (another slot's push of the same commit waited for it).
const FORWARD_LIMIT: Duration = Duration::from_secs(10);

/// What a waiting line takes besides its bytes (its allocation and its place in the
/// channel): a flood of empty lines took 300 MB counted by their bytes alone.
const LINE_COST: usize = 64;
/// Where a build log stops: 64 MiB, as a slot's log is cut. A build that writes without
/// pause filled the disk by gigabytes within its timeout.
const LOG_LIMIT: u64 = 64 << 20;

/// Runs the build command in `dir`, bounded by the timeout, its output (stdout and stderr
/// interleaved as written) copied line by line to `out` and to a new log at `log_path`.
/// A stopping signal (`interrupt`) kills the build's group and fails it, as the timeout
/// does. A failure's reason names the log and quotes the build's last lines. Returns the
/// time the command took (not the pusher's: its output may still be on its way then).
pub(super) fn run(
    dir: &Path,
    config: &BuildConfig,
    log_path: &Path,
    out: &mut (dyn Write + Send),
    interrupt: &Interrupt,
) -> anyhow::Result<Duration> {
    let mut log =
        File::create(log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    if let Some(signal) = interrupt.received() {
        anyhow::bail!("stopped by {signal} before it started");
    }
    let words = argv::expand(&config.command, &config.env)?;
    let (reader, writer) = std::io::pipe().context("cannot make a pipe for the build output")?;
    let mut command = Command::new(&words[0]);
    command
        .args(&words[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    // git's hook env (GIT_DIR, GIT_QUARANTINE_PATH, ...) would break any git the build runs.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            command.env_remove(name);
        }
    }
    // A push from a worker's process (a deploy bot, an admin page) carries that worker's
    // marks: its daemon would take the build for what the worker left, and stop it.
    for name in crate::config::MARKER_ENV {
        command.env_remove(name);
    }
    command.envs(&config.env);
    command.env(MARKER, dir);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| {
        let why = argv::not_started(&words[0], dir, config.env.get("PATH"), &e);
        anyhow::anyhow!("cannot start `{}`: {why}", words[0])
    })?;
    // The writer ends live in the child only now, so the reader sees EOF when it is done.
    drop(command);
    let group = Pid::from_raw(child.id() as i32);

    // When the build is over, the copy ends at EOF, after `OUTPUT_GRACE` of silence, or
    // `OUTPUT_LIMIT` after it ended: something the build left outside its group (a
    // daemonised tool) may hold the pipe, and keep writing to it.
    let finished: Mutex<Option<Instant>> = Mutex::new(None);
    // Bytes of output queued for the pusher.
    let waiting = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (finished, waiting) = (&finished, &waiting);
        let (to_pusher, lines_out) = mpsc::channel::<(usize, Vec<u8>)>();
        scope.spawn(move || forward(lines_out, (waiting, finished), out, log_path));
        let copier = scope.spawn(move || {
            // The first failed write to the log (a full disk): the log stops there, and
            // the pusher, who still gets every line, is told at once.
            let mut log_failed: Option<std::io::Error> = None;
            let mut logged: u64 = 0;
            // From the output, not read back from the log: that may be cut short.
            let mut tail = Tail::new(QUOTED);
            // Lines dropped and not told yet, and when the pusher was last told.
            let mut dropped = 0;
            let mut told = Instant::now();
            // A line, bounded: dropped (and counted) while too much waits for the pusher.
            // How many is told with the next line sent, at most once a second: a build
            // that writes faster than the push carries its lines drops some at every turn.
            let mut send = |line: Vec<u8>| {
                let cost = line.len() + LINE_COST;
                if waiting.fetch_add(cost, Ordering::Relaxed) + cost > FORWARD_BYTES {
                    waiting.fetch_sub(cost, Ordering::Relaxed);
                    dropped += 1;
                    return;
                }
                let tell = match dropped > 0 && told.elapsed() >= TELL_EVERY {
                    true => {
                        told = Instant::now();
                        std::mem::take(&mut dropped)
                    }
                    false => 0,
                };
                let _ = to_pusher.send((tell, line));
            };
            // What the copy says of itself, never dropped.
            let note = |said: String| {
                waiting.fetch_add(said.len() + 3 + LINE_COST, Ordering::Relaxed);
                let _ = to_pusher.send((0, format!("  {said}\n").into_bytes()));
            };
            let mut copy = |line: &[u8]| {
                tail.push(line);
                if log_failed.is_none() && logged <= LOG_LIMIT {
                    logged += line.len() as u64 + 1;
                    let written = match logged > LOG_LIMIT {
                        false => log.write_all(line).and_then(|()| log.write_all(b"\n")),
                        true => {
                            let said = format!(
                                "(the build log stops here: it reached {} MiB; the output past it is not kept)",
                                LOG_LIMIT >> 20
                            );
                            let _ = writeln!(log, "{said}");
                            note(said);
                            Ok(())
                        }
                    };
                    if let Err(e) = written {
                        note(format!("(the build log stops here: {e})"));
                        log_failed = Some(e);
                    }
                }
                // One write per line: a pusher's pipe that takes part of it keeps a whole
                // line or none (see `stderr`). Control bytes go as `?` (the log keeps
                // them): git's client cuts a line at a NUL, and lost the lines after it
                // and glued the next step's line on; escapes retitled or cleared the
                // pusher's terminal. A `\r` stays: it is how progress redraws its line.
                let mut sent = Vec::with_capacity(line.len() + 3);
                sent.extend_from_slice(b"  ");
                sent.extend(line.iter().map(|&b| match b {
                    b'\t' | b'\r' => b,
                    0..0x20 | 0x7f => b'?',
                    _ => b,
                }));
                sent.push(b'\n');
                send(sent);
            };
            let mut lines = Lines::default();
            let mut chunk = [0u8; 8192];
            let since_end = || {
                finished
                    .lock()
                    .expect("no panic holds it")
                    .map(|t| t.elapsed())
            };
            loop {
                if since_end().is_some_and(|t| t > OUTPUT_LIMIT) {
                    break;
                }
                let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(100u16)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => {
                        if since_end().is_some_and(|t| t > OUTPUT_GRACE) {
                            break;
                        }
                        continue;
                    }
                    Err(_) => break,
                    Ok(_) => {}
                }
                let n = match (&reader).read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                lines.feed(&chunk[..n], &mut copy);
            }
            lines.finish(&mut copy);
            if dropped > 0 {
                waiting.fetch_add(LINE_COST, Ordering::Relaxed);
                let _ = to_pusher.send((dropped, Vec::new()));
            }
            Said { log_failed, tail }
        });
        let (tx, rx) = mpsc::channel();
        scope.spawn(move || {
            let _ = tx.send(child.wait());
        });
        // Waits for the build, looking for a stopping signal now and then: the reason
        // to stop it, if one comes before it ends.
        let deadline = Instant::now() + config.timeout;
        let ended = loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK);
            match rx.recv_timeout(wait) {
                Ok(status) => break Ok(status.context("cannot wait for the build")?),
                Err(_) => {
                    if let Some(signal) = interrupt.received() {
                        break Err(format!("stopped by {signal}"));
                    }
                    if Instant::now() >= deadline {
                        break Err(format!(
                            "timed out after {} (build.timeout)",
                            humantime::format_duration(config.timeout)
                        ));
                    }
                }
            }
        };
        let took = started.elapsed();
        let status = match ended {
            Ok(status) => status,
            Err(why) => {
                let _ = killpg(group, Signal::SIGKILL);
                super::stop_helpers(dir);
                let _ = rx.recv();
                *finished.lock().expect("no panic holds it") = Some(Instant::now());
                let said = copier.join().ok();
                anyhow::bail!(
                    "{why}; its process group was killed{}",
                    Said::reason(said, log_path)
                );
            }
        };
        // Whatever the build left running, in its group or outside it (`setsid`), would
        // hold the pipe open, and run on past the push.
        let _ = killpg(group, Signal::SIGKILL);
        super::stop_helpers(dir);
        *finished.lock().expect("no panic holds it") = Some(Instant::now());
        let said = copier.join().ok();
        anyhow::ensure!(
            status.success(),
            "`{}` {}{}",
            config.command,
            crate::exit::ended(status),
            Said::reason(said, log_path)
        );
        // The disk filled while it ran (its log could not be written): what it wrote
        // may be cut short whatever its exit status says, as a tool that ignores a
        // failed write exits 0. Kept, it would be reused by every push of this tree.
        let full = said
            .as_ref()
            .and_then(|said| said.log_failed.as_ref())
            .filter(|e| matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)));
        if let Some(e) = full {
            anyhow::bail!(
                "`{}` {}, but the disk filled while it ran ({e}, writing its log {}): what it wrote may be cut short, so it is not kept; free some space, then push a new commit (git commit --allow-empty -m retry)",
                config.command,
                crate::exit::ended(status),
                log_path.display()
            );
        }
        Ok(took)
    })
}

/// Writes the build's lines to the pusher as they come, each after how many were dropped
/// before it (an empty line: only that), until the build's output ends; lines still
/// waiting [`FORWARD_LIMIT`] after the build ended are dropped too.
fn forward(
    lines: mpsc::Receiver<(usize, Vec<u8>)>,
    (waiting, finished): (&AtomicUsize, &Mutex<Option<Instant>>),
    out: &mut (dyn Write + Send),
    log_path: &Path,
) {
    let late = || {
        finished
            .lock()
            .expect("no panic holds it")
            .is_some_and(|t| t.elapsed() > FORWARD_LIMIT)
    };
    let mut late_dropped = 0;
    let tell = |out: &mut (dyn Write + Send), dropped: usize| {
        let said = format!(
            "  ({dropped} lines of build output not shown here: they came faster than the push took them; see the build log, {})\n",
            log_path.display()
        );
        let _ = out.write_all(said.as_bytes());
    };
    for (dropped, line) in lines {
        waiting.fetch_sub(line.len() + LINE_COST, Ordering::Relaxed);
        if late() {
            late_dropped += dropped + usize::from(!line.is_empty());
            continue;
        }
        if dropped > 0 {
            tell(out, dropped);
        }
        if !line.is_empty() {
            let _ = out.write_all(&line);
            let _ = out.flush();
        }
    }
    if late_dropped > 0 {
        tell(out, late_dropped);
    }
}

/// What a build said, for the reason it failed.
struct Said {
    /// Why the log stops short, if it does.
    log_failed: Option<std::io::Error>,
    tail: Tail,
}

impl Said {
    /// `; log <path>` (and why it is incomplete), then `; last lines: ...`.
    fn reason(said: Option<Said>, log_path: &Path) -> String {
        let mut reason = format!("; log {}", log_path.display());
        let Some(said) = said else {
            return reason;
        };
        if let Some(e) = said.log_failed {
            reason.push_str(&format!(" (incomplete: {e})"));
        }
        let tail = said.tail.joined();
        if !tail.is_empty() {
            reason.push_str(&format!("; last lines: {tail}"));
        }
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build that writes without pause: its log stops at `LOG_LIMIT` (it filled the
    /// disk by gigabytes within its timeout), and says so, as the pusher is told.
    #[test]
    fn a_build_log_stops_at_its_limit_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("build.log");
        let config = BuildConfig {
            command: "sh -c 'yes \"$(printf %0999d 0)\" | head -n 70000'".into(),
            timeout: Duration::from_secs(120),
            env: Default::default(),
        };
        let mut out = Vec::new();
        run(
            dir.path(),
            &config,
            &log_path,
            &mut out,
            &Interrupt::never(),
        )
        .unwrap();
        let said = "(the build log stops here: it reached 64 MiB; the output past it is not kept)";
        let log = std::fs::read(&log_path).unwrap();
        assert!(log.len() as u64 <= LOG_LIMIT + said.len() as u64 + 1);
        assert!(log.ends_with(format!("{said}\n").as_bytes()));
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains(&format!("  {said}\n")), "{}", out.len());
    }
}
