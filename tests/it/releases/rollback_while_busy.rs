//! A rollback while the daemon serves or a push lands: the worker follows the flip,
//! and a rollback and a push to one slot take turns.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// A served root where blue runs v2, pushed over v1.
#[test]
fn rollback_while_serving_runs_the_previous_release() {
    let root = v2_over_v1_on_blue();
    // A third that went live: back is v2, the release before current, not v1, the
    // first that served.
    root.commit("v3", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue: live in ");
    let text = root.run_ok(&["rollback", "blue"]);
    assert!(text.contains("blue: live in "), "{text}");
    root.wait_body(root.blue, "v2 from blue");
    let text = root.run_ok(&["rollback", "blue"]);
    assert!(text.contains("blue: live in "), "{text}");
    root.wait_body(root.blue, "v1 from blue");
}

#[test]
fn a_flip_made_behind_the_daemons_back_is_picked_up_by_the_watch() {
    let root = v2_over_v1_on_blue();
    // A manual flip, like an operator's `ln -sfn` + `mv -T`, without telling the daemon.
    let first = root.releases("blue")[0].clone();
    let link = root.path.join("blue/current");
    let tmp = root.path.join("blue/current.manual");
    std::os::unix::fs::symlink(format!("releases/{first}"), &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    root.wait_body(root.blue, "v1 from blue");
    let generation = || root.status()["slots"]["blue"]["live"]["generation"].clone();
    let started = generation();

    // What a hook asks after its flip, when the watch was first (the hook still
    // pruning): the generation the watch started is the answer, not a second start.
    let answer = root.control("POST", &format!("/slots/blue/reload?release={first}"));
    assert_eq!(answer.status, 200, "{answer:?}");
    let verdict: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(verdict["generation"], started);
    assert_eq!(generation(), started);
    // A hook whose release a later flip replaced starts nothing; nor does one whose
    // release the later deploy also pruned before the hook asked.
    let replaced = root.releases("blue")[1].clone();
    let pruned = "20000101T000000.000Z-1234567";
    for gone in [replaced.as_str(), pruned] {
        let answer = root.control("POST", &format!("/slots/blue/reload?release={gone}"));
        assert_eq!(answer.status, 409, "{answer:?}");
        assert!(
            answer
                .body
                .contains(&format!("{gone} was superseded by {first}")),
            "{answer:?}"
        );
        assert_eq!(generation(), started);
    }
    let answer = root.control("POST", "/slots/blue/reload?release=nope");
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(
        answer.body.contains("blue has no release nope"),
        "{answer:?}"
    );
    // A path is no release id, even one that leads to a release folder (this was
    // `../releases/<id> was superseded by ...`, as if a push had made it).
    // Nor is a folder of ours in the releases folder (a release still being made).
    std::fs::create_dir(root.path.join("blue/releases/.tmp-x")).unwrap();
    for path in [format!("../releases/{replaced}"), ".tmp-x".to_string()] {
        let answer = root.control("POST", &format!("/slots/blue/reload?release={path}"));
        assert_eq!(answer.status, 409, "{answer:?}");
        assert!(
            answer.body.contains(&format!("blue has no release {path}")),
            "{answer:?}"
        );
    }
    assert_eq!(generation(), started);
    // An operator's reload starts it again.
    let answer = root.control("POST", "/slots/blue/reload");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_ne!(generation(), started);
    let answer = root.control("POST", "/slots/blue/reload?force=1");
    assert_eq!(answer.status, 400, "{answer:?}");
}

/// The operator's rollback in an incident does not wait for a push's build (up to
/// `build.timeout`): it goes back at once, says a push is under way, and the push's
/// release lands after it, as it would have had the rollback come first.
#[test]
fn a_rollback_during_a_push_build_goes_back_at_once_and_the_push_lands_after() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    let v1 = root.current("blue").unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    assert!(root.push("blue").ok);
    // A slow build of v3, until the test says go.
    let go = root
        .set_build("sh -c 'while [ ! -e \"$GO\" ]; do sleep 0.05; done'")
        .go;
    let v3 = root.commit("v3", &[("VERSION", "v3\n")]);
    std::thread::scope(|s| {
        let push = s.spawn(|| root.push("blue"));
        let tmp = root.path.join("builds/.tmp");
        wait_for(Duration::from_secs(20), "v3's build to start", || {
            (!root_processes(&tmp).is_empty()).then_some(())
        });
        // Were the build under the slot's lock, this would wait for `go`: given after
        // the deadline, so that the push ends either way.
        let mut rollback = Command::new(BIN)
            .args(["rollback", "blue", "--root"])
            .arg(&root.path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let waited = poll_until(Duration::from_secs(20), || rollback.try_wait().unwrap());
        if waited.is_none() {
            fs::write(&go, "").unwrap();
        }
        let out = rollback.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            waited.is_some(),
            "the rollback waited for the build: {said}"
        );
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains("blue: note: a push to blue is under way; this does not wait for it: if it deploys, its release becomes current after this"),
            "{said}"
        );
        assert_eq!(root.current("blue").unwrap(), v1, "{said}");
        fs::write(&go, "").unwrap();
        let pushed = push.join().unwrap();
        assert!(pushed.ok, "{}", pushed.text);
    });
    assert!(root.current("blue").unwrap().ends_with(&v3[..7]));
}

/// A rollback that waited for the slot's lock (a deploy installing its release) and
/// finds `current` moved meanwhile: "back" from what the operator saw is not "back" from
/// what landed (the release they meant to leave), so nothing is flipped. The test holds
/// the lock and moves `current` as that deploy would.
#[test]
fn a_rollback_waiting_for_the_slot_lock_refuses_once_current_moved() {
    let root = Root::new();
    for version in ["v1", "v2", "v3"] {
        root.commit(version, &[("VERSION", version)]);
        assert!(root.push("blue").ok);
    }
    let releases = root.releases("blue");
    let lock = fs::File::create(root.path.join("blue/.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let mut rollback = Command::new(BIN)
        .args(["rollback", "blue", "--root"])
        .arg(&root.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = rollback.id();
    wait_for(
        Duration::from_secs(10),
        "the rollback to wait for blue's lock",
        || crate::push::waiting_for_a_lock(&[pid]).then_some(()),
    );
    // v3 -> v1, as a promote or a deploy waited for would have moved it.
    let link = root.path.join("blue/current");
    let target = fs::read_link(&link)
        .unwrap()
        .to_string_lossy()
        .replace(&releases[2], &releases[0]);
    let temp = root.path.join("blue/.current.test");
    std::os::unix::fs::symlink(target, &temp).unwrap();
    fs::rename(&temp, &link).unwrap();
    drop(held);
    let status = rollback.wait().unwrap();
    let mut said = String::new();
    for pipe in [
        Box::new(rollback.stdout.take().unwrap()) as Box<dyn std::io::Read>,
        Box::new(rollback.stderr.take().unwrap()),
    ] {
        std::io::Read::read_to_string(&mut { pipe }, &mut said).unwrap();
    }
    // Not a silent hang for as long as the other holds the lock, and who holds it.
    assert!(
        said.contains(&format!(
            "another push, rollback or promote is changing blue's releases; waiting for it (held by pid {})",
            std::process::id()
        )),
        "{said}"
    );
    assert!(!status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "blue's current release changed while this waited ({} -> {}): nothing rolled back; run it again to go back from {}",
            releases[2], releases[0], releases[0]
        )),
        "{said}"
    );
    assert_eq!(root.current("blue").unwrap(), releases[0]);
}

/// A rollback while a push releases (under the slot lock) says only that it waits for
/// that deploy: it said first that a push was building and that it would not wait for it.
#[test]
fn a_rollback_during_a_pushs_release_says_only_that_it_waits() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue");
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue");
    // As a push in its release step holds them.
    let hold = |path: &std::path::Path| {
        let file = fs::File::open(path).unwrap();
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap()
    };
    let turn = hold(&root.path.join("blue/.push.lock"));
    let slot = hold(&root.path.join("blue/.lock"));
    let mut rollback = Command::new(BIN)
        .args(["rollback", "blue", "--root"])
        .arg(&root.path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let said = Arc::new(Mutex::new(String::new()));
    let reader = std::thread::spawn({
        let said = said.clone();
        let mut stdout = rollback.stdout.take().unwrap();
        move || {
            let mut chunk = [0u8; 1024];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                said.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        }
    });
    wait_for(Duration::from_secs(10), "the rollback to wait", || {
        said.lock()
            .unwrap()
            .contains("blue: another push, rollback or promote is changing blue's releases; waiting for it")
            .then_some(())
    });
    drop((slot, turn));
    assert!(rollback.wait().unwrap().success());
    reader.join().unwrap();
    let said = said.lock().unwrap().clone();
    assert!(!said.contains("is building"), "{said}");
}
