//! Releases after they land: `releases`, `rollback` (by hand, while serving, behind the
//! daemon's back), pruning, and removal of builds no release uses.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

#[test]
fn rollback_releases_and_pruning() {
    let root = Root::new();
    root.set("keep_releases", 3);
    let mut shas = Vec::new();
    for n in 1..=5 {
        shas.push(root.commit(&format!("v{n}"), &[("VERSION", &format!("v{n}\n"))]));
        assert!(root.push("blue").ok);
    }
    let releases = root.releases("blue");
    assert_eq!(releases.len(), 3, "{releases:?}");
    assert!(releases[2].ends_with(&shas[4][..7]));

    let listed = root.run_ok(&["releases", "blue"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.lines().next().unwrap().starts_with("* blue"),
        "newest first, current marked: {listed}"
    );
    // Each line: the release, its time, commit, build key and summary, as its metadata says.
    for (line, id) in listed.lines().zip(releases.iter().rev()) {
        let meta = fs::read_to_string(
            root.path
                .join("blue/releases")
                .join(id)
                .join(".bluegreen-release.json"),
        )
        .unwrap();
        let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
        let wanted = format!(
            "{}  {}  build {}  {}",
            meta["created"].as_str().unwrap(),
            &meta["commit"].as_str().unwrap()[..7],
            meta["build_key"].as_str().unwrap(),
            meta["summary"].as_str().unwrap(),
        );
        assert!(line.contains(&format!(" {id} ")), "{id} not in {line:?}");
        assert!(line.contains(&wanted), "{wanted:?} not in {line:?}");
    }

    // Green was never pushed: nothing to go back to or copy on, and how to get one.
    for (args, reason) in [
        (&["rollback", "green"][..], "error: green has no current release: nothing to roll back (deploy one first: `git push green HEAD:main`)"),
        (&["promote", "green", "blue"][..], "error: green has no current release: nothing to promote (deploy one first: `git push green HEAD:main`)"),
    ] {
        let out = root.run(args);
        assert!(!out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), reason);
    }
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), releases[1]);
    let out = root.run(&["rollback", "blue", "--to", "nope"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: blue has no release `nope` (see `bluegreen releases blue`)"
    );
    assert_eq!(root.current("blue").unwrap(), releases[1]);

    // With `current` gone (a first deploy killed before its flip, a hand edit), a plain
    // rollback cannot tell where from and says how; `--to` puts it back.
    fs::remove_file(root.path.join("blue/current")).unwrap();
    fs::write(root.path.join("blue/current"), "not a link").unwrap();
    let out = root.run(&["rollback", "blue"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: blue/current is not a symlink to a release: name the release to go to, `bluegreen rollback blue --to <release>` (see `bluegreen releases blue`)"
    );
    let text = root.run_ok(&["rollback", "blue", "--to", &releases[2]]);
    assert!(
        text.contains(&format!("blue: current (none) -> {}", releases[2])),
        "{text}"
    );
    assert_eq!(root.current("blue").unwrap(), releases[2]);

    // After a rollback to the oldest kept release, pruning still keeps it and the one before.
    root.run_ok(&["rollback", "blue", "--to", &releases[0]]);
    root.commit("v6", &[("VERSION", "v6\n")]);
    root.push("blue");
    let after = root.releases("blue");
    assert!(
        after.contains(&releases[0]),
        "the previous release is kept: {after:?}"
    );
}

/// `current` is replaced by a rename over it, by a push and by a rollback: a reader
/// (the daemon's watch, an nginx `root`, a cron job) finds the old release or the new
/// one, never no link. What is left on disk is the same after a removal and a new link;
/// the folder's events tell them apart.
#[test]
fn current_is_replaced_by_a_rename_never_removed() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    let mut events = FolderEvents::watch(&root.path.join("blue"));
    root.commit("v2", &[("VERSION", "v2\n")]);
    assert!(root.push("blue").ok);
    let pushed = events.until_replaced("current", Duration::from_secs(10));
    root.run_ok(&["rollback", "blue"]);
    let rolled_back = events.until_replaced("current", Duration::from_secs(10));
    for kinds in [pushed, rolled_back] {
        assert!(
            kinds.iter().all(renamed_onto),
            "current was not just renamed over: {kinds:?}"
        );
    }
    assert_eq!(root.current("blue"), root.releases("blue").first().cloned());
}

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

/// A `--root` spelled through `..` or a symlink names the root it resolves to: a
/// promote's linked-dir link named `<cwd>/../root/green/shared/...` (dangling once that
/// folder moved) and one through a symlink moved with it. Now each link names its slot's
/// shared folder from where it is.
#[test]
fn a_root_named_through_dot_dot_or_a_symlink_writes_links_to_the_root_itself() {
    let root = Root::new();
    root.link_uploads();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let parent = root.path.parent().unwrap();
    let aside = parent.join("aside");
    fs::create_dir_all(&aside).unwrap();
    std::os::unix::fs::symlink(&root.path, parent.join("root-link")).unwrap();
    let name = root.path.file_name().unwrap().to_str().unwrap();
    for (slot, spelled) in [
        ("green", format!("../{name}")),
        ("blue", "../root-link".into()),
    ] {
        let from = if slot == "green" { "blue" } else { "green" };
        if slot == "blue" {
            // Something new for blue to take: green's build of v2.
            root.commit("v2", &[("VERSION", "v2\n")]);
            root.push("green").says("green: release ");
        }
        let out = Command::new(BIN)
            .args(["promote", from, slot, "--root", &spelled])
            .current_dir(&aside)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let link = root.path.join(slot).join("current/public/uploads");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("../../../shared/public/uploads"),
            "{slot}"
        );
        assert_eq!(
            link.canonicalize().unwrap(),
            root.path.join(slot).join("shared/public/uploads"),
            "{slot}"
        );
    }
}

/// A linked dir's shared folder removed by hand failed the app's writes while every
/// command said all was well: `status` names it, `init` makes it again, and so does the
/// slot's next start.
#[test]
fn a_linked_dirs_shared_folder_removed_by_hand_is_named_and_made_again() {
    let mut root = Root::new();
    root.link_uploads();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue");
    root.serve();
    root.wait_body(root.blue, "v1 from blue");
    let shared = root.path.join("blue/shared/public/uploads");
    fs::remove_dir(&shared).unwrap();

    let status = root.run_ok(&["status"]);
    let note = format!(
        "note: {} is gone (removed by hand?): blue's linked dir",
        shared.display()
    );
    assert!(status.contains(&note), "{status}");
    let init = root.run_ok(&["init"]);
    assert!(
        init.contains(&format!("created   {}", shared.display())),
        "{init}"
    );
    assert!(shared.is_dir());
    assert!(!root.run_ok(&["status"]).contains("is gone"));

    fs::remove_dir(&shared).unwrap();
    root.run_ok(&["restart", "blue"]);
    assert!(shared.is_dir());
    root.wait_log("blue: linked dir ");
}

/// A release that went live is never listed "(never current)", also when `current` was
/// moved away by hand (its was-current mark is written only when a flip leaves it).
#[test]
fn a_release_that_went_live_is_not_listed_as_never_current() {
    let mut root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue");
    root.serve();
    root.wait_body(root.blue, "v1 from blue");
    root.stop_cleanly(Duration::from_secs(10));
    fs::rename(
        root.path.join("blue/current"),
        root.path.join("blue-current-aside"),
    )
    .unwrap();
    let listed = root.run_ok(&["releases", "blue"]);
    assert!(!listed.contains("(never current)"), "{listed}");
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
fn output_whose_reader_went_away_ends_quietly() {
    // `bluegreen releases | head -0`: the reader is gone before anything is written.
    let root = Root::new();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["releases", "--root"])
        .arg(&root.path)
        .stdout(writer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    // A command that changes something still does all of it.
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    let v1 = root.current("blue").unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    assert!(root.push("blue").ok);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["rollback", "blue", "--root"])
        .arg(&root.path)
        .stdout(writer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(root.current("blue").unwrap(), v1);
}

#[test]
fn releases_refuses_a_folder_that_is_not_a_root_and_skips_strays() {
    let nowhere = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["releases", "--root"])
        .arg(nowhere.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: {} is not a bluegreen root (it has no bluegreen.toml): name one with --root ROOT or BLUEGREEN_ROOT, or make one with `bluegreen init`",
            nowhere.path().display()
        )
    );

    let root = Root::new();
    // The usual slips each get their own reason: a folder that is not there, the config
    // file named instead of its folder, a folder inside the root.
    let config = root.path.join("bluegreen.toml");
    let slot = root.path.join("blue");
    let missing = nowhere.path().join("missing");
    // A file outside any root: its folder is no root either, and is not offered as one.
    let stray = nowhere.path().join("notes.txt");
    fs::write(&stray, "").unwrap();
    for (named, reason) in [
        (
            &stray,
            format!("{} is a file: a root is the folder holding bluegreen.toml (name one with --root ROOT or BLUEGREEN_ROOT, or make one with `bluegreen init`)", stray.display()),
        ),
        (
            &missing,
            format!("{} does not exist: name one with --root ROOT or BLUEGREEN_ROOT, or make one with `bluegreen init`", missing.display()),
        ),
        (
            &config,
            format!("{} is a file: a root is the folder holding bluegreen.toml (--root {})", config.display(), root.path.display()),
        ),
        (
            &slot,
            format!("{} is not a bluegreen root (it has no bluegreen.toml), but is inside the root {}: --root {}", slot.display(), root.path.display(), root.path.display()),
        ),
    ] {
        let out = Command::new(BIN)
            .args(["releases", "--root"])
            .arg(named)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!("error: {reason}")
        );
    }
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    fs::create_dir(root.path.join("blue/releases/not-a-release")).unwrap();
    let listed = root.run_ok(&["releases", "blue"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(!listed.contains("not-a-release"), "{listed}");
}

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

    root.commit("v4", &[("VERSION", "v4\n")]);
    root.push("blue").says("blue: live in ");
    let v4 = root.current("blue").unwrap();
    let text = root.run_ok(&["rollback", "blue"]);
    assert!(
        text.contains(&format!("blue: current {v4} -> {v1}")),
        "{text}"
    );
    root.wait_body(root.blue, "v1 from blue");

    // v3 made current again: back from v5 is v3.
    root.run_ok(&["rollback", "blue", "--to", &v3]);
    root.commit("v5", &[("VERSION", "v5\n")]);
    root.push("blue").says("blue: live in ");
    let v5 = root.current("blue").unwrap();
    let text = root.run_ok(&["rollback", "blue"]);
    assert!(
        text.contains(&format!("blue: current {v5} -> {v3}")),
        "{text}"
    );
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

/// A release whose metadata was emptied (by hand, or a tool gone wrong) is named as such
/// by `releases`, `status` and the daemon's log when it starts it, not taken for a
/// commit that no release has.
#[test]
fn a_release_whose_metadata_cannot_be_read_is_named() {
    let mut root = v2_over_v1_on_blue();
    let v2 = root.current("blue").unwrap();
    fs::write(
        root.path
            .join("blue/releases")
            .join(&v2)
            .join(".bluegreen-release.json"),
        "",
    )
    .unwrap();
    let listed = root.run_ok(&["releases", "blue"]);
    assert!(
        listed_line(&listed, &v2).contains("(its .bluegreen-release.json cannot be read)"),
        "{listed}"
    );
    let status = root.run_ok(&["status"]);
    assert!(
        status.contains(&format!("note: blue's release {v2} has a .bluegreen-release.json that bluegreen cannot read (emptied or edited by hand?): which commit it holds is not known")),
        "{status}"
    );
    assert!(!status.contains("which no release of blue has"), "{status}");
    root.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
    root.serve();
    root.wait_log(&format!(
        "blue: release {v2}'s .bluegreen-release.json cannot be read (emptied or edited by hand?): it runs all the same, its commit unknown"
    ));
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
        format!("error: blue's current release {v1} failed its last start (blue serves {v3}): promote copies only a release that has served on blue; `bluegreen status` says why")
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
    root.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
    // state.json still says v3 was live last: never a way "back" to it.
    root.run_ok(&["rollback", "blue"]);
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1);
}

/// The line of `bluegreen releases` output that lists release `id`.
fn listed_line(listed: &str, id: &str) -> String {
    let id = format!(" {id} ");
    listed
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no line for{id}in {listed}"))
        .to_string()
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
    root.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
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
            "another deploy to blue is running; waiting for it (held by pid {})",
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

#[test]
fn a_promote_that_fails_says_what_was_not_promoted() {
    let root = Root::new();
    // A tree whose `public` is a symlink out of the release: fine for blue, deployed
    // without linked dirs; refused once `public/uploads` is one, as for a push.
    root.public_outside();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let v1 = root.current("blue").unwrap();
    root.link_uploads();
    let out = root.run(&["promote", "blue", "green"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: green: blue/{v1} not promoted: linked dir `public/uploads`"
        )),
        "{stderr}"
    );
    assert!(root.current("green").is_none());
}

#[test]
fn promote_never_copies_from_outside_builds_whatever_a_releases_metadata_says() {
    // The metadata file lies in the release, which the app's processes can write: a
    // `build_key` naming a folder elsewhere made promote copy that folder into green.
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    let elsewhere = root.path.parent().unwrap().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join(".bluegreen-build.json"), "{}").unwrap();
    fs::write(elsewhere.join("secret"), "not for a release\n").unwrap();
    // Where `builds/.<key>.use` then lands, made as the app could.
    let use_lock = format!(".{}.use", elsewhere.display());
    let use_lock = root.path.join("builds").join(use_lock);
    fs::create_dir_all(use_lock.parent().unwrap()).unwrap();
    let meta_file = root.path.join("blue/current/.bluegreen-release.json");
    let rewrite = |field: &str, value: &str| {
        let mut meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&meta_file).unwrap()).unwrap();
        meta[field] = value.into();
        fs::write(&meta_file, meta.to_string()).unwrap();
    };
    let original: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&meta_file).unwrap()).unwrap();
    rewrite("build_key", elsewhere.to_str().unwrap());

    let out = root.run(&["promote", "blue", "green"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has no metadata bluegreen can use: its .bluegreen-release.json is missing or not as bluegreen wrote it"),
        "{stderr}"
    );
    assert_eq!(root.current("green"), None);

    // A commit cut at 7 bytes inside a character panicked `releases` and `promote`.
    rewrite("build_key", original["build_key"].as_str().unwrap());
    rewrite("commit", "abcdef\u{e9}");
    let out = root.run(&["releases", "blue"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = root.run(&["promote", "blue", "green"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(root.current("green"), None);
}

/// Linked dirs changed between releases leave data out of the app's sight: what the app
/// wrote into a release's own `data` before `data` was linked, and the shared `data` a
/// rollback to that release no longer sees. Each move of `current` says so (the release
/// left behind is pruned later, with what it holds); it said nothing.
#[test]
fn a_change_of_linked_dirs_is_told_where_it_hides_data() {
    let root = Root::new();
    root.set("app.linked_dirs", toml::Value::Array(vec![]));
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let v1 = root.current("blue").unwrap();
    // The app wrote an order into the release's own folder.
    let own = root.path.join("blue/releases").join(&v1).join("data");
    fs::create_dir_all(&own).unwrap();
    fs::write(own.join("order1"), "paid").unwrap();

    root.set("app.linked_dirs", toml::Value::Array(vec!["data".into()]));
    root.commit("v2", &[("VERSION", "v2\n")]);
    let shared = root.path.join("blue/shared/data");
    root.push("blue").says(&format!(
        "blue: note: release {v1} has a `data` of its own with 1 entry, which {} does not see: it sees {} (a linked dir, app.linked_dirs)",
        root.releases("blue").last().unwrap(),
        shared.display()
    ));
    let v2 = root.current("blue").unwrap();
    fs::write(shared.join("order2"), "paid").unwrap();

    let out = root.run_ok(&["rollback", "blue"]);
    assert!(
        out.contains(&format!(
            "blue: note: release {v1} does not see {} (1 entry), which {v2} did: `data` is no linked dir for it (app.linked_dirs)",
            shared.display()
        )),
        "{out}"
    );
    // A push with nothing changed at linked paths says nothing of the kind.
    root.run_ok(&["rollback", "blue", "--to", &v2]);
    root.commit("v3", &[("VERSION", "v3\n")]);
    root.push("blue").never_says("of its own");
}

/// The commands that write into the root are not run as root on a root that is another
/// user's: a `promote` run by `sudo` made a root-owned release that the daemon's user
/// could not mark live and its pushes could not prune, ever again. Refused, with the
/// command to run instead, and nothing changed. The test, as root, gives the root's
/// blue folder (whose owner says whose the root is) to `nobody`.
#[test]
fn commands_that_write_the_root_refuse_root_on_another_users_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let root = Root::new();
    for version in ["v1", "v2"] {
        root.commit(version, &[("VERSION", version)]);
        assert!(root.push("blue").ok);
    }
    let current = root.current("blue");
    let listed = walkdir(&root.path);
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(&root.path.join("blue"), nobody, None).unwrap();
    let path = root.path.display();
    for args in [
        &["rollback", "blue"][..],
        &["promote", "blue", "green"],
        &["serve"],
        &["init"],
    ] {
        let wanted = format!(
            "error: {path} is nobody's (uid 65534), and this runs as root: what it made there would be root's, which nobody (the daemon's and the hooks' user) could not change or remove; run it as nobody: sudo -u nobody {BIN} {} --root {path}",
            args.join(" ")
        );
        // Named by the flag, and by BLUEGREEN_ROOT (which sudo drops: the command to
        // run names the root).
        assert_eq!(root.run_err(args), wanted);
        let out = Command::new(BIN)
            .args(args)
            .env("BLUEGREEN_ROOT", &root.path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), wanted);
    }
    // A root named by a relative path is named whole in the command to run (sudo may
    // not keep the current folder).
    let out = Command::new(BIN)
        .args(["serve", "--root", "root"])
        .current_dir(root.path.parent().unwrap())
        .env_remove("BLUEGREEN_ROOT")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .ends_with(&format!("sudo -u nobody {BIN} serve --root {path}\n")),
        "{out:?}"
    );
    assert_eq!(root.current("blue"), current);
    assert_eq!(
        walkdir(&root.path),
        listed,
        "the refused commands changed nothing"
    );
    // A push as root (this test's git runs as root): its hook refuses too, before any
    // lock, build or release of root's is made there.
    let (slot, builds) = (
        walkdir(&root.path.join("blue")),
        walkdir(&root.path.join("builds")),
    );
    root.commit("v3", &[("VERSION", "v3")]);
    root.push("blue").says(&format!(
        "error: blue: not deployed: {path} is nobody's (uid 65534), and this push runs as root: what it made there would be root's, and nobody's pushes could not deploy after it; push as nobody (`git remote set-url blue nobody@<host>:{path}/blue.git`)"
    ));
    assert_eq!(walkdir(&root.path.join("blue")), slot);
    assert_eq!(walkdir(&root.path.join("builds")), builds);
    // A folder another user owns, for init to fill (a home `useradd` made): root's init
    // would have made the whole root root's.
    let home = root.path.parent().unwrap().join("home");
    fs::create_dir(&home).unwrap();
    nix::unistd::chown(&home, nobody, None).unwrap();
    let refused = Command::new(BIN).arg("init").arg(&home).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).starts_with(&format!(
            "error: {} is nobody's (uid 65534), and this runs as root",
            home.display()
        )),
        "{refused:?}"
    );
    assert_eq!(fs::read_dir(&home).unwrap().count(), 0);
}

/// A push by a member of the root's group into a group-writable root (a shared repo) is
/// refused as root's is: it left its own locks, build and release there, mode 0644, and
/// every later push by the root's user to that slot failed on `Permission denied`. So is
/// a command that writes the root, run by that user. As root, the test gives the root to
/// `nobody` with its group's write bit, and pushes as uid 65533 in `nobody`'s group.
#[test]
fn a_push_by_another_user_of_the_roots_group_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1")]);
    assert!(root.push("blue").ok);
    for (tool, arg) in [("chown", "65534:65534"), ("chmod", "g+w")] {
        let out = Command::new(tool)
            .args(["-R", arg])
            .arg(&root.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    fs::set_permissions(
        root.path.parent().unwrap(),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (slot, builds) = (
        walkdir(&root.path.join("blue")),
        walkdir(&root.path.join("builds")),
    );
    let current = root.current("blue");
    root.commit("v2", &[("VERSION", "v2")]);
    let as_member = |program: &str| {
        // git's local transport drops `-c` settings for the receiving side; a global
        // file reaches it.
        let global = root.path.parent().unwrap().join("gitconfig");
        fs::write(&global, "[safe]\n\tdirectory = *\n").unwrap();
        let mut command = git_command(&root.work);
        command
            .env("GIT_CONFIG_GLOBAL", &global)
            .env("HOME", "/nonexistent");
        let mut setpriv = Command::new("setpriv");
        setpriv.args(["--reuid=65533", "--regid=65533", "--groups=65534", program]);
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => setpriv.env(name, value),
                None => setpriv.env_remove(name),
            };
        }
        setpriv.current_dir(&root.work);
        setpriv
    };
    // By the repo's path: no remote-tracking ref to write in the test's own repo.
    let out = as_member("git")
        .arg("push")
        .arg(root.path.join("blue.git"))
        .arg("+HEAD:refs/heads/main")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    let path = root.path.display();
    assert!(
        said.contains(&format!(
            "error: blue: not deployed: {path} is nobody's (uid 65534), and this push runs as uid 65533: what it made there would be uid 65533's, and nobody's pushes could not deploy after it; push as nobody (`git remote set-url blue nobody@<host>:{path}/blue.git`)"
        )),
        "{said}"
    );
    assert_eq!(walkdir(&root.path.join("blue")), slot);
    assert_eq!(walkdir(&root.path.join("builds")), builds);
    let out = as_member(BIN)
        .args(["rollback", "blue", "--root"])
        .arg(&root.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(&format!(
            "error: {path} is nobody's (uid 65534), and this runs as uid 65533: what it made there would be uid 65533's, which nobody (the daemon's and the hooks' user) could not change or remove; run it as nobody: sudo -u nobody "
        )),
        "{out:?}"
    );
    assert_eq!(root.current("blue"), current);
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
            .contains("blue: another deploy to blue is running; waiting for it")
            .then_some(())
    });
    drop((slot, turn));
    assert!(rollback.wait().unwrap().success());
    reader.join().unwrap();
    let said = said.lock().unwrap().clone();
    assert!(!said.contains("is building"), "{said}");
}

/// A release that failed to start for a reason outside its code (here `app.command`,
/// corrected and reloaded) is started again by `bluegreen restart`: a push of the same
/// commit deployed nothing new, and a rollback to it was refused as current.
#[test]
fn restart_starts_the_current_release_again_after_a_fix() {
    let root = blue_live();
    root.set("app.command", "no-such-program-here");
    root.reload_config();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("not found in PATH=");
    let v2 = root.current("blue").unwrap();
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    // Not again by hand: it is current, and what failed it is not fixed yet.
    let out = root.run(&["rollback", "blue", "--to", &v2]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {v2} is already blue's current release")
    );
    root.set("app.command", format!("{BIN} sample-app"));
    root.reload_config();
    let said = root.run_ok(&["restart", "blue"]);
    assert!(said.contains("blue: live in "), "{said}");
    assert!(root.get(root.blue, "/").body.starts_with("v2 from blue"));
    // A slot with nothing to restart says so, in one line, and exits 1.
    let out = root.run(&["restart", "green"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: green has no current release: nothing to restart (deploy one first: `git push green HEAD:main`)\n"
    );
    // The control API moved in the file, the daemon still on the old address: nothing
    // restarts blue (`current` did not move, no file watch sees it), and it says so.
    let moved = free_port();
    root.set("control.listen", format!("127.0.0.1:{moved}"));
    let out = root.run(&["restart", "blue"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.trim().starts_with(&format!(
            "error: blue: not restarted: nothing answers on 127.0.0.1:{moved}, the control.listen in bluegreen.toml, yet a daemon serves this root"
        )),
        "{said}"
    );
    assert!(!said.contains("file watch"), "{said}");
}

/// A linked dir's shared folder removed by hand is made again by the slot's next start,
/// as `status` says, also one the release was made with after an edit of
/// `app.linked_dirs` the daemon has not read (the hook reads the file at each push; the
/// daemon only at a SIGHUP): it went by its own reading, and the app's writes there
/// failed after every restart.
#[test]
fn a_linked_dir_removed_by_hand_is_made_again_at_the_next_start() {
    let root = blue_live();
    root.set(
        "app.linked_dirs",
        toml::Value::Array(vec!["data".into(), "uploads".into()]),
    );
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    for dir in ["data", "uploads"] {
        fs::remove_dir_all(root.path.join("blue/shared").join(dir)).unwrap();
    }
    root.run_ok(&["restart", "blue"]);
    for dir in ["data", "uploads"] {
        let shared = root.path.join("blue/shared").join(dir);
        assert!(shared.is_dir(), "{dir}");
        root.wait_log(&format!(
            "blue: linked dir {} was gone (removed by hand?): made it again, empty",
            shared.display()
        ));
    }
}

/// A lock file other users could open is one they could hold for good: every push to
/// the slot would wait behind them, and `serve` would be refused as a second daemon.
#[test]
fn lock_files_are_the_roots_users_alone() {
    use std::os::unix::fs::PermissionsExt;
    let mut root = Root::new();
    // One an older version made readable by all is made the user's alone when next taken.
    let older = root.path.join("blue/.push.lock");
    fs::write(&older, "").unwrap();
    fs::set_permissions(&older, fs::Permissions::from_mode(0o644)).unwrap();
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    root.serve();
    let mut locks = Vec::new();
    let mut dirs = vec![root.path.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() && !entry.file_name().to_string_lossy().ends_with(".git") {
                dirs.push(entry.path());
            } else if meta.is_file() && entry.file_name().to_string_lossy().ends_with(".lock") {
                locks.push((entry.path(), meta.permissions().mode() & 0o777));
            }
        }
    }
    let names: Vec<_> = locks
        .iter()
        .map(|(path, _)| path.strip_prefix(&root.path).unwrap().to_path_buf())
        .collect();
    for lock in ["blue/.push.lock", "blue/.lock", "run/serve.lock"] {
        assert!(
            names.contains(&Path::new(lock).to_path_buf()),
            "{lock} in {names:?}"
        );
    }
    for (path, mode) in locks {
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}
