//! The commands on releases: `releases` lists them, `promote` copies one from the
//! other slot, `restart` starts the current one again.

use std::fs;
use std::process::Command;
use std::time::Duration;

use super::*;
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
    root.stop_serve();
    root.serve();
    root.wait_log(&format!(
        "blue: release {v2}'s .bluegreen-release.json cannot be read (emptied or edited by hand?): it runs all the same, its commit unknown"
    ));
    root.wait_body(root.blue, "v2 from blue");
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

/// A current release that served once and whose start the daemon refused since (a
/// `restart` after a bad config change) is listed as not live: it had no label, as if
/// it served.
#[test]
fn releases_says_a_current_release_the_daemon_refused_is_not_live() {
    let root = blue_live();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    let v2 = root.current("blue").unwrap();
    let line = || listed_line(&root.run_ok(&["releases", "blue"]), &v2);
    assert!(!line().contains("live)"), "{}", line());
    root.set("app.command", "no-such-program-here");
    root.reload_config();
    let out = root.run(&["restart", "blue"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(line().ends_with("(not live)"), "{}", line());
    assert!(root.get(root.blue, "/").body.starts_with("v2 from blue"));
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
