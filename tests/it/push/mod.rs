//! The push path: `git push <slot> main` lands a built, versioned release.
//!
//! The helpers here are shared by more than one of the files below.

mod build;
mod build_once;
mod killed;
mod pusher;
mod refs;
mod tree;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::util::*;

/// What [`the_pushers_git_config_changes_nothing_in_the_release`] finds in each release.
fn check_release(dir: &Path) {
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(read("run.sh"), "#!/bin/sh\necho hi\n");
    assert_eq!(read("notes.txt"), "a\nb\n");
    assert_eq!(
        fs::read_link(dir.join("verlink")).unwrap(),
        Path::new("VERSION")
    );
    let built = fs::metadata(dir.join("built.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        built,
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(86_400)
    );
}

/// How many processes wait for a lock on `file` (`->` lines of /proc/locks naming its
/// inode).
fn waiting_on(file: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(file) else {
        return 0;
    };
    let inode = format!(":{}", meta.ino());
    fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("->"))
        .filter(|line| {
            line.split_whitespace()
                .nth(6)
                .is_some_and(|id| id.ends_with(&inode))
        })
        .count()
}

/// `git push <slot> main` under way, once its output has said `says`: the push, and the
/// thread that collects the rest of what it says.
fn push_until(
    root: &Root,
    slot: &str,
    says: &'static str,
) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let mut push = git_command(&root.work)
        .args(["push", slot, "+HEAD:refs/heads/main"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = push.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(says) {
                let _ = tx.send(());
            }
            text += &line;
            text += "\n";
        }
        text
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = push.kill();
        let _ = push.wait();
        panic!(
            "the push to {slot} did not say {says:?}: {}",
            reader.join().unwrap()
        );
    }
    (push, reader)
}

/// Asserts that folder `dir` is empty, naming what it holds.
fn assert_empty(dir: &std::path::Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{} holds {left:?}", dir.display());
}

/// Whether one of `pids` is blocked waiting for a file lock (`->` lines of /proc/locks).
pub fn waiting_for_a_lock(pids: &[u32]) -> bool {
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    locks
        .lines()
        .filter(|line| line.contains("->"))
        .filter_map(|line| line.split_whitespace().nth(5)?.parse::<u32>().ok())
        .any(|pid| pids.contains(&pid))
}
