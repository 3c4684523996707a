//! A generation's output: copied line by line to the daemon's log (and, outside systemd,
//! to `logs/<slot>.log`), its last lines kept to say why it failed.
//!
//! The quote is the last lines, plus the last line before them that names an error: a
//! runtime's report often ends in a stack trace, a closing brace and its version (node:
//! `Error: Cannot find module ...`, eight `at` lines, `}`, `Node.js v20`), and the last
//! lines alone would say nothing.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::slot_log::SlotLog;
use crate::lines::Lines;

/// Lines of output kept.
const KEPT: usize = 40;
/// Lines quoted from the end.
const QUOTED: usize = 3;

/// The last lines a generation wrote, and where all of them went.
pub struct Tail {
    lines: Mutex<VecDeque<String>>,
    /// The slot's log file; `None` under systemd (the journal has the output with the
    /// daemon's log) or when it could not be opened.
    log: Option<PathBuf>,
}

impl Tail {
    pub fn new(log: Option<PathBuf>) -> Arc<Tail> {
        Arc::new(Tail {
            lines: Mutex::default(),
            log,
        })
    }

    fn push(&self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let mut lines = self.lines.lock().expect("tail lock: no panic holds it");
        if lines.len() == KEPT {
            lines.pop_front();
        }
        lines.push_back(crate::logging::quotable(line));
    }

    /// `; last output: a | b | c (all of it in logs/blue.log)`, or nothing.
    pub fn quote(&self) -> String {
        let lines = self.lines.lock().expect("tail lock: no panic holds it");
        if lines.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let whole = match &self.log {
            Some(log) => format!("all of it in {}", log.display()),
            None => "all of it in the daemon's log".to_string(),
        };
        format!("; last output: {} ({whole})", pick(&lines))
    }
}

/// The last `QUOTED` lines, after the last earlier line that names an error, if any.
fn pick(lines: &[&str]) -> String {
    let end = &lines[lines.len().saturating_sub(QUOTED)..];
    let before = &lines[..lines.len() - end.len()];
    let error = before
        .iter()
        .rev()
        .find(|line| crate::lines::names_an_error(line));
    match error {
        Some(error) => format!("{error} | ... | {}", end.join(" | ")),
        None => end.join(" | "),
    }
}

/// Copies `stream` (the worker's `name`, stdout or stderr) line by line to the log, the
/// slot's log file and `tail`, until it ends. Lines over [`crate::lines::MAX_LINE`] are cut into pieces,
/// as a build's are: output without newlines never piles up in the daemon's memory.
pub async fn copy_lines(
    mut stream: Box<dyn AsyncRead + Send + Unpin>,
    label: String,
    name: &'static str,
    tail: Arc<Tail>,
    slot_log: Option<Arc<SlotLog>>,
) {
    let emit = |bytes: &[u8]| {
        // Bytes, not `lines()`: output that is not UTF-8 must not stop the copy (and
        // then block the worker on a full pipe).
        let line = String::from_utf8_lossy(bytes).trim_end().to_string();
        tracing::info!(target: "worker", "[{label} {name}] {line}");
        if let Some(log) = &slot_log {
            let now = humantime::format_rfc3339_seconds(SystemTime::now());
            let line = crate::logging::escaped(&line);
            log.write_line(&format!("{now} [{label} {name}] {line}"));
        }
        tail.push(&line);
    };
    let mut lines = Lines::default();
    let mut chunk = vec![0; 8192];
    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
        lines.feed(&chunk[..n], emit);
    }
    lines.finish(emit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::MAX_LINE;

    #[tokio::test]
    async fn a_line_without_newlines_is_cut_into_pieces() {
        let mut input = vec![b'x'; 3 * MAX_LINE + 100];
        input.extend_from_slice(b"\n");
        // Exactly MAX_LINE, then its newline: one line, no empty one after it.
        input.extend(std::iter::repeat_n(b'y', MAX_LINE));
        input.extend_from_slice(b"\nshort\nlast, no newline");
        let tail = Tail::new(None);
        let stream: Box<dyn AsyncRead + Send + Unpin> = Box::new(std::io::Cursor::new(input));
        copy_lines(stream, "blue/1".into(), "stdout", tail.clone(), None).await;
        let lines = tail.lines.lock().unwrap();
        let firsts: Vec<char> = lines.iter().map(|l| l.chars().next().unwrap()).collect();
        assert_eq!(firsts, ['x', 'x', 'x', 'x', 'y', 's', 'l']);
        assert_eq!(lines[5], "short");
        assert_eq!(lines[6], "last, no newline");
    }

    #[test]
    fn a_stack_trace_is_quoted_with_its_error() {
        let node = [
            "node:internal/modules/cjs/loader:1228",
            "  throw err;",
            "Error: Cannot find module '/srv/app/main.js'",
            "    at Module._resolveFilename (node:internal/modules/cjs/loader:1225:15)",
            "    at Module._load (node:internal/modules/cjs/loader:1051:27)",
            "  code: 'MODULE_NOT_FOUND',",
            "  requireStack: []",
            "}",
            "Node.js v20.20.2",
        ];
        assert_eq!(
            pick(&node),
            "Error: Cannot find module '/srv/app/main.js' | ... |   requireStack: [] | } | Node.js v20.20.2"
        );
        // Short output, or an error among the last lines: the last lines as they are.
        assert_eq!(pick(&["listening", "boom"]), "listening | boom");
        assert_eq!(
            pick(&["a", "b", "ModuleNotFoundError: No module named 'x'"]),
            "a | b | ModuleNotFoundError: No module named 'x'"
        );
    }
}
