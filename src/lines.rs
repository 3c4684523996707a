//! `Lines`: a build's or a worker's output split into lines as it comes, each at most
//! `MAX_LINE` bytes, in time linear in its size; `Tail`: the last of them that say
//! something, to quote in a one-line reason.

use std::collections::VecDeque;

/// The longest line copied as one: output without newlines (a progress bar redrawn
/// with `\r`, a binary dumped by mistake) goes out in pieces of this size, and never
/// piles up in memory.
pub const MAX_LINE: usize = 64 * 1024;

/// Splits output into lines as it comes, in time linear in its size.
#[derive(Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Adds `bytes` and hands each complete line (without its `\n`) to `emit`.
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        // Every newline before this point has been handed out already.
        let mut scan = self.pending.len();
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(offset) = self.pending[scan..].iter().position(|&b| b == b'\n') {
            let end = scan + offset;
            // A long line and its newline in one read: cut all the same.
            while end - start > MAX_LINE {
                emit(&self.pending[start..start + MAX_LINE]);
                start += MAX_LINE;
            }
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
    pub fn finish(self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
        }
    }
}

/// Whether `line` names an error: the word `error`, `exception`, `fatal` or `panic` in
/// any case (`error[E0425]: ...`, `ERROR: Could not find a version`, `npm error code
/// E404`, `make: *** [all] Error 1`, `thread 'main' panicked`), npm's old `ERR!`, or a
/// class name ending in `Error` or `Exception` (`ModuleNotFoundError: ...`,
/// `java.lang.IllegalStateException`); not a package named with one (`Compiling
/// thiserror v1.0.69`, `error-chain`).
pub fn names_an_error(line: &str) -> bool {
    line.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .any(|word| {
            ["error", "exception", "fatal", "panic", "panicked"]
                .iter()
                .any(|name| word.eq_ignore_ascii_case(name))
                || word == "ERR"
                || ["Error", "Exception"].iter().any(|end| {
                    word.len() > end.len()
                        && word.ends_with(end)
                        && word[..word.len() - end.len()].ends_with(|c: char| c.is_lowercase())
                })
        })
}

/// The last lines of some output that are not blank, each fit for a one-line reason
/// ([`crate::logging::quotable`]: bytes that are not UTF-8 as U+FFFD, control characters
/// as spaces, cut short), and the first line that [names an error](names_an_error): a
/// build's or a migration's first error is its cause (a compiler's later ones often
/// follow from it, and its last lines sum up: `error: could not compile ...`, npm's
/// "A complete log of this run can be found in ...").
pub struct Tail {
    keep: usize,
    lines: VecDeque<String>,
    /// Lines taken so far.
    taken: u64,
    /// The first line that names an error, and its number among those taken.
    first_error: Option<(u64, String)>,
}

impl Tail {
    /// Keeps the last `keep` lines.
    pub fn new(keep: usize) -> Tail {
        Tail {
            keep,
            lines: VecDeque::with_capacity(keep),
            taken: 0,
            first_error: None,
        }
    }

    /// Takes the next line (without its `\n`).
    pub fn push(&mut self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes);
        let line = crate::logging::quotable(line.trim_end());
        if line.trim().is_empty() || self.keep == 0 {
            return;
        }
        if self.first_error.is_none() && names_an_error(&line) {
            self.first_error = Some((self.taken, line.clone()));
        }
        self.taken += 1;
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The lines kept, joined by ` | ` (empty if none), after the first that names an
    /// error and ` | ... | ` when that one is not among them.
    pub fn joined(&self) -> String {
        let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        let kept_from = self.taken - self.lines.len() as u64;
        match &self.first_error {
            Some((at, error)) if *at < kept_from => {
                format!("{error} | ... | {}", lines.join(" | "))
            }
            _ => lines.join(" | "),
        }
    }
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
    fn the_tail_is_the_last_lines_that_say_something_each_kept_short() {
        let mut tail = Tail::new(3);
        for line in [
            &b"early"[..],
            &vec![b'x'; MAX_LINE],
            b"",
            b"  ",
            b"first",
            b"50%\r\x1b[31mcannot reach the database\x1b[0m",
            b"caf\xc3 au lait \t",
        ] {
            tail.push(line);
        }
        assert_eq!(
            tail.joined(),
            "first | 50%  [31mcannot reach the database [0m | caf\u{fffd} au lait"
        );
        assert_eq!(Tail::new(3).joined(), "");
    }

    #[test]
    fn the_first_error_is_quoted_before_the_last_lines() {
        let quote = |output: &[&str]| {
            let mut tail = Tail::new(3);
            for line in output {
                tail.push(line.as_bytes());
            }
            tail.joined()
        };
        let cargo = [
            "   Compiling thiserror v1.0.69",
            "   Compiling app v0.1.0 (/srv/app)",
            "error[E0425]: cannot find value `x` in this scope",
            " --> src/main.rs:2:5",
            "error[E0308]: mismatched types",
            "For more information about an error, try `rustc --explain E0308`.",
            "error: could not compile `app` (bin \"app\") due to 2 previous errors",
        ];
        assert_eq!(
            quote(&cargo),
            "error[E0425]: cannot find value `x` in this scope | ... | error[E0308]: mismatched types | For more information about an error, try `rustc --explain E0308`. | error: could not compile `app` (bin \"app\") due to 2 previous errors"
        );
        // The first error among the last lines: those as they are.
        assert_eq!(quote(&cargo[..4]), cargo[1..4].join(" | "));
        // No error named: the last lines.
        assert_eq!(quote(&cargo[..2]), cargo[..2].join(" | "));
        for line in [
            "npm error code E404",
            "npm ERR! code EUSAGE",
            "ERROR: Could not find a version that satisfies the requirement nope",
            "make: *** [Makefile:2: all] Error 1",
            "ModuleNotFoundError: No module named 'flask'",
            "Exception in thread \"main\" java.lang.IllegalStateException: no",
            "thread 'main' panicked at src/main.rs:2:5:",
            "fatal: not a git repository",
        ] {
            assert!(names_an_error(line), "{line}");
        }
        for line in [
            "   Compiling thiserror v1.0.69",
            "   Compiling error-chain v0.12.4",
            "go: downloading github.com/pkg/errors v0.9.1",
            "added 57 packages, found 0 vulnerabilities",
            "cc -Werror -o app main.c",
        ] {
            assert!(!names_an_error(line), "{line}");
        }
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
        // A line over MAX_LINE with its newline in the same read: cut too.
        let long = [&vec![b'x'; 2 * MAX_LINE + 5][..], b"\n"].concat();
        let out = split(&[&long[..]]);
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            [MAX_LINE, MAX_LINE, 5]
        );
    }
}
