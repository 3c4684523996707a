//! HTTP on 127.0.0.1 for the tests: one request, or many clients looping on keep-alive
//! connections while something else happens (a deploy, a switch); and whether some
//! other client's connection is open.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A port for a listener of a test's daemon: below the kernel's range for `bind(0)` and
/// outgoing connections (32768-60999 by default), so that no generation or connection of
/// a test running alongside can take it between now and the daemon's bind; each port
/// is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (offset + n) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

pub fn http(method: &str, url: &str, body: Option<&str>) -> Result<Answer, String> {
    let request = agent().request(method, url);
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => Ok(Answer {
            status: r.status(),
            body: r.into_string().unwrap_or_default(),
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `work` while `clients` threads send `GET url` in a loop on keep-alive
/// connections; returns how many answered 200, and every failure (a connection error or
/// another status) with its reason. ureq sends a request again on a new connection when
/// a kept-alive one turns out closed, as browsers do.
pub fn under_load(url: &str, clients: usize, work: impl FnOnce()) -> (usize, Vec<String>) {
    load(
        clients,
        || {
            let agent = agent();
            move || match agent.get(url).call() {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(ureq::Error::Status(code, r)) => Err(format!(
                    "status {code}: {}",
                    r.into_string().unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            }
        },
        work,
    )
}

/// `under_load` with clients that never send a request twice, as wrk: each keeps its
/// connection until an answer says `Connection: close`, and a connection that closes
/// before the answer to a request sent on it is a failure.
pub fn under_strict_load(port: u16, clients: usize, work: impl FnOnce()) -> (usize, Vec<String>) {
    load(
        clients,
        || {
            let mut connection = None;
            move || {
                let result = strict_get(port, &mut connection);
                if result.is_err() {
                    connection = None;
                }
                result
            }
        },
        work,
    )
}

/// One `GET /` on the kept connection (a new one if none), read to the end of its body.
fn strict_get(
    port: u16,
    connection: &mut Option<std::io::BufReader<std::net::TcpStream>>,
) -> Result<(), String> {
    use std::io::{BufRead, Read, Write};
    if connection.is_none() {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        *connection = Some(std::io::BufReader::new(stream));
    }
    let reader = connection.as_mut().unwrap();
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let (mut status, mut length, mut close) = (String::new(), 0, false);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("closed before the answer".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if status.is_empty() {
            status = line;
        } else if let Some(value) = line.strip_prefix("content-length:") {
            length = value
                .trim()
                .parse()
                .map_err(|_| format!("bad length: {line}"))?;
        } else if line == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    if close {
        *connection = None;
    }
    match status.starts_with("http/1.1 200 ") {
        true => Ok(()),
        false => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
    }
}

/// Runs `work` while `clients` threads each call a client that `client` makes in a loop;
/// returns how many calls succeeded, and every failure.
fn load<C: FnMut() -> Result<(), String>>(
    clients: usize,
    client: impl Fn() -> C + Sync,
    work: impl FnOnce(),
) -> (usize, Vec<String>) {
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut call = client();
                    let (mut answers, mut failures) = (0, Vec::new());
                    while !stop.load(Ordering::Acquire) {
                        match call() {
                            Ok(()) => answers += 1,
                            Err(e) => failures.push(e),
                        }
                    }
                    (answers, failures)
                })
            })
            .collect();
        {
            // Stops the clients even when `work` fails an assertion.
            let _stop = StopOnDrop(&stop);
            work();
        }
        threads.into_iter().map(|t| t.join().unwrap()).fold(
            (0, Vec::new()),
            |(a, mut f), (b, g)| {
                f.extend(g);
                (a + b, f)
            },
        )
    })
}

/// A connection to `port` that has sent `request`; its reads give up after 10 s.
pub fn sent(port: u16, request: &[u8]) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    stream
}

/// The head of the answer `stream` gets (and whatever came with it), lowercased.
pub fn head_of(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

/// Sends `request` as is to `port` and reads the answer until the connection closes (a
/// reset after the answer, from a server that closes with bytes left unread, ends it too).
pub fn raw(port: u16, request: &str) -> String {
    read_to_close(sent(port, request.as_bytes()))
}

/// What `stream` sends until it closes (or is reset), as text.
fn read_to_close(mut stream: std::net::TcpStream) -> String {
    use std::io::Read;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// `raw`, from a socket of user `uid` (made under that file system uid, on a thread of
/// its own: the kernel's TCP tables then name `uid` as its owner); `None` unless this
/// runs as root, the only user that may make one.
pub fn raw_as(uid: u32, port: u16, request: &str) -> Option<String> {
    use std::io::Write;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let stream = std::thread::spawn(move || {
        // setfsuid(2) changes the calling thread only.
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
        let stream = std::net::TcpStream::connect(("127.0.0.1", port));
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
        stream
    })
    .join()
    .unwrap()
    .unwrap();
    let mut stream = stream;
    stream.write_all(request.as_bytes()).unwrap();
    Some(read_to_close(stream))
}

/// How many connections to `port` on this host are open (ESTABLISHED on the listener's
/// side, as `/proc/net/tcp` and `tcp6` show them): clients waiting for their answers.
pub fn connections_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|table| {
            let table = std::fs::read_to_string(table).unwrap_or_default();
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local = fields.get(1).and_then(|a| a.rsplit(':').next());
                    let local = local.and_then(|p| u16::from_str_radix(p, 16).ok());
                    local == Some(port) && fields.get(3) == Some(&"01")
                })
                .count()
        })
        .sum()
}
