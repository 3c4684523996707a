//! Release ids: `<UTC time to the millisecond>-<short sha>`, so that sorting ids sorts
//! releases by age, and what may name one.

use std::fs;
use std::time::{Duration, SystemTime};

use crate::layout::Layout;
use crate::slot::Slot;

/// A fresh id: `<UTC time to the millisecond>-<short sha>`, unique in the slot, and
/// sorting after every release the slot has: a clock that stepped back (a restored VM,
/// NTP correcting a bad clock at boot) gets the newest release's time plus a millisecond
/// instead, since the order of ids is what `previous` and pruning go by.
pub fn new_id(layout: &Layout, slot: Slot, short: &str) -> anyhow::Result<String> {
    let mut time = SystemTime::now();
    if let Some((newest, name)) = newest_time(layout, slot) {
        time = time.max(newest + Duration::from_millis(1));
        anyhow::ensure!(
            time <= SystemTime::UNIX_EPOCH + LAST_TIME,
            "{slot}'s newest release `{name}` is dated 9999-12-31T23:59:59.999Z, the last time an id can have: a new one cannot sort after it; rename or remove that folder"
        );
    }
    let now = humantime::format_rfc3339_millis(time).to_string();
    let stamp: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
    let base = format!("{stamp}-{short}");
    let mut id = base.clone();
    let mut n = 2;
    while layout.release_dir(slot, &id).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    Ok(id)
}

/// The last time an id can hold (9999-12-31T23:59:59.999Z): its year has four digits.
const LAST_TIME: Duration = Duration::from_millis(253_402_300_799_999);

/// The time in the id of the slot's newest release (`20261122T201300.123Z-...`), and its
/// name.
fn newest_time(layout: &Layout, slot: Slot) -> Option<(SystemTime, String)> {
    let newest = fs::read_dir(layout.releases_dir(slot))
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .max()?;
    let s = newest.split('-').next()?;
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}",
        s.get(0..4)?,
        s.get(4..6)?,
        s.get(6..8)?,
        s.get(9..11)?,
        s.get(11..13)?,
        s.get(13..)?
    );
    let time = humantime::parse_rfc3339(&rfc3339).ok()?;
    Some((time, newest))
}

/// Whether `id` could name a release: a plain name in a releases folder, never a path
/// leading out of it, nor one of ours there (names with a dot first, such as a release
/// still being made).
pub fn is_name(id: &str) -> bool {
    !id.is_empty() && !id.starts_with('.') && !id.contains('/')
}
