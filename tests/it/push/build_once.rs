//! No build run twice: the same tree on both slots, concurrent pushes and bursts
//! of them, a failure already seen.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use super::*;
use crate::util::*;

#[test]
fn the_same_tree_on_both_slots_builds_once() {
    let root = Root::new();
    let builds = root.set_build("sh -c 'echo building; echo warning >&2; echo x >> \"$COUNT\"'");
    let count = builds.count;
    root.commit("first", &[("VERSION", "v1\n")]);
    root.push("blue").says("  building").says("blue: build ");
    root.push("green").says("green: build reused");
    assert_eq!(count_lines(&count), 1);
    assert!(root.current("blue").is_some() && root.current("green").is_some());
    // One build, and its output, stdout and stderr, in builds/<key>.log.
    let key = |slot: &str| {
        root.current_meta(slot)["build_key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(key("blue"), key("green"));
    let log = root
        .path
        .join("builds")
        .join(format!("{}.log", key("blue")));
    assert_eq!(fs::read_to_string(&log).unwrap(), "building\nwarning\n");
}

#[test]
fn concurrent_pushes_of_one_commit_build_once() {
    let root = Root::new();
    let count = root
        .set_build("sh -c 'sleep 1; echo x >> \"$COUNT\"'")
        .count;
    root.commit("first", &[("VERSION", "v1\n")]);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| root.push("blue"));
        let b = s.spawn(|| root.push("green"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.ok && b.ok, "{}\n{}", a.text, b.text);
    assert_eq!(count_lines(&count), 1, "{}\n{}", a.text, b.text);
    assert!(root.current("blue").is_some() && root.current("green").is_some());
    assert!(a.text.contains("build reused") || b.text.contains("build reused"));
}

#[test]
fn concurrent_pushes_of_one_failing_commit_build_once() {
    let root = Root::new();
    // The build holds until the test says go, then fails.
    let builds = root.set_build(
        "sh -c 'echo x >> \"$COUNT\"; while [ ! -e \"$GO\" ]; do sleep 0.05; done; echo no compiler >&2; exit 1'",
    );
    let (count, go) = (builds.count, builds.go);
    root.commit("broken", &[("VERSION", "v1\n")]);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| root.push("blue"));
        wait_for(Duration::from_secs(10), "blue's build to start", || {
            (count_lines(&count) == 1).then_some(())
        });
        let b = s.spawn(|| root.push("green"));
        wait_for(
            Duration::from_secs(10),
            "green's push to wait for the build lock",
            || waiting_for_a_lock(&root.processes()).then_some(()),
        );
        fs::write(&go, "").unwrap();
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(count_lines(&count), 1, "{}\n{}", a.text, b.text);
    a.says("build failed: ");
    b.says("the push that was building this tree did not finish it: build failed: `sh -c ")
        .says("exited with status 1; log ")
        .says("; last lines: no compiler; to retry, push a new commit");
    assert!(root.current("blue").is_none() && root.current("green").is_none());
    // A later push of the same tree (a new commit) tries again.
    root.commit("retry", &[]);
    root.push("blue").says("build failed: ");
    assert_eq!(count_lines(&count), 2);
}

/// A push that began before another slot's build of its tree failed, but asked for the
/// build only after, reports that failure and does not build again: also when the build
/// failed without a word, whose log's time stamp was its start (so it ran twice).
#[test]
fn a_push_that_began_before_a_silent_build_failure_does_not_build_again() {
    let root = Root::new();
    let builds = root.set_build(
        "sh -c 'echo x >> \"$COUNT\"; while [ ! -e \"$GO\" ]; do sleep 0.05; done; if [ -e SLOW ]; then sleep 1; fi; [ ! -e FAIL ]'",
    );
    let (count, go) = (builds.count, builds.go);
    let slow = root.commit("slow", &[("VERSION", "v1\n"), ("SLOW", "")]);
    root.remove("SLOW");
    let failing = root.commit("failing", &[("FAIL", "")]);
    let (_, _, c) = std::thread::scope(|s| {
        let a = s.spawn(|| root.push_ref("green", &format!("+{slow}:refs/heads/main")));
        wait_for(Duration::from_secs(10), "green's build", || {
            (count_lines(&count) == 1).then_some(())
        });
        let b = s.spawn(|| root.push_ref("blue", &format!("+{failing}:refs/heads/main")));
        wait_for(Duration::from_secs(10), "blue's build", || {
            (count_lines(&count) == 2).then_some(())
        });
        // Waits for green's turn, which the slow build holds, past blue's failure.
        let c = s.spawn(|| root.push_ref("green", &format!("+{failing}:refs/heads/main")));
        wait_for(
            Duration::from_secs(10),
            "green's second push to wait for its turn",
            || waiting_for_a_lock(&root.processes()).then_some(()),
        );
        fs::write(&go, "").unwrap();
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert_eq!(count_lines(&count), 2, "{}", c.text);
    c.says("the push that was building this tree did not finish it: build failed: `sh -c ")
        .says("exited with status 1; log ");
}

/// A push whose hook starts only after the same tree's build failed in a few
/// milliseconds on the other slot, though git began taking it in before that (here held
/// back on purpose; in life, the same commit pushed to both slots at once), reports that
/// failure and does not build again: counted from its hook's start, it built twice.
#[test]
fn a_push_git_began_taking_before_a_fast_build_failure_does_not_build_again() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let builds = root.set_build("sh -c 'echo x >> \"$COUNT\"; [ ! -e FAIL ]'");
    root.commit("failing", &[("VERSION", "v1\n"), ("FAIL", "")]);
    // git's receive-pack for green, held back until blue's push is over.
    let dir = root.path.parent().unwrap();
    let (taking, go) = (dir.join("green-taking"), dir.join("green-go"));
    let wrapper = dir.join("receive-pack");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntouch '{}'\nwhile [ ! -e '{}' ]; do sleep 0.02; done\nexec git-receive-pack \"$@\"\n",
            taking.display(),
            go.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let green = std::thread::scope(|s| {
        let green = s.spawn(|| {
            let out = git_command(&root.work)
                .arg("push")
                .arg(format!("--receive-pack={}", wrapper.display()))
                .args(["green", "+HEAD:refs/heads/main"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stderr).into_owned()
        });
        wait_for(Duration::from_secs(10), "green's receive-pack", || {
            taking.exists().then_some(())
        });
        root.push("blue").says("build failed: ");
        fs::write(&go, "").unwrap();
        green.join().unwrap()
    });
    assert_eq!(count_lines(&builds.count), 1, "{green}");
    assert!(
        green.contains("the push that was building this tree did not finish it: build failed: "),
        "{green}"
    );
}

/// A burst of pushes to one slot while the first builds: they take turns, and the one
/// whose turn it is deploys what the branch points at then, so only the first and the
/// newest tree build. The first, built once the newest was pushed, deploys the newest
/// after its own build; the pushes after it find it current. The newest push is stopped
/// (Ctrl-C) while it waits for its turn: its commit is deployed all the same (the first
/// had stepped aside for it, "that push deploys it", and the branch's commit was left
/// undeployed). (With no turns at all, all three built at once, each for up to
/// build.timeout, on a two-core host.)
#[test]
fn a_burst_of_pushes_to_one_slot_builds_the_first_and_the_newest_only() {
    let root = Root::new();
    let builds = root.set_build(
        "sh -c 'echo built >> \"$COUNT\"; if [ -e SLOW_BUILD ]; then while [ ! -e \"$GO\" ]; do sleep 0.05; done; fi'",
    );
    let (count, go) = (builds.count, builds.go);
    root.commit("v1", &[("VERSION", "v1\n"), ("SLOW_BUILD", "")]);
    let turn = root.path.join("blue/.push.lock");
    let (first, second, v3) = std::thread::scope(|s| {
        let first = s.spawn(|| root.push("blue"));
        wait_for(Duration::from_secs(20), "v1's build", || {
            (count_lines(&count) == 1).then_some(())
        });
        root.remove("SLOW_BUILD");
        root.commit("v2", &[("VERSION", "v2\n")]);
        // Each wait gives way to `go` if it fails, so that the first push ends either way.
        let second = s.spawn(|| root.push("blue"));
        let waits = poll_until(Duration::from_secs(20), || {
            (waiting_on(&turn) == 1).then_some(())
        });
        let v3 = root.commit("v3", &[("VERSION", "v3\n")]);
        let mut newest = crate::util::git_command(&root.work);
        newest
            .args(["push", "blue", "+HEAD:refs/heads/main"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut newest, 0);
        let mut newest = newest.spawn().unwrap();
        let wait = waits.and_then(|()| {
            poll_until(Duration::from_secs(20), || {
                (waiting_on(&turn) == 2).then_some(())
            })
        });
        // Ctrl-C: to the push's whole group, its hook with it.
        let group = nix::unistd::Pid::from_raw(newest.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT);
        let _ = newest.wait();
        fs::write(&go, "").unwrap();
        let pushed = (first.join().unwrap(), second.join().unwrap(), v3);
        assert!(
            wait.is_some(),
            "the later pushes did not wait for their turns"
        );
        pushed
    });
    let texts = format!("{}\n{}", first.text, second.text);
    assert!(root.current("blue").unwrap().ends_with(&v3[..7]), "{texts}");
    assert_eq!(count_lines(&count), 2, "{texts}");
    assert!(first.ok && second.ok, "{texts}");
    first
        .says(&format!(
            "blue: refs/heads/main moved on to {} since this push: deploying that instead",
            &v3[..7]
        ))
        .says(&format!("blue: deploying {} v3", &v3[..7]));
    second
        .says("another push to blue is building; waiting for its turn")
        .says(&format!(
            "blue: refs/heads/main is at {}, which is blue's current release already (",
            &v3[..7]
        ))
        .says("): nothing new to deploy");
    assert!(!second.text.contains("blue: build "), "{texts}");
}

#[test]
fn two_pushes_to_one_slot_end_with_the_later_one_current() {
    let root = Root::new();
    root.set("build.command", "sleep 1");
    root.commit("first", &[("VERSION", "v1\n")]);
    root.push("blue");
    root.commit("second", &[("VERSION", "v2\n")]);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| root.push("blue"));
        // The second push: a different commit, pushed while the first builds.
        wait_for(Duration::from_secs(20), "the first push's build", || {
            (!root_processes(&root.path.join("builds/.tmp")).is_empty()).then_some(())
        });
        root.commit("third", &[("VERSION", "v3\n")]);
        let b = s.spawn(|| root.push("blue"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.ok && b.ok, "{}\n{}", a.text, b.text);
    let tip = String::from_utf8(root.git(&["rev-parse", "HEAD"]).stdout).unwrap();
    let current = root.current("blue").unwrap();
    assert!(
        current.ends_with(&tip.trim()[..7]),
        "current {current} is not the later push {tip}"
    );
}

/// Pushes of one commit to both slots at once, whose build fails at once: the push that
/// began while the other's build ran takes its failure, even when that build was over
/// before it asked for the build's lock. It ran the build a second time. A push that
/// begins after the failure builds again: that is how to retry.
#[test]
fn a_build_that_failed_after_a_push_began_is_not_run_again_for_it() {
    let root = Root::new();
    let builds = root.set_build("sh -c 'echo built >> \"$COUNT\"; exit 3'");
    root.commit("v1", &[("VERSION", "v1\n")]);
    // Green's push begins, and waits for its turn while blue's push builds and fails.
    let turn = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.path.join("green/.push.lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(turn, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let (mut green, reader) = push_until(&root, "green", "waiting for its turn");
    root.push("blue").says("exited with status 3");
    drop(held);
    let _ = green.wait();
    let text = reader.join().unwrap();
    assert!(
        text.contains("the push that was building this tree did not finish it"),
        "{text}"
    );
    assert_eq!(count_lines(&builds.count), 1, "{text}");
    root.commit("retry", &[]);
    root.push("green").says("exited with status 3");
    assert_eq!(count_lines(&builds.count), 2);
}
