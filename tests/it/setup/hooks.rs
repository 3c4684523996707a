//! The hook installed in each slot repo: it follows the binary, and one that runs
//! another binary or none is named.

use std::fs;
use std::process::Command;

use crate::util::*;

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

/// A user's git templates (`init.templateDir`) with a `post-receive` of their own: the
/// repo `init` made took it, `init` said `kept`, and pushes ran it, deploying nothing.
#[test]
fn init_makes_its_repos_without_the_users_git_templates() {
    let tmp = tempfile::tempdir().unwrap();
    let hooks = tmp.path().join("template/hooks");
    fs::create_dir_all(&hooks).unwrap();
    fs::write(
        hooks.join("post-receive"),
        "#!/bin/sh\necho template hook\n",
    )
    .unwrap();
    // libgit2 reads the user's config from `$HOME/.gitconfig`, not `GIT_CONFIG_GLOBAL`.
    let global = tmp.path().join(".gitconfig");
    let template = tmp.path().join("template");
    fs::write(
        &global,
        format!("[init]\n\ttemplateDir = {}\n", template.display()),
    )
    .unwrap();
    let root = tmp.path().join("root");
    let out = Command::new(BIN)
        .arg("init")
        .arg(&root)
        .env("HOME", tmp.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    for slot in ["blue", "green"] {
        let hook = root.join(format!("{slot}.git/hooks/post-receive"));
        assert_eq!(
            fs::canonicalize(&hook).unwrap(),
            fs::canonicalize(BIN).unwrap(),
            "{said}"
        );
        assert!(
            said.contains(&format!("linked    {}", hook.display())),
            "{said}"
        );
    }
}
