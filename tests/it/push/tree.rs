//! What a push lands: the tree as committed (modes, symlinks, odd names and encodings,
//! linked dirs), from any clone (a shallow one too).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
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
