//! SIGHUP: the config re-read, a bad one refused with the daemon running on; what a push
//! says when the daemon runs another config than the file.

use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;
use crate::util::*;

/// Listen addresses moved in the file onto ports another process holds (here another
/// root's daemon): the SIGHUP said only "take effect on restart", and that restart then
/// stopped with every port of the root dark; a push told the other daemon's refusal as
/// if none served this root ("starts when this root's daemon does"), while this one's
/// file watch started the release at once.
#[test]
fn listen_addresses_moved_onto_taken_ports_are_told_at_the_reload_and_the_push() {
    let root = blue_live();
    let other = blue_live();
    root.set("router.listen", format!("127.0.0.1:{}", other.front));
    root.set("control.listen", format!("127.0.0.1:{}", other.control));
    root.reload_config();
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains(&format!(
            "(router.listen, control.listen take effect on restart; another process listens on 127.0.0.1:{} (router.listen), 127.0.0.1:{} (control.listen) now, where a restarted daemon would stop",
            other.front, other.control
        )),
        "{events}"
    );
    root.commit("v2", &[("VERSION", "v2\n")]);
    let pushed = root.push("blue");
    let last = pushed.remote_lines().pop().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "blue: no verdict: control API at 127.0.0.1:{}: this daemon serves {}, another root",
            other.control,
            other.path.display()
        )) && last.contains("yet a daemon serves this root"),
        "{}",
        pushed.text
    );
    root.wait_body(root.blue, "v2 from blue");
}

#[test]
fn a_push_after_control_listen_moved_does_not_say_no_daemon_runs() {
    let root = blue_live();
    // Moved in the file and reloaded: the daemon keeps listening where it did.
    root.set("control.listen", format!("127.0.0.1:{}", free_port()));
    root.reload_config();
    root.commit("v2", &[("VERSION", "v2\n")]);
    let pushed = root.push("blue");
    let last = pushed.remote_lines().pop().unwrap_or_default();
    assert!(
        last.starts_with("blue: no verdict: nothing answers on 127.0.0.1:")
            && last.contains("yet a daemon serves this root"),
        "{}",
        pushed.text
    );
    // Its file watch starts the release at once, not on the next `serve`.
    root.wait_body(root.blue, "v2 from blue");
    // The commands that ask the daemon do not tell to start one (which would be refused:
    // this one holds the root), but to restart it.
    let stderr = root.run_err(&["status"]);
    assert!(
        stderr.starts_with("error: daemon not answering: nothing answers on 127.0.0.1:")
            && stderr.contains("yet a `bluegreen serve` holds this root")
            && stderr.contains("restart it"),
        "{stderr}"
    );
}

/// A burst of SIGHUPs is taken as a few reloads, and a SIGTERM after it ahead of any
/// still queued: each SIGHUP was a reload of its own (100 ms at least), and the SIGTERM
/// waited behind them all (600 of them outlast systemd's stop timeout).
#[test]
fn a_burst_of_sighups_is_a_few_reloads_and_holds_no_stop_behind_it() {
    let mut root = blue_live();
    // One every 5 ms, as a script's loop of `kill -HUP` sends them: each reaches the
    // daemon on its own (sent at once, the kernel would merge them into one).
    for _ in 0..60 {
        root.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(5));
    }
    root.stop_cleanly(Duration::from_secs(20));
    let reloads = root.log().matches("config reloaded from").count();
    assert!(
        (1..20).contains(&reloads),
        "{reloads} reloads:\n{}",
        root.log()
    );
}

/// A file that lost tables the running config sets (written in pieces further apart
/// than the double read's 100 ms, and signalled between them) is refused: taken, every
/// key after the cut was defaulted, `app.command` and `switch.migrate` among them. A
/// table kept as a bare header takes its defaults, as asked.
#[test]
fn sighup_with_a_file_cut_before_tables_it_set_changes_nothing() {
    let root = blue_live();
    let file = root.path.join("bluegreen.toml");
    root.set("switch.migrate", "true");
    root.signal(Signal::SIGHUP);
    root.wait_log("config reloaded from");
    let mut table: toml::Table = fs::read_to_string(&file).unwrap().parse().unwrap();
    let full = table.clone();
    for cut in ["app", "switch"] {
        table.remove(cut);
    }
    fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log(&format!(
        "config reload refused, keeping the running config: {} has no [app], [switch] now, which the running config sets apart from the defaults (cut short, or still being written?): not taken; a table meant to take its defaults again keeps its header with no keys (`[app]`)",
        file.display()
    ));
    assert_eq!(
        root.status()["app"]["command"].as_str(),
        full["app"]["command"].as_str()
    );
    // `[switch]` kept as a bare header: its defaults, asked for.
    let mut asked = full.clone();
    asked.insert("switch".into(), toml::Value::Table(toml::Table::new()));
    fs::write(&file, toml::to_string(&asked).unwrap()).unwrap();
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload", || {
        (root.log().matches("config reloaded from").count() == 2).then_some(())
    });
    // The daemon runs what the file says now: no note of a difference.
    assert_eq!(root.status()["stale_config"], serde_json::Value::Null);
    // Cut between the slots' tables: green's env would have gone back to none.
    root.set("slots.green.env", env_map(&[("REDIS_PORT", "7777")]));
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload", || {
        (root.log().matches("config reloaded from").count() == 3).then_some(())
    });
    let mut table: toml::Table = fs::read_to_string(&file).unwrap().parse().unwrap();
    table["slots"].as_table_mut().unwrap().remove("green");
    fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log(&format!(
        "config reload refused, keeping the running config: {} has no [slots.green] now",
        file.display()
    ));
    // Cut before `[slots]`: that says all, not each slot's table again.
    table.remove("slots");
    fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log(&format!(
        "config reload refused, keeping the running config: {} has no [slots] now,",
        file.display()
    ));
}

#[test]
fn sighup_with_a_broken_config_keeps_running() {
    let root = blue_live();
    let file = root.path.join("bluegreen.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{good}\nbogus = 1\n")).unwrap();
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the refusal event", || {
        root.control("GET", "/events")
            .body
            .contains("config reload refused, keeping the running config")
            .then_some(())
    });
    root.wait_log("unknown field `bogus`");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    // An empty file (an editor's empty buffer saved, a file caught while rewritten in
    // place) is refused too: taken, every key was defaulted, app.command included.
    std::fs::write(&file, "").unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log("bluegreen.toml:1: sets nothing (the file is empty, or only comments)");
    // A FIFO, whose reading waits for a writer (the control API and the daemon's stop
    // waited with it), and a file that never ends (its reading took gigabytes): refused
    // unread, and the daemon answers on.
    std::fs::remove_file(&file).unwrap();
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log("bluegreen.toml: it is a FIFO, not a regular file");
    assert_eq!(root.status()["slots"]["blue"]["health"], "healthy");
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log("bluegreen.toml: it is a device, not a regular file");
    let out = root.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: cannot read {}: it is a device, not a regular file\n",
            file.display()
        )
    );
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, format!("{good}\n{}", "# padding\n".repeat(120_000))).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log("bluegreen.toml: it is larger than 1048576 bytes");
    assert_eq!(root.status()["slots"]["blue"]["health"], "healthy");
    std::fs::write(&file, &good).unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    // A token file that cannot be read is refused too (as `check` and `serve` refuse
    // it), not taken as no token.
    std::fs::write(&file, &good).unwrap();
    let missing = root.path.join("no-such-token");
    root.set("router.token_file", missing.to_str().unwrap());
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the token file's refusal", || {
        root.control("GET", "/events")
            .body
            .contains(&format!(
                "router.token_file: cannot read {}",
                missing.display()
            ))
            .then_some(())
    });
    // A good config is taken, by the data path too: the front's switch path moves.
    let before = root.get(root.front, "/flip");
    assert!(before.body.contains("no route /flip"), "{}", before.body);
    std::fs::write(&file, good).unwrap();
    root.set("router.switch_path", "/flip");
    // A listen address changes only on restart; /status keeps showing the one served.
    root.set("slots.green.listen", format!("127.0.0.1:{}", free_port()));
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload event", || {
        root.control("GET", "/events")
            .body
            .contains("(slots.green.listen takes effect on restart)")
            .then_some(())
    });
    let flip = root.get(root.front, "/flip");
    assert_eq!(flip.status, 409, "{}", flip.body);
    assert!(flip.body.contains("green"), "{}", flip.body);
    assert_eq!(
        root.status()["slots"]["green"]["listen"],
        format!("127.0.0.1:{}", root.green)
    );
}

/// A drain timeout raised by SIGHUP holds for the daemon's own stop: a request longer
/// than the old one is answered. The proxy threads cut their connections after the
/// drain timeout the daemon started with.
#[test]
fn a_drain_timeout_raised_by_sighup_lets_a_slow_request_finish_at_the_stop() {
    let mut root = Root::new();
    root.set("app.drain_timeout", "1s");
    root.set("heartbeat.timeout", "10s");
    root.serve();
    root.commit("slow v1", &[("VERSION", "v1\n"), ("SLOW_MS", "3000")]);
    root.push("blue").says("blue: live in ");
    root.set("app.drain_timeout", "10s");
    root.reload_config();
    let url = root.url(root.blue, "/");
    std::thread::scope(|s| {
        let slow = s.spawn(|| http("GET", &url, None));
        wait_for_one_in_flight(&root);
        root.signal(Signal::SIGTERM);
        // A second Ctrl-C while it drains is told, not met with silence; the drain goes on.
        root.wait_log("stopping: draining every generation");
        root.signal(Signal::SIGINT);
        root.wait_log("SIGINT ignored: the daemon is stopping already (it drains requests in flight, up to app.drain_timeout 10s, then stops the workers)");
        let answer = slow.join().unwrap().expect("the slow request is answered");
        assert_eq!(answer.status, 200);
        assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);
    });
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
}

/// The daemon refused the last SIGHUP (its token file cannot be read, which the hook's
/// own reading of the file does not see): the push's note says so and why, not that a
/// `kill -HUP` applies the changes, which would be refused again.
#[test]
fn a_push_after_a_refused_sighup_says_why_the_daemon_runs_the_old_config() {
    let root = blue_live();
    let file = root.path.join("bluegreen.toml");
    let running = std::fs::read_to_string(&file).unwrap();
    root.set("app.drain_timeout", "7s");
    let missing = root.path.join("no-such-token");
    root.set("router.token_file", missing.to_str().unwrap());
    root.signal(Signal::SIGHUP);
    root.wait_log("config reload refused, keeping the running config");
    root.commit("v2", &[("VERSION", "v2\n")]);
    let push = root.push("blue");
    push.says("blue: note: the daemon refused its last reload of bluegreen.toml and runs with what it read before (");
    push.says(&format!(
        "router.token_file: cannot read {}",
        missing.display()
    ));
    push.says("bluegreen.toml's [app], [router] changed since the daemon read it, and it runs with what it read");
    push.never_says("applies it");
    push.says("blue: live in ");
    // The token file made: the next SIGHUP takes the file, and the note says so, with no
    // word of the refusal, which is past.
    std::fs::write(&missing, "s3cret\n").unwrap();
    root.commit("v2b", &[("VERSION", "v2b\n")]);
    let push = root.push("blue");
    push.says("blue: note: bluegreen.toml's [app], [router] changed since the daemon read it, and it runs with what it read: `kill -HUP ");
    push.never_says("refused");
    push.says("blue: live in ");
    // The file put back as the daemon runs it: nothing to tell.
    std::fs::write(&file, running).unwrap();
    root.commit("v3", &[("VERSION", "v3\n")]);
    let push = root.push("blue");
    push.says("blue: live in ");
    push.never_says("note:");
}

#[test]
fn a_push_after_the_config_changed_without_a_sighup_says_the_daemon_runs_the_old_one() {
    // The new command is not what starts: the pusher is told so, and how to apply it.
    let root = blue_live();
    root.set("app.health_path", "/items");
    root.commit("v2", &[("VERSION", "v2\n")]);
    let push = root.push("blue");
    push.says("blue: note: bluegreen.toml's [app] changed since the daemon read it, and it runs with what it read: `kill -HUP ");
    push.says("` (what `systemctl reload` of its unit does) applies it");
    push.says("blue: live in ");
    // A listen address only a restart applies is told as such.
    root.set("slots.green.listen", format!("127.0.0.1:{}", free_port()));
    std::fs::write(root.path.join("token"), "s3cret\n").unwrap();
    root.set("router.token_file", "token");
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the SIGHUP's config", || {
        root.control("GET", "/events")
            .body
            .contains("config reloaded")
            .then_some(())
    });
    root.commit("v3", &[("VERSION", "v3\n")]);
    let push = root.push("blue");
    push.says("blue: note: bluegreen.toml's slots.green.listen changed, which only a restart of the daemon applies");
    assert!(!push.text.contains("[app]"), "{}", push.text);
    // What the hook applies itself (linked dirs), and a line added above token_file,
    // are no change of the daemon's.
    root.set("app.linked_dirs", toml::Value::Array(vec!["data".into()]));
    let config = root.path.join("bluegreen.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("# a comment\n{text}")).unwrap();
    root.commit("v4", &[("VERSION", "v4\n")]);
    let push = root.push("blue");
    push.says("blue: live in ");
    assert!(
        !push.text.contains("[app]") && !push.text.contains("[router]"),
        "{}",
        push.text
    );
    // A token rotated in its file is read at a SIGHUP only: told until one comes.
    std::fs::write(root.path.join("token"), "n3w\n").unwrap();
    let note = root.stale_note();
    assert!(
        note.contains(&format!(
            "the token in {} changed since the daemon read it, and it runs with what it read: `kill -HUP ",
            root.path.join("token").display()
        )),
        "{note}"
    );
    assert!(!note.contains("n3w") && !note.contains("s3cret"), "{note}");
    // The token file gone: the next SIGHUP would be refused, which is said before it.
    std::fs::remove_file(root.path.join("token")).unwrap();
    let note = root.stale_note();
    assert!(
        note.starts_with("a reload would refuse bluegreen.toml as it is now (")
            && note.contains("router.token_file: cannot read ")
            && !note.contains("applies it"),
        "{note}"
    );
    std::fs::write(root.path.join("token"), "n3w\n").unwrap();
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the token taken", || {
        let note = root.stale_note();
        (!note.contains("the token")).then_some(())
    });
}
