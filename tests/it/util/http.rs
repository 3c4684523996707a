//! HTTP on 127.0.0.1 for the tests: one request, or many clients looping on keep-alive
//! connections while something else happens (a deploy, a switch).

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
/// another status) with its reason.
pub fn under_load(url: &str, clients: usize, work: impl FnOnce()) -> (usize, Vec<String>) {
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
                    let agent = agent();
                    let (mut answers, mut failures) = (0, Vec::new());
                    while !stop.load(Ordering::Acquire) {
                        match agent.get(url).call() {
                            Ok(r) if r.status() == 200 => answers += 1,
                            Ok(r) => failures.push(format!("status {}", r.status())),
                            Err(ureq::Error::Status(code, r)) => failures.push(format!(
                                "status {code}: {}",
                                r.into_string().unwrap_or_default()
                            )),
                            Err(e) => failures.push(e.to_string()),
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

/// Sends `request` as is to `port` and reads the answer until the connection closes (a
/// reset after the answer, from a server that closes with bytes left unread, ends it too).
pub fn raw(port: u16, request: &str) -> String {
    use std::io::Read;
    let mut stream = sent(port, request.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}
