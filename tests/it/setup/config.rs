//! The config: `check` names a bad value's file, line and key; `serve` refuses it; where
//! the root comes from; usage errors in one line.

use std::fs;
use std::os::unix::fs::PermissionsExt;
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
            ":1: keep_releases: invalid value: integer `-1`, expected a whole number of 1 or more",
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
    // What `serve` warns about, `check` says too, on stderr (stdout is the config): a
    // token short enough to guess, in a file others may read. Still valid: exit 0.
    let tok = root.path.join("tok");
    fs::set_permissions(&tok, fs::Permissions::from_mode(0o644)).unwrap();
    let out = root.run(&["check"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("# "));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "warning: router.token_file {0} holds a token of 6 characters: the front answers wrong tokens as fast as it can, so a short one may be guessed; use 16 or more random ones (`head -c 24 /dev/urandom | base64`)\n\
             warning: router.token_file {0} is mode 0644: users other than its owner may read the token, and switch the front with it; chmod 600 it\n",
            tok.display()
        )
    );
    fs::write(&tok, "a-long-enough-random-token\n").unwrap();
    fs::set_permissions(&tok, fs::Permissions::from_mode(0o600)).unwrap();
    let out = root.run(&["check"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
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
            "error: {}:{line}: app.ready_timeout: invalid duration `soon`: a duration is a number and a unit (e.g. \"30s\", \"500ms\", \"2m\", \"1h 30m\")",
            file.display()
        )
    );
    assert_eq!(walkdir(&root.path), before);
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
    // A slot promoted to itself is a usage error too (it was exit 1, as a failed promote).
    assert_eq!(
        usage(&["promote", "blue", "blue"]),
        "error: cannot promote blue to itself: name the other slot, or leave TO out"
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
        "error: blue: not deployed: {} links to {}, which is missing: put that file back, then push a new commit",
        config.display(),
        kept.display()
    ));
    assert_eq!(fs::read_link(&config).unwrap(), kept);
    assert!(!kept.exists());
}

/// A push to a root whose `bluegreen.toml` is gone says so, the cause before the hint,
/// and not to run `check` (which has no line to point at).
#[test]
fn a_push_to_a_root_without_its_config_says_to_put_it_back() {
    let root = Root::new();
    let config = root.path.join("bluegreen.toml");
    fs::remove_file(&config).unwrap();
    root.commit("v1", &[("VERSION", "v1\n")]);
    let pushed = root.push("blue");
    assert_eq!(
        pushed.remote_lines().last().unwrap(),
        &format!(
            "error: blue: not deployed: {} is missing: put it back (or `bluegreen init {}` writes the commented default), then push a new commit",
            config.display(),
            root.path.display()
        ),
        "{pushed:?}"
    );
    assert!(root.current("blue").is_none());
}
