//! The build: its environment, its timeout, a full disk, a failure told in one line, and
//! what it leaves behind (helpers, a read-only folder).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;
use crate::util::*;

/// A build that puts a symlink in its own folder's place is refused: the link was
/// published as the build, its metadata written into the folder it named.
#[test]
fn a_build_that_replaces_its_folder_with_a_symlink_is_refused() {
    let root = Root::new();
    let outside = root.path.parent().unwrap().join("outside");
    fs::create_dir_all(&outside).unwrap();
    root.set(
        "build.command",
        format!(
            "sh -c 'd=\"$PWD\"; cd .. && rm -rf \"$d\" && ln -s {} \"$d\"'",
            outside.display()
        ),
    );
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue")
        .says("with something else (a symlink?): a build must work inside its folder");
    assert_eq!(root.current("blue"), None);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

/// One build serves both slots: it gets `build.env`, never a slot's env.
#[test]
fn a_build_gets_build_env_and_never_a_slots_env() {
    let root = Root::new();
    root.set("slots.blue.env", env_map(&[("REDIS_PORT", "6379")]));
    root.set("slots.green.env", env_map(&[("REDIS_PORT", "6380")]));
    root.set("build.env", env_map(&[("MODE", "production")]));
    root.set(
        "build.command",
        "sh -c 'echo \"slot env [$REDIS_PORT] build env [$MODE]\" > BUILD_ENV'",
    );
    root.commit("first", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: build ");
    root.push("green").says("green: build reused");
    for slot in ["blue", "green"] {
        assert_eq!(
            fs::read_to_string(root.path.join(slot).join("current/BUILD_ENV")).unwrap(),
            "slot env [] build env [production]\n",
            "{slot}"
        );
    }
}

/// A shell's script reads `build.env` from its env: the value is never pasted into the
/// script, where it would run as shell code and show in the process list.
#[test]
fn a_build_env_value_reaches_a_shells_script_as_a_variable_not_as_code() {
    let root = Root::new();
    let secret = "s3cret;touch pwned";
    root.set("build.env", env_map(&[("TOKEN", secret)]));
    root.set(
        "build.command",
        "sh -c 'printf %s \"$TOKEN\" > token; echo $TOKEN > unquoted; tr \"\\000\" \" \" < /proc/$$/cmdline > args'",
    );
    root.commit("first", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: build ");
    let current = root.path.join("blue/current");
    assert_eq!(fs::read_to_string(current.join("token")).unwrap(), secret);
    assert!(!current.join("pwned").exists());
    let args = fs::read_to_string(current.join("args")).unwrap();
    assert!(
        args.contains("$TOKEN") && !args.contains("s3cret"),
        "{args}"
    );
}

/// A compiler's first error is the cause; its last lines sum up (`error: could not
/// compile ...`), as npm's do ("A complete log of this run can be found in ...").
#[test]
fn a_failed_build_is_quoted_from_its_first_error_and_its_last_lines() {
    let root = Root::new();
    root.set(
        "build.command",
        "sh -c 'echo Compiling thiserror; echo \"error[E0425]: cannot find value x\"; for n in 1 2 3 4 5; do echo note $n; done; exit 101'",
    );
    root.commit("bad", &[("VERSION", "v1\n")]);
    root.push("blue")
        .says("exited with status 101; log ")
        .says("; last lines: error[E0425]: cannot find value x | ... | note 3 | note 4 | note 5");
    assert!(root.current("blue").is_none());
}

/// A build that failed before the clock was stepped back (NTP correcting a clock that
/// ran ahead) has its log stamped ahead of the clock: every retry was taken for a push
/// that had begun before that failure, and refused, until the clock caught up.
#[test]
fn a_failed_builds_log_stamped_ahead_of_the_clock_does_not_refuse_its_retry() {
    let root = Root::new();
    let builds = root.set_build("sh -c '[ -e \"$GO\" ]'");
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("exited with status 1");
    let log = root.build_log();
    let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(120);
    fs::File::options()
        .append(true)
        .open(&log)
        .unwrap()
        .set_modified(ahead)
        .unwrap();
    fs::write(&builds.go, "").unwrap();
    root.commit("retry", &[]);
    root.push("blue").says("blue: release ");
    assert!(root.current("blue").is_some());
}

/// The log of the build that failed on `root` put on a full disk: every write to it
/// fails with ENOSPC. Its path.
fn log_on_a_full_disk(root: &Root) -> std::path::PathBuf {
    let log = root.build_log();
    fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    log
}

#[test]
fn a_build_log_that_cannot_be_written_is_said_to_be_incomplete() {
    let root = Root::new();
    root.set(
        "build.command",
        "sh -c 'echo compiling; echo boom >&2; exit 3'",
    );
    root.commit("bad", &[("VERSION", "v1\n")]);
    root.push("blue").says("last lines: compiling | boom");
    let log = log_on_a_full_disk(&root);
    // The same tree again: the same build, its log at the same path.
    root.commit("retry", &[]);
    // The pusher still gets every line, and the reason quotes the build's last lines
    // (not the log's, which reading `/dev/full` would give as a page of NULs).
    root.push("blue")
        .says("  (the build log stops here: No space left on device")
        .says("  compiling")
        .says("  boom")
        .says(&format!(
            "exited with status 3; log {} (incomplete: No space left on device (os error 28)); last lines: compiling | boom",
            log.display()
        ));
    assert!(root.current("blue").is_none());
}

/// A build that exits 0 after the disk filled (its log could not be written, as a tool
/// that ignores a failed write exits 0) is not kept: what it wrote may be cut short. It
/// was kept, and every later push of the tree reused it.
#[test]
fn a_build_that_ran_into_a_full_disk_is_not_kept_whatever_it_exits_with() {
    let root = Root::new();
    let builds = root.set_build("sh -c 'echo compiling; [ -e \"$GO\" ]'");
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("exited with status 1");
    let log = log_on_a_full_disk(&root);
    fs::write(&builds.go, "").unwrap();
    root.commit("retry", &[]);
    root.push("blue").says(&format!(
        "exited with status 0, but the disk filled while it ran (No space left on device (os error 28), writing its log {}): what it wrote may be cut short, so it is not kept; free some space, then push a new commit (git commit --allow-empty -m retry)",
        log.display()
    ));
    assert!(root.current("blue").is_none());
    assert_empty(&root.path.join("builds/.tmp"));
    // Space freed, the next push builds it again and deploys it.
    fs::remove_file(&log).unwrap();
    root.commit("retry again", &[]);
    root.push("blue").says("blue: release ");
    assert!(root.current("blue").is_some());
}

/// `builds/` removed by hand (to free disk) is made again by the next push: every push
/// failed at its lock (`cannot open lock …`) until `bluegreen init` ran. A promote whose
/// build is gone says so, and how to deploy that commit instead.
#[test]
fn a_builds_folder_removed_by_hand_comes_back_with_the_next_push() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let v1 = root.current("blue").unwrap();
    fs::remove_dir_all(root.path.join("builds")).unwrap();
    let out = root.run(&["promote", "blue", "green"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "error: blue's release {v1} has no build any more ("
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            " is gone: a push to blue replaced it meanwhile, or it was removed by hand): push its commit {} to green (or, if a push replaced it, promote again)",
            &v1[v1.len() - 7..]
        )),
        "{text}"
    );
    assert!(root.current("green").is_none());
    fs::remove_dir_all(root.path.join("builds")).unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: release ");
    assert_ne!(root.current("blue").unwrap(), v1);
}

#[test]
fn a_failing_build_and_a_slow_one_leave_current_alone() {
    let root = Root::new();
    root.commit("good", &[("VERSION", "v1\n")]);
    root.push("blue");
    let before = root.current("blue").unwrap();

    root.set(
        "build.command",
        "sh -c 'echo compiling; echo boom >&2; exit 3'",
    );
    root.commit("bad", &[("VERSION", "v2\n")]);
    root.push("blue")
        .says("build failed: `sh -c 'echo compiling; echo boom >&2; exit 3'` exited with status 3")
        .says("last lines: compiling | boom");
    assert_eq!(root.current("blue").unwrap(), before);

    root.set("build.command", "sleep 30");
    root.set("build.timeout", "1s");
    root.commit("slow", &[("VERSION", "v3\n")]);
    root.push("blue").says("timed out after 1s (build.timeout)");
    assert_eq!(root.current("blue").unwrap(), before);
    // Nothing under builds/ looks finished except the first build.
    let finished: Vec<_> = fs::read_dir(root.path.join("builds"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(finished.len(), 1);
    for build in finished {
        assert!(build.path().join(".bluegreen-build.json").is_file());
    }
    // The failed builds' folders are gone; their logs stay.
    assert_empty(&root.path.join("builds/.tmp"));
    let logs = fs::read_dir(root.path.join("builds"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count();
    assert_eq!(logs, 3);
}

#[test]
fn a_build_past_its_timeout_is_stopped_at_the_timeout_not_when_it_ends() {
    let root = Root::new();
    root.commit("good", &[("VERSION", "v1\n")]);
    root.push("blue");
    let before = root.current("blue").unwrap();
    let pid_file = root.path.parent().unwrap().join("build.pid");
    root.set(
        "build.env",
        env_map(&[("PID_FILE", pid_file.to_str().unwrap())]),
    );
    root.set(
        "build.command",
        "sh -c 'echo $$ > \"$PID_FILE\"; sleep 40; echo built'",
    );
    root.set("build.timeout", "1s");
    root.commit("slow", &[("VERSION", "v2\n")]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let _ = tx.send(root.push("blue"));
        });
        // Well before the build's own end: the hook stops it at build.timeout.
        let pushed = rx.recv_timeout(Duration::from_secs(20));
        let group: Option<i32> = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|pid| pid.trim().parse().ok());
        if pushed.is_err() {
            if let Some(group) = group {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(group),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        let pushed = pushed.expect("the push to end at build.timeout, not when the build ends");
        pushed.says("timed out after 1s (build.timeout); its process group was killed");
        let group = group.expect("the build wrote its pid");
        assert!(
            poll_until(Duration::from_secs(5), || group_gone(group).then_some(())).is_some(),
            "the timed-out build's group outlived its push"
        );
        assert_eq!(root.current("blue").unwrap(), before);
    });
}

/// Said to the pusher, and to the daemon (which runs the config it read before), as a
/// failed build is: the daemon heard nothing of it.
#[test]
fn a_broken_config_says_the_push_was_not_deployed() {
    let mut root = Root::new();
    root.serve();
    root.commit("good", &[("VERSION", "v1\n")]);
    root.push("blue");
    let before = root.current("blue").unwrap();

    root.set("app.ready_timeout", "soon");
    root.commit("next", &[("VERSION", "v2\n")]);
    let pushed = root.push("blue");
    let last = pushed.remote_lines().pop().unwrap_or_default();
    let file = root.path.join("bluegreen.toml");
    assert!(
        last.starts_with(&format!("error: blue: not deployed: {}:", file.display())),
        "{last}"
    );
    assert!(
        last.ends_with("app.ready_timeout: invalid duration `soon`: a duration is a number and a unit (e.g. \"30s\", \"500ms\", \"2m\", \"1h 30m\"); fix it (`bluegreen check` says where), then push a new commit"),
        "{last}"
    );
    assert_eq!(root.current("blue").unwrap(), before);
    let commit = root.git(&["rev-parse", "--short=7", "HEAD"]).stdout;
    let told = format!(
        "blue: push of {} not deployed: {}:",
        String::from_utf8_lossy(&commit).trim(),
        file.display()
    );
    let events = root.control("GET", "/events").body;
    assert!(events.contains(&told), "{told} in {events}");
    root.wait_log(&told);
}

/// `build.env` and the slots' `env` hold secrets (a registry token): `init` makes the
/// config unreadable to other users (it was 0644), and a build's metadata names the
/// build's variables without their values (it copied them, world-readable).
#[test]
fn build_secrets_stay_out_of_what_other_users_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let mode = fs::metadata(root.path.join("bluegreen.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "bluegreen.toml is {mode:o}");
    root.set("build.env", env_map(&[("NPM_TOKEN", "npm_SECRET123")]));
    root.set("build.command", "sh -c 'test -n \"$NPM_TOKEN\"'");
    root.commit("first", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: build ");
    let build = fs::read_dir(root.path.join("builds"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    let meta = fs::read_to_string(build.join(".bluegreen-build.json")).unwrap();
    assert!(meta.contains("NPM_TOKEN"), "{meta}");
    assert!(!meta.contains("npm_SECRET123"), "{meta}");
}

/// A build script without its execute bit, or with no `#!` line, says what to fix, not
/// only the OS's words.
#[test]
fn a_build_script_that_cannot_be_run_says_what_to_fix() {
    let root = Root::new();
    root.set("build.command", "./build.sh");
    root.commit("v1", &[("VERSION", "v1\n"), ("build.sh", "echo built\n")]);
    root.push("blue").says(
        "cannot start `./build.sh`: Permission denied (os error 13): it has no execute bit (in git: `git update-index --chmod=+x ./build.sh`, then commit; or write `sh ./build.sh`)",
    );
    use std::os::unix::fs::PermissionsExt;
    let script = root.work.join("build.sh");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    root.commit("v2", &[]);
    root.push("blue").says(
        "cannot start `./build.sh`: Exec format error (os error 8): it is no program and has no `#!` line (add one, such as `#!/bin/sh`, or write `sh ./build.sh`)",
    );
}

#[test]
fn a_build_that_cannot_be_finished_gives_its_folder_back() {
    let root = Root::new();
    // Finishing a build (syncing it, writing its metadata, renaming it into place) can
    // fail after the build command worked: a disk the build filled (ENOSPC writing the
    // metadata), or, as here, a build that made its own `.bluegreen-build.json` a folder.
    root.set("build.command", "mkdir .bluegreen-build.json");
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue")
        .says("not deployed: cannot write ")
        .says(".bluegreen-build.json");
    assert!(root.current("blue").is_none());
    // As for a failed build command: its folder is removed at once (README "On-disk
    // layout"), not left holding the space until some later push builds.
    assert_empty(&root.path.join("builds/.tmp"));
}

#[test]
fn a_build_that_leaves_a_chatty_helper_behind_does_not_hold_the_push() {
    let root = Root::new();
    // A helper moved out of the build's group that writes to the build's output without
    // a pause: the copy must still end, or the hook (and the slot lock) waits forever.
    root.set(
        "build.command",
        "sh -c 'setsid sh -c \"while :; do echo tick; sleep 0.01; done\" & sleep 0.3; echo built'",
    );
    let sha = root.commit("v1", &[("VERSION", "v1\n")]);
    std::thread::scope(|s| {
        let push = s.spawn(|| root.push("blue"));
        let ended = poll_until(Duration::from_secs(40), || push.is_finished().then_some(()));
        if ended.is_none() {
            // Free the hook (its helper gone, the copy sees EOF) before failing.
            for pid in root_processes(&root.path) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::SIGKILL,
                );
            }
            panic!("the push still runs 40 s after its build ended");
        }
        let pushed = push.join().unwrap();
        assert!(pushed.ok, "{}", pushed.text);
        pushed
            .says("  built")
            .says("blue: build ")
            .says("blue: release ");
    });
    assert!(root.current("blue").unwrap().ends_with(&sha[..7]));
}

#[test]
fn a_build_leaves_no_helper_running_once_its_push_ends() {
    let root = Root::new();
    let helper = root.path.parent().unwrap().join("helper.pid");
    root.set(
        "build.env",
        env_map(&[("HELPER", helper.to_str().unwrap())]),
    );
    root.set("build.timeout", "1s");
    // Each build starts a helper that leaves its process group and folder (`setsid`, as a
    // build tool's daemon does), then times out, fails, or works.
    let helper_then = |rest: &str| {
        format!("sh -c 'setsid sh -c \"cd /; exec sleep 61\" & echo $! > \"$HELPER\"; {rest}'")
    };
    for (n, (rest, says)) in [
        ("sleep 60", "timed out after 1s (build.timeout)"),
        ("exit 3", "build failed: "),
        ("echo built", "blue: release "),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = fs::remove_file(&helper);
        root.set("build.command", helper_then(rest));
        root.commit(&format!("build {n}"), &[("VERSION", &format!("{n}\n"))]);
        let pushed = root.push("blue");
        let group: i32 = wait_for(Duration::from_secs(10), "the helper's pid", || {
            fs::read_to_string(&helper).ok()?.trim().parse().ok()
        });
        let left = poll_until(Duration::from_secs(2), || group_gone(group).then_some(())).is_none();
        let _ =
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), nix::sys::signal::SIGKILL);
        pushed.says(says);
        assert!(
            !left,
            "the helper of `{rest}` outlived its push:\n{}",
            pushed.text
        );
    }
}

#[test]
fn a_build_that_makes_its_folder_read_only_deploys() {
    let root = Root::new();
    root.set("keep_releases", 1);
    // A build that makes what it built read-only, its own folder too.
    root.set("build.command", "chmod -R a-w .");
    for n in 1..=3 {
        let sha = root.commit(&format!("v{n}"), &[("VERSION", &format!("v{n}\n"))]);
        let text = root.push_unprivileged("blue").text;
        assert!(text.contains("blue: release "), "{text}");
        assert!(root.current("blue").unwrap().ends_with(&sha[..7]), "{text}");
    }
    let current = root.path.join("blue/current");
    assert_eq!(fs::read_to_string(current.join("VERSION")).unwrap(), "v3\n");
    // The files the build made read-only stay so.
    let mode = fs::metadata(current.join("VERSION"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "{mode:o}");
    // Pruning removed the oldest release, and its build, which no release uses any more.
    assert_eq!(root.releases("blue").len(), 2);
    let builds = fs::read_dir(root.path.join("builds"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(builds, 2);
}

#[test]
fn a_program_that_cannot_start_is_told_apart_from_a_missing_interpreter() {
    let mut root = Root::new();
    let error_line = |pushed: &Pushed| {
        pushed
            .remote_lines()
            .into_iter()
            .find(|line| line.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line:\n{}", pushed.text))
    };
    // Both were `No such file or directory (os error 2)`, which reads as a file of the
    // tree gone missing.
    root.set("build.command", "no-such-build-tool --production");
    root.commit("v1", &[("VERSION", "v1\n")]);
    let reason = error_line(&root.push("blue"));
    assert!(
        reason.contains("build failed: cannot start `no-such-build-tool`: not found in PATH=")
            && reason.ends_with(": give its full path"),
        "{reason}"
    );
    let script = root.work.join("build.sh");
    fs::write(&script, "#!/nonexistent/sh\necho building\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    root.set("build.command", "./build.sh");
    root.commit("v2", &[]);
    let reason = error_line(&root.push("blue"));
    assert!(
        reason.ends_with(
            "build failed: cannot start `./build.sh`: No such file or directory (os error 2): its `#!` interpreter is missing"
        ),
        "{reason}"
    );
    assert!(root.current("blue").is_none());
    // The app's command, in the verdict.
    root.set("build.command", "");
    root.set("app.command", "no-such-app-server {port}");
    root.serve();
    root.commit("v3", &[]);
    let pushed = root.push("blue");
    let verdict = pushed
        .remote_lines()
        .into_iter()
        .find(|line| line.starts_with("blue: not live: "))
        .unwrap_or_else(|| panic!("no verdict:\n{}", pushed.text));
    assert!(
        verdict.contains("failed: cannot start `no-such-app-server` in ")
            && verdict.contains(": not found in PATH=")
            && verdict.contains(": give its full path"),
        "{verdict}"
    );
}
