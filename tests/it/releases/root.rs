//! The root as a folder: linked dirs, symlinks to it, its owner and group, its lock files.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::*;

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
