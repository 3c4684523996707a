//! Who the daemon takes orders from, and who the commands take for the daemon: another
//! root, another user, a stranger on `control.listen`, a token.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// A config broken by an edit (a typo in `[app]`) does not keep the operator from the
/// daemon, which runs what it read before: `status`, `switch` and `mirroring` reach it
/// by the file's `control.listen`, and say the file does not load.
#[test]
fn control_commands_reach_the_daemon_through_a_config_broken_elsewhere() {
    let root = both_live();
    root.set("app.ready_timeout", "soon");
    let note = format!("note: {}:", root.path.join("bluegreen.toml").display());
    let tail = "app.ready_timeout: invalid duration `soon`";
    let said = |args: &[&str]| {
        let out = root.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&note) && stderr.contains(tail),
            "{stderr}"
        );
        assert!(
            stderr.trim_end().ends_with("(the daemon runs the config it read before; its next reload or restart refuses this file: fix it)"),
            "{stderr}"
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(said(&["status"]).contains("blue"));
    assert_eq!(said(&["switch", "green"]).trim(), "switched blue -> green");
    assert_eq!(root.status()["active"], "green");
    said(&["mirroring", "off"]);
    assert_eq!(root.status()["mirroring"]["enabled"], false);
    // Where the daemon listens is not guessed from a `[control]` that does not load: the
    // file's error, and nothing asked.
    root.set("app.ready_timeout", "1s");
    root.set("control.listen", "everywhere");
    let refused = root.run_err(&["switch", "blue"]);
    assert!(
        refused.starts_with("error: ") && refused.contains(": control.listen: "),
        "{refused}"
    );
    assert_eq!(root.status()["active"], "green");
}

/// A root moved (or renamed, or restored from a backup) while its daemon runs: the
/// daemon serves the old path, and a command on the new one was told "another root: give
/// each root its own control.listen", the wrong fix. It is told what happened, and the
/// daemon logs it.
#[test]
fn a_root_moved_under_its_daemon_is_told_so() {
    let root = blue_live();
    let moved = root.path.parent().unwrap().join("moved");
    fs::rename(&root.path, &moved).unwrap();
    let out = Command::new(BIN)
        .args(["status", "--root"])
        .arg(&moved)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!(
        "this daemon serves {}, which is gone from there since it started (the root moved, renamed or restored?): stop this daemon (pid {}) and start `bluegreen serve` on the root where it is now",
        root.path.display(),
        root.serve_pid()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: control API at 127.0.0.1:{}: {said}", root.control)
    );
    root.wait_log(&said);
    // A push into it is not said to start by the daemon's file watch (its serve lock
    // moved with it, but the daemon reads the old path), and the daemon, woken by the
    // flip, says why nothing starts.
    root.commit("v2", &[("VERSION", "v2\n")]);
    let out = git_command(&root.work)
        .arg("push")
        .arg(moved.join("blue.git"))
        .arg("+HEAD:refs/heads/main")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!(
            "blue: no daemon told (control API at 127.0.0.1:{}: {said})",
            root.control
        )),
        "{text}"
    );
    root.wait_log(&format!(
        "blue: the root {} is gone from there since the daemon started (moved, renamed or restored?): nothing new starts",
        root.path.display()
    ));
    assert!(root.get(root.blue, "/").body.contains("v1 from blue"));
    fs::rename(&moved, &root.path).unwrap();
}

#[test]
fn a_daemon_does_not_take_orders_for_another_root() {
    // Two roots given one control.listen: `other`'s commands and pushes reach `root`'s
    // daemon, which must refuse them rather than act on its own slots.
    let root = both_live();
    let other = Root::new();
    other.set("control.listen", format!("127.0.0.1:{}", root.control));
    let refusal = format!(
        "control API at 127.0.0.1:{}: this daemon serves {}, another root: give each root its own control.listen",
        root.control,
        root.path.display()
    );
    let out = other.run(&["status"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {refusal}")
    );
    let out = other.run(&["switch", "green"]);
    assert!(!out.status.success());
    assert_eq!(root.status()["active"], "blue");

    let generation = root.status()["slots"]["blue"]["live"]["generation"].clone();
    other.commit("v1", &[("VERSION", "v1\n")]);
    other.push("blue").says(&refusal);
    assert_eq!(
        root.status()["slots"]["blue"]["live"]["generation"],
        generation
    );
    // Its own callers (and callers that name no root, like curl) are served.
    assert_eq!(root.control("GET", "/status").status, 200);
    root.run_ok(&["status"]);
}

/// How the commands and the hook name what answers on `control.listen` at `port` when it
/// is no bluegreen daemon, for `what` it did.
fn stranger_on(port: u16, what: &str) -> String {
    format!(
        "control API at 127.0.0.1:{port}: what answers there is not a bluegreen daemon ({what}): give this root its own control.listen in bluegreen.toml (`ss -ltnp 'sport = :{port}'` says what listens there)"
    )
}

/// Something other than a bluegreen daemon on `control.listen` (a web server left on the
/// port) answers with a page of HTML: the hook's verdict and the commands' errors say on
/// one line that it is not a daemon, and how to find it. Each of the page's lines used to
/// become one of theirs, and then the page was quoted as the daemon's refusal (`not
/// switched: <html> ...`).
#[test]
fn a_stranger_on_control_listen_is_named_on_one_line() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let stranger = std::thread::spawn({
        let done = done.clone();
        move || {
            let page = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n</body>\r\n</html>\r\n";
            while !done.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut head = [0; 4096];
                let _ = stream.read(&mut head);
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
            }
        }
    });
    let root = Root::new();
    root.set("control.listen", format!("127.0.0.1:{port}"));
    let stranger_at = |asked: &str| {
        stranger_on(
            port,
            &format!("it answered {asked} with 404, Content-Type text/html"),
        )
    };

    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue")
        .told_no_daemon("blue", &stranger_at("POST /slots/blue/reload"));
    let out = root.run(&["switch", "green"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        // Its look at `/status` before the switch names the stranger: no switch is sent.
        format!("error: {}", stranger_at("GET /status"))
    );
    let out = root.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {}", stranger_at("GET /status"))
    );

    done.store(true, Ordering::Relaxed);
    stranger.join().unwrap();
}

/// `control.listen` set to another root's front (copied from its config): the hook's
/// call reached that root's app through its router, and its `404 no route` in plain
/// text was quoted as this daemon's refusal (`not live: 404 no route ...`), where the
/// release is current and starts when this root's daemon does.
#[test]
fn another_roots_app_on_control_listen_is_named_a_stranger() {
    let other = both_live();
    let root = Root::new();
    root.set("control.listen", format!("127.0.0.1:{}", other.front));
    root.commit("v1", &[("VERSION", "v1\n")]);
    let front = other.front;
    root.push("blue").told_no_daemon(
        "blue",
        &stranger_on(
            front,
            "it answered POST /slots/blue/reload with 404, Content-Type text/plain; charset=utf-8",
        ),
    );
    let out = root.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "what answers there is not a bluegreen daemon (it answered GET /status with 404"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nor does `switch` reach the other root's front `/switch`, which switched that
    // root's traffic for this root's command.
    let out = root.run(&["switch", "green"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("what answers there is not a bluegreen daemon"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(other.status()["active"], "blue");
    let asked = raw(
        front,
        &format!(
            "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nBluegreen-Root: {}\r\nConnection: close\r\n\r\n",
            root.path.display()
        ),
    );
    assert!(asked.starts_with("HTTP/1.1 421 "), "{asked}");
    assert!(
        asked.contains(&format!(
            "this daemon serves {}, another root",
            other.path.display()
        )),
        "{asked}"
    );
    assert_eq!(other.status()["active"], "blue");
}

/// Loopback is every user of the host: another app's user (README "Several apps on one
/// host") switched this root's traffic, turned its mirroring off and recorded pushes for
/// it, through the control API and the front's `/switch`. Reads stay anyone's on the
/// host (a metrics scraper runs as a user of its own).
#[test]
fn another_user_on_this_host_may_read_but_not_change_the_daemon() {
    let root = both_live();
    let nobody = 65534;
    let control = root.control;
    let Some(status) = raw_as(
        nobody,
        control,
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ) else {
        return; // not root: no other user's socket to make
    };
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    let refused = "it came from a process of nobody (uid 65534): only root, the daemon's user, may";
    for (path, what) in [
        ("/switch?to=green", "switch"),
        ("/mirroring?enabled=false", "mirroring"),
        ("/slots/blue/reload", "reload"),
    ] {
        let answer = raw_as(
            nobody,
            control,
            &format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 403 "), "{what}: {answer}");
        let path = path.split('?').next().unwrap();
        assert!(
            answer.contains(&format!(
                "POST {path} refused: {refused} change this daemon\n"
            )),
            "{what}: {answer}"
        );
    }
    let front = raw_as(
        nobody,
        root.front,
        "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(front.starts_with("HTTP/1.1 403 "), "{front}");
    assert!(
        front.contains(&format!(
            "this request may not switch: {refused} switch; router.token_file sets a token for others"
        )),
        "{front}"
    );
    let status = root.status();
    assert_eq!(status["active"], "blue", "{status}");
    assert_eq!(status["mirroring"]["enabled"], true, "{status}");
    assert_eq!(status["slots"]["blue"]["live"]["generation"], 1, "{status}");
    // The daemon's own user still may.
    let answer = raw(
        root.front,
        "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

/// Another user listening on `control.listen` while the daemon is down (it stopped, and
/// its port is anyone's to take) answered the hook's reload with a made-up verdict: the
/// push said `live`, and `bluegreen switch` said `switched`, with no daemon running.
#[test]
fn another_users_socket_on_control_listen_is_no_daemon_of_this_root() {
    if !nix::unistd::geteuid().is_root() {
        return; // no other user's socket to make
    }
    let listener = std::thread::spawn(|| {
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(65534));
        let listener = std::net::TcpListener::bind("127.0.0.1:0");
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
        listener
    })
    .join()
    .unwrap()
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = Root::new();
    root.set("control.listen", format!("127.0.0.1:{port}"));
    root.commit("v1", &[("VERSION", "v1\n")]);
    let stranger = stranger_on(
        port,
        "its listening socket is a process's of nobody (uid 65534), not of root or of this root's user",
    );
    root.push("blue").told_no_daemon("blue", &stranger);
    let out = root.run(&["switch", "green"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {stranger}")
    );
    drop(listener);
}

/// A token file others may read, and a short token, are logged at the start; the token
/// lets any caller switch the front, another user on this host too.
#[test]
fn a_token_file_others_may_read_is_logged_and_the_token_lets_another_user_switch() {
    use std::os::unix::fs::PermissionsExt;
    let mut root = Root::new();
    let token = root.path.parent().unwrap().join("token");
    fs::write(&token, "s3cret-token\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    root.set("router.token_file", token.to_str().unwrap());
    root.serve();
    root.wait_log(&format!(
        "router.token_file {} is mode 0644: users other than its owner may read the token, and switch the front with it; chmod 600 it",
        token.display()
    ));
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    // So is a token short enough to guess.
    root.wait_log(&format!(
        "router.token_file {} holds a token of 12 characters: the front answers wrong tokens as fast as it can, so a short one may be guessed; use 16 or more random ones",
        token.display()
    ));
    // Said at the start, not at each look at the file (`/status`, the pushes' notes).
    root.control("GET", "/status");
    let said = root.log().matches("router.token_file ").count();
    assert_eq!(said, 2, "{}", root.log());
    // A wrong token is logged as a guess, never written itself: from elsewhere (a proxy
    // on this host relaying others, as X-Forwarded-For says)...
    let guess = "Authorization: Bearer gu3ss-token-x\r\n";
    let relayed = raw(
        root.front,
        &format!("POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 192.0.2.7\r\n{guess}Connection: close\r\n\r\n"),
    );
    assert!(relayed.starts_with("HTTP/1.1 403 "), "{relayed}");
    // Told what is wrong with what it sent, not to send the header it sent.
    assert!(
        relayed
            .contains("may not switch: its Authorization does not carry router.token_file's token"),
        "{relayed}"
    );
    let guessed = "the front's /switch refused 127.0.0.1:";
    root.wait_log(guessed);
    assert!(root
        .log()
        .contains("its Authorization does not carry router.token_file's token"));
    assert_eq!(root.status()["active"], "blue");
    let switch = |authorization: &str| {
        raw_as(
            65534,
            root.front,
            &format!("POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Connection: close\r\n\r\n"),
        )
    };
    let Some(refused) = switch("") else {
        return; // not root: no other user's socket to make
    };
    assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
    assert!(
        refused.contains("switch; others need `Authorization: Bearer <token>` (router.token_file)"),
        "{refused}"
    );
    // ... or from another user on this host (a relay's, such as stunnel's): a second line
    // once a second has passed since the first.
    wait_for(Duration::from_secs(10), "a second guess logged", || {
        let refused = switch(guess).unwrap();
        assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
        assert!(
            refused.contains("switch; its Authorization does not carry router.token_file's token"),
            "{refused}"
        );
        (root.log().matches(guessed).count() >= 2).then_some(())
    });
    assert!(!root.log().contains("gu3ss"), "{}", root.log());
    assert_eq!(root.status()["active"], "blue");
    let allowed = switch("Authorization: Bearer s3cret-token\r\n").unwrap();
    assert!(allowed.starts_with("HTTP/1.1 200 "), "{allowed}");
    assert_eq!(root.status()["active"], "green");
}
