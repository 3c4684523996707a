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

/// The last lines of some output that are not blank, each fit for a one-line reason
/// ([`crate::logging::quotable`]: bytes that are not UTF-8 as U+FFFD, control characters
/// as spaces, cut short).
pub struct Tail {
    keep: usize,
    lines: VecDeque<String>,
}

impl Tail {
    /// Keeps the last `keep` lines.
    pub fn new(keep: usize) -> Tail {
        Tail {
            keep,
            lines: VecDeque::with_capacity(keep),
        }
    }

    /// Takes the next line (without its `\n`).
    pub fn push(&mut self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes);
        let line = crate::logging::quotable(line.trim_end());
        if line.trim().is_empty() || self.keep == 0 {
            return;
        }
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The lines kept, joined by ` | ` (empty if none).
    pub fn joined(&self) -> String {
        let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        lines.join(" | ")
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
