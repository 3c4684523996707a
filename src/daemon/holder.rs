//! Whose socket answered a generation's health check.
//!
//! A generation's port is free when the daemon picks it, and the app binds it a moment
//! later; in between, any other program may take it: another root's daemon picking ports
//! at the same time, or anything else on the host that asks for a free one. The app then
//! cannot listen, and its health check is answered by the stranger, which would go live in
//! its place and get the slot's traffic. So before a generation goes live, every socket
//! listening where `127.0.0.1:<port>` reaches must be held by one of its processes: a
//! member of its process group, a process carrying its `GENERATION` mark (one that
//! left the group), or one that left the group and wrote its title over its environment
//! (setproctitle), which shows neither, when one of those started it: the group such a
//! one leads is stopped with the generation, as nothing else finds it then. One held by
//! a process this daemon can read and that is none of these,
//! or by another unprivileged user, refuses the generation with what holds it. One held
//! by a process that cannot be read and belongs to root (docker's userland proxy, for an
//! app run in a container) or to this user is taken as the app's: nothing tells it apart.

use std::path::{Path, PathBuf};

use crate::layout::Layout;
use crate::procfs;

use super::workers;

/// The generation a listening socket must belong to.
pub struct Owner<'a> {
    /// Its process group (the leader's pid).
    group: u32,
    /// The root whose daemon started it, as its `workers::MARKER` says.
    layout: &'a Layout,
    /// That root resolved, for [`workers::carries`].
    root: PathBuf,
    /// Its `workers::GENERATION` value: `<slot>/<id>`.
    generation: &'a str,
}

impl<'a> Owner<'a> {
    pub fn new(group: u32, layout: &'a Layout, generation: &'a str) -> Owner<'a> {
        let root = workers::canonical_root(layout);
        Owner {
            group,
            layout,
            root,
            generation,
        }
    }
}

/// What is known of a process holding a listening socket.
#[derive(Debug)]
enum Holder {
    /// One of the generation's processes.
    Ours,
    /// One that shows neither its group nor its marks (it wrote its title over its
    /// environment) and that the generation started: its pid.
    Adopted(u32),
    /// Anything else that could be read, described for a person, and whether a process
    /// of the generation started it (then no other program took the port: the app gave
    /// it to a process that is not stopped with the generation).
    Other { who: String, started: bool },
}

/// `Err` with a one-line reason when a socket listening for `127.0.0.1:<port>` is not
/// `owner`'s; reads `/proc`, so it blocks for a few milliseconds. `Ok` with the process
/// groups outside `owner.group` that hold one and were taken for the generation's, each
/// led by such a holder: neither the group nor a marker finds them when the generation
/// stops, so the caller stops them with it.
pub fn check(port: u16, owner: &Owner) -> Result<Vec<u32>, String> {
    let sockets = procfs::listening_for_loopback(port);
    if sockets.is_empty() {
        // Another network namespace, or no `/proc/net`: nothing to tell.
        return Ok(Vec::new());
    }
    // Most often the leader holds them all (a server in the foreground, a master that
    // forks its workers): then no other process need be read, however many the host runs
    // (each costs a look at its open files: about 150 ms for 2,000).
    let leader = Path::new("/proc").join(owner.group.to_string());
    if procfs::socket_inodes(&leader)
        .is_some_and(|held| sockets.iter().all(|s| held.contains(&s.inode)))
    {
        return Ok(Vec::new());
    }
    let mut holders: Vec<Vec<Holder>> = sockets.iter().map(|_| Vec::new()).collect();
    for dir in procfs::processes() {
        let Some(held) = procfs::socket_inodes(&dir) else {
            continue;
        };
        for (socket, found) in sockets.iter().zip(holders.iter_mut()) {
            if held.contains(&socket.inode) {
                found.push(holder(&dir, owner));
            }
        }
    }
    let me = nix::unistd::geteuid().as_raw();
    for (socket, found) in sockets.iter().zip(&holders) {
        verdict(port, socket.uid, me, found)?;
    }
    // Only a group such a holder leads (setsid, as Procfile runners do) is all its own.
    let mut adopted: Vec<u32> = (holders.iter().flatten())
        .filter_map(|h| match *h {
            Holder::Adopted(pid) => Some(pid),
            _ => None,
        })
        .filter(|&pid| procfs::group(&Path::new("/proc").join(pid.to_string())) == Some(pid))
        .collect();
    adopted.sort_unstable();
    adopted.dedup();
    Ok(adopted)
}

/// Whether one socket on `port`, made by `uid`, held by `found` (of the processes this
/// daemon, running as `me`, could read), is the generation's.
fn verdict(port: u16, uid: u32, me: u32, found: &[Holder]) -> Result<(), String> {
    let stranger = |who: &str, why: &str| {
        Err(format!(
            "port {port} is not the app's: its health check was answered by {who}, which \
             listens on it outside the generation's process group ({why})"
        ))
    };
    let taken = "another program took the port before the app listened on it; the next start \
                 gets another port";
    if found
        .iter()
        .any(|h| matches!(h, Holder::Ours | Holder::Adopted(_)))
    {
        return Ok(());
    }
    if let Some(Holder::Other { who, started }) = found.first() {
        let why = match started {
            true => {
                "the app started it without the generation's environment, so it would outlive \
                 the generation: keep it in the app's process group or give it that environment"
            }
            false => taken,
        };
        return stranger(who, why);
    }
    // Held by no process this daemon may read: another user's. An app of an
    // unprivileged daemon runs as its user; one of root's may be a container's proxy.
    if me != 0 && uid != me && uid != 0 {
        let name = crate::fsops::user_name(uid)
            .map(|name| format!("`{name}`, "))
            .unwrap_or_default();
        return stranger(
            &format!("a process of another user ({name}uid {uid}; this daemon runs as uid {me})"),
            taken,
        );
    }
    Ok(())
}

fn holder(dir: &Path, owner: &Owner) -> Holder {
    let env = procfs::Environ::read(dir);
    if is_ours(dir, env.as_ref(), owner) {
        return Holder::Ours;
    }
    // One that wrote its title over its environment shows no mark, and in a session of
    // its own no group either: a server a Procfile runner starts (honcho, foreman) or
    // a tool's fork mode (pm2), with setproctitle (gunicorn's master once the package is
    // installed). It is the generation's when a process that started it is. One whose
    // environment reads whole without the mark was started without it (`env -i`): that
    // one is not stopped with the generation either, and stays refused, told as the
    // app's doing, not as a program that took the port.
    let started = started_by_ours(dir, owner);
    let pid = dir.file_name().and_then(|n| n.to_str()?.parse().ok());
    if let Some(pid) =
        pid.filter(|_| started && env.as_ref().is_some_and(procfs::Environ::rewritten))
    {
        return Holder::Adopted(pid);
    }
    let marked = |name: &str| env.as_ref().and_then(|env| env.get(name));
    let generation = marked(workers::GENERATION);
    let root = env.as_ref().and_then(|env| env.path(workers::MARKER));
    // What another process says of itself (its name, its env) may hold a line break or a
    // terminal escape: quoted on one line.
    let quote = |text: &[u8]| crate::logging::quoted(&String::from_utf8_lossy(text), 200);
    let command = crate::procfs::name(dir);
    let mut who = format!(
        "pid {} (`{}`",
        pid.map_or("?".into(), |p: u32| p.to_string()),
        quote(command.trim_ascii())
    );
    if let (Some(root), Some(generation)) = (root, generation) {
        who += &format!(
            ", worker {} of {}",
            quote(generation),
            quote(root.as_os_str().as_encoded_bytes())
        );
    }
    who.push(')');
    Holder::Other { who, started }
}

/// How many parents [`started_by_ours`] looks at: process trees are a few deep; this only
/// bounds a walk through a tree changing under it.
const MAX_PARENTS: usize = 64;

/// Whether the process whose `/proc` folder is `dir`, with environment `env`, is a member
/// of `owner`'s group or carries its marks.
fn is_ours(dir: &Path, env: Option<&procfs::Environ>, owner: &Owner) -> bool {
    if procfs::group(dir) == Some(owner.group) {
        return true;
    }
    env.is_some_and(|env| workers::carries(owner.layout, &owner.root, env, Some(owner.generation)))
}

/// Whether a parent of the process whose `/proc` folder is `dir`, or its parent's, and
/// so on, is one of `owner`'s processes.
fn started_by_ours(dir: &Path, owner: &Owner) -> bool {
    let mut pid = procfs::parent(dir);
    for _ in 0..MAX_PARENTS {
        let Some(parent) = pid.filter(|&p| p > 1) else {
            return false;
        };
        let dir = Path::new("/proc").join(parent.to_string());
        if is_ours(&dir, procfs::Environ::read(&dir).as_ref(), owner) {
            return true;
        }
        pid = procfs::parent(&dir);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    #[test]
    fn a_socket_held_by_the_generation_is_its_own_whoever_else_holds_it() {
        let other = Holder::Other {
            who: "pid 7 (`x`)".into(),
            started: false,
        };
        let found = [other, Holder::Ours];
        assert_eq!(verdict(4000, ME, ME, &found), Ok(()));
    }

    #[test]
    fn a_socket_held_only_by_another_process_is_refused_naming_it() {
        let found = [Holder::Other {
            who: "pid 7 (`node`)".into(),
            started: false,
        }];
        let error = verdict(4000, ME, ME, &found).unwrap_err();
        assert!(
            error.starts_with(
                "port 4000 is not the app's: its health check was answered by pid 7 (`node`)"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_socket_no_process_shows_is_refused_only_when_another_user_made_it() {
        let error = verdict(4000, 1001, ME, &[]).unwrap_err();
        assert!(
            error.contains("answered by a process of another user (")
                && error.contains("uid 1001; this daemon runs as uid 1000)"),
            "{error}"
        );
        // Root's (a container's proxy) and this user's own cannot be told apart from the
        // app's; nor can anyone's for a daemon run as root, which reads every process.
        assert_eq!(verdict(4000, 0, ME, &[]), Ok(()));
        assert_eq!(verdict(4000, ME, ME, &[]), Ok(()));
        assert_eq!(verdict(4000, 1001, 0, &[]), Ok(()));
    }

    #[test]
    fn a_socket_of_this_process_is_not_the_generations() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let layout = Layout::new(Path::new("/nonexistent/root")).unwrap();
        let owner = Owner::new(u32::MAX, &layout, "blue/1");
        let error = check(port, &owner).unwrap_err();
        let me = std::process::id();
        assert!(
            error.contains(&format!("answered by pid {me} (`")),
            "{error}"
        );
        let group = nix::unistd::getpgrp().as_raw() as u32;
        let ours = Owner { group, ..owner };
        assert_eq!(check(port, &ours), Ok(vec![]));
        // As the group's leader, read first.
        let leader = Owner { group: me, ..ours };
        assert_eq!(check(port, &leader), Ok(vec![]));
    }
}
