//! The daemon as a service: sd_notify messages, the watchdog, and one daemon per root.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;

#[test]
fn sd_notify_messages_arrive_in_order() {
    let mut root = Root::new();
    let (socket, socket_path) = notify_socket(&root);
    root.serve_with(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let next = || received(&socket);
    // The time its reap of a killed daemon's workers, then its start, may take.
    assert!(next().starts_with("EXTEND_TIMEOUT_USEC="));
    assert!(next().starts_with("EXTEND_TIMEOUT_USEC="));
    assert_eq!(next(), "READY=1\n");
    root.signal(Signal::SIGHUP);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let reloaded = next();
    assert!(
        reloaded.starts_with("READY=1\nSTATUS=config reloaded from "),
        "{reloaded}"
    );
    // A refused reload ends as READY=1 too (the daemon runs on): its status says so.
    root.set("app.ready_timeout", "soon");
    root.signal(Signal::SIGHUP);
    assert!(next().starts_with("RELOADING=1\n"));
    let refused = next();
    assert!(
        refused.starts_with("READY=1\nSTATUS=config reload refused, keeping the running config: ")
            && refused.contains("app.ready_timeout"),
        "{refused}"
    );
    root.signal(Signal::SIGTERM);
    assert_eq!(next(), "STOPPING=1\n");
    assert!(next().starts_with("EXTEND_TIMEOUT_USEC="));
    assert_eq!(root.wait_serve(Duration::from_secs(10)), Some(0));
}

/// A SIGHUP while the first generations get ready is a reload as ever, and systemd is
/// told how it went as the status alone: READY=1 comes once the slots are served, not
/// with the reload (it was not told at all).
#[test]
fn a_reload_while_the_first_generations_get_ready_is_told_to_systemd() {
    let mut root = Root::new();
    root.set(
        "app.command",
        format!(r#"sh -c 'sleep 2; exec "$0" sample-app' {BIN}"#),
    );
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("daemon not running");
    let (socket, socket_path) = notify_socket(&root);
    root.serve_with(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let next = || received(&socket);
    assert!(next().starts_with("EXTEND_TIMEOUT_USEC="));
    assert!(next().starts_with("EXTEND_TIMEOUT_USEC="));
    root.signal(Signal::SIGHUP);
    let reloaded = next();
    assert!(
        reloaded.starts_with("STATUS=config reloaded from "),
        "{reloaded}"
    );
    assert_eq!(next(), "READY=1\n");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
}

/// The daemon asks systemd for the time its start and its stop may take, as its config
/// sets them (EXTEND_TIMEOUT_USEC), so a unit's TimeoutStartSec= (90 s) and
/// TimeoutStopSec= (60 s) do not kill it half way: with `app.ready_timeout = "2m"`, a
/// first generation that took its time was killed at 90 s by systemd, which restarted
/// the daemon into the same wait again and again; a raised drain was cut at 60 s.
#[test]
fn the_daemon_asks_systemd_for_the_time_its_start_and_stop_take() {
    let mut root = Root::new();
    root.set("app.ready_timeout", "2m");
    root.set("app.drain_timeout", "40s");
    root.set("app.stop_timeout", "20s");
    let (socket, socket_path) = notify_socket(&root);
    root.serve_with(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let next = || received(&socket);
    let usec = |message: String| -> u64 {
        let value = message.strip_prefix("EXTEND_TIMEOUT_USEC=");
        let value = value.unwrap_or_else(|| panic!("not an extension: {message}"));
        value.trim().parse().unwrap()
    };
    // The reap of what a killed daemon left, up to stop_timeout; then the start, which
    // waits up to ready_timeout + 5 s for the first generations.
    assert!(usec(next()) >= 20_000_000);
    assert!(usec(next()) >= 125_000_000);
    assert_eq!(next(), "READY=1\n");
    root.signal(Signal::SIGTERM);
    assert_eq!(next(), "STOPPING=1\n");
    // The stop: the drain, then a generation's group and its strays, each stop_timeout.
    assert!(usec(next()) >= 80_000_000);
    assert_eq!(root.wait_serve(Duration::from_secs(10)), Some(0));
}

#[test]
fn with_watchdog_sec_the_daemon_pings_the_watchdog() {
    let mut root = Root::new();
    let (socket, socket_path) = notify_socket(&root);
    // As systemd sets them for `WatchdogSec=400ms`: a ping every 200 ms.
    root.serve_with(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    let mut pings = 0;
    while pings < 3 {
        if received(&socket) == "WATCHDOG=1\n" {
            pings += 1;
        }
    }
}

#[test]
fn a_second_daemon_on_the_same_root_is_refused_and_changes_nothing() {
    let root = blue_live();
    let worker = root.live_pid("blue");
    let second = root.run(&["serve"]);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "another bluegreen serve is running on {} (pid {}; it holds ",
            root.path.display(),
            root.serve_pid()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert_eq!(
        root.live_pid("blue"),
        worker,
        "the first daemon's worker runs on"
    );
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
}

#[test]
fn serve_waits_a_moment_for_a_daemon_that_is_still_exiting() {
    // A daemon killed a moment ago still holds the root's lock until the kernel has
    // finished its exit: this test holds it instead, until `serve` says it waits for it.
    let mut root = Root::new();
    let run = root.path.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let file = std::fs::File::create(run.join("serve.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let log = root.log_lines();
    let release = std::thread::spawn(move || {
        let waits = poll_until(Duration::from_secs(10), || {
            let log = log.lock().unwrap();
            log.iter()
                .find(|line| {
                    line.contains("serve.lock is held") && line.contains("waiting up to 2s")
                })
                .cloned()
        });
        drop(held);
        waits
    });
    root.serve_with(&[("RUST_LOG", "debug")]);
    let waits = release.join().unwrap();
    assert!(
        waits.is_some(),
        "serve never said it waits:\n{}",
        root.log()
    );
    assert!(root.status()["slots"]["blue"].is_object());
}

/// A test `NOTIFY_SOCKET` beside `root` (for `serve_with`): the socket and its path.
fn notify_socket(root: &Root) -> (std::os::unix::net::UnixDatagram, std::path::PathBuf) {
    let path = root.path.parent().unwrap().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (socket, path)
}

/// The next sd_notify message, within the socket's read timeout.
fn received(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notify message in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_log_nobody_reads_does_not_stop_the_daemon() {
    let mut root = Root::new();
    root.serve_unread();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    for _ in 0..3 {
        root.signal(Signal::SIGHUP);
    }
    root.push("green").says("green: live in ");
    assert!(root.get(root.front, "/").body.starts_with("v1 from blue"));
    root.stop_serve();
}

/// A log whose reader takes nothing (its pipe full: `serve 2>&1 | less` left on its first
/// page, a stalled log shipper) holds up no push, request, status or switch: every
/// thread that logged waited on the full pipe, the proxy threads too, and no port
/// answered until the reader read again. Lines are dropped while it takes none, and
/// counted in the log once it reads again. The worker writes far more than the pipe
/// holds before it listens.
#[test]
fn a_log_whose_reader_stalls_holds_up_nothing() {
    let mut root = Root::new();
    root.set(
        "app.command",
        format!("sh -c 'yes spam | head -n 100000; exec {BIN} sample-app'"),
    );
    let go = root.serve_stalled();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    assert!(root.get(root.front, "/").body.starts_with("v1 from blue"));
    root.run_ok(&["switch", "green"]);
    assert!(root.get(root.front, "/").body.starts_with("v1 from green"));
    assert_eq!(root.status()["active"], "green");
    go.send(()).unwrap();
    wait_for(
        Duration::from_secs(20),
        "the log to count the lines it dropped",
        || root.log().contains(" of this log w").then_some(()),
    );
    root.stop_serve();
}

/// Under socket activation (the test holds the listening sockets, as systemd does for a
/// socket unit), a daemon stopped and started again refuses no connection and loses no
/// request: clients keep asking the front and the slot's port through the drain, the
/// stop and the next daemon's start, and each request answers 200 from blue. The front's
/// clients never send a request twice (as wrk): a keep-alive connection the stopping
/// daemon closed after an answer that did not say `Connection: close` fails them.
#[test]
fn a_restart_under_socket_activation_loses_no_request() {
    use std::os::fd::AsFd;
    const RESTARTS: usize = 5;
    let mut root = Root::new();
    let sockets = root.sockets();
    let fds: Vec<_> = sockets.iter().map(|s| s.as_fd()).collect();
    root.serve_activated(&fds);
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    let (front, slot) = (root.front, root.url(root.blue, "/"));
    let mut restarts = 0;
    let (mut slot_answers, mut slot_failures) = (0, Vec::new());
    let (front_answers, mut failures) = under_strict_load(front, 6, || {
        (slot_answers, slot_failures) = under_load(&slot, 2, || {
            for _ in 0..RESTARTS {
                let worker = root.live_pid("blue");
                root.stop_serve();
                root.serve_activated(&fds);
                wait_for(Duration::from_secs(15), "blue live again", || {
                    let pid = root.status()["slots"]["blue"]["live"]["pid"].as_u64();
                    pid.filter(|&pid| pid != worker as u64)
                });
                restarts += 1;
            }
        });
    });
    failures.extend(slot_failures);
    assert_eq!(restarts, RESTARTS);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        front_answers + slot_answers + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(front_answers > 0 && slot_answers > 0);
    assert!(root.get(root.front, "/").body.starts_with("v1 from blue"));
}

/// Under socket activation a stopping daemon's control socket stays open (systemd holds
/// it for the next daemon): `bluegreen status` waited its 10 s for an answer that could
/// not come and said only "no answer within 10s". It now says the daemon is stopping.
#[test]
fn status_while_a_socket_activated_daemon_drains_says_it_is_stopping() {
    status_while_draining(true, |_| {
        "no answer within 10s (the daemon is stopping: it drains requests in flight, up to app.drain_timeout, then stops its workers; under bluegreen.socket the next daemon answers once started)".into()
    });
}

/// The same without socket activation: the daemon closed its control listener, and
/// `status` said it was "starting or stopping" and to restart it. A push then is told
/// what a push whose reload the stop cut short is, not "no verdict".
#[test]
fn status_while_a_daemon_drains_says_it_is_stopping() {
    let root = status_while_draining(false, |root| {
        format!("error: daemon not answering on 127.0.0.1:{}: it is stopping (it drains requests in flight, up to app.drain_timeout, then stops its workers): once it has stopped, start it again if that was not meant (`bluegreen serve`, or `systemctl start` its unit)", root.control)
    });
    let pushed = root.releases("blue").last().cloned().unwrap();
    assert_eq!(root.current("blue").unwrap(), pushed);
}

/// `bluegreen status` while the daemon drains an upload at its stop ends with `said`;
/// without socket activation, a push then says the daemon is stopping.
fn status_while_draining(activated: bool, said: impl Fn(&Root) -> String) -> Root {
    use std::io::Write;
    use std::os::fd::AsFd;
    let mut root = Root::new();
    root.set("app.drain_timeout", "20s");
    let sockets = root.sockets();
    match activated {
        true => root.serve_activated(&sockets.iter().map(|s| s.as_fd()).collect::<Vec<_>>()),
        false => {
            drop(sockets);
            root.serve()
        }
    };
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    // An upload whose body never ends holds the drain.
    let mut upload = std::net::TcpStream::connect(("127.0.0.1", root.blue)).unwrap();
    write!(
        upload,
        "PUT /items/slow HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\nthe start"
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "the upload in flight", || {
        (root.status()["slots"]["blue"]["live"]["in_flight"] == 1).then_some(())
    });
    root.signal(Signal::SIGTERM);
    root.wait_log("stopping: draining every generation");
    let told = root.run_err(&["status"]);
    assert!(told.ends_with(&said(&root)), "{told}");
    if !activated {
        root.commit("v2", &[("VERSION", "v2\n")]);
        root.push("blue").says(
            "blue: not started: the daemon is stopping; the release is current and starts when it runs again",
        );
        assert_eq!(
            root.run_err(&["restart", "blue"]).trim_end(),
            "error: blue: not restarted: the daemon is stopping: the next daemon starts blue's current release"
        );
    }
    drop(upload);
    assert_eq!(root.wait_serve(Duration::from_secs(20)), Some(0));
    assert!(!root.path.join("run/stopping").exists());
    root
}

/// Sockets passed to a wrapper script that runs `serve` without `exec`: they are open
/// in the daemon, but `LISTEN_PID` names the script. Said at once; the daemon ignored
/// them, and its own bind of the same addresses failed after a wait, as if another root
/// held them.
#[test]
fn sockets_passed_to_a_wrapper_without_exec_are_told_so() {
    use std::os::fd::AsFd;
    let root = Root::new();
    let sockets = root.sockets();
    let fds: Vec<_> = sockets.iter().map(|s| s.as_fd()).collect();
    let out = root.run_activated_unexeced(&fds);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("LISTEN_FDS=4 passes this process sockets, but LISTEN_PID="),
        "{stderr}"
    );
    assert!(
        stderr.contains(": a wrapper script runs `bluegreen serve` without `exec`; write `exec bluegreen serve ...` in it"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // A stale environment (the variables, but no sockets passed) is no wrapper: the
    // daemon binds the addresses itself, as without them.
    drop(sockets);
    let mut root = root;
    root.serve_with(&[("LISTEN_FDS", "2"), ("LISTEN_PID", "1")]);
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    assert!(root.get(root.front, "/").body.starts_with("v1 from blue"));
}

#[test]
fn a_socket_from_systemd_the_config_does_not_name_is_refused() {
    use std::os::fd::AsFd;
    let root = Root::new();
    let stray = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = stray.local_addr().unwrap();
    let out = root.run_activated(&[stray.as_fd()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "systemd passed a socket listening on {at}, which is none of the config's addresses (router.listen 127.0.0.1:{}",
            root.front
        )),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    // Nothing was started: the config's own ports are free.
    for port in [root.front, root.blue, root.control] {
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    let datagram = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = root.run_activated(&[datagram.as_fd()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("systemd passed file descriptor 3, which is not a listening TCP socket"),
        "{stderr}"
    );
}

/// A slot folder moved away and put back (restored from a backup, `cp -a`) is still
/// watched: hand flips of its `current` afterwards are picked up, as before. The watch
/// was on the folder that went away, so a flip was never seen and blue ran on.
#[test]
fn a_slot_folder_put_back_is_watched_again() {
    let root = blue_live();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    let slot = root.path.join("blue");
    let moved = root.path.parent().unwrap().join("blue.old");
    std::fs::rename(&slot, &moved).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&moved)
        .arg(&slot)
        .status()
        .unwrap();
    assert!(copied.success());
    let flip = |to: &str| {
        std::os::unix::fs::symlink(format!("releases/{to}"), slot.join("current.hand")).unwrap();
        std::fs::rename(slot.join("current.hand"), slot.join("current")).unwrap();
    };
    // The first flip may be seen by chance: what `cp` did in the moved folder, still
    // watched, makes a reload due a moment later. The second comes after it.
    let [v1, v2] = <[String; 2]>::try_from(root.releases("blue")).unwrap();
    flip(&v1);
    root.wait_body(root.blue, "v1 from blue");
    flip(&v2);
    root.wait_body(root.blue, "v2 from blue");
}

/// The unit's sandbox lets a worker list the host's network interfaces: node's
/// `os.networkInterfaces()` (which nodemailer, among others, calls when it is loaded)
/// and glibc's getifaddrs(3) open an AF_NETLINK socket, and the unit allowed only
/// AF_UNIX, AF_INET and AF_INET6, so such an app died at its start under systemd with
/// `uv_interface_addresses returned Unknown system error 97` and worked everywhere else.
#[test]
fn the_units_sandbox_lets_workers_list_network_interfaces() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/bluegreen.service"),
    )
    .unwrap();
    let families: Vec<&str> = unit
        .lines()
        .filter_map(|line| line.strip_prefix("RestrictAddressFamilies="))
        .flat_map(str::split_whitespace)
        .collect();
    for family in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"] {
        assert!(families.contains(&family), "{family} in {families:?}");
    }
}

/// A changed `branch` reloaded by SIGHUP is the one a slot never pushed names in its
/// 503: it went on saying `git push blue HEAD:main` after `branch = "prod"`, a push the
/// hook then refused as not the deploy branch.
#[test]
fn a_branch_reloaded_by_sighup_is_the_one_a_slot_never_pushed_names() {
    let mut root = Root::new();
    root.serve();
    let answer = root.get(root.blue, "/");
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.contains("git push blue HEAD:main"),
        "{}",
        answer.body
    );
    // A branch a shell would read otherwise is quoted, here and wherever a hint names it.
    root.set("branch", "prod;$(id)");
    root.reload_config();
    for (slot, port) in [("blue", root.blue), ("green", root.green)] {
        let answer = root.get(port, "/");
        assert_eq!(answer.status, 503);
        let says = format!("{slot} has no release yet: git push {slot} 'HEAD:prod;$(id)'");
        assert!(answer.body.contains(&says), "{}", answer.body);
    }
    let status = root.run_ok(&["status"]);
    assert!(
        status.contains("no release yet (`git push green 'HEAD:prod;$(id)'` deploys one)"),
        "{status}"
    );
    for (args, reason) in [
        (&["rollback", "green"][..], "error: green has no current release: nothing to roll back (deploy one first: `git push green 'HEAD:prod;$(id)'`)"),
        (&["promote", "green", "blue"][..], "error: green has no current release: nothing to promote (deploy one first: `git push green 'HEAD:prod;$(id)'`)"),
    ] {
        assert_eq!(root.run_err(args).trim(), reason);
    }
}

/// What systemd tells the daemon about the sockets it passed is not passed on to
/// workers: `LISTEN_FDNAMES` (which systemd sets for every socket unit) reached every
/// worker, beside the `LISTEN_PID` and `LISTEN_FDS` that were removed, telling an app
/// that uses socket activation itself of sockets it does not have.
#[test]
fn workers_are_not_told_of_the_sockets_systemd_passed() {
    use std::os::fd::AsFd;
    let mut root = Root::new();
    let sockets = root.sockets();
    let fds: Vec<_> = sockets.iter().map(|s| s.as_fd()).collect();
    let names = "bluegreen.socket:bluegreen.socket:bluegreen.socket:bluegreen.socket";
    root.serve_activated_with(&[("LISTEN_FDNAMES", names)], &fds);
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    let environ = std::fs::read(format!("/proc/{}/environ", root.live_pid("blue"))).unwrap();
    let told: Vec<String> = environ
        .split(|&b| b == 0)
        .map(|var| String::from_utf8_lossy(var).into_owned())
        .filter(|var| var.starts_with("LISTEN_"))
        .collect();
    assert_eq!(told, Vec::<String>::new());
}

/// A listen address moved in the file, under socket activation: the restart that applies
/// it takes its sockets from the unit, and refuses one the config no longer names. The
/// reload and the status note say to change the unit first, not only to restart.
#[test]
fn a_listen_address_systemd_passes_moved_by_a_sighup_names_the_socket_unit() {
    use std::os::fd::AsFd;
    let mut root = Root::new();
    let sockets = root.sockets();
    let fds: Vec<_> = sockets.iter().map(|s| s.as_fd()).collect();
    root.serve_activated(&fds);
    let old = format!("127.0.0.1:{}", root.blue);
    root.set("slots.blue.listen", format!("127.0.0.1:{}", free_port()));
    root.reload_config();
    let unit_first = format!(
        "systemd passes the listening socket on {old} (slots.blue.listen): change the socket unit's ListenStream= to match first (`systemctl edit bluegreen.socket`, then `systemctl restart bluegreen.socket bluegreen`), or the restarted daemon refuses to start"
    );
    root.wait_log(&format!(
        "(slots.blue.listen takes effect on restart; {unit_first})"
    ));
    let note = root.stale_note();
    assert_eq!(
        note,
        format!("bluegreen.toml's slots.blue.listen changed, which only a restart of the daemon applies; {unit_first}")
    );
}

/// The template unit for several apps on one host (`bluegreen@api` serves /srv/api as
/// api) is the single unit with the root and the user made the instance's, so the
/// hardening, the timeouts and the notify protocol hold for every instance alike.
#[test]
fn the_template_unit_is_the_single_unit_for_each_instance() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let body = |name: &str| {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        text[text.find("\n[Unit]\n").expect("a [Unit] section")..].to_string()
    };
    let single = body("bluegreen.service");
    let template = body("bluegreen@.service");
    assert_eq!(
        template
            .replace("/srv/%i", "/srv/app")
            .replace("=%i", "=app"),
        single
    );
    for line in [
        "ExecStart=/usr/local/bin/bluegreen serve --root /srv/%i",
        "User=%i",
        "ReadWritePaths=/srv/%i",
    ] {
        assert!(template.lines().any(|l| l == line), "{line}");
    }
    // Each instance's addresses are its own config's, given in a drop-in.
    let socket = body("bluegreen@.socket");
    assert!(!socket.contains("ListenStream="), "{socket}");
    assert!(body("bluegreen.socket").contains("ListenStream=0.0.0.0:8080"));
}
