//! The build command: run without a shell in its own process group, bounded by
//! `build.timeout`, its output (stdout and stderr interleaved as written) copied line by
//! line to the pusher and the build log.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::argv;
use crate::config::BuildConfig;

/// How long build output may stay silent after the build ended before the copy stops.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// The longest line copied as one: output without newlines (a progress bar redrawn
/// with `\r`, a binary dumped by mistake) goes out in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// Splits output into lines as it comes, in time linear in its size.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Adds `bytes` and hands each complete line (without its `\n`) to `emit`.
    fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        // Every newline before this point has been handed out already.
        let mut scan = self.pending.len();
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(offset) = self.pending[scan..].iter().position(|&b| b == b'\n') {
            let end = scan + offset;
            emit(&self.pending[start..end]);
            start = end + 1;
            scan = start;
        }
        // Over (not at) the limit: a line of exactly MAX_LINE whose newline comes in
        // the next read is still one line.
        while self.pending.len() - start > MAX_LINE {
            emit(&self.pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }

    /// The last line, if the output did not end with a newline.
    fn finish(self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
        }
    }
}

/// Runs the build command in `dir`, bounded by the timeout, its output (stdout and stderr
/// interleaved as written) copied line by line to `out` and `log`.
pub(super) fn run(
    dir: &Path,
    config: &BuildConfig,
    log: &mut File,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
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
    command.envs(&config.env);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", words[0]))?;
    // The writer ends live in the child only now, so the reader sees EOF when it is done.
    drop(command);
    let group = Pid::from_raw(child.id() as i32);

    // When the build is over, the copy ends at EOF or after `OUTPUT_GRACE` of silence:
    // something the build left outside its group (a daemonised tool) may hold the pipe.
    let finished: Mutex<Option<Instant>> = Mutex::new(None);
    std::thread::scope(|scope| {
        let finished = &finished;
        let copier = scope.spawn(move || {
            let mut copy = |line: &[u8]| {
                let _ = log.write_all(line);
                let _ = log.write_all(b"\n");
                let _ = out.write_all(b"  ");
                let _ = out.write_all(line);
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            };
            let mut lines = Lines::default();
            let mut chunk = [0u8; 8192];
            loop {
                let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(100u16)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => {
                        let over = finished
                            .lock()
                            .expect("no panic holds it")
                            .is_some_and(|t| t.elapsed() > OUTPUT_GRACE);
                        if over {
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
        });
        let (tx, rx) = mpsc::channel();
        scope.spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(config.timeout) {
            Ok(status) => status.context("cannot wait for the build")?,
            Err(_) => {
                let _ = killpg(group, Signal::SIGKILL);
                let _ = rx.recv();
                *finished.lock().expect("no panic holds it") = Some(Instant::now());
                let _ = copier.join();
                anyhow::bail!(
                    "timed out after {} (build.timeout); its process group was killed",
                    humantime::format_duration(config.timeout)
                );
            }
        };
        // Whatever the build left running in its group would hold the pipe open.
        let _ = killpg(group, Signal::SIGKILL);
        *finished.lock().expect("no panic holds it") = Some(Instant::now());
        let _ = copier.join();
        anyhow::ensure!(
            status.success(),
            "`{}` exited with {status}",
            config.command
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for piece in pieces {
            lines.feed(piece, |line| out.push(line.to_vec()));
        }
        lines.finish(|line| out.push(line.to_vec()));
        out
    }

    #[test]
    fn lines_are_split_across_reads_and_long_ones_cut() {
        assert_eq!(
            split(&[b"one\ntw", b"o\n\nthr", b"ee"]),
            [&b"one"[..], b"two", b"", b"three"]
        );
        // 5 MiB without a newline, in 8 KiB reads: pieces of MAX_LINE, in linear time.
        let chunk = vec![b'x'; 8192];
        let pieces: Vec<&[u8]> = (0..640).map(|_| &chunk[..]).collect();
        let out = split(&pieces);
        assert_eq!(out.len(), 5 * 1024 * 1024 / MAX_LINE);
        assert!(out.iter().all(|line| line.len() == MAX_LINE));
        // A line of exactly MAX_LINE, its newline in the next read: one line, not two.
        let full = vec![b'x'; MAX_LINE];
        let out = split(&[&full[..], b"\nnext\n"]);
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_LINE, 4]);
    }
}
