//! A daemon killed without its stop: the next one stops the workers it left, and only
//! those of its own root.

use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;
use crate::util::*;

#[test]
fn a_restarted_daemon_stops_orphans_of_a_killed_one() {
    let mut root = blue_live();
    let orphan = root.live_pid("blue");
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(orphan), None).is_ok(),
        "the worker outlived the killed daemon"
    );
    root.serve();
    wait_for(Duration::from_secs(10), "the orphan to be stopped", || {
        group_gone(orphan).then_some(())
    });
    root.wait_body(root.blue, "v1 from blue");
}

#[test]
fn signals_while_a_killed_daemons_workers_are_stopped_wait_for_it() {
    // The next daemon stops the killed one's stubborn worker first (SIGKILL after
    // stop_timeout). A SIGHUP or SIGTERM meanwhile ended it with the worker left on; now
    // the reload, and then (a second killed daemon's worker) the stop, come once the
    // worker is gone. (A SIGTERM queued behind a SIGHUP goes first: sent together, the
    // reload would not always happen.) A stop asked for then starts no generation.
    let mut root = blue_live_with(&[("app.stop_timeout", "2s".into())]);
    root.commit("stubborn", &[("VERSION", "v2\n"), ("IGNORE_TERM", "")]);
    root.push("blue").says("blue: live in ");
    let reaping = |root: &Root, nth: usize| {
        wait_for(
            Duration::from_secs(10),
            "the killed daemon's worker to be stopped",
            || {
                (root
                    .log()
                    .matches("stopping a worker left by a previous daemon")
                    .count()
                    == nth)
                    .then_some(())
            },
        );
    };
    let orphan = root.live_pid("blue");
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    root.serve_starting();
    reaping(&root, 1);
    root.signal(Signal::SIGHUP);
    root.wait_log("config reloaded from");
    wait_for(
        Duration::from_secs(5),
        "the killed daemon's worker to go",
        || group_gone(orphan).then_some(()),
    );
    root.wait_body(root.blue, "v2 from blue");
    let orphan = root.live_pid("blue");
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    let started = |root: &Root| root.log().matches(": starting generation ").count();
    let before = started(&root);
    root.serve_starting();
    reaping(&root, 2);
    root.signal(Signal::SIGTERM);
    assert_eq!(
        root.wait_serve(Duration::from_secs(15)),
        Some(0),
        "{}",
        root.log()
    );
    // Asked to stop before it served: it started no generation (the app's start, its
    // migrations, run after the stop was asked for).
    assert_eq!(started(&root), before, "{}", root.log());
    // Killed by the stop; gone once its new parent (init) has reaped it.
    wait_for(
        Duration::from_secs(5),
        "the killed daemon's worker to go",
        || group_gone(orphan).then_some(()),
    );
}

#[test]
fn a_daemon_on_a_copy_of_a_live_root_leaves_the_originals_workers_alone() {
    // `cp -a` of a live root, to make a second one: its register of workers came along,
    // and the copy's first `serve` stopped the original's live worker as its own orphan.
    let original = blue_live();
    let worker = original.live_pid("blue");
    let mut copy = Root::new();
    let workers = original.path.join("run/workers");
    let copied = copy.path.join("run/workers");
    fs::create_dir_all(&copied).unwrap();
    let mut entries = 0;
    for entry in fs::read_dir(&workers).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), copied.join(entry.file_name())).unwrap();
        entries += 1;
    }
    assert!(entries > 0, "the live worker is registered");
    // Its orphan reap is over once its control API answers.
    copy.serve();
    assert!(
        !group_gone(worker),
        "the copy's daemon stopped the original's worker"
    );
    assert_eq!(original.live_pid("blue"), worker);
    assert_eq!(original.status()["slots"]["blue"]["restarts"], 0);
    original.wait_body(original.blue, "v1 from blue");
}

#[test]
fn a_daemon_on_a_moved_root_stops_the_orphans_it_recorded() {
    // A root moved with `mv` after its daemon was killed: its orphan's marker names the
    // old path, which no root holds any more, so only the register finds it; the check
    // for another root's worker took that path for one and left the orphan running.
    let mut root = blue_live();
    let orphan = root.live_pid("blue");
    // Stopped if the test fails: the helper's cleanup looks for the new path.
    struct Stop(i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ =
                    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
            }
        }
    }
    let _stop = Stop(orphan);
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    let moved = root.path.with_file_name("moved");
    fs::rename(&root.path, &moved).unwrap();
    root.path = moved;
    assert!(!group_gone(orphan), "the worker outlived the killed daemon");
    root.serve();
    wait_for(Duration::from_secs(10), "the orphan to be stopped", || {
        group_gone(orphan).then_some(())
    });
    root.wait_body(root.blue, "v1 from blue");
}

/// What workers of a killed daemon left outside their groups is found by the root in
/// their environment, also when the next daemon reaches the root by another path.
#[test]
fn a_daemon_reaching_the_root_by_another_path_stops_what_a_killed_one_left() {
    let mut root = blue_live_with_a_helper();
    let helper = wait_for(Duration::from_secs(10), "the helper to start", || {
        the_helper(&root)
    });
    root.signal(nix::sys::signal::Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(10));
    let alias = root.path.with_file_name("alias");
    std::os::unix::fs::symlink(&root.path, &alias).unwrap();
    root.path = alias;
    root.serve();
    root.wait_body(root.blue, "from blue");
    // The helper leads a group of its own (setsid).
    wait_for(Duration::from_secs(10), "the helper to be stopped", || {
        group_gone(helper as i32).then_some(())
    });
    root.stop_cleanly(Duration::from_secs(10));
}
