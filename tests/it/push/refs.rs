//! What a push carries besides the deploy branch (other refs, deletions), and what
//! the pusher's own git settings or environment may not change.

use std::fs;
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::util::*;

/// The deploy branch's verdict is the push's last line, which a script reads, whatever
/// else the push carries (a tag with `--follow-tags`, other branches): their notes come
/// before it.
#[test]
fn the_verdict_is_the_last_line_of_a_push_that_carries_other_refs() {
    let mut root = Root::new();
    root.serve();
    root.commit("first", &[("VERSION", "v1\n")]);
    let out = git_command(&root.work)
        .args([
            "push",
            "blue",
            "+HEAD:refs/heads/main",
            "HEAD:refs/heads/zzz",
            "HEAD:refs/tags/v1.0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = Pushed { ok: true, text }.remote_lines();
    let last = lines.last().map(String::as_str).unwrap_or_default();
    assert!(last.starts_with("blue: live in "), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l == "refs/tags/v1.0 is a tag, not the deploy branch (main): not deployed"),
        "{lines:#?}"
    );
}

/// A push that waited for its turn deploys the newer commit the branch moved on to: when
/// that one's build fails, the error names it, not the commit this push brought.
#[test]
fn a_build_failure_after_the_branch_moved_on_names_the_commit_that_failed() {
    let root = Root::new();
    let builds = root.set_build(
        "sh -c 'echo built >> \"$COUNT\"; if [ -e FAIL_BUILD ]; then echo broken; exit 5; fi; if [ -e SLOW_BUILD ]; then while [ ! -e \"$GO\" ]; do sleep 0.05; done; fi'",
    );
    let a = root.commit("a", &[("VERSION", "a\n"), ("SLOW_BUILD", "")]);
    let turn = root.path.join("blue/.push.lock");
    let (first, b) = std::thread::scope(|s| {
        let first = s.spawn(|| root.push("blue"));
        let building = poll_until(Duration::from_secs(20), || {
            (count_lines(&builds.count) == 1).then_some(())
        });
        root.remove("SLOW_BUILD");
        let b = root.commit("b", &[("VERSION", "b\n"), ("FAIL_BUILD", "")]);
        let second = s.spawn(|| root.push("blue"));
        let waiting = poll_until(Duration::from_secs(20), || {
            (waiting_on(&turn) == 1).then_some(())
        });
        fs::write(&builds.go, "").unwrap();
        let first = first.join().unwrap();
        second.join().unwrap();
        assert!(building.is_some() && waiting.is_some(), "{}", first.text);
        (first, b)
    });
    first
        .says(&format!(
            "blue: refs/heads/main moved on to {} since this push: deploying that instead",
            &b[..7]
        ))
        .says(&format!("blue: {} not deployed: build failed", &b[..7]));
    assert!(
        !first.text.contains(&format!("{} not deployed", &a[..7])),
        "{}",
        first.text
    );
}

#[test]
fn other_branches_deletions_and_garbage_deploy_nothing() {
    let root = Root::new();
    root.commit("first", &[("VERSION", "v1\n")]);
    // It says how to deploy it (git's default branch pushed to a root that deploys `main`).
    root.push_ref("blue", "HEAD:refs/heads/feature").says(
        "refs/heads/feature is not the deploy branch (main): not deployed (`git push blue feature:main` deploys it)",
    );
    assert!(root.current("blue").is_none());
    // A name whose right-to-left override and C1 escape would turn the terminal's line
    // around, or start a colour, is shown with them as `?`, and with no hint to type.
    let reversed = root.push_ref("blue", "HEAD:refs/heads/x\u{9b}31m\u{202E}niam");
    assert!(
        reversed.remote_lines().contains(
            &"refs/heads/x?31m?niam is not the deploy branch (main): not deployed".to_string()
        ),
        "{}",
        reversed.text
    );
    // Its deletion has nothing to deploy.
    let deleted = root.push_ref("blue", ":refs/heads/feature");
    let note = "refs/heads/feature is not the deploy branch (main): not deployed";
    assert_eq!(deleted.remote_lines(), [note], "{}", deleted.text);
    assert!(root.current("blue").is_none());

    // Run the hook as git would for a deletion of the deploy branch, and for bad input.
    let hook = |input: &str| run_hook(&root.path.join("blue.git"), &[], input);
    let zeros = "0".repeat(40);
    let out = hook(&format!("{} {zeros} refs/heads/main\n", "a".repeat(40)));
    assert!(!out.status.success(), "bad input exits non-zero");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("refs/heads/main was deleted: not deployed"),
        "{text}"
    );
    assert!(root.current("blue").is_none());
    let out = hook(&format!(
        "{} {} refs/heads/feature\n",
        "0".repeat(40),
        "b".repeat(40)
    ));
    assert!(!out.status.success(), "bad input exits non-zero");

    // A commit this repo does not have (the hook run by hand): one line, no libgit2 codes.
    // The push's other refs are still noted before the error ends the hook.
    let out = hook(&format!(
        "{zeros} {} refs/heads/main\n{zeros} {} refs/heads/feature\n",
        "c".repeat(40),
        "d".repeat(40)
    ));
    assert!(!out.status.success(), "an unknown commit exits non-zero");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text.trim(),
        format!(
            "refs/heads/feature is not the deploy branch (main): not deployed (`git push blue feature:main` deploys it)\n\
             error: blue: ccccccc not deployed: commit {} is not in {}",
            "c".repeat(40),
            root.path.join("blue.git").display()
        ),
    );
    assert!(root.current("blue").is_none());
    // An object the repo has that is no commit: said so, not that it is missing.
    let blob = git2::Repository::open(root.path.join("blue.git"))
        .unwrap()
        .blob(b"a blob\n")
        .unwrap()
        .to_string();
    let out = hook(&format!("{zeros} {blob} refs/heads/main\n"));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text.trim(),
        format!(
            "error: blue: {} not deployed: {blob} is a blob in {}, not a commit",
            &blob[..7],
            root.path.join("blue.git").display()
        ),
    );

    let out = hook("not a ref line\n");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text.trim(),
        "error: malformed post-receive input on line 1: expected `<old-sha> <new-sha> <ref>`"
    );
}

/// A `core.hooksPath` in the pusher's git config (a team's shared hooks folder) sent
/// every push to that folder instead of the repo's hook: the branch moved, nothing was
/// deployed, and git said nothing. `init` pins each repo's own hooks folder.
#[test]
fn a_hooks_path_in_the_pushers_git_config_does_not_bypass_the_hook() {
    let root = Root::new();
    let theirs = root.path.join("team-hooks");
    fs::create_dir_all(&theirs).unwrap();
    let global = root.path.join("pusher.gitconfig");
    fs::write(
        &global,
        format!("[core]\n\thooksPath = {}\n", theirs.display()),
    )
    .unwrap();
    root.commit("first", &[("VERSION", "v1\n")]);
    let out = git_command(&root.work)
        .env("GIT_CONFIG_GLOBAL", &global)
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("remote: blue: release "), "{text}");
    assert!(root.current("blue").is_some(), "{text}");
    // One the repo sets itself is the operator's: kept, and named by `init`.
    let repo = root.path.join("green.git");
    assert!(git_command(&repo)
        .args(["config", "core.hooksPath", "/srv/hooks"])
        .status()
        .unwrap()
        .success());
    let stdout = root.run_ok(&["init"]);
    assert!(
        stdout.contains(&format!(
            "kept      core.hooksPath = /srv/hooks in {}: pushes run the hooks there",
            repo.display()
        )),
        "{stdout}"
    );
}

/// One user with two roots sets `BLUEGREEN_ROOT` for the CLI of one of them: a push into
/// the other's repo deploys there, as the repo names its root, and never into the root
/// the variable names. It was refused (`not deployed`), and git had moved the branch all
/// the same, so pushing again sent nothing. A `--root` given to the hook by hand that
/// does not hold the repo is still refused.
#[test]
fn a_bluegreen_root_set_for_another_root_deploys_into_the_pushed_root() {
    let (root, other) = (Root::new(), Root::new());
    root.commit("first", &[("VERSION", "v1\n")]);
    let out = git_command(&root.work)
        .env("BLUEGREEN_ROOT", &other.path)
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("blue: release "), "{text}");
    assert!(!text.contains("not deployed"), "{text}");
    assert!(root.current("blue").is_some(), "{text}");
    assert!(other.current("blue").is_none());
    // Set but empty, it is no root named either: it was clap's `--root` with no value,
    // which refused the push in three lines (the branch moved all the same).
    let first = root.current("blue");
    root.commit("second", &[("VERSION", "v2\n")]);
    let out = git_command(&root.work)
        .env("BLUEGREEN_ROOT", "")
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("blue: release "), "{text}");
    assert_ne!(root.current("blue"), first, "{text}");

    let head = String::from_utf8(root.git(&["rev-parse", "HEAD"]).stdout).unwrap();
    let line = format!("{} {} refs/heads/main\n", "0".repeat(40), head.trim());
    let root_arg = ["--root".as_ref(), other.path.as_os_str()];
    let out = run_hook(&root.path.join("green.git"), &root_arg, &line);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        text.trim(),
        format!(
            "error: this push came into {}, but the root is {} (--root): not deployed; drop --root or point it at {}",
            root.path.join("green.git").display(),
            other.path.display(),
            root.path.display()
        )
    );
    assert!(other.current("green").is_none());
    assert!(root.current("green").is_none());
}

#[test]
fn the_hint_for_another_branch_runs_no_command_it_names() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    let pwned = root.work.join("pwned");
    // git takes `;`, `$`, `{` and `}` in a branch name: pasted unquoted, the hint would
    // run what follows the `;` (in the folder it is pasted in).
    let branch = "x;touch${IFS}pwned;#";
    root.git(&["branch", branch]);
    let pushed = root.push_ref("blue", branch);
    let line = pushed
        .remote_lines()
        .into_iter()
        .find(|l| l.contains("is not the deploy branch"))
        .unwrap_or_else(|| panic!("{}", pushed.text));
    let hint = line
        .split_once("(`")
        .and_then(|(_, rest)| rest.split_once("` deploys it)"))
        .unwrap_or_else(|| panic!("no hint: {line}"))
        .0
        .to_string();
    // The pusher pastes it into a shell, in the repo they pushed from.
    let out = Command::new("sh")
        .args(["-c", &hint])
        .current_dir(&root.work)
        .envs(
            git_command(&root.work)
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .env_remove("GIT_DIR")
        .env_remove("BLUEGREEN_ROOT")
        .output()
        .unwrap();
    assert!(!pwned.exists(), "the hint ran a command: {hint}");
    assert!(
        out.status.success() && root.current("blue").is_some(),
        "the hint deploys: {hint}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A name git would read as an option (`--receive-pack=<command>`) gets no hint.
    let pushed = root.push_ref("blue", "HEAD:refs/heads/--receive-pack=touch");
    pushed.says("refs/heads/--receive-pack=touch is not the deploy branch (main): not deployed");
    pushed.never_says("deploys it");
}
