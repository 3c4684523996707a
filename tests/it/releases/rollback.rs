//! `rollback`: which release it goes back to (the one before that served, past the
//! ones never current or rolled back from), by hand or with the daemon stopped.

use std::fs;
use std::process::Command;

use super::*;
use crate::util::*;

#[test]
fn rollback_passes_over_a_release_that_was_never_current() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    root.commit("v2", &[("VERSION", "v2\n")]);
    assert!(root.push("blue").ok);
    let [v1, v2] = <[String; 2]>::try_from(root.releases("blue")).unwrap();

    // What a deploy killed between copying its release and the flip leaves behind: a
    // complete release, newer than v1, that `current` never named. (`-2` is how a
    // second release of the same commit in the same millisecond is named.)
    let releases = root.path.join("blue/releases");
    let orphan = format!("{v1}-2");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(releases.join(&v1))
        .arg(releases.join(&orphan))
        .status()
        .unwrap();
    assert!(copied.success());
    fs::remove_file(releases.join(&orphan).join(".bluegreen-was-current")).unwrap();
    assert_eq!(root.releases("blue"), [v1.clone(), orphan.clone(), v2]);

    let listed = root.run_ok(&["releases", "blue"]);
    let line = |id: &str| listed_line(&listed, id);
    assert!(line(&orphan).ends_with("(never current)"), "{listed}");
    assert!(!line(&v1).contains("never current"), "{listed}");

    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1);

    // Nothing before v1 was ever current: a one-line refusal, nothing moves.
    let out = root.run(&["rollback", "blue"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: blue has no release before {v1} to go back to: none went live or was current (see `bluegreen releases blue`)")
    );
    assert_eq!(root.current("blue").unwrap(), v1);
}

/// Going back from a release pushed after rollbacks lands on what served before it, not
/// on a release rolled back from: v3 and v2 were gone back from, so back from v4 is v1.
/// A release made current again (`--to`) is no longer passed over.
#[test]
fn rollback_passes_over_the_releases_rolled_back_from() {
    let root = v2_over_v1_on_blue();
    root.commit("v3", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue: live in ");
    root.run_ok(&["rollback", "blue"]);
    root.run_ok(&["rollback", "blue"]);
    root.wait_body(root.blue, "v1 from blue");
    let [v1, v2, v3] = <[String; 3]>::try_from(root.releases("blue")).unwrap();
    let listed = root.run_ok(&["releases", "blue"]);
    for rolled_back in [&v2, &v3] {
        let line = listed
            .lines()
            .find(|l| l.contains(rolled_back.as_str()))
            .unwrap();
        assert!(line.ends_with("  (rolled back)"), "{listed}");
    }

    push_then_roll_back(&root, "v4", &v1, "blue: live in ");
    root.wait_body(root.blue, "v1 from blue");

    // v3 made current again: back from v5 is v3.
    root.run_ok(&["rollback", "blue", "--to", &v3]);
    push_then_roll_back(&root, "v5", &v3, "blue: live in ");
    root.wait_body(root.blue, "v3 from blue");

    // With v1 removed by hand, only v2 is older, and it was rolled back from: refused,
    // saying so, and nothing moves.
    fs::remove_dir_all(root.path.join("blue/releases").join(&v1)).unwrap();
    let out = root.run(&["rollback", "blue"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: blue has no release before {v3} to go back to: none went live or was current but releases rolled back from (`--to` takes one) (see `bluegreen releases blue`)")
    );
    assert_eq!(root.current("blue").unwrap(), v3);
}

/// `--to` an older release steps back over the ones between that served: going back
/// from the next push lands on the release `--to` went to, what served before that
/// push, not on one the operator skipped. A push stepped over that never went live still
/// says so.
#[test]
fn rollback_after_a_rollback_to_an_older_release_goes_back_to_it() {
    let root = v2_over_v1_on_blue();
    root.commit("crash", &[("VERSION", "v3\n"), ("CRASH", "")]);
    root.push("blue").says("blue: not live: ");
    root.remove("CRASH");
    root.commit("v4", &[("VERSION", "v4\n")]);
    root.push("blue").says("blue: live in ");
    let [v1, v2, v3, v4] = <[String; 4]>::try_from(root.releases("blue")).unwrap();
    root.run_ok(&["rollback", "blue", "--to", &v1]);
    root.wait_body(root.blue, "v1 from blue");
    let listed = root.run_ok(&["releases", "blue"]);
    let line = |id: &str| listed_line(&listed, id);
    assert!(line(&v2).ends_with("  (rolled back)"), "{listed}");
    assert!(line(&v3).ends_with("  (never went live)"), "{listed}");
    assert!(line(&v4).ends_with("  (rolled back)"), "{listed}");

    push_then_roll_back(&root, "v5", &v1, "blue: live in ");
    root.wait_body(root.blue, "v1 from blue");
}

/// A `--to` the daemon refuses (the release fails to start now) leaves the slot serving
/// what it served: going back from the next push lands there, on the release the refused
/// rollback meant to leave, not past it.
#[test]
fn rollback_after_a_refused_rollback_goes_back_to_what_served() {
    let root = blue_live();
    let [v1, _v2, v3] = <[String; 3]>::try_from(deploy_versions(&root, &["v2", "v3"])).unwrap();
    fs::write(root.path.join("blue/releases").join(&v1).join("CRASH"), "").unwrap();
    let out = root.run(&["rollback", "blue", "--to", &v1]);
    assert!(!out.status.success());
    assert!(root.get(root.blue, "/").body.starts_with("v3 from blue"));

    push_then_roll_back(&root, "v4", &v3, "blue: live in ");
    root.wait_body(root.blue, "v3 from blue");
}

/// A rollback killed between its mark and its flip leaves the release it meant to go
/// back from marked and still current (so does a `--to` one killed between its flip and
/// its unmark). That release served until the next push replaced it: the push's flip
/// takes the mark off, and going back from the push lands on it, not one further.
#[test]
fn a_mark_a_cut_off_rollback_left_on_the_current_release_goes_with_the_next_push() {
    let root = v2_over_v1_on_blue();
    let v2 = root.current("blue").unwrap();
    let mark = root
        .path
        .join("blue/releases")
        .join(&v2)
        .join(".bluegreen-rolled-back");
    fs::write(&mark, "2026-11-24T00:00:00Z\n").unwrap();
    root.commit("v3", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue: live in ");
    let v3 = root.current("blue").unwrap();
    assert!(!mark.exists(), "v2's mark outlived the flip off it");
    let listed = root.run_ok(&["releases", "blue"]);
    assert!(
        !listed_line(&listed, &v2).contains("rolled back"),
        "{listed}"
    );
    let text = root.run_ok(&["rollback", "blue"]);
    assert!(
        text.contains(&format!("blue: current {v3} -> {v2}")),
        "{text}"
    );
    root.wait_body(root.blue, "v2 from blue");
}

#[test]
fn rollback_on_a_full_disk_still_goes_back() {
    let root = v2_over_v1_on_blue();
    let [v1, v2] = <[String; 2]>::try_from(root.releases("blue")).unwrap();
    // The rollback an operator reaches for when the disk is full: the new `current` link
    // needs no data block, but marking v2 as once current does, and cannot be written.
    let out = root.run_disk_full(&["rollback", "blue"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("blue: current {v2} -> {v1}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "blue: note: cannot mark release blue/{v2} as once current: cannot write "
        )),
        "{text}"
    );
    assert!(text.contains("blue: live in "), "{text}");
    assert_eq!(root.current("blue").unwrap(), v1);
    root.wait_body(root.blue, "v1 from blue");
    // The failed mark left no temp file in the release.
    let left: Vec<_> = fs::read_dir(root.path.join("blue/releases").join(&v2))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn rollback_after_failed_pushes_goes_back_to_the_release_that_served() {
    let root = blue_live();
    root.commit("crash", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("blue").says("blue: not live: ");
    root.commit("crash again", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue: not live: ");
    let [v1, v2, v3] = <[String; 3]>::try_from(root.releases("blue")).unwrap();

    let listed = root.run_ok(&["releases", "blue"]);
    let line = |id: &str| listed_line(&listed, id);
    assert!(line(&v3).ends_with("(not live)"), "{listed}");
    assert!(line(&v2).ends_with("(never went live)"), "{listed}");
    assert!(!line(&v1).contains("live)"), "{listed}");

    // Not v2, which was current but never served: v1, which blue still serves.
    let text = root.run_ok(&["rollback", "blue"]);
    assert!(
        text.contains(&format!("blue: current {v3} -> {v1}")),
        "{text}"
    );
    assert_eq!(root.current("blue").unwrap(), v1);
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
}

#[test]
fn rollback_after_a_rollback_and_a_failed_push_goes_to_what_serves() {
    let root = blue_live();
    let v1 = root.current("blue").unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1);
    root.wait_body(root.blue, "v1 from blue");

    root.commit("crash", &[("VERSION", "v3\n"), ("CRASH", "")]);
    root.push("blue").says("blue keeps serving generation");
    // Not v2, which the operator rolled back from: v1, which blue still serves.
    let text = root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1, "{text}");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
}

/// A `rollback --to` a release that served once but fails to start now leaves blue
/// serving the release it went back from: that one is what a plain rollback returns to,
/// and what promote refuses to copy is the failed one (both went by its old "went live"
/// mark, and went one further back, or copied a release that had just failed).
#[test]
fn after_a_rollback_that_failed_to_start_rollback_returns_to_what_serves() {
    let root = blue_live();
    let [v1, v2, v3] = <[String; 3]>::try_from(deploy_versions(&root, &["v2", "v3"])).unwrap();
    fs::write(root.path.join("blue/releases").join(&v1).join("CRASH"), "").unwrap();
    let out = root.run(&["rollback", "blue", "--to", &v1]);
    assert!(!out.status.success());
    root.wait_body(root.blue, "v3 from blue");

    let refused = root.run_err(&["promote", "blue", "green"]);
    assert_eq!(
        refused.trim_end(),
        format!("error: blue's current release {v1} failed its last start (blue's last live release is {v3}): promote copies only a release that has served on blue; `bluegreen status` says why")
    );
    assert!(root.current("green").is_none());

    let text = root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v3, "{text}");
    assert!(
        text.contains(&format!("blue: current {v1} -> {v3}")),
        "{text}"
    );
    assert!(root.get(root.blue, "/").body.starts_with("v3 from blue"));
    let listed = root.run_ok(&["releases", "blue"]);
    assert!(
        !listed
            .lines()
            .any(|l| l.starts_with("* ") && l.contains("(")),
        "{listed}"
    );
    // From there, back is v2, as before the failed rollback.
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v2);
}

#[test]
fn releases_without_marks_roll_back_by_creation_order_and_a_tree_cannot_forge_them() {
    let root = Root::new();
    // A pushed tree that carries the daemon's mark is refused...
    root.commit(
        "v0",
        &[("VERSION", "v0\n"), (".bluegreen-went-live", "forged\n")],
    );
    root.push("blue")
        .says("the pushed tree has `.bluegreen-went-live` at its top");
    assert!(root.current("blue").is_none());
    root.remove(".bluegreen-went-live");
    // ...and one its build writes does not make its release "live".
    root.set(
        "build.command",
        "sh -c 'echo forged > .bluegreen-went-live'",
    );
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    let v1 = root.current("blue").unwrap();
    let v1_dir = root.path.join("blue/releases").join(&v1);
    assert!(!v1_dir.join(".bluegreen-went-live").exists());
    root.commit("v2", &[("VERSION", "v2\n")]);
    assert!(root.push("blue").ok);

    // A root from before the marks existed: none anywhere.
    fs::remove_file(v1_dir.join(".bluegreen-was-current")).unwrap();
    let listed = root.run_ok(&["releases", "blue"]);
    assert!(!listed.contains("(never"), "{listed}");
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1);
}

#[test]
fn rollbacks_with_the_daemon_stopped_keep_going_back() {
    let mut root = blue_live();
    let v1 = root.current("blue").unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    root.commit("v3", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue: live in ");
    root.stop_serve();
    // state.json still says v3 was live last: never a way "back" to it.
    root.run_ok(&["rollback", "blue"]);
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1);
}

/// With no daemon running, a rollback from v3, then a push: going back from the push
/// lands on v2, what the rollback left, as the daemon would serve it, not on v3, which
/// `state.json` names as live last but the operator took away.
#[test]
fn a_rollback_and_a_push_with_the_daemon_stopped_then_rollback_goes_to_what_the_first_left() {
    let mut root = blue_live();
    let [_v1, v2, _v3] = <[String; 3]>::try_from(deploy_versions(&root, &["v2", "v3"])).unwrap();
    root.stop_serve();
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v2);
    push_then_roll_back(&root, "v4", &v2, "daemon not running");
}

/// With no daemon running, a `rollback --to` past every other release that served, to
/// one that fails to start now: the daemon's start brings back the release that served
/// last, as a running daemon keeps it. Its slot was left with nothing live, restarting
/// the failing release over and over.
#[test]
fn a_rollback_with_the_daemon_stopped_to_a_failing_release_serves_the_last_live_one() {
    let mut root = blue_live();
    let [v1, _v2, _v3] = <[String; 3]>::try_from(deploy_versions(&root, &["v2", "v3"])).unwrap();
    root.stop_serve();
    fs::write(root.path.join("blue/releases").join(&v1).join("CRASH"), "").unwrap();
    root.run_ok(&["rollback", "blue", "--to", &v1]);
    root.serve();
    root.wait_body(root.blue, "v3 from blue");
    assert_eq!(root.current("blue").unwrap(), v1);
}

#[test]
fn a_release_made_after_the_clock_stepped_back_still_sorts_last() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    // v1 as if made by a clock running ahead (a VM later restored, a bad clock at boot
    // that NTP then set back): its id's time is later than any push from now on.
    let [v1] = <[String; 1]>::try_from(root.releases("blue")).unwrap();
    let ahead = format!("20991231T235959.999Z-{}", v1.split_once('-').unwrap().1);
    let releases = root.path.join("blue/releases");
    fs::rename(releases.join(&v1), releases.join(&ahead)).unwrap();
    let link = root.path.join("blue/current");
    let target = fs::read_link(&link)
        .unwrap()
        .to_string_lossy()
        .replace(&v1, &ahead);
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(target, &link).unwrap();

    root.commit("v2", &[("VERSION", "v2\n")]);
    assert!(root.push("blue").ok);
    let v2 = root.current("blue").unwrap();
    assert!(v2.starts_with("21000101T000000.000Z-"), "{v2}");
    assert_eq!(root.releases("blue"), vec![ahead.clone(), v2]);
    // Back goes to v1, the release that was current before.
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), ahead);

    // A release at the last time an id can have: nothing sorts after it, and a push
    // says which folder is in the way (it panicked formatting the year 10000).
    fs::create_dir(releases.join("99991231T235959.999Z-0000000")).unwrap();
    root.commit("v3", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue's newest release `99991231T235959.999Z-0000000` is dated 9999-12-31T23:59:59.999Z, the last time an id can have: a new one cannot sort after it; rename or remove that folder")
        .never_says("bug");
    assert_eq!(root.current("blue").unwrap(), ahead);
}

#[test]
fn rollback_from_a_current_release_removed_by_hand_goes_to_the_one_before() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue");
    let v1 = root.current("blue").unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue");
    let v2 = root.current("blue").unwrap();
    // An operator freeing disk removed the folder `current` names.
    fs::remove_dir_all(root.path.join("blue/releases").join(&v2)).unwrap();
    let out = root.run(&["rollback", "blue"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("blue: current {v2} -> {v1}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(root.current("blue").unwrap(), v1);
}

/// Pushes `version` to blue, whose push `says` how it went (`blue: live in `), then
/// `rollback blue`, which must go from it to release `to`.
fn push_then_roll_back(root: &Root, version: &str, to: &str, says: &str) {
    root.commit(version, &[("VERSION", &format!("{version}\n"))]);
    root.push("blue").says(says);
    let pushed = root.current("blue").unwrap();
    let text = root.run_ok(&["rollback", "blue"]);
    assert!(
        text.contains(&format!("blue: current {pushed} -> {to}")),
        "{text}"
    );
}
