//! The daemon's listening sockets: taken from systemd (socket activation) or bound here.
//!
//! Under a `bluegreen.socket` unit, systemd holds the listening sockets and passes them
//! to each daemon it starts (`LISTEN_FDS`). A restarted or upgraded daemon then refuses
//! no connection: the kernel queues new ones in the socket's backlog while one daemon
//! drains and the next starts its generations. It also lets a daemon with no
//! capabilities serve ports below 1024.
//!
//! A passed socket is matched to a listener by the address it listens on, so one socket
//! unit with a `ListenStream=` per address is enough (no `FileDescriptorName=`). A passed
//! socket on an address the config does not name is a one-line error naming both, as is
//! one that is not a listening TCP socket; the config's addresses systemd did not pass
//! are bound here as without systemd. An address another process listens on (most
//! often another root's daemon, given the same default ports) is a one-line error that
//! names the key to change, the file, and that root when its daemon answers on this
//! config's `control.listen`.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::Context;

use crate::client::Client;
use crate::config::{Config, LISTEN_KEYS};
use crate::layout::Layout;

/// The listeners `serve` needs, ready before anything starts.
pub struct Bound {
    pub front: TcpListener,
    pub slots: [TcpListener; 2],
    pub control: TcpListener,
    /// The addresses of those systemd passed.
    pub passed: Vec<SocketAddr>,
}

/// Takes the sockets systemd passed, and binds the rest.
pub fn bind(config: &Config, layout: &Layout) -> anyhow::Result<Bound> {
    let listens = config.listens();
    let wanted: [(&str, SocketAddr); 4] = std::array::from_fn(|i| (LISTEN_KEYS[i], listens[i]));
    let mut passed = passed()?;
    let from_systemd: Vec<SocketAddr> = passed.iter().map(|(addr, _)| *addr).collect();
    if let Some((addr, _)) = passed
        .iter()
        .find(|(addr, _)| !wanted.iter().any(|(_, want)| want == addr))
    {
        let names: Vec<String> = wanted
            .iter()
            .map(|(key, want)| format!("{key} {want}"))
            .collect();
        anyhow::bail!(
            "systemd passed a socket listening on {addr}, which is none of the config's addresses ({}): make the socket unit's ListenStream= lines and the config agree",
            names.join(", ")
        );
    }
    let mut take = |(key, addr): (&str, SocketAddr)| -> anyhow::Result<TcpListener> {
        let listener = match passed.iter().position(|(at, _)| *at == addr) {
            Some(i) => passed.swap_remove(i).1,
            None => listen(addr).map_err(|e| {
                let hint = match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        format!(": {}", in_use(key, addr, config, layout))
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        privileged(key, addr.port(), &layout.config_file())
                            .map(|hint| format!(": {hint}"))
                            .unwrap_or_default()
                    }
                    _ => String::new(),
                };
                anyhow::anyhow!("cannot listen on {addr} ({key}): {e}{hint}")
            })?,
        };
        Ok(listener)
    };
    let [front, blue, green, control] = wanted.map(&mut take);
    let nonblocking = |listener: anyhow::Result<TcpListener>| {
        let listener = listener?;
        listener.set_nonblocking(true)?;
        anyhow::Ok(listener)
    };
    let (front, blue, green, control) = (
        nonblocking(front)?,
        nonblocking(blue)?,
        nonblocking(green)?,
        nonblocking(control)?,
    );
    Ok(Bound {
        front,
        slots: [blue, green],
        control,
        passed: from_systemd,
    })
}

/// What to do about `addr` (`key`) that another process listens on: said after the
/// error, `cannot listen on 0.0.0.0:8080 (router.listen): Address already in use ...`.
fn in_use(key: &str, addr: SocketAddr, config: &Config, layout: &Layout) -> String {
    let file = layout.config_file();
    let file = file.display();
    // Two roots made with the same defaults: the other one's daemon answers on this
    // config's control.listen too, and names its root.
    match Client::new(config, layout).other_root() {
        Some(other) if addr == config.control.listen => format!(
            "the daemon of {other} answers there: give this root addresses of its own (router.listen, slots.blue.listen, slots.green.listen, control.listen in {file})"
        ),
        Some(other) => format!(
            "the daemon of {other} answers on this config's control.listen {} and most likely holds {addr} too: give this root addresses of its own (router.listen, slots.blue.listen, slots.green.listen, control.listen in {file})",
            config.control.listen
        ),
        None => {
            let port = addr.port();
            match crate::procfs::listening_on(port) {
                // Nothing listens: a connection has it as its own port (handed out from
                // the kernel's range for outgoing connections while the daemon was
                // down, or one a stopped server left).
                Some(false) => {
                    let advice = match crate::procfs::outgoing_ports() {
                        Some(range) if range.contains(&port) => format!(
                            ", as the kernel hands out ports {}-{} (net.ipv4.ip_local_port_range) to outgoing connections: give this root a {key} below {} in {file}",
                            range.start(),
                            range.end(),
                            range.start()
                        ),
                        _ => format!(
                            ": wait for it to close, or give this root another {key} in {file}"
                        ),
                    };
                    format!(
                        "no process listens there, but a connection uses it as its own port (`ss -tanp 'sport = :{port}'` says which){advice}"
                    )
                }
                _ => format!(
                    "another process listens there (`ss -ltnp 'sport = :{port}'` says which): give this root its own {key} in {file}"
                ),
            }
        }
    }
}

/// What to do about a port this user may not bind (below 1024, unless the host says
/// otherwise): have systemd's socket unit bind it, or take another.
fn privileged(key: &str, port: u16, file: &std::path::Path) -> Option<String> {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|text| text.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    (port < start).then(|| format!(
        "ports below {start} take a privilege this process lacks: have systemd's socket unit bind it (systemd/bluegreen.socket, README \"Install as a service\"), or give this root a {key} of {start} or above in {}",
        file.display()
    ))
}

/// A listening socket on `addr`, its backlog as long as the system allows (as systemd's
/// `Backlog=` default): connections wait there while a slot's first generation starts and
/// at the connection cap, and std's 128 would drop the ones past it. The sample app's
/// too: a new generation takes a slot's load at once, and the burst of connections the
/// proxy opens to it overflowed 128, which the kernel reset (502s).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrStorage,
    };
    use std::os::fd::AsRawFd;
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let socket = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // As std's bind: a restarted daemon can listen while old connections linger.
    setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    bind(socket.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&socket, Backlog::MAXCONN)?;
    Ok(TcpListener::from(socket))
}

/// Why sockets passed with `LISTEN_FDS` cannot be taken though they are open in this
/// process: `LISTEN_PID` names another, as when a wrapper script runs `bluegreen serve`
/// without `exec`. Ignored (as sd_listen_fds(3) does), they stayed bound, and binding the
/// same addresses failed ("address in use", after a wait for an answer there). `None`
/// when the sockets are this process's, or are not here (a stale environment).
fn passed_to_another() -> Option<String> {
    let fds: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let me = std::process::id();
    // A listening socket, as systemd passes: not any socket (the daemon's own signal
    // pipe is a socket pair on fd 3 and 4 when it gets here).
    let listening = |fd: i32| {
        let mut accepts: libc::c_int = 0;
        let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt(2) writes at most `size` bytes into `accepts`, an int, and
        // fails (ENOTSOCK, EBADF) on a descriptor that is no socket or not open.
        let asked = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&raw mut accepts).cast(),
                &mut size,
            )
        };
        asked == 0 && accepts != 0
    };
    let open = (3..3 + fds.clamp(0, 64)).all(listening);
    (pid != me && fds > 0 && open).then(|| {
        format!(
            "LISTEN_FDS={fds} passes this process sockets, but LISTEN_PID={pid} names another (this is {me}): a wrapper script runs `bluegreen serve` without `exec`; write `exec bluegreen serve ...` in it"
        )
    })
}

/// The sockets systemd passed to this process, with the address each listens on; none
/// outside socket activation. `LISTEN_PID` and `LISTEN_FDS` are unset here; what the
/// daemon starts is kept from `LISTEN_FDNAMES` too (see [`super::systemd::keep_from`]).
fn passed() -> anyhow::Result<Vec<(SocketAddr, TcpListener)>> {
    if let Some(why) = passed_to_another() {
        anyhow::bail!(why);
    }
    let fds = sd_notify::listen_fds().context("cannot take the sockets systemd passed")?;
    let mut passed: Vec<(SocketAddr, TcpListener)> = Vec::new();
    for fd in fds {
        // SAFETY: LISTEN_PID names this process, so systemd opened `fd` for it, and
        // nothing else has taken it: listen_fds unset the variables, and this runs once.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let listening = {
            use nix::sys::socket::{getsockopt, sockopt, SockType};
            getsockopt(&socket, sockopt::AcceptConn).unwrap_or(false)
                && getsockopt(&socket, sockopt::SockType).ok() == Some(SockType::Stream)
        };
        let listener = TcpListener::from(socket);
        let addr = match listener.local_addr() {
            Ok(addr) if listening => addr,
            _ => anyhow::bail!(
                "systemd passed file descriptor {fd}, which is not a listening TCP socket: give the socket unit only ListenStream= lines with an address and port"
            ),
        };
        anyhow::ensure!(
            passed.iter().all(|(at, _)| *at != addr),
            "systemd passed two sockets listening on {addr}"
        );
        passed.push((addr, listener));
    }
    Ok(passed)
}
