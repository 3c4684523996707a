//! The built-in sample app (`bluegreen sample-app`): what tests and the demo deploy.
//!
//! A tiny HTTP app on `127.0.0.1:$PORT` (a `BIND` file or env var names another host, such
//! as `::1`) that reads files from its working folder (the release): `GET /` answers its slot, release and the text of `VERSION`; a `FAIL_AFTER`
//! file holding N makes every answer a 500 once it has been up N seconds; a `SLOW_MS`
//! file (or env var) delays every answer; an `IGNORE_TERM` file makes it ignore SIGTERM;
//! a `CRASH` file makes it exit with status 3 at once; a `TITLE` file (or env var) makes it
//! show that title in `ps` over its arguments and environment, as setproctitle(3) does
//! (gunicorn with the `setproctitle` package: `/proc/<pid>/environ` no longer shows its
//! variables). `POST|PUT /items/<name>` stores
//! the body under `$DATA_DIR` (default `data/`), `DELETE` removes it, `GET /items` lists
//! all as JSON, `GET /items/<name>` reads one. `GET /request` answers the request as it
//! arrived: its target and the headers a proxy sets (`Host`, `X-Forwarded-*`, a mirrored
//! copy's `X-Bluegreen-Mirror`), and so does
//! any `GET` whose query starts with `as-received` (for targets with another path); a
//! write to `/items/<name>?as-received` stores that text instead of its body.
//! `GET /echo` with an `Upgrade` header switches protocols (as a WebSocket handshake
//! does), greets with its slot, release and version, then echoes every byte back,
//! and at SIGTERM says `bye from <slot>` and closes;
//! `GET /echo?as=<protocol>` names that protocol in its `101` instead of the asked one
//! (a worker switching to what the client did not offer). `POST /first-chunk` answers with the first piece of its body as soon as that arrives,
//! without waiting for the rest (what shows that a proxy streams request bodies).
//! `GET /many-headers/<n>` answers with `n` (at most 1000) `Set-Cookie` headers (a
//! proxy's header limits). `GET /bytes/<n>` answers `n` bytes of `x` (at most 64 MiB,
//! from one buffer made on first use): a download larger than the sockets can hold;
//! `GET /bytes/<n>?chunked` sends them chunked (no length known ahead, as a stream is).
//! `GET /hop-by-hop` answers with hop-by-hop headers (what a proxy must not pass on).
//! `GET /stalled` answers 200 with a body of 2 bytes and sends 1, never the other (a
//! page whose head comes at once and whose body does not end).
//!
//! It runs on hyper rather than tiny_http: tiny_http gives each keep-alive connection a
//! thread from a pool that can leave a new connection unserved while others stay open
//! (two connections arriving together while one thread is idle), and the daemon keeps
//! pooled connections to its workers open, which stalled requests for up to 30 s.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

mod answers;

use answers::{as_received, bytes, first_chunk, hop_by_hop, many_headers, Stalled};

struct App {
    slot: String,
    release: String,
    version: String,
    started: Instant,
    fail_after: Option<Duration>,
    slow: Duration,
    data: PathBuf,
    /// Turns true at SIGTERM: each echo tunnel says goodbye and closes.
    term: tokio::sync::watch::Sender<bool>,
}

pub fn run() -> anyhow::Result<bool> {
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set: the sample app serves 127.0.0.1:$PORT, which bluegreen sets for each generation (`PORT=8000 bluegreen sample-app` runs it by hand)")?
        .parse()
        .context("PORT is not a port number")?;
    if Path::new("CRASH").exists() {
        eprintln!("sample app: CRASH file present, exiting with status 3");
        std::process::exit(3);
    }
    let ignore_term = Path::new("IGNORE_TERM").exists();
    if ignore_term {
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::default())?;
    }
    let read = |name: &str| fs::read_to_string(name).ok().map(|s| s.trim().to_string());
    // A file in the release, else an env var of the same name.
    let setting = |name: &str| read(name).or_else(|| std::env::var(name).ok());
    let number = |name: &str| -> Option<u64> { setting(name).and_then(|s| s.trim().parse().ok()) };
    let host = setting("BIND").unwrap_or_else(|| "127.0.0.1".into());
    let app = Arc::new(App {
        slot: std::env::var("SLOT").unwrap_or_else(|_| "none".into()),
        release: std::env::var("RELEASE").unwrap_or_else(|_| "none".into()),
        version: read("VERSION").unwrap_or_else(|| "unversioned".into()),
        started: Instant::now(),
        fail_after: number("FAIL_AFTER").map(Duration::from_secs),
        slow: Duration::from_millis(number("SLOW_MS").unwrap_or(0)),
        data: std::env::var_os("DATA_DIR").map_or_else(|| PathBuf::from("data"), PathBuf::from),
        term: tokio::sync::watch::Sender::new(false),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Last: the variables read no more once their memory holds the title.
    if let Some(title) = setting("TITLE") {
        show_title(&title).context("cannot show the TITLE")?;
    }
    runtime.block_on(async move {
        if !ignore_term {
            goodbye_at_sigterm(app.clone())?;
        }
        // With the longest backlog the system allows, as an app should (node's is 511):
        // a new generation takes its slot's load at once.
        let listener = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .and_then(|mut addrs| {
                addrs
                    .next()
                    .ok_or_else(|| std::io::ErrorKind::NotFound.into())
            })
            .and_then(crate::daemon::sockets::listen)
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listener)
            })
            .with_context(|| format!("cannot listen on {host}:{port}"))?;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let app = app.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let app = app.clone();
                    async move {
                        let response = match request.uri().path() == "/stalled" {
                            true => Response::new(Either::Right(Stalled { sent: false })),
                            false => app.answer(request).await.map(Either::Left),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

/// At SIGTERM, each open echo tunnel says `bye from <slot>` and closes (as a WebSocket
/// server sends its close frame), and the app exits once they have, within a second:
/// what a proxy must let reach the clients when it stops the app.
fn goodbye_at_sigterm(app: Arc<App>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::spawn(async move {
        terminate.recv().await;
        app.term.send_replace(true);
        // Each tunnel holds a receiver until it has closed.
        let _ = tokio::time::timeout(Duration::from_secs(1), app.term.closed()).await;
        std::process::exit(0);
    });
    Ok(())
}

/// Writes `title` over this process's arguments and environment, NULs after it, as
/// setproctitle(3) does where the two lie end to end (as the kernel lays them out): `ps`
/// shows the title, and `/proc/self/environ` its tail or NULs. The variables still in use
/// would have to be moved first; nothing reads one after this.
fn show_title(title: &str) -> anyhow::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let fields =
        crate::procfs::stat_fields(Path::new("/proc/self")).context("no /proc/self/stat")?;
    // `arg_start` and `env_end`: fields 48 and 51.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let (start, end) = field(48)
        .zip(field(51))
        .context("no argument and environment range")?;
    let mut area = vec![0u8; usize::try_from(end.saturating_sub(start))?];
    let shown = title.len().min(area.len().saturating_sub(1));
    area[..shown].copy_from_slice(&title.as_bytes()[..shown]);
    // Our own memory, through the file the kernel offers for it: no unsafe pointer.
    let mut memory = fs::OpenOptions::new().write(true).open("/proc/self/mem")?;
    memory.seek(SeekFrom::Start(start))?;
    memory.write_all(&area)?;
    Ok(())
}

impl App {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        tokio::time::sleep(self.slow).await;
        if request.uri().path() == "/echo" && request.headers().contains_key(header::UPGRADE) {
            return self.echo(request);
        }
        if request.method() == Method::POST && request.uri().path() == "/first-chunk" {
            return first_chunk(request.into_body()).await;
        }
        if let Some(n) = request.uri().path().strip_prefix("/many-headers/") {
            // At most 1000: a demo's front port is open to whoever can reach it.
            return many_headers(n.parse().unwrap_or(0).min(1000));
        }
        if let Some(n) = request.uri().path().strip_prefix("/bytes/") {
            let mut response = bytes(n.parse().unwrap_or(0));
            if request.uri().query() == Some("chunked") {
                // hyper frames an answer with this header chunked, length or not.
                response.headers_mut().insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }
            return response;
        }
        if request.uri().path() == "/hop-by-hop" {
            return hop_by_hop();
        }
        let (status, body) = if self
            .fail_after
            .is_some_and(|after| self.started.elapsed() >= after)
        {
            (500, "failing: FAIL_AFTER has passed\n".to_string())
        } else {
            let (parts, body) = request.into_parts();
            match body.collect().await {
                Ok(_)
                    if parts.method == Method::GET
                        && (parts.uri.path() == "/request"
                            || parts
                                .uri
                                .query()
                                .is_some_and(|q| q.starts_with("as-received"))) =>
                {
                    (200, as_received(&parts))
                }
                Ok(body) => {
                    // A write with `?as-received` stores the request as it arrived.
                    let body = match parts.uri.query() {
                        Some(query) if query.starts_with("as-received") => {
                            Bytes::from(as_received(&parts))
                        }
                        _ => body.to_bytes(),
                    };
                    self.route(&parts.method, parts.uri.path(), &body)
                }
                Err(e) => (400, format!("cannot read the body: {e}\n")),
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            StatusCode::from_u16(status).expect("the app's status codes are valid");
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }

    /// `GET /echo` with `Upgrade`: switches to the asked protocol, greets, then sends
    /// back every byte it gets until the other side closes.
    fn echo(&self, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
        let named = request
            .uri()
            .query()
            .and_then(|query| query.strip_prefix("as="))
            .and_then(|protocol| HeaderValue::from_str(protocol).ok());
        let protocol = named.unwrap_or_else(|| request.headers()[header::UPGRADE].clone());
        let greeting = format!(
            "echo from {} {} {}\n",
            self.slot, self.release, self.version
        );
        let upgrade = hyper::upgrade::on(&mut request);
        let (mut term, bye) = (self.term.subscribe(), format!("bye from {}\n", self.slot));
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else {
                return;
            };
            let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
            if write.write_all(greeting.as_bytes()).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::io::copy(&mut read, &mut write) => {}
                _ = async { term.wait_for(|term| *term).await.is_ok() } => {
                    let _ = write.write_all(bye.as_bytes()).await;
                    let _ = write.shutdown().await;
                }
            }
        });
        let mut response = Response::new(Full::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        response
    }

    fn route(&self, method: &Method, path: &str, body: &[u8]) -> (u16, String) {
        match (method, path) {
            (&Method::GET, "/") => (
                200,
                format!(
                    "{} from {} (release {})\n",
                    self.version, self.slot, self.release
                ),
            ),
            (&Method::GET, "/items") => match self.items() {
                Ok(items) => (
                    200,
                    serde_json::to_string(&items).unwrap_or_default() + "\n",
                ),
                Err(e) => (500, format!("{e:#}\n")),
            },
            (_, p) if p.starts_with("/items/") => {
                let name = &p["/items/".len()..];
                if name.is_empty()
                    || name.starts_with('.')
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return (400, format!("bad item name `{name}`\n"));
                }
                let file = self.data.join(name);
                let result = match *method {
                    Method::GET => fs::read_to_string(&file).map(|s| (200, s)),
                    Method::POST | Method::PUT => fs::create_dir_all(&self.data)
                        .and_then(|()| fs::write(&file, body))
                        .map(|()| (201, format!("stored {name}\n"))),
                    Method::DELETE => {
                        fs::remove_file(&file).map(|()| (200, format!("deleted {name}\n")))
                    }
                    _ => Ok((405, "method not allowed\n".into())),
                };
                result.unwrap_or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => (404, format!("no item {name}\n")),
                    _ => (500, format!("{name}: {e}\n")),
                })
            }
            _ => (404, format!("no route {path}\n")),
        }
    }

    fn items(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut items = BTreeMap::new();
        let entries = match fs::read_dir(&self.data) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(items),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot list {}", self.data.display()))
            }
        };
        for entry in entries {
            let entry = entry?;
            let body = fs::read_to_string(entry.path()).unwrap_or_default();
            items.insert(entry.file_name().to_string_lossy().into_owned(), body);
        }
        Ok(items)
    }
}
