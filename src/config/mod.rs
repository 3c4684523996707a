//! `Config`: `bluegreen.toml` parsed into typed structs with the defaults of DESIGN.md.
//!
//! Every value is checked while it is parsed, so an error carries the position of the
//! key that caused it and comes out as one line: `<file>:<line>: <key>: <reason>`.
//! A `Config` that exists is valid; nothing downstream re-validates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::slot::Slot;

mod fallback;
mod parse;
mod units;
mod values;

pub use parse::MAX_BYTES;
pub use values::{BUILD_MARKER, GENERATION_MARKER, MARKER_ENV, MIRROR_MEMORY, WORKER_MARKER};

/// The commented default config that `init` writes; parsing it gives `Config::default()`.
pub const TEMPLATE: &str = include_str!("bluegreen.toml");

/// A whole `bluegreen.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    #[serde(deserialize_with = "values::branch")]
    pub branch: String,
    #[serde(deserialize_with = "values::at_least_one")]
    pub keep_releases: usize,
    pub build: BuildConfig,
    pub app: AppConfig,
    pub router: RouterConfig,
    pub control: ControlConfig,
    pub slots: Slots,
    pub heartbeat: HeartbeatConfig,
    pub mirror: MirrorConfig,
    pub switch: SwitchConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildConfig {
    #[serde(deserialize_with = "values::command")]
    pub command: String,
    #[serde(with = "units::positive_duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "values::env")]
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    #[serde(deserialize_with = "values::required_command")]
    pub command: String,
    pub overlap: bool,
    /// Whether an upstream connection that carried a request body may be reused: only
    /// safe when the app reads or discards every body (see `daemon::pool`).
    pub reuse_after_body: bool,
    #[serde(deserialize_with = "values::url_path")]
    pub health_path: String,
    #[serde(with = "units::positive_duration")]
    pub ready_timeout: Duration,
    #[serde(with = "units::human_duration")]
    pub drain_timeout: Duration,
    #[serde(with = "units::human_duration")]
    pub stop_timeout: Duration,
    #[serde(deserialize_with = "values::linked_dirs")]
    pub linked_dirs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    #[serde(deserialize_with = "values::listen")]
    pub listen: SocketAddr,
    #[serde(deserialize_with = "values::switch_path")]
    pub switch_path: String,
    pub token_file: PathBuf,
    #[serde(with = "units::positive_duration")]
    pub client_timeout: Duration,
    /// Where the file sets `token_file` (`<file>:<line>`), for the errors of reading it,
    /// which come after the load.
    #[serde(skip)]
    pub token_file_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    #[serde(deserialize_with = "values::loopback")]
    pub listen: SocketAddr,
}

/// Exactly the two slots; any other table under `[slots]` is an unknown key. A key a
/// slot's table leaves out keeps that slot's default (blue's and green's differ, so
/// this is read through [`values::slots`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Slots {
    pub blue: SlotConfig,
    pub green: SlotConfig,
}

impl<'de> Deserialize<'de> for Slots {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Slots, D::Error> {
        values::slots(d)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlotConfig {
    pub listen: SocketAddr,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    #[serde(with = "units::interval")]
    pub interval: Duration,
    #[serde(with = "units::positive_duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "values::url_path")]
    pub path: String,
    #[serde(deserialize_with = "values::at_least_one_u32")]
    pub failures: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    #[serde(deserialize_with = "values::methods")]
    pub methods: Vec<String>,
    #[serde(
        serialize_with = "units::human_size::serialize",
        deserialize_with = "values::max_body"
    )]
    pub max_body: u64,
    #[serde(deserialize_with = "values::queue")]
    pub queue: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchConfig {
    #[serde(deserialize_with = "values::command")]
    pub migrate: String,
    #[serde(with = "units::positive_duration")]
    pub migrate_timeout: Duration,
}

/// The config's four listen keys, in the order [`Config::listens`] gives their addresses.
pub const LISTEN_KEYS: [&str; 4] = [
    "router.listen",
    "slots.blue.listen",
    "slots.green.listen",
    "control.listen",
];

impl Config {
    /// The addresses of [`LISTEN_KEYS`], in that order.
    pub fn listens(&self) -> [std::net::SocketAddr; 4] {
        [
            self.router.listen,
            self.slots.blue.listen,
            self.slots.green.listen,
            self.control.listen,
        ]
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            branch: "main".into(),
            keep_releases: 5,
            build: BuildConfig::default(),
            app: AppConfig::default(),
            router: RouterConfig::default(),
            control: ControlConfig::default(),
            slots: Slots::default(),
            heartbeat: HeartbeatConfig::default(),
            mirror: MirrorConfig::default(),
            switch: SwitchConfig::default(),
        }
    }
}

impl Default for BuildConfig {
    fn default() -> BuildConfig {
        BuildConfig {
            command: "npm install --omit=dev".into(),
            timeout: Duration::from_secs(600),
            env: BTreeMap::new(),
        }
    }
}

impl Default for AppConfig {
    fn default() -> AppConfig {
        AppConfig {
            command: "node main.js {port} $REDIS_PORT".into(),
            overlap: true,
            reuse_after_body: false,
            health_path: "/".into(),
            ready_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            linked_dirs: Vec::new(),
        }
    }
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            listen: ([0, 0, 0, 0], 8080).into(),
            switch_path: "/switch".into(),
            token_file: PathBuf::new(),
            client_timeout: Duration::from_secs(60),
            token_file_at: None,
        }
    }
}

impl Default for ControlConfig {
    fn default() -> ControlConfig {
        ControlConfig {
            listen: ([127, 0, 0, 1], 8081).into(),
        }
    }
}

impl Default for Slots {
    fn default() -> Slots {
        let slot = |port, redis: &str| SlotConfig {
            listen: ([127, 0, 0, 1], port).into(),
            env: BTreeMap::from([("REDIS_PORT".to_string(), redis.to_string())]),
        };
        Slots {
            blue: slot(9090, "6379"),
            green: slot(5060, "6380"),
        }
    }
}

impl Default for HeartbeatConfig {
    fn default() -> HeartbeatConfig {
        HeartbeatConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            path: "/".into(),
            failures: 2,
        }
    }
}

impl Default for MirrorConfig {
    fn default() -> MirrorConfig {
        MirrorConfig {
            methods: ["POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec(),
            max_body: 10 << 20,
            queue: 1024,
        }
    }
}

impl Default for SwitchConfig {
    fn default() -> SwitchConfig {
        SwitchConfig {
            migrate: String::new(),
            migrate_timeout: Duration::from_secs(60),
        }
    }
}

impl AppConfig {
    /// The longest the daemon waits for a reload's verdict: a start queued behind another
    /// (its readiness, and its stop if it failed), the old generation's drain and stop
    /// (`overlap = false`), and its own start.
    pub fn reload_wait(&self) -> Duration {
        self.drain_timeout + self.stop_timeout * 2 + self.ready_timeout * 2 + Duration::from_secs(5)
    }
}

impl RouterConfig {
    /// The bearer token in `token_file`, if one is set; an unreadable or empty file is
    /// an error (`check` reports it as `serve` would), named as a bad value is:
    /// `<file>:<line>: router.token_file: ...`.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        use anyhow::Context;
        if self.token_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let key = match &self.token_file_at {
            Some(at) => format!("{at}: router.token_file"),
            None => "router.token_file".to_string(),
        };
        let path = &self.token_file;
        let token = crate::fsops::read_regular(path, 64 << 10)
            .with_context(|| format!("{key}: cannot read {}", path.display()))?;
        let token = String::from_utf8_lossy(&token);
        let token = token.trim().to_string();
        anyhow::ensure!(!token.is_empty(), "{key}: {} is empty", path.display());
        // What `Authorization` can carry, as the front reads it (visible ASCII and
        // spaces): a token with a line break or other bytes could never be presented.
        anyhow::ensure!(
            token.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            "{key}: {} holds more than a token: it must be one line of printable ASCII, \
             as an Authorization header carries it",
            path.display()
        );
        Ok(Some(token))
    }

    /// What is unsafe about `token_file` and its `token`, one line each: a token short
    /// enough to guess, and a file others may read (whoever reads it may switch the
    /// front from anywhere). `serve` logs them (at the start and at each SIGHUP that
    /// takes a config), `check` prints them.
    pub fn token_warnings(&self, token: Option<&str>) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        let path = &self.token_file;
        let mut warnings = Vec::new();
        if path.as_os_str().is_empty() {
            return warnings;
        }
        if let Some(token) = token.filter(|token| token.len() < SHORT_TOKEN) {
            warnings.push(format!(
                "router.token_file {} holds a token of {} characters: the front answers wrong tokens as fast as it can, so a short one may be guessed; use {SHORT_TOKEN} or more random ones (`head -c 24 /dev/urandom | base64`)",
                path.display(),
                token.len()
            ));
        }
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.mode() & 0o077 != 0 {
                warnings.push(format!(
                    "router.token_file {} is mode {:04o}: users other than its owner may read the token, and switch the front with it; chmod 600 it",
                    path.display(),
                    meta.mode() & 0o7777
                ));
            }
        }
        warnings
    }
}

/// The shortest token not warned about: the front does not slow down wrong ones.
const SHORT_TOKEN: usize = 16;

impl Slots {
    pub fn get(&self, slot: Slot) -> &SlotConfig {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }
}
