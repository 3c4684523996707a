//! The standby's data: mirroring of writes to it, and the migration step on switch.
//!
//! The helpers here are shared by more than one of the files below.

mod copies;
mod migrate;
mod switch;

use std::time::Duration;

use crate::util::*;

/// Waits for green's item list to show `text` (a mirrored copy arrived).
fn green_gets(root: &Root, text: &str) {
    wait_for(Duration::from_secs(5), "the mirrored copy on green", || {
        root.get(root.green, "/items")
            .body
            .contains(text)
            .then_some(())
    });
}

/// Sets `switch.migrate` and waits for the running daemon to take it (its `nth` reload).
fn set_migrate(root: &Root, command: &str, nth: usize) {
    root.set("switch.migrate", command);
    root.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(5), "the config reload", || {
        let events = root.control("GET", "/events").body;
        (events.matches("config reloaded").count() == nth).then_some(())
    });
}

/// `answer` refuses the switch to green with `reason`: blue is still active, and the
/// front still serves it.
fn refused_to_green(root: &Root, answer: &Answer, reason: &str) {
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(answer.body.contains(reason), "{}", answer.body);
    assert_eq!(root.status()["active"], "blue");
    assert!(root.get(root.front, "/").body.contains("v1 from blue"));
}

/// A served root with v1 live on both slots (blue active, mirroring on), green taking
/// `slow_ms` to answer every request, and these config keys set. The heartbeat waits
/// 10 s for an answer (unless `settings` says otherwise): green's slow answers to its
/// probes are no failures.
fn slow_green(slow_ms: &str, settings: &[(&str, toml::Value)]) -> Root {
    let mut root = Root::new();
    root.set("slots.green.env", env_map(&[("SLOW_MS", slow_ms)]));
    root.set("heartbeat.timeout", "10s");
    for (key, value) in settings {
        root.set(key, value.clone());
    }
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    root
}

/// `PUT <path>` with `body` through the front, which the active takes (a 2xx): its status.
fn put(root: &Root, path: &str, body: &str) -> u16 {
    let answer = http("PUT", &root.url(root.front, path), Some(body)).unwrap();
    assert!(answer.status < 300, "PUT {path}: {answer:?}");
    answer.status
}
