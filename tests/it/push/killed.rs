//! A hook killed mid-push (a signal, a kill -9): its build is stopped, and what it
//! left half made is removed by the next push.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::util::*;

#[test]
fn a_hook_stopped_by_a_signal_stops_its_build_and_deploys_nothing() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    assert!(root.push("blue").ok);
    let before = root.current("blue");
    // A build with a child of its own: the whole group must go.
    root.set("build.command", "sh -c 'sleep 60 & exec sleep 61'");
    let tmp = root.path.join("builds/.tmp");
    let bin = fs::canonicalize(BIN).unwrap();
    for (n, signal) in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM]
        .into_iter()
        .enumerate()
    {
        root.commit(&format!("slow {n}"), &[("VERSION", &format!("slow {n}\n"))]);
        std::thread::scope(|s| {
            let push = s.spawn(|| root.push("blue"));
            let build = wait_for(Duration::from_secs(20), "the build to start", || {
                let pids = root_processes(&tmp);
                (pids.len() >= 2).then_some(pids)
            });
            // As a Ctrl-C at the pusher's terminal, or an operator's kill, would: the
            // hook only (the build runs in its own process group).
            let hook = root_processes(&root.path.join("blue.git"))
                .into_iter()
                .find(|pid| fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == bin))
                .expect("the hook runs");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(hook as i32), signal).unwrap();
            let pushed = push.join().unwrap();
            pushed.says(&format!(
                "not deployed: build failed: stopped by {signal}; its process group was killed"
            ));
            wait_for(
                Duration::from_secs(10),
                "the build's processes to go",
                || {
                    build
                        .iter()
                        .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
                        .then_some(())
                },
            );
        });
        assert_eq!(root.current("blue"), before);
        assert_empty(&tmp);
    }
}

/// `git push blue` of HEAD, in a process group of its own (to be killed whole), once its
/// build runs: a process working in `builds/.tmp/`, not only the temp folder, which is
/// made just before it starts, nor the hook. Returns the push and that folder.
fn push_until_building(root: &Root) -> (std::process::Child, std::path::PathBuf) {
    let mut push = crate::util::git_command(&root.work);
    push.args(["push", "blue", "+HEAD:refs/heads/main"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut push, 0);
    let child = push.spawn().unwrap();
    let tmp = root.path.join("builds/.tmp");
    wait_for(Duration::from_secs(20), "the build to start", || {
        (!root_processes(&tmp).is_empty()).then_some(())
    });
    (child, tmp)
}

#[test]
fn a_hook_killed_mid_build_leaves_no_finished_build() {
    let root = Root::new();
    let gate = root.path.parent().unwrap().join("gate");
    let helper = root.path.parent().unwrap().join("helper.pid");
    fs::write(&gate, "").unwrap();
    // The build also starts a helper outside its group and working elsewhere (as a
    // build tool's daemon does).
    root.set(
        "build.command",
        "sh -c 'if [ -e \"$GATE\" ]; then setsid sh -c \"cd /; exec sleep 61\" & echo $! > \"$HELPER\"; sleep 60; fi; echo built'",
    );
    root.set(
        "build.env",
        env_map(&[
            ("GATE", gate.to_str().unwrap()),
            ("HELPER", helper.to_str().unwrap()),
        ]),
    );
    root.commit("first", &[("VERSION", "v1\n")]);

    let (mut child, tmp) = push_until_building(&root);
    // The helper leads a group of its own (setsid).
    let helper_group: i32 = wait_for(Duration::from_secs(10), "the build's helper", || {
        fs::read_to_string(&helper).ok()?.trim().parse().ok()
    });
    // Kill the push and its hook. The build runs in its own group and outlives them.
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
    assert!(
        !root.processes().is_empty(),
        "the orphaned build is still running"
    );
    for entry in fs::read_dir(root.path.join("builds")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') {
            panic!("a build folder appeared for a killed build: {name}");
        }
    }
    assert!(root.current("blue").is_none());
    // An operator looks into the abandoned folder from a shell of their own.
    let abandoned = fs::read_dir(&tmp).unwrap().flatten().next().unwrap().path();
    let mut operator = Command::new("sleep");
    operator.arg("60").current_dir(&abandoned);
    std::os::unix::process::CommandExt::process_group(&mut operator, 0);
    let mut operator = Killed(operator.spawn().unwrap());

    // The next push of the same tree builds it and lands, even one that follows at once:
    // the killed push's log is written after that push began (here by a pre-push hook,
    // which runs once the remote's receive-pack has started), but it never got the line
    // that says why a build failed. Such a push was refused (`build::ensure`).
    let hook = root.work.join(".git/hooks/pre-push");
    let touch = format!("#!/bin/sh\nexec touch '{}'\n", root.build_log().display());
    fs::write(&hook, touch).unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::remove_file(&gate).unwrap();
    root.commit("again", &[]);
    let pushed = root.push("blue");
    pushed.says("blue: build ").says("blue: release ");
    assert!(root.current("blue").is_some());
    // The next push stopped the orphaned build before reusing its key, and the helper
    // it had left outside its group, but not the operator's shell.
    let operator_left = operator.0.try_wait().unwrap();
    drop(operator);
    assert_eq!(operator_left, None, "the operator's process was stopped");
    assert_eq!(root.processes(), Vec::<u32>::new());
    wait_for(
        Duration::from_secs(10),
        "the build's helper to be gone",
        || group_gone(helper_group).then_some(()),
    );
}

/// A hook killed outright (SIGKILL, the OOM killer) leaves its build running, past its
/// `build.timeout`: the next push stops it even when it builds nothing (its tree was
/// built before), and so does a push of the same tree that waited for that build. Only a
/// push that built something did.
#[test]
fn a_killed_hooks_build_is_stopped_by_the_next_push_that_reuses_a_build() {
    let root = Root::new();
    let gate = root.path.parent().unwrap().join("gate");
    root.set(
        "build.command",
        "sh -c 'if [ -e \"$GATE\" ]; then sleep 60; fi; echo built'",
    );
    root.set("build.env", env_map(&[("GATE", gate.to_str().unwrap())]));
    let built = root.commit("first", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: build ");

    fs::write(&gate, "").unwrap();
    root.commit("slow", &[("VERSION", "v2\n")]);
    let (mut child, tmp) = push_until_building(&root);
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
    assert!(!root_processes(&tmp).is_empty(), "the orphaned build runs");

    root.push_ref("green", &format!("{built}:refs/heads/main"))
        .says("green: build reused");
    assert_eq!(root_processes(&tmp), Vec::<u32>::new());
    assert_empty(&tmp);

    // Again, with a push of the same tree to green waiting for that build when its hook
    // is killed: the waiting push stops it, as it holds the key from then on.
    root.commit("slow again", &[("VERSION", "v3\n")]);
    let (mut child, _) = push_until_building(&root);
    let (mut waiter, reader) = push_until(&root, "green", "another push is building this tree");
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let _ = waiter.wait();
    let text = reader.join().unwrap();
    assert!(
        text.contains("the push that was building this tree did not finish it"),
        "{text}"
    );
    assert_eq!(root_processes(&tmp), Vec::<u32>::new(), "{text}");
}

#[test]
fn a_release_copy_a_killed_deploy_left_is_removed_by_the_next_deploy_even_a_failed_one() {
    let root = Root::new();
    root.link_uploads();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let v1 = root.current("blue").unwrap();
    // What a deploy killed (SIGKILL, the OOM killer) while copying its release leaves:
    // on a disk it nearly filled, the next deploys fail at their own copy for lack of
    // that space, and never get to the prune that used to be all that removed it.
    let stale = root
        .path
        .join("blue/releases/.tmp-20261122T000000.000Z-dead000");
    fs::create_dir_all(stale.join("node_modules")).unwrap();
    fs::write(stale.join("node_modules/blob"), vec![0u8; 1 << 20]).unwrap();
    // `releases` names it, and what removes it.
    let listed = root.run_ok(&["releases", "blue"]);
    assert!(
        listed.ends_with("blue: note: releases/.tmp-20261122T000000.000Z-dead000 is what a stopped deploy, rollback or promote left (a copy, or a release being pruned); the next deploy to blue removes it\n"),
        "{listed}"
    );
    // A deploy that fails after its copy (here its linked dir is refused; on a full
    // disk, the copy itself).
    root.public_outside();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue")
        .says("blue: ")
        .says("not deployed: linked dir `public/uploads`");
    assert!(!stale.exists(), "the killed deploy's copy is still there");
    assert_eq!(root.current("blue").unwrap(), v1);
    assert_eq!(root.releases("blue"), vec![v1]);
    assert!(!root.run_ok(&["releases", "blue"]).contains("note:"));
}

#[test]
fn temp_files_of_a_killed_flip_or_state_write_are_removed() {
    let mut root = Root::new();
    // As a hook killed between making its new link and renaming it over `current`, and
    // a daemon killed in the middle of writing state.json, leave them.
    let stale_link = root.path.join("blue/.current.new.99999");
    std::os::unix::fs::symlink("releases/gone", &stale_link).unwrap();
    let stale_state = root.path.join(".state.json.tmp.99999");
    fs::write(&stale_state, "{").unwrap();
    root.serve();
    assert!(!stale_state.exists());
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    assert!(fs::symlink_metadata(&stale_link).is_err());
}
