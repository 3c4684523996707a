//! Diagnostics: `tracing` to stderr (journald keeps it under systemd), `RUST_LOG` to tune.
//!
//! The daemon logs at info by default; the commands a person runs log warnings only,
//! so what they print stays theirs (the hook's `remote:` lines, tables, verdicts).
//! [`Sparse`] keeps a line that can come in floods (a mirror copy dropped per request)
//! to one a second. A log that cannot be written (its reader gone, its disk full) loses
//! the line, never the daemon: see [`crate::stderr`]. Nor does a reader that takes
//! nothing for a while (`serve 2>&1 | less` on its first page, a stalled log shipper):
//! the daemon's lines go out from a thread of their own ([`tracing_appender`]), and past
//! [`QUEUED_LINES`] waiting, new ones are dropped and counted ([`dropped`]), where every
//! thread that logged, the proxy's too, used to wait on the full pipe.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// The daemon's lines waiting to be written, at most: a worker's line is at most 64 KiB,
/// so the queue holds 64 MiB at the very most, and a few hundred KiB as a rule.
const QUEUED_LINES: usize = 1024;

/// The daemon's count of lines dropped (see [`dropped`]).
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Sets up the log; for the daemon (`serve`, `demo`), returns what writes out its last
/// lines when dropped (after at most a second).
pub fn init(daemon: bool) -> Option<WorkerGuard> {
    let default = if daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if !daemon {
        log.with_writer(|| crate::stderr::Lossy).init();
        return None;
    }
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("bluegreen-log")
        .finish(crate::stderr::Lossy);
    let _ = DROPPED.set(writer.error_counter());
    log.with_writer(writer).init();
    Some(guard)
}

/// The daemon's log lines dropped so far because its reader took none for a while.
fn dropped() -> u64 {
    DROPPED.get().map_or(0, |n| n.dropped_lines() as u64)
}

/// The daemon's task that says, each second, how many lines were dropped since it last
/// said: its line waits in the same queue, so it is told once the reader reads again.
pub async fn tell_dropped() {
    let mut told = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let dropped = dropped();
        if dropped > told {
            // This line too is dropped while the reader takes none, and counted in the
            // next: the last one, once it reads again, gives the total.
            let lines = match dropped - told {
                1 => "1 line of this log was".to_string(),
                n => format!("{n} lines of this log were"),
            };
            tracing::warn!(
                "{lines} dropped ({dropped} since the daemon started): its reader (journald, a pipe) took none for a while"
            );
            told = dropped;
        }
    }
}

/// `" (N more since the last line)"` for a line `Sparse` let through, or nothing.
pub fn held(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} more since the last line)"),
    }
}

/// Lets a line through at most once a second, counting the ones held back.
pub struct Sparse {
    start: Instant,
    /// Milliseconds after `start` of the last line let through; `u64::MAX` for none yet.
    last: AtomicU64,
    held: AtomicU64,
}

impl Default for Sparse {
    fn default() -> Sparse {
        Sparse {
            start: Instant::now(),
            last: AtomicU64::new(u64::MAX),
            held: AtomicU64::new(0),
        }
    }
}

impl Sparse {
    /// `Some(n)`: write the line now, noting the `n` held back since the last one.
    /// `None`: hold it back (it is counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(self.start.elapsed().as_millis() as u64)
    }

    /// The lines held back since the last one let through or flushed: for a periodic
    /// "N more" line, so that the count is told even when the flood stops.
    pub fn flush(&self) -> u64 {
        self.held.swap(0, Ordering::AcqRel)
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Acquire);
        let due = last == u64::MAX || now >= last.saturating_add(1000);
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::AcqRel));
        }
        self.held.fetch_add(1, Ordering::AcqRel);
        None
    }
}

/// Characters kept of a quoted line: a minified bundle or a progress bar must not swamp
/// a one-line reason.
const QUOTED_LINE: usize = 200;

/// Whether `c` may not stand as it is in a line of text: a control character (C0 and
/// C1), a Unicode line or paragraph separator (U+2028, U+2029), which editors, some
/// terminals and JavaScript's JSON readers take for a line break, or a bidirectional
/// formatting character (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069), which
/// makes the rest of a line show in another order than it reads (a reason that seems to
/// say something else).
pub fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061C}'
                | '\u{200E}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `line` (a worker's or a build's output) fit for a one-line reason: control characters
/// (a `\r` progress bar, colour escapes) as spaces, and at most `QUOTED_LINE` characters.
pub fn quotable(line: &str) -> String {
    quoted(line, QUOTED_LINE)
}

/// `text` on one line: control characters (line breaks too) as spaces, and at most
/// `limit` characters, then `...`.
pub fn quoted(text: &str, limit: usize) -> String {
    let mut out: String = text
        .chars()
        .take(limit)
        .map(|c| if is_control(c) { ' ' } else { c })
        .collect();
    if text.chars().nth(limit).is_some() {
        out.push_str("...");
    }
    out
}

/// `text` (a commit message, or what a release's metadata says it was) safe to print on
/// a terminal: control characters, escape sequences' start among them, as `?`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if is_control(c) { '?' } else { c })
        .collect()
}

/// An error as one line whatever it quotes: a file name from a pushed tree may hold a
/// newline (or a terminal escape), which would start a line of its own, so control
/// characters are shown escaped (`\n`).
pub fn one_line(text: &str) -> String {
    escape_controls(text, false).into_owned()
}

/// A worker's line as a log file keeps it: control characters other than tab escaped
/// as [`one_line`] does (`\u{1b}`, `\r`), so that `tail -f` on the file runs no escape
/// sequence of the worker's, and a `\r` in it hides no part of the line.
pub fn escaped(line: &str) -> Cow<'_, str> {
    escape_controls(line, true)
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`), tabs kept if `tabs`; as
/// it is when there is none.
fn escape_controls(text: &str, tabs: bool) -> Cow<'_, str> {
    let escaped = |c: char| is_control(c) && !(tabs && c == '\t');
    if !text.chars().any(escaped) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            // `\n`, `\u{1b}`; a character `escape_debug` keeps (a right-to-left mark)
            // as its code point all the same.
            let debug = c.escape_debug();
            if debug.len() > 1 {
                out.extend(debug);
            } else {
                out.extend(c.escape_unicode());
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_for_a_log_file_has_its_control_characters_escaped_but_tabs() {
        assert_eq!(escaped("plain\ttext"), "plain\ttext");
        assert_eq!(
            escaped("\u{1b}[31mred\u{1b}]0;title\u{7}\rover\u{0}\u{85}\u{2028}\u{2029}"),
            r"\u{1b}[31mred\u{1b}]0;title\u{7}\rover\0\u{85}\u{2028}\u{2029}"
        );
    }

    #[test]
    fn a_bidirectional_mark_is_escaped_and_printed_as_a_question_mark() {
        let reversed = "deploy \u{202E}gnp.exe\u{2066}x\u{2069}\u{200F}";
        assert_eq!(
            one_line(reversed),
            r"deploy \u{202e}gnp.exe\u{2066}x\u{2069}\u{200f}"
        );
        assert_eq!(printable(reversed), "deploy ?gnp.exe?x??");
        assert_eq!(printable("C1 \u{9b}31m"), "C1 ?31m");
    }

    #[test]
    fn an_error_is_one_line_whatever_it_quotes() {
        assert_eq!(
            one_line("cannot open 'evil\nblue: live'\t\u{1b}[2J"),
            r"cannot open 'evil\nblue: live'\t\u{1b}[2J"
        );
        assert_eq!(one_line("plain: ünïcode"), "plain: ünïcode");
    }

    #[test]
    fn a_flood_comes_out_as_a_line_a_second_with_the_count_held_back() {
        let sparse = Sparse::default();
        assert_eq!(sparse.admit_at(0), Some(0));
        for ms in 1..1000 {
            assert_eq!(sparse.admit_at(ms), None);
        }
        assert_eq!(sparse.admit_at(1000), Some(999));
        assert_eq!(sparse.admit_at(1500), None);
        assert_eq!(sparse.flush(), 1);
        assert_eq!(sparse.flush(), 0);
        assert_eq!(sparse.admit_at(1600), None);
        assert_eq!(sparse.admit_at(5000), Some(1));
    }

    #[test]
    fn a_quoted_line_is_one_short_line() {
        assert_eq!(quotable("50%\r\x1b[32m100%"), "50%  [32m100%");
        let long = "é".repeat(500);
        assert_eq!(quotable(&long), format!("{}...", "é".repeat(QUOTED_LINE)));
    }
}
