//! `promote`: the other slot's live build, with no new build.

use std::time::Duration;

use crate::util::*;

#[test]
fn promote_runs_the_same_build_without_rebuilding() {
    let mut root = Root::new();
    let count = root.set_build("sh -c 'echo x >> \"$COUNT\"'").count;
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue");
    root.push("green");
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    assert_eq!(count_lines(&count), 2);
    let out = root.run(&["promote", "blue"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("green: live in "), "{text}");
    assert_eq!(count_lines(&count), 2, "no rebuild");
    root.wait_body(root.green, "v2 from green");
    let meta = |slot: &str| root.current_meta(slot);
    assert_eq!(meta("green")["build_key"], meta("blue")["build_key"]);
    assert!(meta("green")["promoted_from"]
        .as_str()
        .unwrap()
        .starts_with("blue/"));
}

/// Promoting the build a slot runs already makes no second copy of it: the slot keeps
/// its release, and the verdict is that release's.
#[test]
fn promote_of_the_build_the_target_runs_already_changes_nothing() {
    let root = both_live();
    let blue = root.current("blue").unwrap();
    let green = root.current("green").unwrap();
    let before = walkdir(&root.path.join("green"));
    let out = root.run(&["promote", "blue", "green"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let key = root.current_meta("green")["build_key"].clone();
    assert!(
        text.starts_with(&format!(
            "green: its current release {green} runs build {} already, as blue/{blue} does: nothing new to promote\n",
            key.as_str().unwrap()
        )),
        "{text}"
    );
    assert!(text.contains("green: live in "), "{text}");
    assert_eq!(walkdir(&root.path.join("green")), before);
}

#[test]
fn promote_refuses_a_release_that_did_not_go_live_on_its_slot() {
    // "The artifact tested on blue runs on green": a push to blue that failed to start was
    // copied to green all the same, and green then tried it.
    let root = both_live();
    let v1 = root.current("blue").unwrap();
    let green_v1 = root.current("green").unwrap();
    root.commit("crashing", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("blue").says("blue: not live: ");
    let v2 = root.current("blue").unwrap();
    let before = walkdir(&root.path.join("green"));

    assert_eq!(
        root.run_err(&["promote", "blue", "green"]),
        format!(
            "error: blue's current release {v2} has not gone live (blue's last live release is {v1}): promote copies only a release that has served on blue; `bluegreen status` says why"
        )
    );
    assert_eq!(walkdir(&root.path.join("green")), before);
    assert_eq!(root.current("green").unwrap(), green_v1);

    // Once blue's current is what it serves again, it is promoted.
    assert!(root.run(&["rollback", "blue"]).status.success());
    let out = root.run(&["promote", "blue", "green"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("green: live in "), "{text}");
}

/// A promote to a slot whose push is building goes ahead at once, says so, and the
/// push's release lands after it (the build is not under the slot's lock).
#[test]
fn a_promote_during_a_push_build_to_its_target_lands_first_and_the_push_after() {
    let mut root = Root::new();
    // A tree with SLOW_BUILD builds until the test says go.
    let go = root
        .set_build(
            "sh -c 'if [ -e SLOW_BUILD ]; then while [ ! -e \"$GO\" ]; do sleep 0.05; done; fi'",
        )
        .go;
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    root.commit("v3", &[("VERSION", "v3\n"), ("SLOW_BUILD", "")]);
    std::thread::scope(|s| {
        let push = s.spawn(|| root.push("green"));
        let tmp = root.path.join("builds/.tmp");
        wait_for(Duration::from_secs(20), "v3's build to start", || {
            (!root_processes(&tmp).is_empty()).then_some(())
        });
        let mut promote = std::process::Command::new(BIN)
            .args(["promote", "blue", "green", "--root"])
            .arg(&root.path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Given after the deadline, so that the push ends either way.
        let done = poll_until(Duration::from_secs(30), || promote.try_wait().unwrap());
        if done.is_none() {
            std::fs::write(&go, "").unwrap();
        }
        let out = promote.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(done.is_some(), "the promote waited for the build: {said}");
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains("green: note: a push to green is under way; this does not wait for it"),
            "{said}"
        );
        assert!(said.contains("green: live in "), "{said}");
        assert!(root.get(root.green, "/").body.contains("v2 from green"));
        std::fs::write(&go, "").unwrap();
        let pushed = push.join().unwrap();
        assert!(pushed.ok, "{}", pushed.text);
        pushed.says("green: live in ");
    });
    assert!(root.get(root.green, "/").body.contains("v3 from green"));
}
