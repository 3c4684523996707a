//! Pruning: `keep_releases` releases per slot, failed ones first, and the builds no
//! release uses.

use std::fs;
use std::time::Duration;

use crate::util::*;

/// A release rolled back from goes before the older ones a rollback can still go to: it
/// was kept, and the oldest good release pruned, so that the rollbacks ran out one
/// release early (a soak found it).
#[test]
fn pruning_takes_a_release_rolled_back_from_before_older_good_ones() {
    let root = blue_live();
    root.set("keep_releases", 3);
    let v1 = root.current("blue").unwrap();
    let mut live = vec![v1];
    for version in ["v2", "v3"] {
        root.commit(version, &[("VERSION", version)]);
        root.push("blue").says("blue: live in ");
        live.push(root.current("blue").unwrap());
    }
    root.run_ok(&["rollback", "blue"]);
    root.commit("v4", &[("VERSION", "v4")]);
    root.push("blue").says("(pruned 1 release");
    let kept = root.releases("blue");
    assert!(
        !kept.contains(&live[2]),
        "v3, rolled back from, kept: {kept:?}"
    );
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), live[1]);
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), live[0]);
}

#[test]
fn builds_no_release_uses_are_removed() {
    let root = Root::new();
    root.set("keep_releases", 2);
    for n in 1..=3 {
        root.commit(&format!("v{n}"), &[("VERSION", &format!("v{n}\n"))]);
        root.push("green");
    }
    root.commit("v4", &[("VERSION", "v4\n")]);
    root.push("green")
        .says("(pruned 1 release, removed 1 unused build)");
    let used: std::collections::BTreeSet<String> = root
        .releases("green")
        .iter()
        .map(|id| {
            let meta = fs::read_to_string(
                root.path
                    .join("green/releases")
                    .join(id)
                    .join(".bluegreen-release.json"),
            )
            .unwrap();
            serde_json::from_str::<serde_json::Value>(&meta).unwrap()["build_key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let builds: std::collections::BTreeSet<String> = fs::read_dir(root.path.join("builds"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(builds, used, "exactly the builds the releases use are kept");
    assert_eq!(builds.len(), 2);
    // Nor their logs and lock files.
    for name in builds_entries(&root) {
        let key = name
            .trim_start_matches('.')
            .split('.')
            .next()
            .unwrap()
            .to_string();
        assert!(name == ".tmp" || used.contains(&key), "{name} is left");
    }
}

#[test]
fn a_build_whose_release_failed_is_removed_before_the_next_build() {
    let root = Root::new();
    root.link_uploads();
    // Deploys that fail after their build: on a full disk at their release's copy, here
    // at their linked dir, which the tree's `public` symlink makes refused.
    root.public_outside();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("not deployed: linked dir ");
    let first = finished_builds(&root);
    assert_eq!(first.len(), 1, "{first:?}");
    // Each such build holds its space: the next build gets it back, not only a deploy
    // that works (on the disk they fill, none would).
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("not deployed: linked dir ");
    let second = finished_builds(&root);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);
    // The last failed deploy's own build stays: pushed again, it is not built again.
    root.commit("retry", &[]);
    root.push("blue").says("blue: build reused");
    assert!(root.current("blue").is_none());
}

/// The finished builds in `builds/`.
fn finished_builds(root: &Root) -> Vec<String> {
    let mut keys: Vec<String> = builds_entries(root)
        .into_iter()
        .filter(|name| !name.starts_with('.') && root.path.join("builds").join(name).is_dir())
        .collect();
    keys.sort();
    keys
}

/// The names in `builds/`.
fn builds_entries(root: &Root) -> Vec<String> {
    fs::read_dir(root.path.join("builds"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn failed_builds_leave_a_bounded_trail() {
    let root = Root::new();
    root.set("build.command", "sh -c 'test ! -f FAIL'");
    root.commit("fails", &[("FAIL", "")]);
    for n in 0..23 {
        root.commit(&format!("f{n}"), &[("VERSION", &format!("f{n}\n"))]);
        root.push("blue").says("build failed: ");
    }
    // Bounded while it keeps failing, too: the 20 newest logs and this failure's (its
    // own locks are held while it runs), and no other failure's lock files.
    let entries = builds_entries(&root);
    let logs = entries.iter().filter(|n| n.ends_with(".log")).count();
    assert!(logs <= 21, "{entries:?}");
    let locks = entries
        .iter()
        .filter(|n| n.ends_with(".lock") || n.ends_with(".use"));
    assert!(locks.count() <= 2, "{entries:?}");
    root.remove("FAIL");
    root.commit("good", &[("VERSION", "good\n")]);
    root.push("blue").says("blue: release ");
    let entries = builds_entries(&root);
    let logs = entries.iter().filter(|n| n.ends_with(".log")).count();
    // The 20 newest failures' logs, and the good build's.
    assert_eq!(logs, 21, "{entries:?}");
    let locks = entries
        .iter()
        .filter(|n| n.ends_with(".lock") || n.ends_with(".use"));
    assert_eq!(locks.count(), 2, "only the good build's: {entries:?}");
}

#[test]
fn pruning_removes_failed_releases_before_ones_that_served() {
    let root = blue_live_with(&[("keep_releases", 4.into())]);
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    root.commit("crash", &[("VERSION", "v3\n"), ("CRASH", "")]);
    root.push("blue").says("blue: not live: ");
    root.commit("crash again", &[("VERSION", "v4\n")]);
    root.push("blue").says("blue: not live: ");
    let [v1, v2, v3, v4] = <[String; 4]>::try_from(root.releases("blue")).unwrap();
    root.remove("CRASH");
    root.commit("v5", &[("VERSION", "v5\n")]);
    root.push("blue").says("blue: live in ");
    // One over keep_releases: the first failure goes, not v1, which served and which a
    // second rollback can still go back to.
    let kept = root.releases("blue");
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(!kept.contains(&v3), "{kept:?}");
    for id in [&v1, &v2, &v4] {
        assert!(kept.contains(id), "{id} pruned: {kept:?}");
    }
}

/// A run of failed pushes: each push kept the one before it (what `current` named
/// before the flip, in case the daemon was starting it), and so pushed out an older
/// release that served. Once the daemon has refused it, that failure goes first.
#[test]
fn a_run_of_failed_pushes_does_not_push_out_releases_that_served() {
    let root = blue_live_with(&[("keep_releases", 3.into())]);
    let v1 = root.current("blue").unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    let v2 = root.current("blue").unwrap();
    for n in 3..=5 {
        let files = [("VERSION", format!("v{n}\n")), ("CRASH", String::new())];
        let files = files.each_ref().map(|(name, text)| (*name, text.as_str()));
        root.commit(&format!("crash {n}"), &files);
        root.push("blue").says("blue: not live: ");
    }
    // v3 and v4 never served and go; v1 and v2 served, v5 is current.
    let v5 = root.current("blue").unwrap();
    assert_eq!(root.releases("blue"), [v1, v2, v5]);
}

#[test]
fn pruning_with_the_daemon_stopped_keeps_what_rollback_goes_back_to() {
    let mut root = blue_live_with(&[("keep_releases", 3.into())]);
    let v1 = root.current("blue").unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    // The operator goes back to v1: it is what blue serves (state.json's `live`).
    root.run_ok(&["rollback", "blue"]);
    root.wait_body(root.blue, "v1 from blue");
    root.stop_serve();
    // Two pushes while the daemon is down (a maintenance window): neither went live.
    for n in 3..=4 {
        root.commit(&format!("v{n}"), &[("VERSION", &format!("v{n}\n"))]);
        root.push("blue").says("blue: daemon not running");
    }
    // `rollback` would go to v1 (what served last, README "Rollback order"), and a
    // restarted daemon falls back to it if v4 does not start: pruning must keep it.
    let kept = root.releases("blue");
    assert!(kept.contains(&v1), "{v1} pruned: {kept:?}");
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1);
}

/// A folder in a slot's releases that the pushing user cannot remove (another user's,
/// as a `sudo`ed command left there) is passed over and named: the whole prune stopped
/// at it, and the slot's releases piled up for good, push after push. As root, the
/// folder is `nobody`'s and the push runs without the capabilities that override that.
#[test]
fn a_folder_prune_cannot_remove_does_not_stop_the_rest() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: making another user's folder needs root");
        return;
    }
    let root = Root::new();
    root.set("keep_releases", 1);
    for version in ["v1", "v2"] {
        root.commit(version, &[("VERSION", version)]);
        assert!(root.push_unprivileged("blue").ok);
    }
    let stuck = root.path.join("blue/releases/.tmp-stuck");
    fs::create_dir(&stuck).unwrap();
    fs::write(stuck.join("file"), "").unwrap();
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(&stuck, nobody, None).unwrap();
    root.commit("v3", &[("VERSION", "v3")]);
    let pushed = root.push_unprivileged("blue");
    pushed
        .says("pruned 1 release")
        .says(&format!("cannot remove {}: ", stuck.display()))
        .says(", which is nobody (uid 65534)'s: remove it as that user or as root (retried next deploy)");
    assert_eq!(root.releases("blue").len(), 2, "{}", pushed.text);
}

/// A release a draining generation still runs is never pruned, however few releases
/// the slot keeps: its workers run in that folder (their files, a relative path they
/// open on the next request). With `keep_releases = 1`, v1 is neither current, nor the
/// release before, nor the last live one when v3 prunes; only its draining generation
/// (a request in flight: an answer whose body never ends) keeps it.
#[test]
fn a_release_a_draining_generation_runs_is_not_pruned() {
    use std::io::{Read, Write};
    let root = blue_live_with(&[
        ("keep_releases", 1.into()),
        ("app.drain_timeout", "60s".into()),
    ]);
    let v1 = root.current("blue").unwrap();
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", root.blue)).unwrap();
    stalled
        .write_all(b"GET /stalled HTTP/1.1\r\nHost: app\r\n\r\n")
        .unwrap();
    // Its head and first byte came: the request is in flight on v1.
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    for version in ["v2", "v3"] {
        root.commit(version, &[("VERSION", version)]);
        root.push("blue").says("blue: live in ");
    }
    let status = root.status();
    let draining = &status["slots"]["blue"]["draining"];
    assert_eq!(draining[0]["release"], v1.as_str(), "{status}");
    let kept = root.releases("blue");
    assert!(
        kept.contains(&v1),
        "v1 pruned under its draining generation: {kept:?}"
    );
    assert!(root
        .path
        .join("blue/releases")
        .join(&v1)
        .join("VERSION")
        .is_file());
    // Once it has stopped, the next deploy prunes it.
    drop(stalled);
    wait_for(Duration::from_secs(10), "v1's generation stopped", || {
        (root.status()["slots"]["blue"]["draining"] == serde_json::json!([])).then_some(())
    });
    root.commit("v4", &[("VERSION", "v4")]);
    root.push("blue").says("blue: live in ");
    assert!(!root.releases("blue").contains(&v1));
}
