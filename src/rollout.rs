//! The release commands run without a push: `releases`, `rollback`, `promote` and
//! `restart`.
//!
//! `rollback` and `promote` hold the slot lock like the hook's release step does, flip
//! `current` atomically, and ask a running daemon to reload the slot (its file watch
//! would notice anyway); a push building meanwhile is not waited for: it lands after,
//! and is named. `releases` only reads, and `restart` asks the daemon to start the
//! slot's current release again without moving anything.

use std::io::Write;

use anyhow::Context;

use crate::config::Config;
use crate::layout::Layout;
use crate::release::{self, ReleaseMeta};
use crate::slot::Slot;
use crate::state::State;
use crate::verdict;

/// Prints the releases of `slots`: time, commit, build key, and which is current.
pub fn list(layout: &Layout, slots: &[Slot], out: &mut dyn Write) -> anyhow::Result<()> {
    // A slot folder removed by hand: named (else listed as a slot with no release), and
    // the other slot listed all the same.
    let mut missing = Vec::new();
    // The daemon's record of the start it refused last: a current release that served
    // once (a `restart` or `rollback --to` that failed) is not live either.
    let state = State::load(&layout.state_file()).ok();
    for &slot in slots {
        if let Err(e) = release::slot_folder(layout, slot) {
            missing.push(format!("{e:#}"));
            continue;
        }
        let current = release::current(layout, slot);
        let releases = release::list(layout, slot)?;
        let any_live = releases.iter().any(|r| r.went_live);
        let marked = release::marked(&releases);
        if releases.is_empty() {
            writeln!(out, "{slot}: no releases")?;
        }
        for r in releases.iter().rev() {
            let mark = if Some(&r.id) == current.as_ref() {
                "*"
            } else {
                " "
            };
            let (created, key, summary) = r
                .meta
                .as_ref()
                .map(|m| (m.created.as_str(), m.build_key.as_str(), m.summary.as_str()))
                .unwrap_or(("?", "?", "(its .bluegreen-release.json cannot be read)"));
            // What `rollback` passes over: a release a killed deploy left behind, one a
            // rollback went back from, and (once the daemon serves the slot) one that
            // did not go live.
            let is_current = mark == "*";
            let refused = |state: &State| failed_last_start(state, slot, &r.id);
            let never = if is_current && state.as_ref().is_some_and(refused) {
                "  (not live)"
            } else if !marked || r.before_marks {
                ""
            } else if !r.was_current && !r.went_live && !is_current {
                // One that went live was current then, whatever `current` names now.
                "  (never current)"
            } else if r.rolled_back && !is_current {
                "  (rolled back)"
            } else if !any_live || r.went_live {
                ""
            } else if is_current {
                "  (not live)"
            } else {
                "  (never went live)"
            };
            writeln!(
                out,
                "{mark} {slot:<5} {:<32} {created}  {}  build {key}  {summary}{never}",
                r.id,
                r.commit_short()
            )?;
        }
        for name in release::leftovers(layout, slot) {
            writeln!(
                out,
                "{slot}: note: releases/{} is what a stopped deploy, rollback or promote left (a copy, or a release being pruned); the next deploy to {slot} removes it",
                crate::logging::printable(&name)
            )?;
        }
    }
    match missing.is_empty() {
        true => Ok(()),
        false => anyhow::bail!("{}", missing.join("; ")),
    }
}

/// Points `slot` at `to`, or else at what the daemon still serves when `current` never
/// went live (a push that failed to start), or else at the release before the current
/// one ([`release::previous`]).
pub fn rollback(
    layout: &Layout,
    config: &Config,
    slot: Slot,
    to: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    // What the operator sees as current when asking: a deploy that lands while this
    // waits for the slot makes "back" mean another release, so that is refused.
    let asked_at = release::current(layout, slot);
    let lock = release::lock_slot(layout, slot, out)?;
    let releases = release::list(layout, slot)?;
    // None when `current` is missing or not a link (a first deploy killed before its
    // flip, a hand edit): `--to` still names where it goes.
    let current = release::current(layout, slot);
    // As the operator reads it, before the flip moves it.
    let before = shown(layout, slot, &current);
    if asked_at.is_some() && asked_at != current {
        let (asked_at, now) = (asked_at.unwrap_or_default(), &before);
        anyhow::bail!(
            "{slot}'s current release changed while this waited ({asked_at} -> {now}): nothing rolled back; run it again to go back from {now}"
        );
    }
    push_note(layout, slot, out)?;
    let target = match to {
        Some(id) => {
            anyhow::ensure!(
                releases.iter().any(|r| r.id == id),
                "{slot} has no release `{id}` (see `bluegreen releases {slot}`)"
            );
            id.to_string()
        }
        None => {
            let current = current.as_deref().with_context(|| match releases.is_empty() {
                true => never_deployed(layout, slot, config, "roll back"),
                // A push of the same commit would change nothing ("Everything up-to-date").
                false => format!(
                    "{}: name the release to go to, `bluegreen rollback {slot} --to <release>` (see `bluegreen releases {slot}`)",
                    release::no_current(layout, slot)
                ),
            })?;
            // What still serves, when `current` is a push that never went live or a
            // release that failed its last start; otherwise the release before (never
            // "back" to a newer one the daemon last ran).
            serving_instead(layout, slot, current)
                .map(|(serving, _)| serving)
                .filter(|serving| releases.iter().any(|r| r.id == *serving))
                .or_else(|| release::previous(&releases, current))
                .with_context(|| {
                    let passed_over =
                        releases.iter().any(|r| r.rolled_back && r.id.as_str() < current);
                    let except = if passed_over {
                        " but releases rolled back from (`--to` takes one)"
                    } else {
                        ""
                    };
                    format!("{slot} has no release before {current} to go back to: none went live or was current{except} (see `bluegreen releases {slot}`)")
                })?
        }
    };
    anyhow::ensure!(
        current.as_ref() != Some(&target),
        "{target} is already {slot}'s current release"
    );
    // Data written while `current` ran, that the release gone back to does not see.
    let mut notes = current.as_ref().map_or_else(Vec::new, |before| {
        release::link_notes(layout, slot, before, &target, &config.app.linked_dirs)
    });
    // Gone back from (ids sort by age; `--to` a newer one is no going back): a later
    // rollback passes it over, and every release this steps over on the way back (`--to`
    // past them) that a rollback could go to (one that served; where none ever did, no
    // daemon having run them, one that was current), so that going back from a later
    // push lands on what served before it, not on a release the operator skipped. A push
    // that never went live keeps saying so. Marked before the flip: a rollback cut off
    // between the two (killed) must not leave the release it went back from for the next
    // one to go to.
    let back_from = current.as_ref().filter(|current| target < **current);
    let any_live = releases.iter().any(|r| r.went_live);
    let stepped_over: Vec<String> = back_from.map_or_else(Vec::new, |current| {
        releases
            .iter()
            .filter(|r| r.id > target && r.id < *current && !r.rolled_back)
            .filter(|r| r.went_live || r.before_marks || (r.was_current && !any_live))
            .map(|r| r.id.clone())
            .collect()
    });
    let marked: Vec<&String> = back_from.into_iter().chain(&stepped_over).collect();
    let mut unmarked = Vec::new();
    for id in &marked {
        if let Err(e) = release::mark_rolled_back(layout, slot, id) {
            unmarked.push(format!("{e:#}"));
        }
    }
    let flipped = release::flip(layout, slot, &target, back_from.is_some());
    if let Err(e) = &flipped {
        let left = unmark(layout, slot, &marked);
        if !left.is_empty() {
            anyhow::bail!(
                "{e:#}; and {}: later rollbacks pass those over",
                left.join("; ")
            );
        }
    }
    notes.extend(flipped?);
    drop(lock);
    writeln!(out, "{slot}: current {before} -> {target}")?;
    for note in notes.into_iter().chain(unmarked) {
        writeln!(out, "{slot}: note: {note}")?;
    }
    let live = verdict::reload(
        config,
        layout,
        (slot, &target, verdict::Ask::Deployed(verdict::By::Rollback)),
        out,
    )?;
    // Gone back from only by a rollback that served: after one the daemon refused (a
    // release that fails to start now), the slot serves on as before, and going back
    // from a later push lands on what served before it, passing over none of the
    // releases this marked. Under the slot lock, as they were marked.
    let refused = State::load(&layout.state_file())
        .is_ok_and(|state| failed_last_start(&state, slot, &target));
    if !live && refused && !marked.is_empty() {
        let _lock = release::lock_slot(layout, slot, out)?;
        for left in unmark(layout, slot, &marked) {
            writeln!(out, "{slot}: note: {left}: later rollbacks pass it over")?;
        }
    }
    Ok(live)
}

/// Takes the rolled-back mark off each of `ids`; why for each it could not.
fn unmark(layout: &Layout, slot: Slot, ids: &[&String]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| release::unmark_rolled_back(layout, slot, id).err())
        .map(|e| format!("{e:#}"))
        .collect()
}

/// Whether the daemon recorded `release` as the one `slot` failed to start last.
fn failed_last_start(state: &State, slot: Slot, release: &str) -> bool {
    state
        .failed
        .get(&slot)
        .is_some_and(|failed| failed.release == release)
}

/// Tells the operator that a push to `slot` is building: this does not wait for it, nor
/// stop it; if it deploys, its release becomes current after this. Asked with the slot
/// lock held, under which a push releases: one that held it was waited for (and said so
/// by `lock_slot`), and is over.
fn push_note(layout: &Layout, slot: Slot, out: &mut dyn Write) -> anyhow::Result<()> {
    if release::push_under_way(layout, slot) {
        writeln!(
            out,
            "{slot}: note: a push to {slot} is under way; this does not wait for it: if it deploys, its release becomes current after this"
        )?;
    }
    Ok(())
}

/// A slot's current release as the operator reads it: its id, or that there is none
/// and, after a hand edit, what `current` points at instead.
fn shown(layout: &Layout, slot: Slot, current: &Option<String>) -> String {
    if let Some(id) = current {
        return id.clone();
    }
    release::elsewhere(layout, slot)
        .and_then(|_| std::fs::read_link(layout.current_link(slot)).ok())
        .map_or_else(
            || "(none)".to_string(),
            |target| {
                let target = crate::logging::printable(&target.display().to_string());
                format!("(none: it points at {target})")
            },
        )
}

/// Why a command finds nothing to `act` on in a slot never deployed, and what deploys.
fn never_deployed(layout: &Layout, slot: Slot, config: &Config, act: &str) -> String {
    // A slot folder removed by hand is that, not a slot a push would set right.
    if let Err(missing) = release::slot_folder(layout, slot) {
        return missing.to_string();
    }
    format!(
        "{slot} has no current release: nothing to {act} (deploy one first: `git push {slot} {}`)",
        crate::pasted::refspec(&config.branch)
    )
}

/// The release of `slot` the daemon last had live (`state.json`), when that is not
/// `current` and `current` has not served since: a push still starting or that failed
/// to start, or a release that went live once and failed its last start (a `rollback
/// --to` it). With whether `current` is such a release (else it never went live).
fn serving_instead(layout: &Layout, slot: Slot, current: &str) -> Option<(String, bool)> {
    let state = State::load(&layout.state_file()).ok()?;
    let refused = failed_last_start(&state, slot, current);
    // As a daemon starting now would have it: not a release a rollback made while none
    // ran went back from.
    let last_live = state.live.get(&slot).cloned();
    let serving = release::comes_back(layout, slot, last_live, Some(current), refused)
        .filter(|serving| *serving != current)?;
    if !release::went_live(layout, slot, current) {
        return Some((serving, false));
    }
    refused.then_some((serving, true))
}

/// Starts `slot`'s current release again, and waits for its verdict: after what made it
/// fail was fixed (`app.command`, its env, and a SIGHUP; a database it needed), where a
/// push of the same commit deploys nothing new and a rollback to it is refused as current.
pub fn restart(
    layout: &Layout,
    config: &Config,
    slot: Slot,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let current = release::current(layout, slot).with_context(|| {
        match release::list(layout, slot).is_ok_and(|releases| releases.is_empty()) {
            true => never_deployed(layout, slot, config, "restart"),
            false => format!("{}: nothing to restart", release::no_current(layout, slot)),
        }
    })?;
    verdict::reload(config, layout, (slot, &current, verdict::Ask::Again), out)
}

/// Makes `to`'s current release a fresh copy of `from`'s current build: same key, no
/// push, no rebuild.
pub fn promote(
    layout: &Layout,
    config: &Config,
    from: Slot,
    to: Slot,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    anyhow::ensure!(from != to, "cannot promote {from} to itself");
    let lock = release::lock_slot(layout, to, out)?;
    push_note(layout, to, out)?;
    // Read once the wait is over: what `from` runs now, not what it ran before.
    let source_id = release::current(layout, from).with_context(|| {
        match release::elsewhere(layout, from) {
            // A hand edit pointed it at what is not a release.
            Some(why) => format!("{why}: nothing to promote"),
            None => never_deployed(layout, from, config, "promote"),
        }
    })?;
    // What was tried on `from` is what it served: a push there that is still starting, or
    // that failed to start, is not copied on.
    if let Some((serving, failed)) = serving_instead(layout, from, &source_id) {
        let why = match failed {
            true => "failed its last start",
            false => "has not gone live",
        };
        anyhow::bail!(
            "{from}'s current release {source_id} {why} ({from}'s last live release is {serving}): promote copies only a release that has served on {from}; `bluegreen status` says why"
        );
    }
    let source = release::meta(layout, from, &source_id)
        .with_context(|| {
            format!(
                "release {from}/{source_id} has no metadata bluegreen can use: its {} is missing or not as bluegreen wrote it",
                release::META
            )
        })?;
    // The same build again would be a second copy of what `to` runs: nothing changes.
    if let Some(current) = release::current(layout, to)
        .filter(|id| release::meta(layout, to, id).is_some_and(|m| m.build_key == source.build_key))
    {
        writeln!(
            out,
            "{to}: its current release {current} runs build {} already, as {from}/{source_id} does: nothing new to promote",
            source.build_key
        )?;
        drop(lock);
        return verdict::reload(
            config,
            layout,
            (to, &current, verdict::Ask::Deployed(verdict::By::Promote)),
            out,
        );
    }
    let id = release::new_id(layout, to, source.commit_short())?;
    let meta = ReleaseMeta {
        id: id.clone(),
        slot: to,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        promoted_from: Some(format!("{from}/{source_id}")),
        // The source may be an older version's release; this one gets the marks.
        marks: true,
        ..source
    };
    let in_use = crate::build::use_lock(layout, &meta.build_key)?;
    // A push to `from` may have replaced its release and removed the build since it was
    // read; with the use lock held it can't any more.
    anyhow::ensure!(
        crate::build::is_finished(layout, &meta.build_key),
        "{from}'s release {source_id} has no build any more ({} is gone: a push to {from} replaced it meanwhile, or it was removed by hand): push its commit {} to {to} (or, if a push replaced it, promote again)",
        layout.build_dir(&meta.build_key).display(),
        meta.commit_short()
    );
    let installed = release::install(layout, &meta, &config.app.linked_dirs)
        .with_context(|| format!("{to}: {from}/{source_id} not promoted"))?;
    drop(in_use);
    let tidied = release::tidy(
        layout,
        to,
        config.keep_releases,
        installed.was_current.as_deref(),
    );
    drop(lock);
    writeln!(
        out,
        "{to}: release {id} from {from}/{source_id} (build {} reused{})",
        meta.build_key,
        if tidied.is_empty() {
            String::new()
        } else {
            format!(", {tidied}")
        }
    )?;
    for note in installed.notes {
        writeln!(out, "{to}: note: {note}")?;
    }
    verdict::reload(
        config,
        layout,
        (to, &id, verdict::Ask::Deployed(verdict::By::Promote)),
        out,
    )
}
