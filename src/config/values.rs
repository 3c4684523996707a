//! The validating deserializers of `bluegreen.toml`'s values (branch, commands, paths,
//! listen addresses, env, linked folders, methods, slots) that refuse a bad value with a
//! reason toml places at its key; durations and sizes are in [`super::units`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::argv;
use serde::de::Error;
use serde::Deserializer;

pub fn branch<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    // Shown with its control characters escaped (`a\nb`): toml's multi-line messages are
    // joined at their line breaks, and a raw one in the name read as `a: b`.
    let shown = crate::logging::one_line(&name);
    if let Some(short) = shown.strip_prefix("refs/heads/") {
        return Err(D::Error::custom(format!(
            "`{shown}` is a ref: write the branch name alone (\"{short}\")"
        )));
    }
    // git itself refuses these two as branch names, though the ref would be valid.
    if name.is_empty()
        || name == "HEAD"
        || name.starts_with('-')
        || !git2::Reference::is_valid_name(&format!("refs/heads/{name}"))
    {
        return Err(D::Error::custom(format!(
            "`{shown}` is not a valid branch name"
        )));
    }
    Ok(name)
}

pub fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(D::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

/// The most copies `mirror.queue` may hold waiting.
pub const MAX_QUEUE: usize = 1_000_000;

pub fn queue<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(D::Error::custom("must be at least 1")),
        n if n > MAX_QUEUE => Err(D::Error::custom(format!(
            "{n} is too many (at most {MAX_QUEUE})"
        ))),
        n => Ok(n),
    }
}

/// The most bytes the mirrored copies queued or out may hold together, heads and bodies:
/// `mirror.queue` and the copies out at once bound their number, this their memory (1024
/// copies of 10 MiB would be 10 GiB; a million queued copies of bodiless writes, each with
/// a 60 KB head, 60 GB). Beyond it a copy counts as `queue_full`.
pub const MIRROR_MEMORY: u64 = 256 << 20;

/// `mirror.max_body`: a size no larger than [`MIRROR_MEMORY`], which a larger body could
/// never fit (each such copy would be dropped as `queue_full`).
pub fn max_body<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use super::units::human_size;
    let size = human_size::deserialize(d)?;
    if size > MIRROR_MEMORY {
        return Err(D::Error::custom(format!(
            "{} is more than the {} MiB all mirrored copies may hold together: no copy that large could be sent",
            human_size::shown(size),
            MIRROR_MEMORY >> 20
        )));
    }
    Ok(size)
}

pub fn at_least_one_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(D::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

pub fn command<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.contains('\0') {
        return Err(D::Error::custom(
            "holds a NUL byte (\\u0000), which no command line can carry",
        ));
    }
    let words = argv::split(&text).map_err(|e| D::Error::custom(format!("{e:#}")))?;
    // `'' app`: no program to start, which would only be found out at a deploy.
    if words.first().is_some_and(|program| program.is_empty()) {
        return Err(D::Error::custom(
            "names no program: its first word is empty",
        ));
    }
    Ok(text)
}

pub fn required_command<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = command(d)?;
    if text.trim().is_empty() {
        return Err(D::Error::custom("must not be empty"));
    }
    Ok(text)
}

/// A path (and query) a request may carry: starts with `/`, no spaces or control
/// characters, and no `#` (a fragment is never sent: the path would go out cut at it).
fn is_url_path(path: &str) -> bool {
    path.starts_with('/') && !path.contains('#') && path.parse::<http::uri::PathAndQuery>().is_ok()
}

pub fn url_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let path = String::deserialize(d)?;
    if !is_url_path(&path) {
        return Err(D::Error::custom(format!(
            "`{}` is not a URL path: it must start with `/` and have no spaces, control characters or `#`",
            path.escape_debug()
        )));
    }
    Ok(path)
}

/// `router.switch_path`: a URL path the front takes from the app, or "" for none. Never
/// `/`, which would take the app's home page (and every loopback visit would switch), nor
/// a path with a query, which no request's path would ever equal.
pub fn switch_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let path = String::deserialize(d)?;
    if !path.is_empty() && !is_url_path(&path) {
        return Err(D::Error::custom(format!(
            "`{}` is not a URL path: it must start with `/` and have no spaces, control characters or `#` (or be \"\" to disable)",
            path.escape_debug()
        )));
    }
    if path == "/" {
        return Err(D::Error::custom(
            "`/` would take the app's home page: use a path of its own, like \"/switch\" (or \"\" to disable)",
        ));
    }
    // Never matched, it would hand `/switch` silently to the app.
    if path.contains('?') {
        return Err(D::Error::custom(format!(
            "`{path}` has a query: the front matches the request's path alone, so it would never be taken (a secret belongs in router.token_file)"
        )));
    }
    // Browsers and curl send such a character percent-encoded, which the front does not
    // decode to compare.
    if !path.is_ascii() {
        return Err(D::Error::custom(format!(
            "`{path}` is not all ASCII: clients send such characters percent-encoded, so it would never be taken; write it as they send it (\"{}\")",
            percent_encoded(&path)
        )));
    }
    Ok(path)
}

/// `path` with each byte outside ASCII as `%XX`.
fn percent_encoded(path: &str) -> String {
    path.bytes()
        .map(|b| match b.is_ascii() {
            true => char::from(b).to_string(),
            false => format!("%{b:02X}"),
        })
        .collect()
}

/// A listen address: an IP and a port, never a host name (the listeners bind before any
/// resolver could be trusted, and `localhost` may mean two addresses).
pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    let addr: SocketAddr = text.parse().map_err(|_| {
        D::Error::custom(format!(
            "`{text}` is not IP:port (e.g. \"127.0.0.1:8080\", \"0.0.0.0:8080\", \"[::1]:8080\")"
        ))
    })?;
    if addr.port() == 0 {
        return Err(D::Error::custom(format!(
            "`{text}`: port 0 would be any free port, which no client could know: name one"
        )));
    }
    Ok(addr)
}

pub fn loopback<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let addr = listen(d)?;
    if !addr.ip().is_loopback() {
        return Err(D::Error::custom(format!(
            "{addr} is not a loopback address (the control API never listens beyond this host)"
        )));
    }
    Ok(addr)
}

pub fn env<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let env = BTreeMap::<String, String>::deserialize(d)?;
    if let Some((name, _)) = env.iter().find(|(_, value)| value.contains('\0')) {
        return Err(D::Error::custom(format!(
            "`{name}` holds a NUL byte (\\u0000), which no environment can carry"
        )));
    }
    for name in env.keys() {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
        if !valid {
            return Err(D::Error::custom(format!(
                "`{name}` is not a valid variable name"
            )));
        }
        if MARKER_ENV.contains(&name.as_str()) {
            return Err(D::Error::custom(format!(
                "`{name}` is set by bluegreen on the processes it starts, to find them again; it cannot be set here"
            )));
        }
    }
    Ok(env)
}

pub fn linked_dirs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use std::path::Component;
    let given = Vec::<String>::deserialize(d)?;
    // Each as it will be used, and as written (for the messages).
    let mut dirs: Vec<(String, &str)> = Vec::with_capacity(given.len());
    for dir in &given {
        let components: Vec<Component> = Path::new(dir).components().collect();
        let plain = components.iter().any(|c| matches!(c, Component::Normal(_)))
            && components
                .iter()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !plain {
            return Err(D::Error::custom(format!(
                "`{dir}` must be a relative folder inside the release, without `..`"
            )));
        }
        // `./data`, `data/`, `data/.` and `data//x` as `data` and `data/x`: the release's
        // path is made from it, and `data/` names what a pushed `data` symlink points
        // to, not the link.
        let written = dir.as_str();
        let dir = components
            .iter()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect::<std::path::PathBuf>()
            .to_string_lossy()
            .into_owned();
        // The metadata and marks of each build and release (`.bluegreen-release.json`,
        // `.bluegreen-went-live`, ...): a link there would be written over.
        if dir.starts_with(".bluegreen-") {
            return Err(D::Error::custom(format!(
                "`{dir}`: names starting `.bluegreen-` are bluegreen's own files in each release: pick another"
            )));
        }
        for (other, other_written) in &dirs {
            let (a, b) = (Path::new(&dir), Path::new(other));
            if a == b {
                return Err(D::Error::custom(format!("`{written}` is given twice")));
            }
            if a.starts_with(b) || b.starts_with(a) {
                let (inner, outer) = if a.starts_with(b) {
                    (written, *other_written)
                } else {
                    (*other_written, written)
                };
                return Err(D::Error::custom(format!(
                    "`{inner}` is inside `{outer}`: linked dirs cannot nest (the shared `{outer}` has it already)"
                )));
            }
        }
        dirs.push((dir, written));
    }
    Ok(dirs.into_iter().map(|(dir, _)| dir).collect())
}

// The marks bluegreen puts on the processes it starts, defined here, beside the rule
// that a config may not set them, and taken from here by `build` and `daemon`.

/// Set on every build, its temp folder: the next push finds by it what the build of a
/// SIGKILLed hook still runs.
pub const BUILD_MARKER: &str = "BLUEGREEN_BUILD";

/// Set on every worker and migration, the root its daemon serves: the daemon finds what
/// one left by it.
pub const WORKER_MARKER: &str = "BLUEGREEN_WORKER_OF";

/// Set on every worker and migration: `<slot>/<generation>` (`switch.migrate/<n>` on a
/// switch's migration), to find what one left outside its process group.
pub const GENERATION_MARKER: &str = "BLUEGREEN_GENERATION";

/// What bluegreen sets on every build and every worker and migration, and finds their
/// processes by: an env of the config would be overridden, so it may not set them.
pub const MARKER_ENV: [&str; 3] = [BUILD_MARKER, WORKER_MARKER, GENERATION_MARKER];

/// What the daemon sets for each generation: a slot's `env` may not set it too.
pub const GENERATION_ENV: [&str; 4] = ["PORT", "SLOT", "RELEASE", "RELEASE_DIR"];

pub fn methods<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let methods = Vec::<String>::deserialize(d)?;
    for (i, m) in methods.iter().enumerate() {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(D::Error::custom(format!(
                "`{m}` is not an HTTP method (upper case, e.g. \"POST\")"
            )));
        }
        // As `app.linked_dirs` refuses one twice: a slip worth saying, never meant.
        if methods[..i].contains(m) {
            return Err(D::Error::custom(format!("`{m}` is listed twice")));
        }
    }
    Ok(methods)
}

/// `[slots.blue]` and `[slots.green]`, each key it leaves out taken from that slot's
/// default.
pub fn slots<'de, D: Deserializer<'de>>(d: D) -> Result<super::Slots, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Partial {
        #[serde(default)]
        blue: Option<PartialSlot>,
        #[serde(default)]
        green: Option<PartialSlot>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PartialSlot {
        #[serde(default, deserialize_with = "some_listen")]
        listen: Option<SocketAddr>,
        #[serde(default, deserialize_with = "some_env")]
        env: Option<BTreeMap<String, String>>,
    }
    fn some_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        listen(d).map(Some)
    }
    fn some_env<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeMap<String, String>>, D::Error> {
        let env = env(d)?;
        if let Some(name) = GENERATION_ENV.iter().find(|n| env.contains_key(**n)) {
            return Err(D::Error::custom(format!(
                "`{name}` is set by bluegreen for each generation ({}); it cannot be set here",
                GENERATION_ENV.join(", ")
            )));
        }
        Ok(Some(env))
    }
    let partial = Partial::deserialize(d)?;
    let mut slots = super::Slots::default();
    for (slot, given) in [
        (&mut slots.blue, partial.blue),
        (&mut slots.green, partial.green),
    ] {
        if let Some(given) = given {
            slot.listen = given.listen.unwrap_or(slot.listen);
            slot.env = given.env.unwrap_or(std::mem::take(&mut slot.env));
        }
    }
    Ok(slots)
}
