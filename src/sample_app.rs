//! The built-in sample app (`bluegreen sample-app`): what tests and the demo deploy.
//!
//! A tiny HTTP app on `$PORT` that reads files from its working folder (the release):
//! `GET /` answers its slot, release and the text of `VERSION`; a `FAIL_AFTER` file
//! holding N makes every answer a 500 once it has been up N seconds; a `SLOW_MS` file
//! (or env var) delays every answer; an `IGNORE_TERM` file makes it ignore SIGTERM; a
//! `CRASH` file makes it exit with status 3 at once.
//! `POST|PUT /items/<name>` stores the body under `$DATA_DIR` (default `data/`),
//! `DELETE` removes it, `GET /items` lists all as JSON, `GET /items/<name>` reads one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tiny_http::{Header, Method, Request, Response, Server};

/// Threads answering requests: a slow answer must not hold up a health check.
const THREADS: usize = 16;

struct App {
    slot: String,
    release: String,
    version: String,
    started: Instant,
    fail_after: Option<Duration>,
    slow: Duration,
    data: PathBuf,
}

pub fn run() -> anyhow::Result<bool> {
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set")?
        .parse()
        .context("PORT is not a port number")?;
    let read = |name: &str| fs::read_to_string(name).ok().map(|s| s.trim().to_string());
    let number = |name: &str| -> Option<u64> {
        read(name)
            .or_else(|| std::env::var(name).ok())
            .and_then(|s| s.trim().parse().ok())
    };
    if Path::new("CRASH").exists() {
        eprintln!("sample app: CRASH file present, exiting with status 3");
        std::process::exit(3);
    }
    if Path::new("IGNORE_TERM").exists() {
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::default())?;
    }
    let app = Arc::new(App {
        slot: std::env::var("SLOT").unwrap_or_else(|_| "none".into()),
        release: std::env::var("RELEASE").unwrap_or_else(|_| "none".into()),
        version: read("VERSION").unwrap_or_else(|| "unversioned".into()),
        started: Instant::now(),
        fail_after: number("FAIL_AFTER").map(Duration::from_secs),
        slow: Duration::from_millis(number("SLOW_MS").unwrap_or(0)),
        data: std::env::var_os("DATA_DIR").map_or_else(|| PathBuf::from("data"), PathBuf::from),
    });
    let server = Arc::new(
        Server::http(("127.0.0.1", port))
            .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?,
    );
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (server, app) = (server.clone(), app.clone());
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    app.answer(request);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(true)
}

impl App {
    fn answer(&self, mut request: Request) {
        std::thread::sleep(self.slow);
        let (status, body) = if self
            .fail_after
            .is_some_and(|after| self.started.elapsed() >= after)
        {
            (500, "failing: FAIL_AFTER has passed\n".to_string())
        } else {
            let mut body = Vec::new();
            match request.as_reader().read_to_end(&mut body) {
                Ok(_) => self.route(request.method(), request.url(), body),
                Err(e) => (400, format!("cannot read the body: {e}\n")),
            }
        };
        let header = Header::from_bytes("Content-Type", "text/plain; charset=utf-8")
            .expect("a static header is valid");
        let _ = request.respond(
            Response::from_string(body)
                .with_status_code(status)
                .with_header(header),
        );
    }

    fn route(&self, method: &Method, url: &str, body: Vec<u8>) -> (u16, String) {
        let path = url.split('?').next().unwrap_or("");
        match (method, path) {
            (Method::Get, "/") => (
                200,
                format!(
                    "{} from {} (release {})\n",
                    self.version, self.slot, self.release
                ),
            ),
            (Method::Get, "/items") => match self.items() {
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
                let result = match method {
                    Method::Get => fs::read_to_string(&file).map(|s| (200, s)),
                    Method::Post | Method::Put => fs::create_dir_all(&self.data)
                        .and_then(|()| fs::write(&file, &body))
                        .map(|()| (201, format!("stored {name}\n"))),
                    Method::Delete => {
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
