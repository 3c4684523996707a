//! The push path: `git push <slot> main` lands a built, versioned release.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

#[test]
fn a_push_lands_a_release_with_modes_and_symlinks() {
    let root = Root::new();
    root.commit(
        "first",
        &[
            ("VERSION", "v1\n"),
            ("bin/run.sh", "#!/bin/sh\necho hi\n"),
            ("lib/a/b.txt", "deep\n"),
        ],
    );
    fs::set_permissions(
        root.work.join("bin/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("bin/run.sh", root.work.join("run")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.work.join("outside")).unwrap();
    let sha = root.commit("modes and links", &[]);

    let pushed = root.push("blue");
    assert!(pushed.ok, "{}", pushed.text);
    pushed
        .says(&format!("blue: deploying {}", &sha[..7]))
        .says("blue: checkout ")
        .says("blue: build ")
        .says("blue: release ")
        .says("daemon not running (nothing answers on 127.0.0.1:")
        .says("): the release starts on the next `bluegreen serve`");

    let current = root.current("blue").expect("blue/current exists");
    assert!(current.ends_with(&sha[..7]), "{current}");
    let dir = root.path.join("blue/current");
    assert_eq!(fs::read_to_string(dir.join("VERSION")).unwrap(), "v1\n");
    assert_eq!(
        fs::read_to_string(dir.join("lib/a/b.txt")).unwrap(),
        "deep\n"
    );
    let mode = fs::metadata(dir.join("bin/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "exec bits kept: {mode:o}");
    assert_eq!(
        fs::read_link(dir.join("run")).unwrap().to_str(),
        Some("bin/run.sh")
    );
    assert_eq!(
        fs::read_link(dir.join("outside")).unwrap().to_str(),
        Some("/etc/passwd")
    );
    // The slot's linked dir points into <slot>/shared, relative to itself (a root moved
    // or copied keeps it inside itself).
    assert_eq!(
        fs::read_link(dir.join("data")).unwrap(),
        Path::new("../../shared/data")
    );
    // No index or work tree was written into the bare repo.
    assert!(!root.path.join("blue.git/index").exists());
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join(".bluegreen-release.json")).unwrap())
            .unwrap();
    assert_eq!(meta["commit"], sha);
    assert_eq!(meta["ref"], "refs/heads/main");

    // What the app wrote in its linked dir is there for the next release too.
    fs::write(dir.join("data/uploaded"), "kept\n").unwrap();
    let first = current;
    root.commit("second", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: release ");
    assert_ne!(root.current("blue").unwrap(), first);
    assert_eq!(fs::read_to_string(dir.join("VERSION")).unwrap(), "v2\n");
    assert_eq!(
        fs::read_to_string(dir.join("data/uploaded")).unwrap(),
        "kept\n"
    );
}

/// The pushing user's git config (here `~/.gitconfig`) and the tree's `.gitattributes`
/// change nothing in the release: `core.autocrlf = true` wrote CRLF line ends into it,
/// `core.symlinks = false` its symlinks as plain files, and the build of that tree was
/// reused whoever pushed it next. A release also keeps the
/// times its build gave its files (a `.pyc` names its source's).
#[test]
fn the_pushers_git_config_changes_nothing_in_the_release() {
    let root = Root::new();
    let home = root.path.parent().unwrap().join("home");
    fs::create_dir_all(&home).unwrap();
    fs::write(
        home.join(".gitconfig"),
        "[core]\n\tautocrlf = true\n\tsymlinks = false\n",
    )
    .unwrap();
    root.set(
        "build.command",
        "sh -c 'echo built > built.txt && touch -d @86400 built.txt'",
    );
    root.commit(
        "lf",
        &[
            ("VERSION", "v1\n"),
            ("run.sh", "#!/bin/sh\necho hi\n"),
            (".gitattributes", "*.txt text eol=crlf\n"),
            ("notes.txt", "a\nb\n"),
        ],
    );
    std::os::unix::fs::symlink("VERSION", root.work.join("verlink")).unwrap();
    root.commit("link", &[]);
    // The user's config as GIT_CONFIG_GLOBAL (which libgit2 reads too, for a repo opened
    // from the environment), then, for a new tree (a build of its own), as `~/.gitconfig`.
    let out = git_command(&root.work)
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    check_release(&root.path.join("blue/current"));
    root.commit("v2", &[("VERSION", "v2\n")]);
    let out = git_command(&root.work)
        .env("HOME", &home)
        .env_remove("GIT_CONFIG_GLOBAL")
        .args(["push", "green", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("build reused"), "{text}");
    check_release(&root.path.join("green/current"));
}

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

/// A push client that stops reading for longer than the hook waits for it (10 s): the
/// build is not held on its output (it was, and that wait counted against
/// `build.timeout`), and once the client reads again it is told what it missed and
/// given the last line again (it got no verdict, nor any sign of a gap).
#[test]
fn a_push_client_that_stops_reading_holds_no_build_and_still_gets_the_last_line() {
    use std::io::Read;
    let root = Root::new();
    root.set("build.timeout", "8s");
    // Long lines (over the 4 KiB a pipe takes whole or not at all), then short ones.
    let mut push = loud_push(
        &root,
        "yes \"$(printf %05000d 0)\" | head -n 400; yes \"a line of build output, repeated\" | head -n 300000",
    );
    // Nothing read meanwhile.
    wait_for(Duration::from_secs(40), "the release", || {
        root.current("blue")
    });
    let mut text = String::new();
    push.stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(push.wait().unwrap().success(), "{text}");
    // Lines whole, or marked as cut short; none empty.
    let long = "0".repeat(5000);
    for line in text.lines().map(|l| l.trim_end()) {
        assert_ne!(line, "remote:", "{}", tail(&text));
        if let Some(zeros) = line.strip_prefix("remote:   0") {
            assert!(
                zeros.len() == 4999 || zeros.ends_with(" (cut short)"),
                "{}…",
                &line[..60.min(line.len())]
            );
        }
    }
    assert!(text.contains(&long), "no long line came whole");
    // Told what it missed, and the verdict: given again after that note when it was
    // dropped too (as a rule), or as it came, when the reading began before it.
    let note = text
        .find("bytes of this push's output were not shown here: the push client did not read them in time")
        .unwrap_or_else(|| panic!("no note of what was missed:\n{}", tail(&text)));
    let verdict = "): the release starts on the next `bluegreen serve`";
    let mut after = text[note..].lines();
    let given_again = after
        .next()
        .is_some_and(|l| l.contains("its last line was:)"))
        && after.next().is_some_and(|l| l.contains(verdict));
    assert!(
        text.contains(verdict) && (given_again || !text[note..].contains("its last line was")),
        "{}",
        tail(&text)
    );
    // The build's recorded time is its command's, not the pusher's 10 s stall with it.
    let build = fs::read_dir(root.path.join("builds"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.join(".bluegreen-build.json").is_file())
        .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(build.join(".bluegreen-build.json")).unwrap())
            .unwrap();
    let seconds = meta["seconds"].as_f64().unwrap();
    assert!(seconds < 10.0, "{seconds}");
}

/// A push client that reads, but slowly (a thin SSH link): the deploy is not held until
/// it has taken all the build said (8 MiB at 20 KB/s: minutes, the push holding its
/// turn and the tree's build all along); the lines still waiting 10 s after the build
/// ended are dropped, and it is told how many.
#[test]
fn a_slow_push_client_holds_the_deploy_ten_seconds_at_most() {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let root = Root::new();
    let mut push = loud_push(
        &root,
        "yes \"a line of build output, repeated\" | head -n 60000",
    );
    // 1 KiB every 50 ms until the release is out, then all of it.
    let slow = Arc::new(AtomicBool::new(true));
    let reader = std::thread::spawn({
        let slow = slow.clone();
        let mut stderr = push.stderr.take().unwrap();
        move || {
            let (mut text, mut chunk) = (Vec::new(), [0u8; 1024]);
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                text.extend_from_slice(&chunk[..n]);
                if slow.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        }
    });
    let released = poll_until(Duration::from_secs(40), || root.current("blue"));
    slow.store(false, Ordering::Relaxed);
    let text = reader.join().unwrap();
    assert!(push.wait().unwrap().success(), "{}", tail(&text));
    assert!(released.is_some(), "{}", tail(&text));
    assert!(
        text.contains("lines of build output not shown here: they came faster than the push took them; see the build log, "),
        "{}",
        tail(&text)
    );
    assert!(
        text.contains("): the release starts on the next `bluegreen serve`"),
        "{}",
        tail(&text)
    );
}

/// A `git push blue` of a new commit whose build runs `script` (in `sh -c`), started with
/// its output (`remote:` lines) on a pipe for the test to read when it will.
fn loud_push(root: &Root, script: &str) -> std::process::Child {
    root.set("build.command", format!("sh -c '{script}'"));
    root.commit("v1", &[("VERSION", "v1\n")]);
    git_command(&root.work)
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The last lines of a push's output, for a failed assertion.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// A pushed file or folder named as bluegreen's own files in each build and release is
/// refused at once, in one line: a folder `.bluegreen-release.json` failed the deploy at
/// its end with `Is a directory`, and a file of that name was silently written over.
#[test]
fn a_pushed_name_bluegreen_keeps_for_its_own_files_is_refused() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let v1 = root.current("blue");
    for name in [".bluegreen-release.json/x", ".bluegreen-build.json"] {
        let sha = root.commit("own name", &[(name, "x\n")]);
        let pushed = root.push("blue");
        let top = name.split('/').next().unwrap();
        pushed.says(&format!(
            "error: blue: {} not deployed: the pushed tree has `{top}` at its top: names starting `.bluegreen-` are bluegreen's own files in each build and release; rename it, commit and push again",
            &sha[..7]
        ));
        assert_eq!(root.current("blue"), v1);
        root.remove(name);
    }
}

/// A tree git cannot check out (here a `.git/config`, made without git's own checks)
/// fails the deploy in one line that names the file as pushed, not the temporary
/// folder it was checked out into, which is gone by the time anyone reads it.
#[test]
fn a_checkout_failure_names_the_pushed_file() {
    let root = Root::new();
    let blob = root.git_fed(&["hash-object", "-w", "--stdin"], b"x\n");
    let listing = format!("100644 blob {blob}\tconfig\n");
    let inner = root.git_fed(&["mktree"], listing.as_bytes());
    let listing = format!("040000 tree {inner}\t.git\n");
    let tree = root.git_fed(&["mktree"], listing.as_bytes());
    let commit = root.git_fed(&["commit-tree", "-m", "bad", &tree], b"");
    let pushed = root.push_ref("blue", &format!("{commit}:refs/heads/main"));
    pushed.says(&format!(
        "error: blue: {} not deployed: cannot check out the pushed tree {}: cannot checkout to invalid path '.git/config'",
        &commit[..7],
        &tree[..7]
    ));
    pushed.never_says("builds/.tmp");
    assert_eq!(root.current("blue"), None);
}

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
        .says("exited with exit status: 1; log ")
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
        .says("exited with exit status: 1; log ");
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

/// A pusher gone (its `git push` killed, as a dropped SSH session leaves it) while its
/// build prints more than a pipe holds: git's receive-pack keeps the hook's stderr open
/// and stops reading it, and the hook's next write blocked for good, holding the slot's
/// push turn and the build's lock (every later push to either slot waited on them). The
/// deploy completes all the same, and the next push goes through.
#[test]
fn a_pusher_gone_while_its_build_prints_a_lot_does_not_hold_the_deploy() {
    let root = Root::new();
    let builds = root.set_build(
        "sh -c 'echo built >> \"$COUNT\"; while [ ! -e \"$GO\" ]; do sleep 0.05; done; seq 1 200000'",
    );
    let v1 = root.commit("v1", &[("VERSION", "v1\n")]);
    let mut push = crate::util::git_command(&root.work);
    push.args(["push", "blue", "+HEAD:refs/heads/main"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut push, 0);
    let mut push = push.spawn().unwrap();
    let group = nix::unistd::Pid::from_raw(push.id() as i32);
    let started = poll_until(Duration::from_secs(20), || {
        (count_lines(&builds.count) == 1).then_some(())
    });
    // The pusher goes; its receive-pack, and the hook under it, stay.
    let _ = push.kill();
    let _ = push.wait();
    fs::write(&builds.go, "").unwrap();
    let deployed = poll_until(Duration::from_secs(60), || {
        root.current("blue").filter(|id| id.ends_with(&v1[..7]))
    });
    // Whatever is left of that push (its hook, stuck).
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    assert!(started.is_some(), "the build did not start");
    assert!(
        deployed.is_some(),
        "not deployed: {:?}",
        root.current("blue")
    );
    root.set("build.command", "");
    let v2 = root.commit("v2", &[("VERSION", "v2\n")]);
    let pushed = root.push("blue");
    assert!(
        root.current("blue").unwrap().ends_with(&v2[..7]),
        "{}",
        pushed.text
    );
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

/// The log of the build that failed on `root` put on a full disk: every write to it
/// fails with ENOSPC. Its path.
fn log_on_a_full_disk(root: &Root) -> std::path::PathBuf {
    let log = fs::read_dir(root.path.join("builds"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("the failed build's log");
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
            "exited with exit status: 3; log {} (incomplete: No space left on device (os error 28)); last lines: compiling | boom",
            log.display()
        ));
    assert!(root.current("blue").is_none());
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

/// A build that exits 0 after the disk filled (its log could not be written, as a tool
/// that ignores a failed write exits 0) is not kept: what it wrote may be cut short. It
/// was kept, and every later push of the tree reused it.
#[test]
fn a_build_that_ran_into_a_full_disk_is_not_kept_whatever_it_exits_with() {
    let root = Root::new();
    let builds = root.set_build("sh -c 'echo compiling; [ -e \"$GO\" ]'");
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("exited with exit status: 1");
    let log = log_on_a_full_disk(&root);
    fs::write(&builds.go, "").unwrap();
    root.commit("retry", &[]);
    root.push("blue").says(&format!(
        "exited with exit status: 0, but the disk filled while it ran (No space left on device (os error 28), writing its log {}): what it wrote may be cut short, so it is not kept; free some space, then push a new commit (git commit --allow-empty -m retry)",
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
    root.push("blue").says("exited with exit status: 3");
    drop(held);
    let _ = green.wait();
    let text = reader.join().unwrap();
    assert!(
        text.contains("the push that was building this tree did not finish it"),
        "{text}"
    );
    assert_eq!(count_lines(&builds.count), 1, "{text}");
    root.commit("retry", &[]);
    root.push("green").says("exited with exit status: 3");
    assert_eq!(count_lines(&builds.count), 2);
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
        .says("build failed: `sh -c 'echo compiling; echo boom >&2; exit 3'` exited with exit status: 3")
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
        last.ends_with("app.ready_timeout: invalid duration `soon`: expected number at 0 (e.g. \"30s\", \"500ms\", \"2m\", \"1h 30m\"); fix it (`bluegreen check` says where), then push a new commit"),
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

#[test]
fn a_hook_stopped_by_a_signal_stops_its_build_and_deploys_nothing() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    let before = root.current("blue");
    // A build with a child of its own: the whole group must go.
    root.set("build.command", "sh -c 'sleep 60 & exec sleep 61'");
    let tmp = root.path.join("builds/.tmp");
    let bin = fs::canonicalize(BIN).unwrap();
    for (n, signal) in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM]
        .into_iter()
        .enumerate()
    {
        root.commit(&format!("slow {n}"), &[("VERSION", &format!("slow {n}\n"))]);
        std::thread::scope(|s| {
            let push = s.spawn(|| root.push("blue"));
            let build = wait_for(Duration::from_secs(20), "the build to start", || {
                let pids = root_processes(&tmp);
                (pids.len() >= 2).then_some(pids)
            });
            // As a Ctrl-C at the pusher's terminal, or an operator's kill, would: the
            // hook only (the build runs in its own process group).
            let hook = root_processes(&root.path.join("blue.git"))
                .into_iter()
                .find(|pid| fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == bin))
                .expect("the hook runs");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(hook as i32), signal).unwrap();
            let pushed = push.join().unwrap();
            pushed.says(&format!(
                "not deployed: build failed: stopped by {signal}; its process group was killed"
            ));
            wait_for(
                Duration::from_secs(10),
                "the build's processes to go",
                || {
                    build
                        .iter()
                        .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
                        .then_some(())
                },
            );
        });
        assert_eq!(root.current("blue"), before);
        assert_empty(&tmp);
    }
}

/// The deploy branch's verdict is the push's last line, which a script reads, whatever
/// else the push carries (a tag with `--follow-tags`, other branches): their notes come
/// before it.
#[test]
fn the_verdict_is_the_last_line_of_a_push_that_carries_other_refs() {
    let mut root = Root::new();
    root.serve();
    root.commit("first", &[("VERSION", "v1\n")]);
    let out = git_command(&root.work)
        .args([
            "push",
            "blue",
            "+HEAD:refs/heads/main",
            "HEAD:refs/heads/zzz",
            "HEAD:refs/tags/v1.0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = Pushed { ok: true, text }.remote_lines();
    let last = lines.last().map(String::as_str).unwrap_or_default();
    assert!(last.starts_with("blue: live in "), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("refs/tags/v1.0 is not the deploy branch")),
        "{lines:#?}"
    );
}

/// A push that waited for its turn deploys the newer commit the branch moved on to: when
/// that one's build fails, the error names it, not the commit this push brought.
#[test]
fn a_build_failure_after_the_branch_moved_on_names_the_commit_that_failed() {
    let root = Root::new();
    let builds = root.set_build(
        "sh -c 'echo built >> \"$COUNT\"; if [ -e FAIL_BUILD ]; then echo broken; exit 5; fi; if [ -e SLOW_BUILD ]; then while [ ! -e \"$GO\" ]; do sleep 0.05; done; fi'",
    );
    let a = root.commit("a", &[("VERSION", "a\n"), ("SLOW_BUILD", "")]);
    let turn = root.path.join("blue/.push.lock");
    let (first, b) = std::thread::scope(|s| {
        let first = s.spawn(|| root.push("blue"));
        let building = poll_until(Duration::from_secs(20), || {
            (count_lines(&builds.count) == 1).then_some(())
        });
        root.remove("SLOW_BUILD");
        let b = root.commit("b", &[("VERSION", "b\n"), ("FAIL_BUILD", "")]);
        let second = s.spawn(|| root.push("blue"));
        let waiting = poll_until(Duration::from_secs(20), || {
            (waiting_on(&turn) == 1).then_some(())
        });
        fs::write(&builds.go, "").unwrap();
        let first = first.join().unwrap();
        second.join().unwrap();
        assert!(building.is_some() && waiting.is_some(), "{}", first.text);
        (first, b)
    });
    first
        .says(&format!(
            "blue: refs/heads/main moved on to {} since this push: deploying that instead",
            &b[..7]
        ))
        .says(&format!("blue: {} not deployed: build failed", &b[..7]));
    assert!(
        !first.text.contains(&format!("{} not deployed", &a[..7])),
        "{}",
        first.text
    );
}

#[test]
fn other_branches_deletions_and_garbage_deploy_nothing() {
    let root = Root::new();
    root.commit("first", &[("VERSION", "v1\n")]);
    // It says how to deploy it (git's default branch pushed to a root that deploys `main`).
    root.push_ref("blue", "HEAD:refs/heads/feature").says(
        "refs/heads/feature is not the deploy branch (main): not deployed (`git push blue feature:main` deploys it)",
    );
    assert!(root.current("blue").is_none());
    // A name whose right-to-left override and C1 escape would turn the terminal's line
    // around, or start a colour, is shown with them as `?`, and with no hint to type.
    let reversed = root.push_ref("blue", "HEAD:refs/heads/x\u{9b}31m\u{202E}niam");
    assert!(
        reversed.remote_lines().contains(
            &"refs/heads/x?31m?niam is not the deploy branch (main): not deployed".to_string()
        ),
        "{}",
        reversed.text
    );
    // Its deletion has nothing to deploy.
    let deleted = root.push_ref("blue", ":refs/heads/feature");
    let note = "refs/heads/feature is not the deploy branch (main): not deployed";
    assert_eq!(deleted.remote_lines(), [note], "{}", deleted.text);
    assert!(root.current("blue").is_none());

    // Run the hook as git would for a deletion of the deploy branch, and for bad input.
    let hook = |input: &str| run_hook(&root.path.join("blue.git"), &[], input);
    let zeros = "0".repeat(40);
    let out = hook(&format!("{} {zeros} refs/heads/main\n", "a".repeat(40)));
    assert!(!out.status.success(), "bad input exits non-zero");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("refs/heads/main was deleted: not deployed"),
        "{text}"
    );
    assert!(root.current("blue").is_none());
    let out = hook(&format!(
        "{} {} refs/heads/feature\n",
        "0".repeat(40),
        "b".repeat(40)
    ));
    assert!(!out.status.success(), "bad input exits non-zero");

    // A commit this repo does not have (the hook run by hand): one line, no libgit2 codes.
    // The push's other refs are still noted before the error ends the hook.
    let out = hook(&format!(
        "{zeros} {} refs/heads/main\n{zeros} {} refs/heads/feature\n",
        "c".repeat(40),
        "d".repeat(40)
    ));
    assert!(!out.status.success(), "an unknown commit exits non-zero");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text.trim(),
        format!(
            "refs/heads/feature is not the deploy branch (main): not deployed (`git push blue feature:main` deploys it)\n\
             error: blue: ccccccc not deployed: commit {} is not in {}",
            "c".repeat(40),
            root.path.join("blue.git").display()
        ),
    );
    assert!(root.current("blue").is_none());
    // An object the repo has that is no commit: said so, not that it is missing.
    let blob = git2::Repository::open(root.path.join("blue.git"))
        .unwrap()
        .blob(b"a blob\n")
        .unwrap()
        .to_string();
    let out = hook(&format!("{zeros} {blob} refs/heads/main\n"));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text.trim(),
        format!(
            "error: blue: {} not deployed: {blob} is a blob in {}, not a commit",
            &blob[..7],
            root.path.join("blue.git").display()
        ),
    );

    let out = hook("not a ref line\n");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text.trim(),
        "error: malformed post-receive input on line 1: expected `<old-sha> <new-sha> <ref>`"
    );
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

/// A `core.hooksPath` in the pusher's git config (a team's shared hooks folder) sent
/// every push to that folder instead of the repo's hook: the branch moved, nothing was
/// deployed, and git said nothing. `init` pins each repo's own hooks folder.
#[test]
fn a_hooks_path_in_the_pushers_git_config_does_not_bypass_the_hook() {
    let root = Root::new();
    let theirs = root.path.join("team-hooks");
    fs::create_dir_all(&theirs).unwrap();
    let global = root.path.join("pusher.gitconfig");
    fs::write(
        &global,
        format!("[core]\n\thooksPath = {}\n", theirs.display()),
    )
    .unwrap();
    root.commit("first", &[("VERSION", "v1\n")]);
    let out = git_command(&root.work)
        .env("GIT_CONFIG_GLOBAL", &global)
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("remote: blue: release "), "{text}");
    assert!(root.current("blue").is_some(), "{text}");
    // One the repo sets itself is the operator's: kept, and named by `init`.
    let repo = root.path.join("green.git");
    assert!(git_command(&repo)
        .args(["config", "core.hooksPath", "/srv/hooks"])
        .status()
        .unwrap()
        .success());
    let stdout = root.run_ok(&["init"]);
    assert!(
        stdout.contains(&format!(
            "kept      core.hooksPath = /srv/hooks in {}: pushes run the hooks there",
            repo.display()
        )),
        "{stdout}"
    );
}

/// One user with two roots sets `BLUEGREEN_ROOT` for the CLI of one of them: a push into
/// the other's repo deploys there, as the repo names its root, and never into the root
/// the variable names. It was refused (`not deployed`), and git had moved the branch all
/// the same, so pushing again sent nothing. A `--root` given to the hook by hand that
/// does not hold the repo is still refused.
#[test]
fn a_bluegreen_root_set_for_another_root_deploys_into_the_pushed_root() {
    let (root, other) = (Root::new(), Root::new());
    root.commit("first", &[("VERSION", "v1\n")]);
    let out = git_command(&root.work)
        .env("BLUEGREEN_ROOT", &other.path)
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("blue: release "), "{text}");
    assert!(!text.contains("not deployed"), "{text}");
    assert!(root.current("blue").is_some(), "{text}");
    assert!(other.current("blue").is_none());
    // Set but empty, it is no root named either: it was clap's `--root` with no value,
    // which refused the push in three lines (the branch moved all the same).
    let first = root.current("blue");
    root.commit("second", &[("VERSION", "v2\n")]);
    let out = git_command(&root.work)
        .env("BLUEGREEN_ROOT", "")
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("blue: release "), "{text}");
    assert_ne!(root.current("blue"), first, "{text}");

    let head = String::from_utf8(root.git(&["rev-parse", "HEAD"]).stdout).unwrap();
    let line = format!("{} {} refs/heads/main\n", "0".repeat(40), head.trim());
    let root_arg = ["--root".as_ref(), other.path.as_os_str()];
    let out = run_hook(&root.path.join("green.git"), &root_arg, &line);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        text.trim(),
        format!(
            "error: this push came into {}, but the root is {} (--root): not deployed; drop --root or point it at {}",
            root.path.join("green.git").display(),
            other.path.display(),
            root.path.display()
        )
    );
    assert!(other.current("green").is_none());
    assert!(root.current("green").is_none());
}

/// `git push blue` of HEAD, in a process group of its own (to be killed whole), once its
/// build runs: a process working in `builds/.tmp/`, not only the temp folder, which is
/// made just before it starts, nor the hook. Returns the push and that folder.
fn push_until_building(root: &Root) -> (std::process::Child, std::path::PathBuf) {
    let mut push = crate::util::git_command(&root.work);
    push.args(["push", "blue", "+HEAD:refs/heads/main"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut push, 0);
    let child = push.spawn().unwrap();
    let tmp = root.path.join("builds/.tmp");
    wait_for(Duration::from_secs(20), "the build to start", || {
        (!root_processes(&tmp).is_empty()).then_some(())
    });
    (child, tmp)
}

#[test]
fn a_hook_killed_mid_build_leaves_no_finished_build() {
    let root = Root::new();
    let gate = root.path.parent().unwrap().join("gate");
    let helper = root.path.parent().unwrap().join("helper.pid");
    fs::write(&gate, "").unwrap();
    // The build also starts a helper outside its group and working elsewhere (as a
    // build tool's daemon does).
    root.set(
        "build.command",
        "sh -c 'if [ -e \"$GATE\" ]; then setsid sh -c \"cd /; exec sleep 61\" & echo $! > \"$HELPER\"; sleep 60; fi; echo built'",
    );
    root.set(
        "build.env",
        env_map(&[
            ("GATE", gate.to_str().unwrap()),
            ("HELPER", helper.to_str().unwrap()),
        ]),
    );
    root.commit("first", &[("VERSION", "v1\n")]);

    let (mut child, tmp) = push_until_building(&root);
    // The helper leads a group of its own (setsid).
    let helper_group: i32 = wait_for(Duration::from_secs(10), "the build's helper", || {
        fs::read_to_string(&helper).ok()?.trim().parse().ok()
    });
    // Kill the push and its hook. The build runs in its own group and outlives them.
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
    assert!(
        !root.processes().is_empty(),
        "the orphaned build is still running"
    );
    for entry in fs::read_dir(root.path.join("builds")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') {
            panic!("a build folder appeared for a killed build: {name}");
        }
    }
    assert!(root.current("blue").is_none());
    // An operator looks into the abandoned folder from a shell of their own.
    let abandoned = fs::read_dir(&tmp).unwrap().flatten().next().unwrap().path();
    let mut operator = Command::new("sleep");
    operator.arg("60").current_dir(&abandoned);
    std::os::unix::process::CommandExt::process_group(&mut operator, 0);
    let mut operator = Killed(operator.spawn().unwrap());

    // The next push of the same tree builds it and lands.
    fs::remove_file(&gate).unwrap();
    root.commit("again", &[]);
    let pushed = root.push("blue");
    pushed.says("blue: build ").says("blue: release ");
    assert!(root.current("blue").is_some());
    // The next push stopped the orphaned build before reusing its key, and the helper
    // it had left outside its group, but not the operator's shell.
    let operator_left = operator.0.try_wait().unwrap();
    drop(operator);
    assert_eq!(operator_left, None, "the operator's process was stopped");
    assert_eq!(root.processes(), Vec::<u32>::new());
    wait_for(
        Duration::from_secs(10),
        "the build's helper to be gone",
        || group_gone(helper_group).then_some(()),
    );
}

/// A hook killed outright (SIGKILL, the OOM killer) leaves its build running, past its
/// `build.timeout`: the next push stops it even when it builds nothing (its tree was
/// built before), and so does a push of the same tree that waited for that build. Only a
/// push that built something did.
#[test]
fn a_killed_hooks_build_is_stopped_by_the_next_push_that_reuses_a_build() {
    let root = Root::new();
    let gate = root.path.parent().unwrap().join("gate");
    root.set(
        "build.command",
        "sh -c 'if [ -e \"$GATE\" ]; then sleep 60; fi; echo built'",
    );
    root.set("build.env", env_map(&[("GATE", gate.to_str().unwrap())]));
    let built = root.commit("first", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: build ");

    fs::write(&gate, "").unwrap();
    root.commit("slow", &[("VERSION", "v2\n")]);
    let (mut child, tmp) = push_until_building(&root);
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
    assert!(!root_processes(&tmp).is_empty(), "the orphaned build runs");

    root.push_ref("green", &format!("{built}:refs/heads/main"))
        .says("green: build reused");
    assert_eq!(root_processes(&tmp), Vec::<u32>::new());
    assert_empty(&tmp);

    // Again, with a push of the same tree to green waiting for that build when its hook
    // is killed: the waiting push stops it, as it holds the key from then on.
    root.commit("slow again", &[("VERSION", "v3\n")]);
    let (mut child, _) = push_until_building(&root);
    let (mut waiter, reader) = push_until(&root, "green", "another push is building this tree");
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let _ = waiter.wait();
    let text = reader.join().unwrap();
    assert!(
        text.contains("the push that was building this tree did not finish it"),
        "{text}"
    );
    assert_eq!(root_processes(&tmp), Vec::<u32>::new(), "{text}");
}

/// A linked dir written with a trailing slash (`"data/"`) is the same as `"data"`: the
/// pushed tree's `data` symlink is replaced by the link to the shared folder, and what
/// it pointed to is left alone. `data/` named the symlink's target to the kernel, so the
/// deploy emptied it (the slot's own shared data, through a relative link), then failed.
#[test]
fn a_linked_dir_with_a_trailing_slash_never_empties_what_a_pushed_symlink_points_to() {
    let root = Root::new();
    root.set("app.linked_dirs", toml::Value::Array(vec!["data/".into()]));
    let shared = root.path.join("blue/shared/data");
    fs::create_dir_all(&shared).unwrap();
    fs::write(shared.join("db"), "customer db").unwrap();
    let outside = root.path.parent().unwrap().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("keep.txt"), "precious").unwrap();
    for target in [Path::new("../../shared/data"), outside.as_path()] {
        let _ = fs::remove_file(root.work.join("data"));
        std::os::unix::fs::symlink(target, root.work.join("data")).unwrap();
        root.commit(
            &format!("data -> {}", target.display()),
            &[("VERSION", "v1\n")],
        );
        root.push("blue").says("blue: release ");
        assert_eq!(
            fs::read_to_string(shared.join("db")).unwrap(),
            "customer db"
        );
        assert_eq!(
            fs::read_to_string(outside.join("keep.txt")).unwrap(),
            "precious"
        );
        let current = root.path.join("blue/current/data");
        assert_eq!(
            current.canonicalize().unwrap(),
            shared.canonicalize().unwrap(),
            "{target:?}"
        );
    }
}

#[test]
fn a_symlink_in_the_tree_cannot_redirect_a_linked_dir() {
    let root = Root::new();
    root.link_uploads();
    let outside = root.path.parent().unwrap().join("outside");
    fs::create_dir_all(outside.join("uploads")).unwrap();
    fs::write(outside.join("uploads/keep.txt"), "precious").unwrap();
    root.commit("v1", &[("VERSION", "v1\n")]);
    std::os::unix::fs::symlink(&outside, root.work.join("public")).unwrap();
    root.commit("evil link", &[]);
    let pushed = root.push("blue");
    pushed.says("linked dir `public/uploads`: `public` in the release is not a folder (a symlink or file from the tree); refusing to follow it");
    // The tree has no `public/uploads` of its own: no note that it does, before the
    // error that says otherwise.
    assert!(
        !pushed
            .text
            .contains("note: the pushed tree has `public/uploads`"),
        "{}",
        pushed.text
    );
    assert!(root.current("blue").is_none());
    assert_eq!(
        fs::read_to_string(outside.join("uploads/keep.txt")).unwrap(),
        "precious"
    );
    // The refused release's copy is gone at once.
    assert_empty(&root.path.join("blue/releases"));
}

#[test]
fn a_release_copy_a_killed_deploy_left_is_removed_by_the_next_deploy_even_a_failed_one() {
    let root = Root::new();
    root.link_uploads();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let v1 = root.current("blue").unwrap();
    // What a deploy killed (SIGKILL, the OOM killer) while copying its release leaves:
    // on a disk it nearly filled, the next deploys fail at their own copy for lack of
    // that space, and never get to the prune that used to be all that removed it.
    let stale = root
        .path
        .join("blue/releases/.tmp-20261122T000000.000Z-dead000");
    fs::create_dir_all(stale.join("node_modules")).unwrap();
    fs::write(stale.join("node_modules/blob"), vec![0u8; 1 << 20]).unwrap();
    // `releases` names it, and what removes it.
    let listed = root.run_ok(&["releases", "blue"]);
    assert!(
        listed.ends_with("blue: note: releases/.tmp-20261122T000000.000Z-dead000 is what a stopped deploy, rollback or promote left (a copy, or a release being pruned); the next deploy to blue removes it\n"),
        "{listed}"
    );
    // A deploy that fails after its copy (here its linked dir is refused; on a full
    // disk, the copy itself).
    root.public_outside();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue")
        .says("blue: ")
        .says("not deployed: linked dir `public/uploads`");
    assert!(!stale.exists(), "the killed deploy's copy is still there");
    assert_eq!(root.current("blue").unwrap(), v1);
    assert_eq!(root.releases("blue"), vec![v1]);
    assert!(!root.run_ok(&["releases", "blue"]).contains("note:"));
}

#[test]
fn temp_files_of_a_killed_flip_or_state_write_are_removed() {
    let mut root = Root::new();
    // As a hook killed between making its new link and renaming it over `current`, and
    // a daemon killed in the middle of writing state.json, leave them.
    let stale_link = root.path.join("blue/.current.new.99999");
    std::os::unix::fs::symlink("releases/gone", &stale_link).unwrap();
    let stale_state = root.path.join(".state.json.tmp.99999");
    fs::write(&stale_state, "{").unwrap();
    root.serve();
    assert!(!stale_state.exists());
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    assert!(fs::symlink_metadata(&stale_link).is_err());
}

#[test]
fn a_pushed_folder_at_a_linked_dir_is_replaced_and_the_pusher_told() {
    // Root::new links `data`.
    let root = Root::new();
    root.commit(
        "v1",
        &[("VERSION", "v1\n"), ("data/seed.txt", "from the tree")],
    );
    root.push("blue").says(&format!(
        "blue: note: the pushed tree has `data`, a linked dir (app.linked_dirs): the release has {} there instead",
        root.path.join("blue/shared/data").display()
    ));
    let current = root.path.join("blue/current");
    assert!(fs::symlink_metadata(current.join("data"))
        .unwrap()
        .is_symlink());
    assert!(!current.join("data/seed.txt").exists());
}

#[test]
fn a_failed_build_quotes_its_last_lines_on_one_line() {
    let root = Root::new();
    // A tool that writes one byte that is not UTF-8 (a Latin-1 message), then a
    // progress meter redrawn with `\r` (curl's, to a file), then fails.
    root.set(
        "build.command",
        r#"sh -c 'printf "caf\351\n"; echo tar: not in gzip format; printf "  0%%\r 50%%\r100%%\n"; exit 2'"#,
    );
    root.commit("bad archive", &[("VERSION", "v2\n")]);
    let pushed = root.push("blue");
    let reason = pushed
        .text
        .split('\n')
        .find(|line| line.starts_with("remote: error: "))
        .unwrap_or_else(|| panic!("no error line:\n{}", pushed.text));
    assert!(
        reason.contains("; last lines: ") && reason.contains("tar: not in gzip format"),
        "the reason quotes the build's last lines: {reason:?}"
    );
    // git shows each `\r` as a new `remote:` line over the old one: the reason's start
    // (which push, why) would be overwritten on the pusher's terminal.
    assert!(!reason.contains('\r'), "one line: {reason:?}");
    assert!(root.current("blue").is_none());
}

/// Control bytes in build output reach the pusher as `?`: git's client cut the line at a
/// NUL, and lost the lines after it (and glued the next step's line on); an escape
/// cleared or retitled the pusher's terminal. The build log keeps them as written.
#[test]
fn build_output_reaches_the_pusher_without_control_bytes() {
    let root = Root::new();
    root.set(
        "build.command",
        r#"sh -c 'printf "step one\nhidden\000tail\nstep two\n\033]0;TITLE\007\033[2J\nstep three\n"'"#,
    );
    root.commit("v1", &[("VERSION", "v1\n")]);
    let pushed = root.push("blue");
    pushed.says("blue: build ");
    let shown: Vec<&str> = pushed
        .text
        .lines()
        .filter_map(|line| line.strip_prefix("remote:   "))
        .map(str::trim_end)
        .collect();
    assert_eq!(
        shown,
        [
            "step one",
            "hidden?tail",
            "step two",
            "?]0;TITLE??[2J",
            "step three"
        ],
        "{}",
        pushed.text
    );
    let key = fs::read_dir(root.path.join("builds"))
        .unwrap()
        .flatten()
        .find(|entry| entry.path().extension().is_some_and(|e| e == "log"))
        .unwrap()
        .path();
    assert!(fs::read(key).unwrap().windows(2).any(|w| w == b"n\0"));
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
fn a_branch_named_in_latin1_pushed_with_the_deploy_branch_does_not_stop_it() {
    use std::os::unix::ffi::OsStrExt;
    let root = Root::new();
    let sha = root.commit("v1", &[("VERSION", "v1\n")]);
    // git takes any bytes but a few in a branch name: `café` from a Latin-1 terminal.
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let made = git_command(&root.work)
        .arg("branch")
        .arg(odd)
        .status()
        .unwrap();
    assert!(made.success());
    // `git push --all`, or both named: one push, two refs.
    let out = git_command(&root.work)
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .arg(odd)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!("blue: deploying {}", &sha[..7])),
        "the deploy branch deploys: {text}"
    );
    assert!(root.current("blue").is_some(), "{text}");
    assert!(
        text.contains("is not the deploy branch (main): not deployed"),
        "the other ref gets its note: {text}"
    );
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
fn a_commit_message_that_is_not_utf8_is_shown_not_dropped() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    let message = root.path.parent().unwrap().join("message");
    fs::write(&message, b"caf\xe9 au lait\n\nbody\n").unwrap();
    root.git(&[
        "-c",
        "i18n.commitEncoding=latin1",
        "commit",
        "-q",
        "--allow-empty",
        "-F",
        message.to_str().unwrap(),
    ]);
    let pushed = root.push("blue");
    assert!(pushed.ok, "{}", pushed.text);
    pushed.says("caf\u{fffd} au lait");
    let listed = root.run_ok(&["releases", "blue"]);
    assert!(listed.contains("caf\u{fffd} au lait"), "{listed}");
}

#[test]
fn an_error_quoting_a_pushed_file_name_stays_one_line() {
    use std::io::Write;
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    let git = |args: &[&str], input: &[u8]| root.git_fed(args, input);
    // A name git takes but no checkout can write (longer than NAME_MAX), with newlines
    // that would start lines of their own, one of them looking like a verdict.
    let name = format!(
        "evil\nblue: live in 0.1s at forged (generation 9)\n{}",
        "x".repeat(300)
    );
    let blob = git(&["hash-object", "-w", "--stdin"], b"hi\n");
    let mut listing = root.git(&["ls-tree", "-z", "HEAD"]).stdout;
    write!(listing, "100644 blob {blob}\t{name}\0").unwrap();
    let tree = git(&["mktree", "-z"], &listing);
    let commit = git(
        &["commit-tree", &tree, "-p", "HEAD", "-m", "long name"],
        b"",
    );

    let pushed = root.push_ref("blue", &format!("{commit}:refs/heads/main"));
    let lines = pushed.remote_lines();
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("error: blue: ") && last.contains("File name too long"),
        "{}",
        pushed.text
    );
    assert!(last.contains("evil\\nblue: live"), "{}", pushed.text);
    assert!(
        !lines.iter().any(|l| l.starts_with("blue: live")),
        "a forged line: {}",
        pushed.text
    );
    assert!(root.current("blue").is_none());
}

#[test]
fn the_hint_for_another_branch_runs_no_command_it_names() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    let pwned = root.work.join("pwned");
    // git takes `;`, `$`, `{` and `}` in a branch name: pasted unquoted, the hint would
    // run what follows the `;` (in the folder it is pasted in).
    let branch = "x;touch${IFS}pwned;#";
    root.git(&["branch", branch]);
    let pushed = root.push_ref("blue", branch);
    let line = pushed
        .remote_lines()
        .into_iter()
        .find(|l| l.contains("is not the deploy branch"))
        .unwrap_or_else(|| panic!("{}", pushed.text));
    let hint = line
        .split_once("(`")
        .and_then(|(_, rest)| rest.split_once("` deploys it)"))
        .unwrap_or_else(|| panic!("no hint: {line}"))
        .0
        .to_string();
    // The pusher pastes it into a shell, in the repo they pushed from.
    let out = Command::new("sh")
        .args(["-c", &hint])
        .current_dir(&root.work)
        .envs(
            git_command(&root.work)
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .env_remove("GIT_DIR")
        .env_remove("BLUEGREEN_ROOT")
        .output()
        .unwrap();
    assert!(!pwned.exists(), "the hint ran a command: {hint}");
    assert!(
        out.status.success() && root.current("blue").is_some(),
        "the hint deploys: {hint}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A name git would read as an option (`--receive-pack=<command>`) gets no hint.
    let pushed = root.push_ref("blue", "HEAD:refs/heads/--receive-pack=touch");
    pushed.says("refs/heads/--receive-pack=touch is not the deploy branch (main): not deployed");
    pushed.never_says("deploys it");
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

/// CI clones with `--depth 1`: a push from such a clone is taken and deploys, where git
/// refuses it by default (`shallow update not allowed`) on a repo without the clone's
/// oldest commit, as a new root's is.
#[test]
fn a_push_from_a_shallow_clone_deploys() {
    let root = Root::new();
    for n in 1..=3 {
        root.commit(&format!("v{n}"), &[("VERSION", &format!("v{n}\n"))]);
    }
    let shallow = root.path.parent().unwrap().join("shallow");
    let url = format!("file://{}", root.work.display());
    let cloned = git_command(root.path.parent().unwrap())
        .args(["clone", "-q", "--depth", "1", &url])
        .arg(&shallow)
        .output()
        .unwrap();
    assert!(
        cloned.status.success(),
        "{}",
        String::from_utf8_lossy(&cloned.stderr)
    );
    let out = git_command(&shallow)
        .arg("push")
        .arg(root.path.join("blue.git"))
        .arg("HEAD:refs/heads/main")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("blue: release "), "{text}");
    assert_eq!(
        fs::read_to_string(root.path.join("blue/current/VERSION")).unwrap(),
        "v3\n"
    );
}
