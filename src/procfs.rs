//! What `/proc` tells about other processes: the fields of their `stat`, the variables
//! of their environment, and the sockets they hold. The hook finds what killed hooks'
//! builds left, and the daemon what its workers left, by a variable each sets on what it
//! starts; the daemon finds who listens on a generation's port.
//!
//! A process in the middle of an execve(2) shows no environment, or a piece of one, until
//! the kernel has laid out its new program's stack: [`environs`] reads such a one again
//! until it shows whole, so that a helper a build or a worker starts just as it is
//! looked for is not missed.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long [`environs`] keeps reading a process whose environment is not whole yet: an
/// exec lays it out within microseconds, more on a loaded machine.
const EXEC_SETTLE: Duration = Duration::from_millis(250);
/// The kernel's flag (in `/proc/<pid>/stat` field 9) of a kernel thread, which has no
/// environment at all.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The fields of `/proc/<pid>/stat` in `dir` from the third (the state) on: those after
/// the command name, which is in parentheses and may hold spaces.
pub fn stat_fields(dir: &Path) -> Option<Vec<String>> {
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Field `n` (1-based, as proc(5) counts them) of `/proc/<pid>/stat` in `dir`.
pub fn stat_field(dir: &Path, n: usize) -> Option<String> {
    stat_fields(dir)?.into_iter().nth(n.checked_sub(3)?)
}

/// The process group of the process whose `/proc` folder is `dir` (field 5).
pub fn group(dir: &Path) -> Option<u32> {
    stat_field(dir, 5)?.parse().ok()
}

/// The parent of the process whose `/proc` folder is `dir` (field 4): 0 for the first
/// process and for kernel threads' parent.
pub fn parent(dir: &Path) -> Option<u32> {
    stat_field(dir, 4)?.parse().ok()
}

/// Whether process `pid` runs: it exists and is no zombie (dead, not yet reaped by its
/// parent, which for an orphan is pid 1, in its own time). Asked of the kernel first
/// (kill(2) with no signal): another user's process hidden in /proc (`hidepid=2`) is
/// alive all the same; the zombie test needs /proc, and is passed over without it.
pub fn running(pid: u32) -> bool {
    use nix::errno::Errno;
    // Never 0 (or beyond i32): kill(2) would take it for a process group.
    let Some(raw) = i32::try_from(pid).ok().filter(|&raw| raw > 0) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => stat_field(Path::new(&format!("/proc/{pid}")), 3)
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The process that holds a `flock(2)` on the file at `path`, as `/proc/locks` names it;
/// `None` when none does, or it is not visible from here. Looked up by inode, and taken
/// only from a process that has the file open: `/proc/locks` names the device of the
/// filesystem, which on btrfs or overlayfs is not the one `stat` gives.
pub fn flock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let inode = fs::metadata(path).ok()?.ino();
    let path = fs::canonicalize(path).ok()?;
    let locks = fs::read_to_string("/proc/locks").ok()?;
    holders(&locks, inode).into_iter().find(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|open| open == path))
        })
    })
}

/// ` (pid N)` for a process this user may see, empty for one it may not.
pub fn shown(pid: Option<u32>) -> String {
    pid.map_or_else(String::new, |pid| format!(" (pid {pid})"))
}

/// ` (held by pid N)`: the process holding a `flock(2)` on `path`, for a message that
/// says what it waits for; with the way on when that process is stopped (Ctrl-Z on a
/// push, a SIGSTOP), which holds the lock for good. Empty when none is found.
pub fn held_by(path: &Path) -> String {
    let Some(pid) = flock_holder(path) else {
        return String::new();
    };
    match stat_field(Path::new(&format!("/proc/{pid}")), 3).as_deref() {
        Some("T") => {
            format!(" (held by pid {pid}, which is stopped: `kill -CONT {pid}` lets it go on)")
        }
        _ => format!(" (held by pid {pid})"),
    }
}

/// In `/proc/locks` text, the pids holding a FLOCK on a file with this `inode`.
fn holders(locks: &str, inode: u64) -> Vec<u32> {
    locks
        .lines()
        .filter_map(|line| {
            // `1: FLOCK  ADVISORY  WRITE 1234 fe:00:10985588 0 EOF`; a waiter's line has `->`.
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [_, "FLOCK", _, _, pid, file, ..]
                    if file.rsplit(':').next() == Some(&inode.to_string()) =>
                {
                    pid.parse().ok().filter(|&pid| pid > 0)
                }
                _ => None,
            }
        })
        .collect()
}

/// The environment a process was started with, as `/proc/<pid>/environ` has it.
pub struct Environ(Vec<u8>);

impl Environ {
    /// Of the process whose `/proc` folder is `dir`; `None` when it cannot be read
    /// (another user's process, or one that is gone).
    pub fn read(dir: &Path) -> Option<Environ> {
        fs::read(dir.join("environ")).ok().map(Environ)
    }

    /// The value of variable `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .split(|&b| b == 0)
            .find_map(|entry| entry.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
    }

    /// The value of variable `name` as a path.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(|v| PathBuf::from(OsStr::from_bytes(v)))
    }

    /// Whether the process wrote over the memory its environment was in, so that this
    /// says nothing of what it was started with: a program that shows a title in `ps`
    /// spreads it over its arguments and environment, padded with NULs, once it has
    /// copied its variables elsewhere (setproctitle(3): gunicorn's master and workers
    /// with the `setproctitle` package installed, nginx, Ruby's or Perl's `$0 =`). An
    /// environment is a run of `NAME=value` entries, each ended by one NUL; none at all
    /// (`env -i`) is one too.
    pub fn rewritten(&self) -> bool {
        let Some(entries) = self.0.strip_suffix(b"\0") else {
            return !self.0.is_empty();
        };
        entries
            .split(|&b| b == 0)
            .any(|entry| entry.is_empty() || !entry.contains(&b'='))
    }
}

/// The environment of every process that may be read (this user's, or everyone's for
/// root), with its `/proc` folder. One in the middle of an exec is read again, up to
/// `EXEC_SETTLE`, until it shows whole: a single pass missed a helper that a build
/// started as it ended (`setsid tool &`), which then ran on past the push.
pub fn environs() -> Vec<(PathBuf, Environ)> {
    let mut found = Vec::new();
    let mut unsure = Vec::new();
    for dir in processes() {
        match Environ::read_whole(&dir) {
            Whole::Read(env) => found.push((dir, env)),
            Whole::NotYet => unsure.push(dir),
            Whole::None => {}
        }
    }
    let deadline = Instant::now() + EXEC_SETTLE;
    while !unsure.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        unsure.retain(|dir| match Environ::read_whole(dir) {
            Whole::Read(env) => {
                found.push((dir.clone(), env));
                false
            }
            Whole::NotYet => true,
            Whole::None => false,
        });
    }
    found
}

/// The `/proc` folder of every process there is now.
pub fn processes() -> Vec<PathBuf> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|p| p.path())
        .collect()
}

/// A TCP socket listening for connections, as `/proc/net/tcp` (or `tcp6`) lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub inode: u64,
    /// The user that made it.
    pub uid: u32,
}

/// The addresses, as `/proc/net/tcp` and `tcp6` write them, whose listening sockets take a
/// connection to `127.0.0.1`: that address, and any address (an IPv6 socket on `::` takes
/// IPv4 as well, unless it is IPv6-only, which the table does not say: see
/// [`listening_for_loopback`]).
const TAKES_LOOPBACK: [&str; 5] = [
    "0100007F",
    "00000000",
    "00000000000000000000000000000000",
    "0000000000000000FFFF00000100007F",
    "0000000000000000FFFF000000000000",
];

/// The sockets of this network namespace that listen on `port` and take a connection to
/// `127.0.0.1:<port>`.
///
/// An IPv4 one there (on `127.0.0.1` or `0.0.0.0`) leaves out every IPv6 one: an IPv6
/// socket that takes IPv4 too cannot listen on the same port beside it (the second `bind`
/// fails), so one that does is IPv6-only (a program that asked for a free port on IPv6
/// alone, as Go's `tcp6` on `[::]:0` does, may get the app's), and takes none of
/// `127.0.0.1`'s connections. Counted, it was taken for a stranger next to the app.
pub fn listening_for_loopback(port: u16) -> Vec<Listening> {
    let table = |path: &str| {
        fs::read_to_string(path)
            .map(|table| listening_in(&table, port))
            .unwrap_or_default()
    };
    let ipv4 = table("/proc/net/tcp");
    match ipv4.is_empty() {
        true => table("/proc/net/tcp6"),
        false => ipv4,
    }
}

/// Whether any socket of this network namespace listens on `port`, at any address;
/// `None` when the tables cannot be read.
pub fn listening_on(port: u16) -> Option<bool> {
    let mut read = false;
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = fs::read_to_string(path) else {
            continue;
        };
        read = true;
        if listening_rows(&table, port).next().is_some() {
            return Some(true);
        }
    }
    read.then_some(false)
}

/// The kernel's range of ports for outgoing connections
/// (`net.ipv4.ip_local_port_range`).
pub fn outgoing_ports() -> Option<std::ops::RangeInclusive<u16>> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some(bounds.next()??..=bounds.next()??)
}

/// The rows of a `/proc/net/tcp` table that listen on `port` at an address that takes
/// loopback connections. A row: `sl local_address rem_address st ... uid timeout inode`.
fn listening_in(table: &str, port: u16) -> Vec<Listening> {
    listening_rows(table, port)
        .filter_map(|(address, fields)| {
            TAKES_LOOPBACK.contains(&address).then_some(())?;
            Some(Listening {
                uid: fields.get(7)?.parse().ok()?,
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The rows of a `/proc/net/tcp` table that listen on `port`: each one's local address
/// (hex, as the table has it) and fields.
pub(crate) fn listening_rows(table: &str, port: u16) -> impl Iterator<Item = (&str, Vec<&str>)> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).filter_map(move |row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let (address, row_port) = fields.get(1)?.split_once(':')?;
        let listens =
            fields.get(3) == Some(&LISTEN) && u16::from_str_radix(row_port, 16).ok() == Some(port);
        listens.then_some((address, fields))
    })
}

/// The inodes of the sockets among the open files of the process whose `/proc` folder is
/// `dir`; `None` when they cannot be read (another user's process, or one that is gone).
pub fn socket_inodes(dir: &Path) -> Option<Vec<u64>> {
    let fds = fs::read_dir(dir.join("fd")).ok()?;
    Some(
        fds.flatten()
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .filter_map(|target| {
                let target = target.to_str()?;
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

/// What one reading of a process's environment gave.
enum Whole {
    Read(Environ),
    /// It runs, but the read did not have all of its environment: it is in the middle
    /// of an exec.
    NotYet,
    /// Gone, a kernel thread or a zombie, or another user's.
    None,
}

impl Environ {
    /// The environment of the process whose `/proc` folder is `dir`, if the read has all
    /// of it: as long as the kernel says it is (`stat` fields 50 and 51, asked before and
    /// after, as an exec may come in between). One cut short, or empty, comes from a
    /// program being replaced, or one not laid out yet (a process started with no
    /// environment at all, `env -i`, reads empty too: it costs a scan `EXEC_SETTLE`).
    fn read_whole(dir: &Path) -> Whole {
        let Some(before) = environ_range(dir) else {
            return Whole::None;
        };
        let Some(env) = Environ::read(dir) else {
            return Whole::None;
        };
        let after = environ_range(dir);
        // Empty is no whole environment either: an exec sets where it starts, then copies
        // its variables, then where it ends.
        let whole = |range: Option<(u64, u64)>| {
            range.is_some_and(|(start, end)| {
                start != 0
                    && !env.0.is_empty()
                    && end.checked_sub(start) == Some(env.0.len() as u64)
            })
        };
        if whole(Some(before)) || whole(after) {
            Whole::Read(env)
        } else if runs_a_program(dir) {
            Whole::NotYet
        } else {
            Whole::None
        }
    }
}

/// Where the environment of the process whose `/proc` folder is `dir` lies in its memory
/// (`env_start`, `env_end`); zeros for one that has none (yet).
fn environ_range(dir: &Path) -> Option<(u64, u64)> {
    let fields = stat_fields(dir)?;
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(50)?, field(51)?))
}

/// Whether the process whose `/proc` folder is `dir` runs a program of its own: not a
/// kernel thread, not a zombie nor one exiting (none of which shows an environment).
fn runs_a_program(dir: &Path) -> bool {
    let Some(fields) = stat_fields(dir) else {
        return false;
    };
    let running = fields
        .first()
        .is_some_and(|s| !matches!(s.as_str(), "Z" | "X" | "x"));
    let flags = fields.get(9 - 3).and_then(|f| f.parse::<u64>().ok());
    running && flags.is_some_and(|f| f & PF_KTHREAD == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_back() {
        let me = Path::new("/proc/self");
        let path = std::env::var_os("PATH").expect("tests run with a PATH");
        let env = Environ::read(me).unwrap();
        assert_eq!(env.get("PATH"), Some(path.as_bytes()));
        assert_eq!(env.path("PATH"), Some(PathBuf::from(&path)));
        // A name that is a prefix of a set one, or a suffix, is not that one.
        assert_eq!(env.get("PAT"), None);
        assert_eq!(env.get("ATH"), None);
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        assert_eq!(group(me), Some(pgid));
        let parent = nix::unistd::getppid().to_string();
        assert_eq!(stat_field(me, 4), Some(parent));
    }

    #[test]
    fn an_environment_written_over_by_a_title_is_told_from_one_without_variables() {
        let env = |bytes: &[u8]| Environ(bytes.to_vec());
        assert!(!env(b"").rewritten(), "env -i: no variables");
        assert!(!env(b"PORT=1\0").rewritten());
        assert!(!env(b"PORT=1\0EMPTY=\0").rewritten());
        assert!(
            env(b"\0\0\0\0").rewritten(),
            "a title that fits in the arguments"
        );
        assert!(
            env(b"ster [wsgi:app]\0\0\0").rewritten(),
            "the end of a longer one"
        );
        assert!(
            env(b"PORT=1\0\0\0").rewritten(),
            "padding after what looks like one"
        );
        assert!(env(b"PORT=1\0title").rewritten(), "not ended by a NUL");
        let me = Environ::read(Path::new("/proc/self")).unwrap();
        assert!(!me.rewritten());
        assert_eq!(
            parent(Path::new("/proc/self")),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn a_listening_socket_is_found_with_its_holder() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = listening_for_loopback(port);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].uid, nix::unistd::geteuid().as_raw());
        let held = socket_inodes(Path::new("/proc/self")).unwrap();
        assert!(held.contains(&found[0].inode), "{held:?} {found:?}");
        // A connected socket on the port is not a listening one.
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _accepted = listener.accept().unwrap();
        assert_eq!(listening_for_loopback(port), found);
        drop(listener);
        // A test forking at this moment holds a copy until its child's exec closes it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !listening_for_loopback(port).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(listening_for_loopback(port), vec![]);
    }

    #[test]
    fn an_ipv6_only_socket_beside_an_ipv4_one_does_not_count() {
        use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn6};
        use std::net::{Ipv6Addr, SocketAddrV6};
        use std::os::fd::AsRawFd;
        if std::net::TcpListener::bind("[::]:0").is_err() {
            return; // no IPv6 on this host
        }
        let listen_any6 = |v6_only: bool| {
            let fd = socket::socket(
                AddressFamily::Inet6,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &v6_only).unwrap();
            let any = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
            socket::bind(fd.as_raw_fd(), &any).unwrap();
            socket::listen(&fd, socket::Backlog::new(8).unwrap()).unwrap();
            let port = socket::getsockname::<SockaddrIn6>(fd.as_raw_fd())
                .unwrap()
                .port();
            (fd, port)
        };
        // The kernel may give the IPv6-only one a port an IPv4 socket holds: another one.
        let (only6, port, app) = (0..20)
            .find_map(|_| {
                let (only6, port) = listen_any6(true);
                let app = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
                Some((only6, port, app))
            })
            .expect("a port free on both 127.0.0.1 and [::]");
        let found = listening_for_loopback(port);
        let held = socket_inodes(Path::new("/proc/self")).unwrap();
        assert_eq!(
            found.len(),
            1,
            "the IPv6-only one does not count: {found:?}"
        );
        assert!(held.contains(&found[0].inode));
        drop(app);
        // Alone, it counts: the table cannot tell it takes no IPv4.
        assert_eq!(listening_for_loopback(port).len(), 1);
        drop(only6);
        // One on `::` that takes IPv4 too counts, and no IPv4 one can listen beside it.
        let (_dual, port) = listen_any6(false);
        assert_eq!(listening_for_loopback(port).len(), 1);
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn only_sockets_that_take_loopback_connections_count() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 12 1 0 100 0 0 10 0
   2: 0200007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 13 1 0 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1003        0 14 1 0 100 0 0 10 0
   4: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1004        0 15 1 0 100 0 0 10 0
";
        let found = listening_in(table, 8080);
        let inodes: Vec<u64> = found.iter().map(|l| l.inode).collect();
        assert_eq!(
            inodes,
            vec![11, 12],
            "127.0.0.2, a connection and port 8081 do not"
        );
        assert_eq!(found[1].uid, 1001);
    }

    #[test]
    fn the_holder_of_a_flock_is_found_by_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (held, free) = (dir.path().join("held"), dir.path().join("free"));
        fs::write(&free, "").unwrap();
        let lock = crate::fsops::try_lock(&held).unwrap().unwrap();
        assert_eq!(flock_holder(&held), Some(std::process::id()));
        assert_eq!(flock_holder(&free), None);
        drop(lock);
        assert_eq!(flock_holder(&held), None);
        // A waiter's line names the same file after `->`: not taken for the holder.
        let locks = "1: FLOCK  ADVISORY  WRITE 77 fe:00:5 0 EOF\n1: -> FLOCK  ADVISORY  WRITE 88 fe:00:5 0 EOF\n2: FLOCK  ADVISORY  WRITE 99 00:2a:5 0 EOF\n";
        assert_eq!(holders(locks, 5), vec![77, 99]);
        assert_eq!(holders(locks, 6), Vec::<u32>::new());
    }

    /// Kills the child it holds when dropped, so a failed assertion leaves no process.
    struct Killed(std::process::Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_process_in_the_middle_of_an_exec_is_not_missed() {
        // A shell that does nothing but exec itself: often caught while its environment
        // reads empty or cut short (a single pass of reads missed it in about 1 scan in 10).
        let name = format!("BLUEGREEN_PROCFS_TEST_{}", std::process::id());
        let script = r#"exec sh -c "$0" "$0""#;
        let child = std::process::Command::new("sh")
            .args(["-c", script, script])
            .env(&name, "1")
            .spawn()
            .unwrap();
        let child = Killed(child);
        let dir = PathBuf::from(format!("/proc/{}", child.0.id()));
        let missed = (0..100)
            .filter(|_| {
                !environs()
                    .iter()
                    .any(|(d, env)| *d == dir && env.get(&name) == Some(b"1".as_slice()))
            })
            .count();
        assert_eq!(missed, 0, "scans that missed the process");
    }
}
