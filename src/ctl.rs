//! The commands that talk to a running daemon: `status`, `switch`, `mirroring`.
//!
//! Each prints what came back for a person (or the JSON, for `status --json`) and
//! exits non-zero with the daemon's one-line reason when it said no.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::layout::Layout;
use crate::release::Release;
use crate::slot::Slot;

pub fn status(
    config: &Config,
    layout: &Layout,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let reply = Client::new(config, layout).get("/status")?;
    // Checked for both outputs: what else may listen on `control.listen` (a web server's
    // page) must not reach a script as the daemon's JSON with exit 0.
    let status = reply.json()?;
    if json {
        write!(out, "{}", reply.body)?;
        return Ok(reply.ok());
    }
    let active = status["active"].as_str().unwrap_or("none");
    let mirroring = if status["mirroring"]["enabled"].as_bool() == Some(true) {
        "on"
    } else {
        "off"
    };
    // Off after the heartbeat's own switch, until an operator switches: say so, since
    // until then a failing active slot stays active. The way back on names the active
    // slot: a bare `bluegreen switch` goes to the standby, the slot that failed, and is
    // refused while it still fails.
    let failover = if status["heartbeat"]["armed"].as_bool() == Some(false) {
        format!("off (after the heartbeat's switch; `bluegreen switch {active}` turns it on)")
    } else {
        "on".to_string()
    };
    writeln!(
        out,
        "active: {active}   front: {}   mirroring: {mirroring}   failover: {failover}",
        text(&status["front"])
    )?;
    // Which daemon answers, since when, and the last switch: what changed last, when.
    let last_switch = match &status["last_switch"] {
        serde_json::Value::Null => "none".to_string(),
        last => format!(
            "{} {} -> {} ({})",
            text(&last["at"]),
            text(&last["from"]),
            text(&last["to"]),
            text(&last["cause"])
        ),
    };
    let underway = &status["switching"];
    if !underway.is_null() {
        writeln!(
            out,
            "switching: to {} ({}) for {}s: {}",
            text(&underway["to"]),
            text(&underway["cause"]),
            underway["for_s"],
            text(&underway["step"])
        )?;
    }
    if let Some(note) = status["stale_config"].as_str() {
        writeln!(out, "note: {note}")?;
    }
    let mut noted = [false; 2];
    for slot in Slot::ALL {
        // The live release gone says why the branch's commit has no release as well.
        // Read once for both notes; unreadable, neither is told.
        let releases = crate::release::list(layout, slot).ok();
        if let Some(note) = live_gone(layout, &status, slot)
            .or_else(|| unreadable(slot, releases.as_deref()?))
            .or_else(|| undeployed(config, layout, slot, releases.as_deref()?))
        {
            writeln!(out, "note: {note}")?;
            noted[slot.index()] = true;
        }
    }
    for slot in Slot::ALL {
        let Some(current) = crate::release::current(layout, slot) else {
            continue;
        };
        for gone in crate::release::missing_shared(layout, slot, &current, &config.app.linked_dirs)
        {
            writeln!(
                out,
                "note: {} is gone (removed by hand?): {slot}'s linked dir, which release {current} links to; the app's writes there fail until `bluegreen init {}` makes it again, empty (so does the next start of {slot})",
                gone.display(),
                crate::pasted::path(layout.root())
            )?;
        }
    }
    // Told at the daemon's start too, but a hook may dangle since (its binary removed
    // after an upgrade), or a slot repo be made a link since: the push moves the branch
    // and deploys nothing, or deploys elsewhere, and says nothing of it.
    for slot in Slot::ALL {
        if let Some(problem) = crate::slot_repo::problem(layout, slot) {
            writeln!(out, "note: {problem}")?;
        }
    }
    for slot in Slot::ALL {
        if let Some(note) = status["slots"][slot.name()]["live"]["started_before"].as_str() {
            writeln!(out, "note: {note}")?;
        }
    }
    writeln!(
        out,
        "daemon: bluegreen {} since {}   last switch: {last_switch}",
        text(&status["version"]),
        text(&status["started"])
    )?;
    for slot in Slot::ALL {
        let s = &status["slots"][slot.name()];
        let mark = if active == slot.name() { "*" } else { " " };
        let live = &s["live"];
        let last_error = s["last_error"].as_str().filter(|e| !e.is_empty());
        if live.is_null() && s["current"].is_null() && last_error.is_none() {
            writeln!(
                out,
                "{mark} {slot:<5} {:<21} no release yet ({})",
                text(&s["listen"]),
                match noted[slot.index()] {
                    // Its branch's commit, which a push of the same would not deploy.
                    true => "see the note above".to_string(),
                    false => format!(
                        "`git push {slot} {}` deploys one",
                        crate::pasted::refspec(&config.branch)
                    ),
                },
            )?;
        } else if live.is_null() {
            writeln!(
                out,
                "{mark} {slot:<5} {:<21} {}  current {}  restarts {}",
                text(&s["listen"]),
                text(&s["health"]),
                text(&s["current"]),
                s["restarts"],
            )?;
        } else {
            writeln!(
                out,
                "{mark} {slot:<5} {:<21} {}  release {}  commit {}  generation {}  pid {}  port {}  up {}  in-flight {}{}  restarts {}",
                text(&s["listen"]),
                text(&s["health"]),
                text(&live["release"]),
                text(&live["commit"]),
                live["generation"],
                live["pid"],
                live["port"],
                humantime::format_duration(Duration::from_secs(live["uptime_s"].as_u64().unwrap_or(0))),
                live["in_flight"],
                tunnels(live),
                s["restarts"],
            )?;
        }
        let next = &s["starting"];
        if !next.is_null() {
            writeln!(
                out,
                "        starting: generation {}  release {}  for {}s",
                next["generation"],
                text(&next["release"]),
                next["for_s"],
            )?;
        }
        for old in s["draining"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "        draining: generation {}  release {}  pid {}  in-flight {}{}",
                old["generation"],
                text(&old["release"]),
                old["pid"],
                old["in_flight"],
                tunnels(old),
            )?;
        }
        if let Some(error) = last_error {
            writeln!(out, "        last error: {error}")?;
        }
    }
    let counters = &status["mirroring"]["counters"];
    if let Some(map) = counters.as_object() {
        let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(out, "mirror: {}", parts.join(", "))?;
    }
    if let Some(events) = status["events"].as_array() {
        writeln!(
            out,
            "recent events:{}",
            if events.is_empty() { " none" } else { "" }
        )?;
        for event in events.iter().rev().take(5).rev() {
            writeln!(out, "  {} {}", text(&event["at"]), text(&event["message"]))?;
        }
    }
    Ok(true)
}

/// The release `slot`'s live generation runs, gone from its releases folder (removed by
/// hand): the generation runs on, healthy, but a crash or a restart of the daemon finds
/// nothing to start.
fn live_gone(layout: &Layout, status: &Value, slot: Slot) -> Option<String> {
    let release = status["slots"][slot.name()]["live"]["release"].as_str()?;
    if crate::release::exists(layout, slot, release) {
        return None;
    }
    Some(format!(
        "{slot}'s live release {} is gone from {} (removed by hand?): its generation runs on, but a crash or a restart of the daemon has nothing to start; a push, or `bluegreen rollback {slot} --to <release>` (`bluegreen releases` lists them), deploys one again",
        crate::logging::printable(release),
        layout.releases_dir(slot).display()
    ))
}

/// A release of `slot` whose metadata cannot be read (emptied, edited by hand): which
/// commit it holds is not known, so [`undeployed`] cannot tell whether the branch's
/// commit has a release, and `releases`, `rollback` and `promote` see it without one.
fn unreadable(slot: Slot, releases: &[Release]) -> Option<String> {
    let release = releases.iter().rev().find(|r| r.meta.is_none())?;
    Some(format!(
        "{slot}'s release {} has a {} that bluegreen cannot read (emptied or edited by hand?): which commit it holds is not known; a push of a new commit deploys a release that has one",
        release.id,
        crate::release::META
    ))
}

/// A commit the deploy branch holds that no release of `slot` has, pushed after its
/// newest release was made, and no push is building: pushed while the hook could not run
/// (its binary gone), or whose build failed (a commit made before the release that went
/// live, pushed after it, included). A push of the same commit deploys nothing (git has
/// it already), so `status`, whose "push one" would not help, says what does. (A branch
/// that moved before the newest release was made is a pruned release's, or a promote's
/// slot: not told.)
fn undeployed(
    config: &Config,
    layout: &Layout,
    slot: Slot,
    releases: &[Release],
) -> Option<String> {
    let (tip, pushed) = crate::git::tip_in(&layout.repo(slot), &config.branch)?;
    // A repo linked elsewhere, or a hook that dangles, is told below: a new commit's
    // push would deploy nothing either.
    if crate::release::push_under_way(layout, slot)
        || crate::slot_repo::problem(layout, slot).is_some()
    {
        return None;
    }
    let tip_text = tip.to_string();
    let newest = releases
        .iter()
        .filter_map(|r| r.meta.as_ref())
        .filter_map(|m| humantime::parse_rfc3339(&m.created).ok())
        .max();
    let after_newest = newest.is_none_or(|newest| {
        newest
            .duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|at| pushed >= at.as_secs() as i64)
    });
    if !after_newest
        || releases
            .iter()
            .any(|r| r.meta.as_ref().is_some_and(|m| m.commit == tip_text))
    {
        return None;
    }
    Some(format!(
        "{slot}.git's {} is at {}, which no release of {slot} has (its push's hook did not run, or its build failed: the push said which): a push of a new commit deploys it (`git commit --allow-empty -m redeploy && git push {slot} {}`)",
        crate::pasted::quoted(&config.branch),
        crate::git::short(tip),
        crate::pasted::refspec(&config.branch)
    ))
}

pub fn switch(
    config: &Config,
    layout: &Layout,
    to: Option<Slot>,
    force: bool,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let mut query = Vec::new();
    if let Some(to) = to {
        query.push(format!("to={to}"));
    }
    if force {
        query.push("force=1".to_string());
    }
    // A switch takes up to: the gate's health check, 5 s for queued mirrored copies, the
    // stop of a migration given up before (twice stop_timeout), the migration; and it may
    // queue behind another switch. Past that, it may still land.
    let wait = 2
        * (config.heartbeat.timeout + 2 * config.app.stop_timeout + config.switch.migrate_timeout)
        + Duration::from_secs(20);
    let client = Client::new(config, layout);
    // A `[switch]` or `[heartbeat]` edited without a SIGHUP does not run: say so first,
    // as a push does (what the daemon does not answer here, the switch itself tells).
    // What answers there is no daemon of this root: the switch is not sent to it (another
    // root's front would take it for its own).
    let looked = client.get_within("/status", Duration::from_secs(2));
    if let Err(e @ (ClientError::Stranger { .. } | ClientError::OtherRoot { .. })) = looked {
        return Err(e.into());
    }
    if let Some(note) = looked
        .ok()
        .and_then(|reply| reply.json().ok())
        .and_then(|status| status["stale_config"].as_str().map(str::to_string))
    {
        crate::stderr::line(&format!("note: {note}"));
    }
    let reply =
        match client.post(&format!("/switch?{}", query.join("&")), wait) {
            Err(e @ ClientError::NoAnswer { .. }) => anyhow::bail!(
                "{e}: the switch may still be under way; `bluegreen status` shows the active slot"
            ),
            // Asked, and the connection broke (a daemon killed meanwhile): either way.
            Err(e @ ClientError::Failed { .. }) => anyhow::bail!(
                "{e}: the switch may or may not have happened; `bluegreen status` shows the active slot"
            ),
            reply => reply?,
        };
    if !reply.ok() {
        // A refusal is an error: stderr, as `error:` lines are.
        crate::stderr::line(&format!("not switched: {}", reply.reason()));
        return Ok(false);
    }
    let done = reply.json()?;
    if done["changed"].as_bool() == Some(false) {
        // Asking for the slot the heartbeat moved traffic to agrees with it.
        let rearmed = if done["rearmed"] == true {
            "; automatic switching is on again"
        } else {
            ""
        };
        writeln!(out, "{} is already active{rearmed}", text(&done["to"]))?;
    } else {
        let migrate = done["migrate_ms"].as_u64().unwrap_or(0);
        writeln!(
            out,
            "switched {} -> {}{}",
            done["from"].as_str().unwrap_or("none"),
            text(&done["to"]),
            if migrate > 0 {
                format!(" (migration {:.1}s)", migrate as f64 / 1000.0)
            } else {
                String::new()
            }
        )?;
    }
    Ok(true)
}

pub fn mirroring(
    config: &Config,
    layout: &Layout,
    state: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let client = Client::new(config, layout);
    let reply = match state {
        None => client.get("/mirroring")?,
        Some(state) => client
            .post(
                &format!("/mirroring?enabled={}", state == "on"),
                Duration::from_secs(10),
            )
            .map_err(|e| match e {
                // Sent, and not answered: a stuck daemon may yet take it.
                e @ ClientError::NoAnswer { .. } => anyhow::anyhow!(
                    "{e}: mirroring {state} may or may not be taken (`bluegreen mirroring` tells once the daemon answers)"
                ),
                e => e.into(),
            })?,
    };
    if !reply.ok() {
        anyhow::bail!("{}", reply.reason());
    }
    let on = reply.json()?["enabled"].as_bool() == Some(true);
    writeln!(out, "mirroring {}", if on { "on" } else { "off" })?;
    Ok(true)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `  tunnels N` for a generation with tunnels open, nothing for one without (or from a
/// daemon that does not count them).
fn tunnels(generation: &Value) -> String {
    match generation["tunnels"].as_u64() {
        Some(n) if n > 0 => format!("  tunnels {n}"),
        _ => String::new(),
    }
}
