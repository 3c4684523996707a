//! Making and checking a root: `init` (and again, as a repair), and `check` refusing a
//! bad config with its file, line and key.

use std::fs;
use std::process::Command;

use crate::util::*;

#[test]
fn bad_config_names_file_line_and_key() {
    let root = Root::new();
    let file = root.path.join("bluegreen.toml");
    let cases = [
        (
            "[app]\nready_timeout = \"soon\"\n",
            ":2: app.ready_timeout: invalid duration `soon`",
        ),
        (
            "[slots.red]\nlisten = \"127.0.0.1:1\"\n",
            ":1: slots.red: unknown field `red`",
        ),
        (
            "branch = \"no..pe\"\n",
            ":1: branch: `no..pe` is not a valid branch name",
        ),
        ("[router]\nlisten = \"everywhere\"\n", ":2: router.listen:"),
        // Taken, and the link then written over by the mark of the release going live.
        (
            "[app]\nlinked_dirs = [\".bluegreen-went-live\"]\n",
            ":2: app.linked_dirs: `.bluegreen-went-live`: names starting `.bluegreen-` are bluegreen's own files in each release: pick another",
        ),
        // Taken, and then overridden by the marks bluegreen finds its processes by.
        (
            "[slots.blue]\nenv = { BLUEGREEN_WORKER_OF = \"x\" }\n",
            ":2: slots.blue.env: `BLUEGREEN_WORKER_OF` is set by bluegreen on the processes it starts, to find them again; it cannot be set here",
        ),
        (
            "[build]\nenv = { BLUEGREEN_BUILD = \"x\" }\n",
            ":2: build.env: `BLUEGREEN_BUILD` is set by bluegreen on the processes it starts, to find them again; it cannot be set here",
        ),
        // Not the Rust type (`expected usize`, `expected a sequence`).
        (
            "keep_releases = -1\n",
            ":1: keep_releases: invalid value: integer `-1`, expected a whole number",
        ),
        (
            "[app]\nlinked_dirs = \"data\"\n",
            ":2: app.linked_dirs: invalid type: string \"data\", expected a list (`[...]`)",
        ),
        (
            "[router]\nlisten = \"127.0.0.1:8081\"\n",
            ":2: router.listen: same address as control.listen (127.0.0.1:8081)",
        ),
        // However the file writes the key (this was `:0: router.listen`, the default).
        (
            "slots = { green = { listen = \"0.0.0.0:8080\" } }\n",
            ":1: slots.green.listen: same address as router.listen (0.0.0.0:8080)",
        ),
        // Taken, and every deploy then failed to start its process.
        (
            "[slots.blue]\nenv = { A = \"x\\u0000y\" }\n",
            ":2: slots.blue.env: `A` holds a NUL byte (\\u0000), which no environment can carry",
        ),
        (
            "[app]\ncommand = \"node\\u0000 main.js\"\n",
            ":2: app.command: holds a NUL byte (\\u0000), which no command line can carry",
        ),
        // Taken, and every check failed at once, or ran with no pause.
        (
            "[heartbeat]\ntimeout = \"1ns\"\n",
            ":2: heartbeat.timeout: `1ns` is too short (at least 10ms)",
        ),
        (
            "[heartbeat]\ninterval = \"50ms\"\n",
            ":2: heartbeat.interval: `50ms` is too short (at least 100ms)",
        ),
    ];
    for (text, want) in cases {
        fs::write(&file, text).unwrap();
        let out = root.run(&["check"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(&format!("{}{want}", file.display())), "{err}");
    }
    // A file there that is not text: that is the reason, not whether this is a root
    // (this was `cannot read ... (is this a bluegreen root? ...): stream did not contain
    // valid UTF-8`).
    fs::write(&file, b"branch = \"caf\xe9\"\n").unwrap();
    assert_eq!(
        root.run_err(&["check"]),
        format!(
            "error: cannot read {}: it is not UTF-8 text, as TOML must be",
            file.display()
        )
    );
    // Valid as text, but `serve` could not start with it: `check` says so too.
    fs::write(&file, "[router]\ntoken_file = \"/nonexistent/token\"\n").unwrap();
    assert_eq!(
        root.run_err(&["check"]),
        format!("error: {}:2: router.token_file: cannot read /nonexistent/token: No such file or directory (os error 2)", file.display())
    );
    fs::write(root.path.join("empty"), " \n").unwrap();
    fs::write(&file, "router.token_file = \"empty\"\n").unwrap();
    assert_eq!(
        root.run_err(&["check"]),
        format!(
            "error: {}:1: router.token_file: {} is empty",
            file.display(),
            root.path.join("empty").display()
        )
    );
    // A token no header can carry (two lines, a NUL, non-ASCII) was taken and then
    // matched no caller.
    for (i, token) in ["s3cret\nother\n", "s3\0cret", "sécret"].iter().enumerate() {
        let name = format!("bad{i}");
        fs::write(root.path.join(&name), token).unwrap();
        fs::write(&file, format!("router.token_file = \"{name}\"\n")).unwrap();
        assert_eq!(
            root.run_err(&["check"]),
            format!(
                "error: {}:1: router.token_file: {} holds more than a token: it must be one line of printable ASCII, as an Authorization header carries it",
                file.display(),
                root.path.join(&name).display()
            )
        );
    }
    // A relative token file is the root's, whatever folder the command runs in.
    fs::write(root.path.join("tok"), "s3cret\n").unwrap();
    fs::write(&file, "[router]\ntoken_file = \"tok\"\n").unwrap();
    let effective = root.run_ok(&["check"]);
    let wanted = format!("token_file = \"{}\"", root.path.join("tok").display());
    assert!(effective.contains(&wanted), "{effective}");
}

#[test]
fn serve_refuses_a_bad_config_naming_file_line_and_key_and_changes_nothing() {
    let root = Root::new();
    root.set("app.ready_timeout", "soon");
    let file = root.path.join("bluegreen.toml");
    let line = fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|l| l.trim_start().starts_with("ready_timeout"))
        .unwrap()
        + 1;
    let before = walkdir(&root.path);
    let mut serve = Command::new(BIN)
        .args(["serve", "--root"])
        .arg(&root.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = poll_until(std::time::Duration::from_secs(10), || {
        serve.try_wait().unwrap()
    });
    if exited.is_none() {
        let _ = serve.kill();
    }
    let out = serve.wait_with_output().unwrap();
    assert_eq!(exited.and_then(|status| status.code()), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: {}:{line}: app.ready_timeout: invalid duration `soon`: expected number at 0 (e.g. \"30s\", \"500ms\", \"2m\", \"1h 30m\")",
            file.display()
        )
    );
    assert_eq!(walkdir(&root.path), before);
}

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
    for args in [&["promote", "blue"][..], &["rollback", "green"]] {
        let out = root.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!("error: {want}"),
            "{args:?}"
        );
    }
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

/// A command run by a user who may not read the root's config (mode 0640, the service
/// user's) says whose it is and how to run it as them: it said only `Permission denied`.
#[test]
fn a_config_another_user_owns_says_whose_it_is() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running a command as another user needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("app");
    let made = Command::new(BIN).arg("init").arg(&root).output().unwrap();
    assert!(made.status.success(), "{made:?}");
    let config = root.join("bluegreen.toml");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o640)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "status",
            "--root",
        ])
        .arg(&root)
        .env_remove("BLUEGREEN_ROOT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with(&format!("error: cannot read {}", config.display()))
            && said.ends_with(&format!(
                ": it is root's, the root's user; run this as root: sudo -u root {BIN} status --root {}\n",
                root.display()
            ))
            && said.lines().count() == 1,
        "{said}"
    );
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

#[test]
fn init_again_names_a_hook_that_runs_another_binary() {
    let root = Root::new();
    // The binary init linked is still there, and the upgrade went to another path.
    let old = root.path.join("old-bluegreen");
    fs::copy(BIN, &old).unwrap();
    let blue_hook = root.path.join("blue.git/hooks/post-receive");
    fs::remove_file(&blue_hook).unwrap();
    std::os::unix::fs::symlink(&old, &blue_hook).unwrap();
    let stdout = root.run_ok(&["init"]);
    let binary = fs::canonicalize(BIN).unwrap();
    let wanted = format!(
        "kept      {}, which runs {}, not this binary {}: pushes run that one (`ln -sfn {} {}` makes them run this one)",
        blue_hook.display(),
        old.display(),
        binary.display(),
        binary.display(),
        blue_hook.display()
    );
    assert!(
        stdout.lines().any(|l| l == wanted),
        "{wanted}\nnot in\n{stdout}"
    );
    // Green's hook links to this binary: kept without a word.
    let green_hook = root.path.join("green.git/hooks/post-receive");
    let green_line = format!("kept      {}", green_hook.display());
    assert!(stdout.lines().any(|l| l == green_line), "{stdout}");
    // Kept as it was: init never rewrites a hook.
    assert_eq!(fs::read_link(&blue_hook).unwrap(), old);
}

/// A versioned install: `bluegreen` on the PATH is a link to one version's binary, and
/// an upgrade moves the link and removes the old version. The hooks link to the name
/// `init` was run by, so pushes reach the new version; linked to the resolved binary,
/// they dangled, and git runs no hook it cannot find: pushes deployed nothing, silently.
#[test]
fn hooks_follow_the_binary_name_through_an_upgrade() {
    let root = Root::new();
    let tmp = root.path.parent().unwrap();
    let install = |version: &str| {
        let dir = tmp.join(version);
        fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("bluegreen");
        if fs::hard_link(BIN, &binary).is_err() {
            fs::copy(BIN, &binary).unwrap();
        }
        binary
    };
    let bin = tmp.join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(install("v1"), bin.join("bluegreen")).unwrap();
    // `init` run by its name on the PATH, as a user types it, links the hooks.
    for slot in ["blue", "green"] {
        fs::remove_file(root.path.join(format!("{slot}.git/hooks/post-receive"))).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    // `bluegreen init <root>` by the name; its stdout.
    let init_by_name = || {
        let out = Command::new("bluegreen")
            .arg("init")
            .arg(&root.path)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let said = init_by_name();
    // Run by its name, the next steps name it so.
    assert!(said.contains("start `bluegreen serve --root "), "{said}");
    // From whatever branch the app's repo is on.
    assert!(said.ends_with("; git push blue HEAD:main\n"), "{said}");
    for slot in ["blue", "green"] {
        let hook = root.path.join(format!("{slot}.git/hooks/post-receive"));
        assert_eq!(fs::read_link(&hook).unwrap(), bin.join("bluegreen"));
    }
    // A hook linked by the resolved path (a root made before) is named, with the fix.
    let blue_hook = root.path.join("blue.git/hooks/post-receive");
    fs::remove_file(&blue_hook).unwrap();
    std::os::unix::fs::symlink(tmp.join("v1/bluegreen"), &blue_hook).unwrap();
    let stdout = init_by_name();
    assert!(
        stdout.contains(&format!(
            "kept      {}, which links to {} by the path it resolves to: an upgrade that removes it leaves pushes deploying nothing",
            blue_hook.display(),
            tmp.join("v1/bluegreen").display()
        )),
        "{stdout}"
    );
    fs::remove_file(&blue_hook).unwrap();
    std::os::unix::fs::symlink(bin.join("bluegreen"), &blue_hook).unwrap();
    // Run by a relative path, which names the binary from one folder only: the hooks
    // get the resolved path (`..` in a link dangles once that folder goes).
    let other = tmp.join("other");
    fs::create_dir_all(tmp.join("sub")).unwrap();
    let out = Command::new("../bin/bluegreen")
        .arg("init")
        .arg(&other)
        .current_dir(tmp.join("sub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        fs::read_link(other.join("blue.git/hooks/post-receive")).unwrap(),
        tmp.join("v1/bluegreen")
    );
    // The upgrade.
    let v2 = install("v2");
    fs::remove_file(bin.join("bluegreen")).unwrap();
    std::os::unix::fs::symlink(&v2, bin.join("bluegreen")).unwrap();
    fs::remove_dir_all(tmp.join("v1")).unwrap();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
}

/// A daemon that starts while a hook links to a binary no longer there (by hand, to a
/// version since removed) says so: pushes to that slot would deploy nothing, silently.
#[test]
fn serve_names_a_hook_that_links_to_a_binary_gone() {
    let mut root = Root::new();
    let hook = root.path.join("green.git/hooks/post-receive");
    let gone = root.path.parent().unwrap().join("v1/bluegreen");
    fs::remove_file(&hook).unwrap();
    std::os::unix::fs::symlink(&gone, &hook).unwrap();
    root.serve();
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains(&format!(
            "{}'s hook {} links to {}, which is gone: pushes to green deploy nothing and git says nothing",
            root.path.join("green.git").display(),
            hook.display(),
            gone.display()
        )),
        "{events}"
    );
    assert!(!events.contains("blue.git's hook"), "{events}");
}

/// A hook that dangles once the daemon runs (the binary it links to removed by an
/// upgrade) is named by `status`: the daemon looks only at its start, and a push to that
/// slot moves the branch, deploys nothing and says nothing.
#[test]
fn status_names_a_hook_that_links_to_a_binary_gone() {
    let root = blue_live();
    let hook = root.path.join("blue.git/hooks/post-receive");
    let gone = root.path.parent().unwrap().join("v1/bluegreen");
    fs::remove_file(&hook).unwrap();
    std::os::unix::fs::symlink(&gone, &hook).unwrap();
    let said = root.run_ok(&["status"]);
    assert!(
        said.contains(&format!(
            "note: {}'s hook {} links to {}, which is gone: pushes to blue deploy nothing and git says nothing; `bluegreen init {}` links it to the bluegreen run",
            root.path.join("blue.git").display(),
            hook.display(),
            gone.display(),
            root.path.display()
        )),
        "{said}"
    );
    assert!(!said.contains("green.git's hook"), "{said}");
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
fn check_prints_the_effective_config() {
    let root = Root::new();
    let text = root.run_ok(&["check"]);
    let file = root.path.join("bluegreen.toml");
    assert!(
        text.starts_with(&format!("# {}: valid\n", file.display())),
        "{text}"
    );
    // The printed config is itself a valid config, with every key.
    let printed = root.path.join("printed.toml");
    fs::write(&printed, &text).unwrap();
    fs::copy(&printed, &file).unwrap();
    root.run_ok(&["check"]);
    for key in [
        "[app]",
        "ready_timeout",
        "[heartbeat]",
        "[mirror]",
        "[slots.green]",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }
}

#[test]
fn the_root_comes_from_bluegreen_root_then_the_current_folder() {
    let root = Root::new();
    let check = |cmd: &mut Command| {
        let out = cmd.arg("check").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let file = root.path.join("bluegreen.toml");
    let want = format!("# {}: valid", file.display());
    let by_env = check(Command::new(BIN).env("BLUEGREEN_ROOT", &root.path));
    assert!(by_env.starts_with(&want), "{by_env}");
    // Left set from this root, in another root's folder (its blue slot's): acted on, as
    // documented, and said.
    let other = Root::new();
    let out = Command::new(BIN)
        .arg("check")
        .env("BLUEGREEN_ROOT", &root.path)
        .current_dir(other.path.join("blue"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&want),
        "{out:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "note: acting on {} (BLUEGREEN_ROOT), not on {}, the root this folder is in (`--root` names the one meant)\n",
            root.path.display(),
            other.path.display()
        )
    );
    let by_cwd = check(
        Command::new(BIN)
            .env_remove("BLUEGREEN_ROOT")
            .current_dir(&root.path),
    );
    assert!(by_cwd.starts_with(&want), "{by_cwd}");
    // Set but empty (`BLUEGREEN_ROOT=$ROOT` with ROOT unset) names no root: it was taken
    // for `--root` given no value, and every command refused, naming a flag never typed.
    let by_empty = check(
        Command::new(BIN)
            .env("BLUEGREEN_ROOT", "")
            .current_dir(&root.path),
    );
    assert!(by_empty.starts_with(&want), "{by_empty}");
    // One that names no root (left set for an old one) says it is the variable's.
    // The one error line of a command that must fail with exit code 1.
    let refused = |command: &mut Command| {
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    let gone = root.path.join("gone");
    assert_eq!(
        refused(
            Command::new(BIN)
                .arg("status")
                .env("BLUEGREEN_ROOT", &gone)
                .current_dir(&root.path)
        ),
        format!(
            "error: {} (from BLUEGREEN_ROOT) does not exist: name one with --root ROOT or BLUEGREEN_ROOT, or make one with `bluegreen init`",
            gone.display()
        )
    );

    // Run outside any root with neither: it says where it looked and how to name the root
    // (this was `cannot read /home/me/bluegreen.toml (is this a bluegreen root? ...)`).
    let elsewhere = tempfile::tempdir().unwrap();
    for command in ["status", "switch", "check", "releases", "serve"] {
        assert_eq!(
            refused(
                Command::new(BIN)
                    .arg(command)
                    .env_remove("BLUEGREEN_ROOT")
                    .current_dir(elsewhere.path())
            ),
            format!(
                "error: the current folder {} is not a bluegreen root (it has no bluegreen.toml): name one with --root ROOT or BLUEGREEN_ROOT, or make one with `bluegreen init`",
                elsewhere.path().display()
            ),
            "bluegreen {command}"
        );
    }
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn usage_errors_are_one_line_exit_2_and_name_no_hidden_command() {
    let usage = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("BLUEGREEN_ROOT", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "bluegreen {args:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "bluegreen {args:?}: {err}");
        err.trim().to_string()
    };
    // With a root given but no subcommand, clap's list named the hidden `sample-app`.
    // (With nothing at all, clap prints the help, as `git` does.)
    assert_eq!(
        usage(&["--root", "/srv/app"]),
        "error: bluegreen needs a subcommand: init, check, serve, status, switch, rollback, \
         restart, promote, releases, mirroring, demo, hook (`bluegreen help` says what each does)"
    );
    assert_eq!(
        usage(&["stauts"]),
        "error: unrecognized subcommand 'stauts'; tip: some similar subcommands exist: 'restart', 'status'"
    );
    assert_eq!(
        usage(&["rollback", "purple"]),
        "error: invalid value 'purple' for '<blue|green>': unknown slot `purple` (expected blue or green)"
    );
    // A missing slot names the two it may be.
    assert_eq!(
        usage(&["rollback"]),
        "error: the following required arguments were not provided: <blue|green>"
    );
    // What the error told to run does run.
    let help = Command::new(BIN).arg("help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("rollback"));
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

/// The shim in `hooks/`, installed as its own comment says (over the link `init` made,
/// not through it), deploys with `bluegreen` on the PATH and leaves the binary whole: the
/// comment said to copy it, and a plain `cp` wrote the shim over the bluegreen binary.
#[test]
fn the_shim_hook_installed_as_its_comment_says_deploys() {
    use std::os::unix::fs::PermissionsExt;
    let mut root = Root::new();
    root.serve();
    let hooks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks");
    let text = fs::read_to_string(hooks.join("post-receive")).unwrap();
    let steps: Vec<Vec<String>> = text
        .lines()
        .filter_map(|line| line.strip_prefix("#   "))
        .map(|step| {
            let root = root.path.display().to_string();
            step.split_whitespace()
                .map(|word| word.replace("<root>", &root))
                .collect()
        })
        .collect();
    assert_eq!(steps.len(), 2, "{text}");
    let size = fs::metadata(BIN).unwrap().len();
    for step in steps {
        // Checked before it runs: a plain `cp` would write over the binary under test.
        assert_eq!(step[..2], ["cp", "--remove-destination"], "{step:?}");
        let out = Command::new(&step[0])
            .args(&step[1..])
            .current_dir(&hooks)
            .output()
            .unwrap();
        assert!(out.status.success(), "{step:?}: {out:?}");
        let hook = std::path::Path::new(&step[3]);
        fs::set_permissions(hook, fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(fs::metadata(BIN).unwrap().len(), size);
    let bin = std::path::Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for slot in ["blue", "green"] {
        let hook = root.path.join(format!("{slot}.git/hooks/post-receive"));
        assert!(!hook.is_symlink() && fs::read(&hook).unwrap() == text.as_bytes());
    }
    root.commit("v1", &[("VERSION", "v1\n")]);
    let out = git_command(&root.work)
        .env("PATH", path)
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("blue: live in "),
        "{said}"
    );
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
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

/// A `bluegreen.toml` that links to a config kept elsewhere which is missing for now:
/// `init` replaced the link with the example config ("created"), and the commands and
/// pushes said the root had no config at all. They name the link and change nothing.
#[test]
fn a_config_linked_to_a_missing_file_is_named_and_kept() {
    let root = Root::new();
    let config = root.path.join("bluegreen.toml");
    let kept = root.path.parent().unwrap().join("etc/app.toml");
    fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink(&kept, &config).unwrap();
    let said = format!(
        "error: {} links to {}, which is missing: put that file back",
        config.display(),
        kept.display()
    );
    let status = root.run_err(&["status"]);
    assert!(status.starts_with(&said), "{status}");
    let init = root.run_err(&["init"]);
    assert!(init.starts_with(&said), "{init}");
    assert!(init.ends_with("nothing was changed"), "{init}");
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says(&format!(
        "error: blue: not deployed: {} links to {}, which is missing: put that file back",
        config.display(),
        kept.display()
    ));
    assert_eq!(fs::read_link(&config).unwrap(), kept);
    assert!(!kept.exists());
}
