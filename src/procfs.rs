//! What `/proc` tells about other processes: the fields of their `stat`, and the
//! variables of their environment. The hook finds what killed hooks' builds left, and
//! the daemon what its workers left, by a variable each sets on what it starts.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The fields of `/proc/<pid>/stat` in `dir` from the third (the state) on: those after
/// the command name, which is in parentheses and may hold spaces.
pub fn stat_fields(dir: &Path) -> Option<Vec<String>> {
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Field `n` (1-based, as proc(5) counts them) of `/proc/<pid>/stat` in `dir`.
pub fn stat_field(dir: &Path, n: usize) -> Option<String> {
    stat_fields(dir)?.into_iter().nth(n.checked_sub(3)?)
}

/// The process group of the process whose `/proc` folder is `dir` (field 5).
pub fn group(dir: &Path) -> Option<u32> {
    stat_field(dir, 5)?.parse().ok()
}

/// The environment a process was started with, as `/proc/<pid>/environ` has it.
pub struct Environ(Vec<u8>);

impl Environ {
    /// Of the process whose `/proc` folder is `dir`; `None` when it cannot be read
    /// (another user's process, or one that is gone).
    pub fn read(dir: &Path) -> Option<Environ> {
        fs::read(dir.join("environ")).ok().map(Environ)
    }

    /// The value of variable `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .split(|&b| b == 0)
            .find_map(|entry| entry.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
    }

    /// The value of variable `name` as a path.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(|v| PathBuf::from(OsStr::from_bytes(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_back() {
        let me = Path::new("/proc/self");
        let path = std::env::var_os("PATH").expect("tests run with a PATH");
        let env = Environ::read(me).unwrap();
        assert_eq!(env.get("PATH"), Some(path.as_bytes()));
        assert_eq!(env.path("PATH"), Some(PathBuf::from(&path)));
        // A name that is a prefix of a set one, or a suffix, is not that one.
        assert_eq!(env.get("PAT"), None);
        assert_eq!(env.get("ATH"), None);
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        assert_eq!(group(me), Some(pgid));
        let parent = nix::unistd::getppid().to_string();
        assert_eq!(stat_field(me, 4), Some(parent));
    }
}
