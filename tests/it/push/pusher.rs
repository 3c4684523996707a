//! The pusher's connection: a client that stops reading or is slow holds no build, and
//! the build's output reaches it as short, plain lines.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::util::*;

/// A push client that stops reading for longer than the hook waits for it (10 s): the
/// build is not held on its output (it was, and that wait counted against
/// `build.timeout`), and once the client reads again it is told what it missed and
/// given the last line again (it got no verdict, nor any sign of a gap).
#[test]
fn a_push_client_that_stops_reading_holds_no_build_and_still_gets_its_steps_and_verdict() {
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
    // Told what it missed, and given again bluegreen's own lines among what it missed
    // (it got neither the verdict nor the release's name, nor any sign of a gap), or
    // not, when the reading began before them: the steps that name the build and the
    // release, and the verdict, each once.
    let note = text
        .find("bytes of this push's output were not shown here: the push client did not read them in time")
        .unwrap_or_else(|| panic!("no note of what was missed:\n{}", tail(&text)));
    let verdict = "): the release starts on the next `bluegreen serve`";
    for step in ["remote: blue: build ", "remote: blue: release "] {
        assert_eq!(text.matches(step).count(), 1, "{step}: {}", tail(&text));
    }
    let mut after = text[note..].lines();
    if after
        .next()
        .is_some_and(|line| line.contains("; bluegreen's own lines among them"))
    {
        let again: Vec<&str> = after
            .take_while(|line| line.starts_with("remote: "))
            .collect();
        assert!(
            again.iter().all(|line| line.starts_with("remote: blue: ")),
            "{}",
            tail(&text)
        );
    }
    // The verdict is the pusher's last line, whatever came before.
    let last = text.lines().rfind(|line| line.starts_with("remote: "));
    assert!(last.unwrap().contains(verdict), "{}", tail(&text));
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
