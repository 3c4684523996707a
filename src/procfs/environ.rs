//! A process's environment, as `/proc/<pid>/environ` has it.
//!
//! A process in the middle of an execve(2) shows no environment, or a piece of one, until
//! the kernel has laid out its new program's stack: [`environs`] reads such a one again
//! until it shows whole, so that a helper a build or a worker starts just as it is
//! looked for is not missed.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{processes, stat_fields};

/// How long [`environs`] keeps reading a process whose environment is not whole yet: an
/// exec lays it out within microseconds, more on a loaded machine.
const EXEC_SETTLE: Duration = Duration::from_millis(250);
/// The kernel's flag (in `/proc/<pid>/stat` field 9) of a kernel thread, which has no
/// environment at all.
const PF_KTHREAD: u64 = 0x0020_0000;

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

    /// Whether the process wrote over the memory its environment was in, so that this
    /// says nothing of what it was started with: a program that shows a title in `ps`
    /// spreads it over its arguments and environment, padded with NULs, once it has
    /// copied its variables elsewhere (setproctitle(3): gunicorn's master and workers
    /// with the `setproctitle` package installed, nginx, Ruby's or Perl's `$0 =`). An
    /// environment is a run of `NAME=value` entries, each ended by one NUL; none at all
    /// (`env -i`) is one too.
    pub fn rewritten(&self) -> bool {
        let Some(entries) = self.0.strip_suffix(b"\0") else {
            return !self.0.is_empty();
        };
        entries
            .split(|&b| b == 0)
            .any(|entry| entry.is_empty() || !entry.contains(&b'='))
    }
}

/// The environment of every process that may be read (this user's, or everyone's for
/// root), with its `/proc` folder. One in the middle of an exec is read again, up to
/// `EXEC_SETTLE`, until it shows whole: a single pass missed a helper that a build
/// started as it ended (`setsid tool &`), which then ran on past the push.
pub fn environs() -> Vec<(PathBuf, Environ)> {
    let mut found = Vec::new();
    let mut unsure = Vec::new();
    for dir in processes() {
        match Environ::read_whole(&dir) {
            Whole::Read(env) => found.push((dir, env)),
            Whole::NotYet => unsure.push(dir),
            Whole::None => {}
        }
    }
    let deadline = Instant::now() + EXEC_SETTLE;
    while !unsure.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        unsure.retain(|dir| match Environ::read_whole(dir) {
            Whole::Read(env) => {
                found.push((dir.clone(), env));
                false
            }
            Whole::NotYet => true,
            Whole::None => false,
        });
    }
    found
}

/// What one reading of a process's environment gave.
enum Whole {
    Read(Environ),
    /// It runs, but the read did not have all of its environment: it is in the middle
    /// of an exec.
    NotYet,
    /// Gone, a kernel thread or a zombie, or another user's.
    None,
}

impl Environ {
    /// The environment of the process whose `/proc` folder is `dir`, if the read has all
    /// of it: as long as the kernel says it is (`stat` fields 50 and 51, asked before and
    /// after, as an exec may come in between). One cut short, or empty, comes from a
    /// program being replaced, or one not laid out yet (a process started with no
    /// environment at all, `env -i`, reads empty too: it costs a scan `EXEC_SETTLE`).
    fn read_whole(dir: &Path) -> Whole {
        let Some(before) = environ_range(dir) else {
            return Whole::None;
        };
        let Some(env) = Environ::read(dir) else {
            return Whole::None;
        };
        let after = environ_range(dir);
        // Empty is no whole environment either: an exec sets where it starts, then copies
        // its variables, then where it ends.
        let whole = |range: Option<(u64, u64)>| {
            range.is_some_and(|(start, end)| {
                start != 0
                    && !env.0.is_empty()
                    && end.checked_sub(start) == Some(env.0.len() as u64)
            })
        };
        if whole(Some(before)) || whole(after) {
            Whole::Read(env)
        } else if runs_a_program(dir) {
            Whole::NotYet
        } else {
            Whole::None
        }
    }
}

/// Where the environment of the process whose `/proc` folder is `dir` lies in its memory
/// (`env_start`, `env_end`); zeros for one that has none (yet).
fn environ_range(dir: &Path) -> Option<(u64, u64)> {
    let fields = stat_fields(dir)?;
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(50)?, field(51)?))
}

/// Whether the process whose `/proc` folder is `dir` runs a program of its own: not a
/// kernel thread, not a zombie nor one exiting (none of which shows an environment).
fn runs_a_program(dir: &Path) -> bool {
    let Some(fields) = stat_fields(dir) else {
        return false;
    };
    let running = fields
        .first()
        .is_some_and(|s| !matches!(s.as_str(), "Z" | "X" | "x"));
    let flags = fields.get(9 - 3).and_then(|f| f.parse::<u64>().ok());
    running && flags.is_some_and(|f| f & PF_KTHREAD == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_written_over_by_a_title_is_told_from_one_without_variables() {
        let env = |bytes: &[u8]| Environ(bytes.to_vec());
        assert!(!env(b"").rewritten(), "env -i: no variables");
        assert!(!env(b"PORT=1\0").rewritten());
        assert!(!env(b"PORT=1\0EMPTY=\0").rewritten());
        assert!(
            env(b"\0\0\0\0").rewritten(),
            "a title that fits in the arguments"
        );
        assert!(
            env(b"ster [wsgi:app]\0\0\0").rewritten(),
            "the end of a longer one"
        );
        assert!(
            env(b"PORT=1\0\0\0").rewritten(),
            "padding after what looks like one"
        );
        assert!(env(b"PORT=1\0title").rewritten(), "not ended by a NUL");
        let me = Environ::read(Path::new("/proc/self")).unwrap();
        assert!(!me.rewritten());
    }

    /// Kills the child it holds when dropped, so a failed assertion leaves no process.
    struct Killed(std::process::Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_process_in_the_middle_of_an_exec_is_not_missed() {
        // A shell that does nothing but exec itself: often caught while its environment
        // reads empty or cut short (a single pass of reads missed it in about 1 scan in 10).
        let name = format!("BLUEGREEN_PROCFS_TEST_{}", std::process::id());
        let script = r#"exec sh -c "$0" "$0""#;
        let child = std::process::Command::new("sh")
            .args(["-c", script, script])
            .env(&name, "1")
            .spawn()
            .unwrap();
        let child = Killed(child);
        let dir = PathBuf::from(format!("/proc/{}", child.0.id()));
        let missed = (0..100)
            .filter(|_| {
                !environs()
                    .iter()
                    .any(|(d, env)| *d == dir && env.get(&name) == Some(b"1".as_slice()))
            })
            .count();
        assert_eq!(missed, 0, "scans that missed the process");
    }
}
