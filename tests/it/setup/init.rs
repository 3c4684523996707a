//! `init`: a root made (or repaired) whole or not at all, and its next steps.

use std::fs;
use std::process::Command;

use crate::util::*;

#[test]
fn a_missing_slot_folder_is_named_with_what_makes_it_again() {
    let root = Root::new();
    let sha = root.commit("first", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release");
    fs::remove_dir_all(root.path.join("green")).unwrap();
    // What the refused commands may change: nothing but what git itself stores of a push.
    let outside_git = || {
        let mut paths = walkdir(&root.path);
        paths.retain(|p| !p.starts_with("green.git"));
        paths
    };
    let before = outside_git();
    // This was `cannot open lock <root>/green/.lock: No such file or directory (os error 2)`.
    let want = format!(
        "green's folder {} is missing: `bluegreen init {}` makes it again",
        root.path.join("green").display(),
        root.path.display()
    );
    // Each command that reads or changes the slot says so, not that it has no release
    // (`releases` listed it as `green: no releases`; promoting from it and restarting it
    // said `green has no current release`, and to push one).
    let commands = [
        &["promote", "blue"][..],
        &["promote", "green", "blue"],
        &["rollback", "green"],
        &["restart", "green"],
        &["releases", "green"],
        &["releases"],
    ];
    for args in commands {
        let out = root.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!("error: {want}"),
            "{args:?}"
        );
    }
    // The other slot is listed all the same.
    let listed = root.run(&["releases"]);
    let blue = root.current("blue").unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&blue),
        "{listed:?}"
    );
    let pushed = root.push("green");
    assert_eq!(
        pushed.remote_lines().last().unwrap(),
        &format!("error: green: {} not deployed: {want}", &sha[..7]),
        "{pushed:?}"
    );
    assert_eq!(outside_git(), before, "a refused command changes nothing");
    // The repair it names works.
    root.run_ok(&["init"]);
    let promoted = root.run_ok(&["promote", "blue"]);
    assert!(promoted.contains("green: release "), "{promoted}");
}

/// `init` given a folder and a different `--root` refuses, in one line, and makes
/// neither: it made the folder's and said nothing of `--root`.
#[test]
fn init_with_two_roots_named_makes_neither() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let out = Command::new(BIN)
        .arg("init")
        .arg(&one)
        .arg("--root")
        .arg(&two)
        .env_remove("BLUEGREEN_ROOT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: `bluegreen init {}` and `--root {}` name two roots: give one\n",
            one.display(),
            two.display()
        )
    );
    assert!(!one.exists() && !two.exists());
    // One root written two ways is one root.
    let out = Command::new(BIN)
        .arg("init")
        .arg(dir.path().join("./three"))
        .arg("--root")
        .arg("three")
        .current_dir(dir.path())
        .env_remove("BLUEGREEN_ROOT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("three/bluegreen.toml").is_file());
    // BLUEGREEN_ROOT gives way to the folder named.
    let out = Command::new(BIN)
        .arg("init")
        .arg(&one)
        .env("BLUEGREEN_ROOT", &two)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(one.join("bluegreen.toml").is_file() && !two.exists());
}

/// Two inits of one new root at once (a provisioning tool run twice): one waits for the
/// other, then keeps what it made. The second failed half way on a lock file of git's
/// (`cannot create the bare repo .../blue.git: failed to create locked file
/// '.../blue.git/config.lock': File exists`) in most rounds.
#[test]
fn two_inits_of_one_root_at_once_both_make_it() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..6 {
        let root = dir.path().join(format!("root{round}"));
        let init = || {
            Command::new(BIN)
                .arg("init")
                .arg(&root)
                .env_remove("BLUEGREEN_ROOT")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (one, two) = (init(), init());
        for out in [
            one.wait_with_output().unwrap(),
            two.wait_with_output().unwrap(),
        ] {
            assert!(out.status.success(), "round {round}: {out:?}");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("ready. Next: "),
                "{out:?}"
            );
        }
        assert_checks(&root);
        for slot in ["blue", "green"] {
            assert!(root.join(format!("{slot}.git/hooks/post-receive")).exists());
        }
    }
}

#[test]
fn init_with_no_folder_refuses_a_current_folder_holding_other_files() {
    // Run in someone's working folder by a slip, it took the folder over.
    let busy = tempfile::tempdir().unwrap();
    for name in ["notes.txt", "src", ".bashrc"] {
        fs::write(busy.path().join(name), "").unwrap();
    }
    let init = |folder: &std::path::Path| {
        Command::new(BIN)
            .arg("init")
            .env_remove("BLUEGREEN_ROOT")
            .current_dir(folder)
            .output()
            .unwrap()
    };
    let out = init(busy.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: the current folder {} holds other files (notes.txt, src), and `bluegreen init` with no folder makes the root here: name one (`bluegreen init /srv/app`), or run it in an empty folder",
            busy.path().display()
        )
    );
    assert_eq!(
        fs::read_dir(busy.path()).unwrap().count(),
        3,
        "nothing made"
    );
    // A new user's home, with its /etc/skel files, takes it; and a root is repaired.
    let home = tempfile::tempdir().unwrap();
    fs::write(home.path().join(".profile"), "").unwrap();
    for _ in 0..2 {
        let out = init(home.path());
        assert!(out.status.success(), "{out:?}");
        assert!(home.path().join("bluegreen.toml").is_file());
    }
}

/// What `init`'s last line gives as the next steps, after `ready. Next: `.
fn next_steps(said: &str) -> &str {
    said.lines()
        .find_map(|l| l.strip_prefix("ready. Next: "))
        .expect(said)
}

/// `init`'s next steps are pasted into a shell: a root whose path holds a space is one
/// word in each (`git remote add blue /tmp/sp root/blue.git` added a remote `blue` with
/// the URL `/tmp/sp`).
#[test]
fn inits_next_steps_paste_into_a_shell_for_a_path_with_a_space() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("sp root");
    let out = Command::new(BIN).arg("init").arg(&root).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let next = next_steps(&stdout);
    // A new config's commands are the example's: set yours.
    assert!(
        next.starts_with("set build.command and app.command in "),
        "{next}"
    );
    let (_, steps) = next.split_once("from your app: ").expect(next);
    let remotes: Vec<&str> = steps
        .split("; ")
        .filter(|s| s.starts_with("git remote add"))
        .collect();
    assert_eq!(remotes.len(), 2, "{next}");
    let app = tmp.path().join("app");
    let ran = git_command(tmp.path())
        .args(["init", "-q", "app"])
        .status()
        .unwrap();
    assert!(ran.success());
    for step in remotes {
        let out = Command::new("sh")
            .args(["-c", step])
            .current_dir(&app)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "{step}: {out:?}");
    }
    for slot in ["blue", "green"] {
        let url = git_command(&app)
            .args(["remote", "get-url", slot])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&url.stdout).trim(),
            root.join(format!("{slot}.git")).display().to_string()
        );
    }
}

#[test]
fn init_again_repairs_and_keeps_everything() {
    let root = Root::new();
    root.commit("first", &[("VERSION", "v1\n")]);
    root.push("blue");
    let release = root.current("blue").unwrap();
    let config = fs::read_to_string(root.path.join("bluegreen.toml")).unwrap();
    fs::remove_file(root.path.join("green.git/hooks/post-receive")).unwrap();
    fs::remove_dir_all(root.path.join("green/shared")).unwrap();
    // Blue's hook names a binary that moved away (an upgrade): dangling.
    let blue_hook = root.path.join("blue.git/hooks/post-receive");
    fs::remove_file(&blue_hook).unwrap();
    std::os::unix::fs::symlink("/nonexistent/bluegreen", &blue_hook).unwrap();
    let said = root.run_ok(&["init"]);
    // Its commands are set: the next steps do not ask for them again.
    let next = next_steps(&said);
    // The binary as it was run, by its path: `bluegreen` is not on the PATH here.
    assert!(
        next.starts_with(&format!(
            "start `{BIN} serve --root {}`",
            root.path.display()
        )),
        "{next}"
    );
    // One still the example's is named alone.
    root.set("app.command", "node main.js {port} $REDIS_PORT");
    let said = root.run_ok(&["init"]);
    let next = next_steps(&said);
    assert!(next.starts_with("set app.command in "), "{next}");
    root.set("app.command", format!("{BIN} sample-app"));
    let binary = fs::canonicalize(BIN).unwrap();
    for slot in ["blue", "green"] {
        let hook = root.path.join(format!("{slot}.git/hooks/post-receive"));
        assert_eq!(fs::read_link(&hook).unwrap(), binary, "{slot}");
    }
    assert!(root.path.join("green/shared").is_dir());
    assert_eq!(root.current("blue").unwrap(), release);
    // Both repaired hooks deploy again.
    root.commit("second", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: release ");
    root.push("green").says("green: release ");
    assert_eq!(
        fs::read_to_string(root.path.join("bluegreen.toml")).unwrap(),
        config
    );
    assert!(!root
        .path
        .join("builds")
        .read_dir()
        .unwrap()
        .flatten()
        .collect::<Vec<_>>()
        .is_empty());
}

/// `init` run again on a root a daemon serves does not ask to start one: it names the
/// daemon, and how to have it read an edited config.
#[test]
fn init_again_on_a_served_root_names_its_daemon() {
    let root = blue_live();
    let said = root.run_ok(&["init"]);
    let pid = root.serve_pid();
    let next = next_steps(&said);
    assert!(
        next.starts_with(&format!(
            "a daemon serves this root already (pid {pid}): `kill -HUP {pid}` has it read the config; from your app: "
        )),
        "{next}"
    );
    // Its config removed: the commands say so, not that this is no root, and init does
    // not write the example config in its place.
    let config = root.path.join("bluegreen.toml");
    let kept = fs::read_to_string(&config).unwrap();
    fs::remove_file(&config).unwrap();
    assert_eq!(
        root.run_err(&["status"]),
        format!(
            "error: {} is gone, yet a daemon serves {} (pid {pid}): put the file back (the daemon runs what it read before)",
            config.display(),
            root.path.display()
        )
    );
    let refused = root.run_err(&["init"]);
    assert!(
        refused.starts_with(&format!(
            "error: a daemon serves {} (pid {pid}), but its bluegreen.toml is gone: put the file back",
            root.path.display()
        )),
        "{refused}"
    );
    assert!(!config.exists());
    // A reload meanwhile says the file is gone, not "is this a bluegreen root?".
    root.signal(nix::sys::signal::Signal::SIGHUP);
    root.wait_log(&format!(
        "config reload refused, keeping the running config: {} is gone (removed or renamed?): put it back, then send SIGHUP again",
        config.display()
    ));
    fs::write(&config, kept).unwrap();
    assert_eq!(root.status()["active"], "blue");
}

#[test]
fn init_again_points_head_at_a_changed_branch() {
    let root = Root::new();
    root.set("branch", "prod");
    let out = root.run_ok(&["init"]);
    for slot in ["blue", "green"] {
        let repo = root.path.join(format!("{slot}.git"));
        assert!(
            out.contains(&format!(
                "pointed   {} HEAD at refs/heads/prod",
                repo.display()
            )),
            "{out}"
        );
        assert_eq!(
            fs::read_to_string(repo.join("HEAD")).unwrap(),
            "ref: refs/heads/prod\n"
        );
    }
    root.commit("first", &[("VERSION", "v1\n")]);
    root.push_ref("blue", "HEAD:refs/heads/prod")
        .says("blue: deploying");
    // The deploy branch is the repo's HEAD: git itself refuses to delete it.
    let deleted = root.push_ref("blue", ":refs/heads/prod");
    assert!(!deleted.ok, "{}", deleted.text);
    assert!(
        deleted
            .text
            .contains("refusing to delete the current branch"),
        "{}",
        deleted.text
    );
    // Nothing left to point: a third init changes nothing.
    assert!(!root.run_ok(&["init"]).contains("pointed"));
}

#[test]
fn init_refuses_a_file_and_an_apps_checkout_and_the_hook_says_where_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let one_line = |out: std::process::Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    let file = tmp.path().join("afile");
    fs::write(&file, "").unwrap();
    let out = Command::new(BIN).arg("init").arg(&file).output().unwrap();
    assert_eq!(
        one_line(out),
        format!("error: {} exists and is not a folder", file.display())
    );

    // `init` with no folder, in an app's checkout.
    let checkout = tmp.path().join("app");
    fs::create_dir_all(checkout.join(".git")).unwrap();
    let out = Command::new(BIN)
        .arg("init")
        .current_dir(&checkout)
        .env_remove("BLUEGREEN_ROOT")
        .output()
        .unwrap();
    assert_eq!(
        one_line(out),
        format!(
            "error: {} is a git checkout: give the root a folder of its own (`bluegreen init /srv/app`)",
            checkout.display()
        )
    );
    assert!(!checkout.join("bluegreen.toml").exists());
    // Nor a folder in it, nor in a bare repo or another root.
    let root = Root::new();
    for (dir, inside, what) in [
        (checkout.join("deploy"), checkout.clone(), "a git checkout"),
        (
            root.path.join("blue"),
            root.path.clone(),
            "a bluegreen root",
        ),
        (
            root.path.join("blue.git/hooks"),
            root.path.join("blue.git"),
            "a git repository",
        ),
    ] {
        let out = Command::new(BIN).arg("init").arg(&dir).output().unwrap();
        assert_eq!(
            one_line(out),
            format!(
                "error: {} is inside {}, {what}: give the root a folder of its own (`bluegreen init /srv/app`)",
                dir.display(),
                inside.display()
            )
        );
        assert!(!dir.join("bluegreen.toml").exists());
    }

    // The hook run by hand, outside any repo: no libgit2 class and code numbers.
    let out = Command::new(BIN)
        .args(["hook", "post-receive"])
        .current_dir(tmp.path())
        .env_remove("GIT_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = one_line(out);
    assert!(
        text.starts_with("error: cannot open the pushed repo: could not find repository")
            && text.ends_with("(git runs the hook inside the bare repo)"),
        "{text}"
    );
}

#[test]
fn init_that_cannot_finish_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // A file where a folder of the layout goes (here, the last one init would make), and
    // a slot's repo folder with a `HEAD` that is no repo: refused before anything is made.
    let cases: [(&str, &str, &str); 3] = [
        ("builds", "", "builds exists and is not a folder"),
        ("run", "", "run exists and is not a folder"),
        (
            "blue.git/HEAD",
            "junk\n",
            "blue.git is not a git repository: it has a HEAD, but no objects or refs",
        ),
    ];
    for (n, (path, content, says)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("root{n}"));
        fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
        fs::write(dir.join(path), content).unwrap();
        fs::write(dir.join("notes.txt"), "mine\n").unwrap();
        let before = listing(&dir);
        let out = Command::new(BIN).arg("init").arg(&dir).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("error: {}", dir.display())) && stderr.contains(says),
            "{stderr}"
        );
        assert_eq!(listing(&dir), before, "{stderr}");
        // Once the file is out of the way, init makes the root.
        fs::remove_file(dir.join(path)).unwrap();
        let out = Command::new(BIN).arg("init").arg(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dir.join("builds/.tmp").is_dir() && dir.join("run/workers").is_dir());
    }
}

/// libgit2's errors read as one plain line, without the class and code its own text
/// appends (`; class=Filesystem (30); code=Exists (-4)`). Here the repo cannot be made
/// for a file where its `objects` folder goes; a full disk is the common cause.
#[test]
fn init_says_why_a_repo_cannot_be_made_in_plain_words() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("root");
    fs::create_dir_all(dir.join("blue.git")).unwrap();
    fs::write(dir.join("blue.git/objects"), "").unwrap();
    let out = Command::new(BIN).arg("init").arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: cannot create the bare repo {0}/blue.git: failed to make directory '{0}/blue.git/objects': directory exists",
            dir.display()
        )
    );
}

#[test]
fn init_names_a_broken_repo_once_and_changes_nothing() {
    let root = Root::new();
    let repo = root.path.join("blue.git");
    let run_init = || {
        let out = Command::new(BIN)
            .arg("init")
            .arg(&root.path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    // This was `<repo> is not a bare repo: path is not a repository: <repo>`.
    fs::remove_dir_all(repo.join("objects")).unwrap();
    let before = walkdir(&root.path);
    assert_eq!(
        run_init(),
        format!(
            "error: {} is not a git repository: it has a HEAD, but no objects or refs",
            repo.display()
        )
    );
    assert_eq!(walkdir(&root.path), before);
    // A repo that is one, but cannot be opened, is not called "not a bare repo".
    fs::create_dir(repo.join("objects")).unwrap();
    fs::write(repo.join("config"), "[core\n").unwrap();
    assert_eq!(
        run_init(),
        format!(
            "error: cannot open the bare repo {0}: failed to parse config file: missing ']' in section header (in {0}/config:1)",
            repo.display()
        )
    );
}

/// A folder of the root that pushes write in but this user may not (`chmod 555 builds`):
/// `init` said the root was ready, and a push failed on a bare `Permission denied`. Now
/// `init` names the folder and changes nothing, and the push's error names it too. As
/// root, both run without the capabilities that override the folder's mode.
#[test]
fn a_folder_pushes_cannot_write_is_named_by_init_and_the_push() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let builds = root.path.join("builds");
    fs::set_permissions(&builds, fs::Permissions::from_mode(0o555)).unwrap();
    let mut init = unprivileged(BIN);
    let listed = walkdir(&root.path);
    let out = init.arg("init").arg(&root.path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let owner = user_shown(nix::unistd::geteuid().as_raw());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: {} is not writable by this user (Permission denied, mode 555, {owner}): pushes, rollbacks and the daemon write there; nothing was changed: give the root to the user that runs init and the daemon",
            builds.display()
        )
    );
    assert_eq!(walkdir(&root.path), listed);
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push_unprivileged("blue").says(&format!(
        " ({} is not writable by this user, mode 555, {owner}: `bluegreen init` names each folder that is not): Permission denied (os error 13)",
        builds.display()
    ));
    fs::set_permissions(&builds, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A root whose folders init cannot write in (made by another user, or `chmod`ed) is
/// refused before anything is made, naming the folder: init wrote `bluegreen.toml`, then
/// a repo and the slot folders, before it stopped at the first folder it could not
/// write, leaving half a root (and a libgit2 error for a repo folder). As root, which may
/// write anywhere, the test runs init as `nobody`.
#[test]
fn init_in_folders_it_cannot_write_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: geteuid(2) only reads the process's credentials; it cannot fail.
    let as_root = unsafe { nix::libc::geteuid() } == 0;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let init = |dir: &std::path::Path| {
        let mut command = if as_root {
            let mut command = Command::new("setpriv");
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
            command
        } else {
            Command::new(BIN)
        };
        command
            .arg("init")
            .arg(dir)
            .env("HOME", dir)
            .output()
            .unwrap()
    };
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = walkdir(dir);
        names.sort();
        names
    };
    // The folder init cannot write in: one it makes a folder in, a repo folder, the one
    // it links a hook in, the root.
    for (n, locked) in ["builds", "blue.git", "green.git/hooks", ""]
        .into_iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("root{n}"));
        let locked_dir = dir
            .join(locked)
            .components()
            .collect::<std::path::PathBuf>();
        fs::create_dir_all(&locked_dir).unwrap();
        // The folders above the locked one are the init user's own.
        let mut open = vec![dir.clone()];
        let parents = std::path::Path::new(locked).parent().into_iter();
        for part in parents.flat_map(|p| p.components()) {
            open.push(open.last().unwrap().join(part));
        }
        for folder in open.iter().filter(|f| **f != locked_dir) {
            if as_root {
                std::os::unix::fs::chown(folder, Some(65534), Some(65534)).unwrap();
            }
        }
        // Writable by root alone (owned by it, 0755), or by nobody (0555).
        let mode = if as_root { 0o755 } else { 0o555 };
        fs::set_permissions(&locked_dir, fs::Permissions::from_mode(mode)).unwrap();
        let before = listing(&dir);
        let out = init(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{locked}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{locked}: {stderr}");
        assert!(
            stderr.starts_with("error: cannot create ")
                && stderr.contains(&format!("{} is not writable", locked_dir.display())),
            "{locked}: {stderr}"
        );
        assert_eq!(listing(&dir), before, "{locked}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{locked}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Once it may write there, init makes the root.
        if as_root {
            std::os::unix::fs::chown(&locked_dir, Some(65534), Some(65534)).unwrap();
        } else {
            fs::set_permissions(&locked_dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = init(&dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `init` run with a HOME whose git config this user may not read (another user's,
/// left by `setpriv` or `su` without `-`): libgit2 could not make the repos, and init
/// failed after it had written the config and begun the first repo.
#[test]
fn init_with_an_unreadable_home_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("someone-else");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o000)).unwrap();
    let root = tmp.path().join("root");
    let out = unprivileged(BIN)
        .arg("init")
        .arg(&root)
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    // The user it runs as, not a user `app` the host may not have.
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    assert!(
        said.trim().ends_with(&format!(
            "is HOME ({}) another user's? run init with your own (`sudo -u {user} -H`, `su - {user}`); nothing was changed",
            home.display()
        )),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(!root.exists(), "it made {root:?}");
}

/// A root given as a link to a folder not made yet: `init` said `cannot create ...: File
/// exists`, naming neither the link nor what it leads to.
#[test]
fn init_on_a_link_to_nothing_names_the_link_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("app");
    let target = tmp.path().join("not-yet/app");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = Command::new(BIN).arg("init").arg(&link).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: {} links to {}, which is missing: make the folder it links to first, or remove the link; nothing was changed",
            link.display(),
            target.display()
        )
    );
    assert!(!tmp.path().join("not-yet").exists());
}
