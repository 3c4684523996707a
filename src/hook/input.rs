//! The hook's input: one `<old> <new> <ref>` line per ref a push updated.

use std::io::BufRead;

use anyhow::Context;

/// One line of post-receive input.
#[derive(Debug, PartialEq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub refname: String,
}

impl RefUpdate {
    /// Whether the push deleted the ref (git's new id is all zeros).
    pub(super) fn deleted(&self) -> bool {
        self.new.bytes().all(|b| b == b'0')
    }

    /// The pushed commit's id in 7 characters, as a push names it.
    pub(super) fn short(&self) -> &str {
        self.new.get(..7).unwrap_or(&self.new)
    }
}

/// Parses post-receive input: one `<old> <new> <ref>` per line.
pub fn parse(input: impl BufRead) -> anyhow::Result<Vec<RefUpdate>> {
    let mut updates = Vec::new();
    // A ref name is bytes (git takes a Latin-1 `café`): read as such, shown lossily, so
    // one odd name in a push does not stop the deploy branch pushed with it.
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line.context("cannot read the hook's input")?;
        let line = String::from_utf8_lossy(&line);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_sha =
            |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        match fields[..] {
            [old, new, refname] if is_sha(old) && is_sha(new) && refname.starts_with("refs/") => {
                updates.push(RefUpdate {
                    old: old.into(),
                    new: new.into(),
                    refname: refname.into(),
                })
            }
            _ => anyhow::bail!(
                "malformed post-receive input on line {}: expected `<old-sha> <new-sha> <ref>`",
                n + 1
            ),
        }
    }
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_refuses_garbage() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let input = format!("{a} {b} refs/heads/main\n\n{b} {a} refs/heads/x\n");
        let updates = parse(input.as_bytes()).unwrap();
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[1].refname, "refs/heads/x");
        let err = parse("hello world\n".as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err,
            "malformed post-receive input on line 1: expected `<old-sha> <new-sha> <ref>`"
        );
    }
}
