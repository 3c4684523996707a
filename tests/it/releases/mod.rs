//! Releases after they land: `releases`, `rollback` (by hand, while serving, behind the
//! daemon's back), pruning, and removal of builds no release uses.
//!
//! The helpers here are shared by more than one of the files below.

mod commands;
mod prune;
mod rollback;
mod rollback_while_busy;
mod root;

/// The line of `bluegreen releases` output that lists release `id`.
fn listed_line(listed: &str, id: &str) -> String {
    let id = format!(" {id} ");
    listed
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no line for{id}in {listed}"))
        .to_string()
}
