//! `Config`: `bluegreen.toml` parsed into typed structs with the defaults of DESIGN.md.
//!
//! Every value is checked while it is parsed, so an error carries the position of the
//! key that caused it and comes out as one line: `<file>:<line>: <key>: <reason>`.
//! A `Config` that exists is valid; nothing downstream re-validates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::slot::Slot;

mod values;

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
    #[serde(with = "values::human_duration")]
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
    #[serde(deserialize_with = "values::url_path")]
    pub health_path: String,
    #[serde(with = "values::human_duration")]
    pub ready_timeout: Duration,
    #[serde(with = "values::human_duration")]
    pub drain_timeout: Duration,
    #[serde(with = "values::human_duration")]
    pub stop_timeout: Duration,
    #[serde(deserialize_with = "values::linked_dirs")]
    pub linked_dirs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "values::optional_url_path")]
    pub switch_path: String,
    pub token_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    #[serde(deserialize_with = "values::loopback")]
    pub listen: SocketAddr,
}

/// Exactly the two slots; any other table under `[slots]` is an unknown key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Slots {
    pub blue: SlotConfig,
    pub green: SlotConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    pub listen: SocketAddr,
    #[serde(default, deserialize_with = "values::env")]
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    #[serde(with = "values::human_duration")]
    pub interval: Duration,
    #[serde(with = "values::human_duration")]
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
    #[serde(with = "values::human_size")]
    pub max_body: u64,
    #[serde(deserialize_with = "values::at_least_one")]
    pub queue: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchConfig {
    #[serde(deserialize_with = "values::command")]
    pub migrate: String,
    #[serde(with = "values::human_duration")]
    pub migrate_timeout: Duration,
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
    /// The longest the daemon waits for a reload's verdict: the old generation's drain
    /// and stop (`overlap = false`), a start queued behind another, and its own start.
    pub fn reload_wait(&self) -> Duration {
        self.drain_timeout + self.stop_timeout + self.ready_timeout * 2 + Duration::from_secs(5)
    }
}

impl Slots {
    pub fn get(&self, slot: Slot) -> &SlotConfig {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }
}

impl Config {
    /// Reads and validates `path`. Errors are one line naming the file, line and key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {} (is this a bluegreen root? `bluegreen init` makes one)",
                path.display()
            )
        })?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))
    }

    /// Parses config text; the error reads `<line>: <key>: <reason>`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, key) = e
                .span()
                .map(|span| locate(text, span.start))
                .unwrap_or((0, String::new()));
            let message = e.message().replace('\n', " ");
            if key.is_empty() {
                format!("{line}: {message}")
            } else {
                format!("{line}: {key}: {message}")
            }
        })?;
        let listeners = [
            ("router.listen", "[router]", &config.router.listen),
            ("control.listen", "[control]", &config.control.listen),
            (
                "slots.blue.listen",
                "[slots.blue]",
                &config.slots.blue.listen,
            ),
            (
                "slots.green.listen",
                "[slots.green]",
                &config.slots.green.listen,
            ),
        ];
        for (i, later) in listeners.iter().enumerate() {
            if let Some(earlier) = listeners[..i].iter().find(|(_, _, a)| clash(a, later.2)) {
                // Named at the line the file sets it (the other may be a default).
                let (this, other) = match line_of(text, later.1) {
                    0 => (earlier, later),
                    _ => (later, earlier),
                };
                return Err(format!(
                    "{}: {}: same address as {} ({})",
                    line_of(text, this.1),
                    this.0,
                    other.0,
                    this.2
                ));
            }
        }
        Ok(config)
    }

    /// The config as TOML, for `bluegreen check`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .expect("a Config always serialises: only strings, numbers and tables")
    }
}

/// Whether two listen addresses cannot both be bound: the same one, or the same port
/// where one of them is every address (`0.0.0.0`, `::`).
fn clash(a: &SocketAddr, b: &SocketAddr) -> bool {
    a == b || (a.port() == b.port() && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}

/// The 1-based line of `offset`, and the dotted key defined on that line.
fn locate(text: &str, offset: usize) -> (usize, String) {
    let before = &text[..offset.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(line_no - 1).copied().unwrap_or("").trim();
    let header = |l: &str| {
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    };
    if let Some(table) = header(line) {
        return (line_no, table);
    }
    let table = lines[..line_no - 1]
        .iter()
        .rev()
        .find_map(|l| header(l.trim()));
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    let full = match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, _) => key,
    };
    (line_no, full)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(needle))
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_the_defaults() {
        assert_eq!(Config::parse(TEMPLATE).unwrap(), Config::default());
    }

    #[test]
    fn effective_config_round_trips() {
        let config = Config::default();
        assert_eq!(Config::parse(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            (
                "[app]\nready_timeout = \"3 parsecs\"\n",
                "2: app.ready_timeout: invalid duration",
            ),
            (
                "branch = \"main\"\nbogus = 1\n",
                "2: bogus: unknown field `bogus`",
            ),
            ("[router]\nlisten = \"nowhere\"\n", "2: router.listen: "),
            (
                "[slots.red]\nlisten = \"127.0.0.1:1\"\n",
                "1: slots.red: unknown field `red`",
            ),
            (
                "branch = \"a..b\"\n",
                "1: branch: `a..b` is not a valid branch name",
            ),
            (
                "[mirror]\nmax_body = \"ten\"\n",
                "2: mirror.max_body: invalid size `ten`",
            ),
            (
                "[control]\nlisten = \"0.0.0.0:8081\"\n",
                "2: control.listen: 0.0.0.0:8081 is not a loopback",
            ),
            ("[app]\ncommand = \"node 'main.js\"\n", "2: app.command: "),
            (
                "[app]\nlinked_dirs = [\"../up\"]\n",
                "2: app.linked_dirs: `../up` must be",
            ),
            (
                "[slots.green]\nlisten = \"0.0.0.0:9090\"\n",
                "1: slots.green.listen: same address as slots.blue.listen (0.0.0.0:9090)",
            ),
        ];
        for (text, want) in cases {
            let err = Config::parse(text).unwrap_err();
            assert!(
                err.starts_with(want),
                "{text:?}: got {err:?}, want {want:?}"
            );
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(values::human_size::parse("10MiB"), Some(10 << 20));
        assert_eq!(values::human_size::parse("512KB"), Some(512_000));
        assert_eq!(values::human_size::parse("4096"), Some(4096));
        assert_eq!(values::human_size::parse("4 parsecs"), None);
    }
}
