//! Reading `bluegreen.toml`: `Config::load` and `Config::parse`, the checks that span
//! keys (two listeners on one address), and the error position: the line and dotted key
//! of whatever toml or a value's deserializer refused, so every error is one line.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::Config;

/// The largest `bluegreen.toml` read: the commented one `init` writes is 6 KiB.
pub const MAX_BYTES: u64 = 1 << 20;

impl Config {
    /// Reads and validates `path`. Errors are one line naming the file, line and key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        Config::from_text(path, &Config::read(path)?)
    }

    /// The text of the config file at `path`, or why it cannot be read.
    pub fn read(path: &Path) -> anyhow::Result<String> {
        let text = crate::fsops::read_regular(path, MAX_BYTES).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
        });
        text.map_err(|e| {
            if let Some(dangling) = crate::fsops::dangling(path) {
                return anyhow::anyhow!("{dangling}: put that file back");
            }
            let path = path.display();
            match e.kind() {
                ErrorKind::NotFound | ErrorKind::NotADirectory => anyhow::anyhow!(
                    "cannot read {path}: {e} (is this a bluegreen root? `bluegreen init` makes one)"
                ),
                // The file is there: whether this is a root is not the question.
                ErrorKind::InvalidData => {
                    anyhow::anyhow!("cannot read {path}: it is not UTF-8 text, as TOML must be")
                }
                // Kept as the cause: a command tells whose the file is (see `run`).
                ErrorKind::PermissionDenied => {
                    anyhow::Error::new(e).context(format!("cannot read {path}"))
                }
                _ => anyhow::anyhow!("cannot read {path}: {e}"),
            }
        })
    }

    /// The config in `text`, read from `path` (its errors name it; a relative token
    /// file is taken from its folder).
    pub fn from_text(path: &Path, text: &str) -> anyhow::Result<Config> {
        let (mut config, token_file_line) =
            parse_at(text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
        // A relative token file is the root's, wherever the command runs from.
        let token = &mut config.router.token_file;
        if !token.as_os_str().is_empty() && token.is_relative() {
            if let Some(dir) = path.parent() {
                *token = dir.join(&*token);
            }
        }
        // Read later (`serve`, `check`): its errors name the line here.
        config.router.token_file_at =
            token_file_line.map(|line| format!("{}:{line}", path.display()));
        Ok(config)
    }

    /// Parses config text; the error reads `<line>: <key>: <reason>`.
    pub fn parse(text: &str) -> Result<Config, String> {
        parse_at(text).map(|(config, _)| config)
    }

    /// The config as TOML, for `bluegreen check`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .expect("a Config always serialises: only strings, numbers and tables")
    }
}

/// `Config::parse`, and the line that sets `router.token_file`, if one does.
fn parse_at(text: &str) -> Result<(Config, Option<usize>), String> {
    // A file that sets nothing gives every key its default, `app.command` included: an
    // editor's empty buffer saved, or a file read while it is rewritten in place.
    let table = toml::from_str::<toml::Table>(text);
    if table.as_ref().is_ok_and(|table| table.is_empty()) {
        return Err(
            "1: sets nothing (the file is empty, or only comments): every key would take its default; write the settings (`bluegreen init` makes a commented config)"
                .into(),
        );
    }
    let config: Config = toml::from_str(text).map_err(|e| {
        let (line, key) = e
            .span()
            .map(|span| locate(text, span.start, e.message().contains("table header")))
            .unwrap_or((0, String::new()));
        let message = misshapen(text, &key).unwrap_or_else(|| {
            // toml's message may take lines ("invalid table header\nduplicate key ...").
            let message = e.message().trim_end().replace('\n', ": ");
            // Not TOML at all: said so, as toml's own words (`expected `.`, `=``) do not.
            match table.is_err() {
                true => format!("not valid TOML: {message}"),
                false => plain_words(message),
            }
        });
        if key.is_empty() {
            format!("{line}: {message}")
        } else {
            format!("{line}: {key}: {message}")
        }
    })?;
    let at = Positions::read(text);
    let listeners = [
        ("router.listen", &config.router.listen, &at.router.listen),
        ("control.listen", &config.control.listen, &at.control.listen),
        (
            "slots.blue.listen",
            &config.slots.blue.listen,
            &at.slots.blue.listen,
        ),
        (
            "slots.green.listen",
            &config.slots.green.listen,
            &at.slots.green.listen,
        ),
    ];
    let line = |set: &Option<Spanned<toml::Value>>| {
        set.as_ref()
            .map(|value| locate(text, value.span().start, false).0)
    };
    for (i, later) in listeners.iter().enumerate() {
        if let Some(earlier) = listeners[..i].iter().find(|(_, a, _)| clash(a, later.1)) {
            // Named at the line the file sets it (the other may be a default); when
            // the file sets both, at the later one.
            let (this, other) = match line(earlier.2) > line(later.2) {
                true => (earlier, later),
                false => (later, earlier),
            };
            let what = match this.1 == other.1 {
                true => "same address as".to_string(),
                false => format!("{} cannot be bound next to", this.1),
            };
            return Err(format!(
                "{}: {}: {what} {} ({})",
                line(this.2).unwrap_or(0),
                this.0,
                other.0,
                other.1
            ));
        }
    }
    Ok((config, line(&at.router.token_file)))
}

/// serde's message without the names of Rust types: `expected struct PartialSlot`,
/// `expected usize`, `expected a sequence` say what the file should hold instead.
fn plain_words(message: String) -> String {
    if let Some((found, _)) = message.split_once(", expected struct ") {
        return format!("{found}, expected a table");
    }
    let Some((found, expected)) = message.rsplit_once(", expected ") else {
        return message;
    };
    let expected = match expected {
        "usize" | "u64" => "a whole number of 1 or more",
        "u32" => "a whole number from 1 to 4294967295",
        "u16" => "a whole number from 1 to 65535",
        "u8" => "a whole number from 1 to 255",
        "a sequence" => "a list (`[...]`)",
        "a map" => "a table",
        other => other,
    };
    format!("{found}, expected {expected}")
}

/// Why `key`, a table of the config (`[app]`, `[slots.blue]`, ...), is something else in
/// `text`, if it is: serde's own words would be `invalid type: map, expected a string`
/// for `[[app]]` (an array of tables, read as a struct's fields in order) and would name
/// a Rust type for `heartbeat = "on"`.
fn misshapen(text: &str, key: &str) -> Option<String> {
    let path: Vec<&str> = key.split('.').collect();
    let at = |value: &toml::Value| -> Option<toml::Value> {
        path.iter()
            .try_fold(value, |value, key| value.get(key))
            .cloned()
    };
    let default = at(&toml::Value::try_from(Config::default()).ok()?)?;
    let found = at(&toml::from_str::<toml::Value>(text).ok()?)?;
    if !default.is_table() || found.is_table() {
        return None;
    }
    let tables = found
        .as_array()
        .is_some_and(|items| !items.is_empty() && items.iter().all(toml::Value::is_table));
    let kind = found.type_str();
    let article = if kind.starts_with(['a', 'i']) {
        "an"
    } else {
        "a"
    };
    Some(match tables {
        true => format!("`[[{key}]]` makes a list of tables; write `[{key}]`"),
        false => format!("must be a table (`[{key}]`), not {article} {kind}"),
    })
}

/// Whether two listen addresses cannot both be bound: the same one, or the same port
/// where one of them is every address of its family (`0.0.0.0`, `[::]`), and `[::]`
/// also takes the port on every IPv4 address (a dual-stack socket, Linux's default). An
/// IPv4-mapped `[::ffff:a.b.c.d]` is `a.b.c.d`. `0.0.0.0:8080` next to `[::1]:8080` is
/// fine.
fn clash(a: &SocketAddr, b: &SocketAddr) -> bool {
    use std::net::IpAddr::{V4, V6};
    if a.port() != b.port() {
        return false;
    }
    match (a.ip().to_canonical(), b.ip().to_canonical()) {
        (x @ V4(_), y @ V4(_)) | (x @ V6(_), y @ V6(_)) => {
            x == y || x.is_unspecified() || y.is_unspecified()
        }
        (V6(six), V4(_)) | (V4(_), V6(six)) => six.is_unspecified(),
    }
}

/// The 1-based line of `offset`, and the dotted key defined on that line.
fn locate(text: &str, offset: usize, header_error: bool) -> (usize, String) {
    let before = &text[..offset.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(line_no - 1).copied().unwrap_or("").trim();
    // `[app]   # a comment` names `app`; `[[x]]` names `x`.
    let header = |l: &str| {
        let inside = l.strip_prefix('[')?.trim_start_matches('[');
        Some(inside[..inside.find(']')?].trim().to_string())
    };
    if let Some(table) = header(line) {
        return (line_no, table);
    }
    // An unclosed `[app` that toml calls a bad table header names `app`, not the table
    // before it (a line of an array, `["PUT",`, is no header).
    if let Some(inside) = line.strip_prefix('[').filter(|_| header_error) {
        let inside = inside.trim_start_matches('[');
        let end = inside.find('#').unwrap_or(inside.len());
        return (line_no, inside[..end].trim().to_string());
    }
    let table = lines[..line_no - 1]
        .iter()
        .rev()
        .find_map(|l| header(l.trim()));
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches(['"', '\'']).to_string())
        .unwrap_or_default();
    let full = match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, _) => key,
    };
    (line_no, full)
}

/// Where the file sets the keys checked after parsing, however it writes them (under a
/// table header, as dotted keys, in an inline table): each value's place in the text.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Positions {
    router: Keys,
    control: Keys,
    slots: SlotKeys,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Keys {
    listen: Option<Spanned<toml::Value>>,
    token_file: Option<Spanned<toml::Value>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SlotKeys {
    blue: Keys,
    green: Keys,
}

impl Positions {
    /// Of text that parsed as a `Config` (so it parses here too).
    fn read(text: &str) -> Positions {
        toml::from_str(text).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TEMPLATE;

    #[test]
    fn template_is_the_defaults() {
        assert_eq!(Config::parse(TEMPLATE).unwrap(), Config::default());
    }

    #[test]
    fn effective_config_round_trips() {
        let config = Config::default();
        assert_eq!(Config::parse(&config.to_toml()).unwrap(), config);
    }

    /// A year is the longest any duration key takes, as humantime counts one: `1y`,
    /// and `365d` are taken (and printed back as taken), a minute more is not.
    #[test]
    fn a_year_is_the_longest_duration() {
        for (text, seconds) in [("1y", 31_557_600), ("365d", 31_536_000)] {
            let config = Config::parse(&format!("[build]\ntimeout = \"{text}\"\n")).unwrap();
            assert_eq!(config.build.timeout.as_secs(), seconds, "{text}");
            assert_eq!(Config::parse(&config.to_toml()).unwrap(), config, "{text}");
        }
        assert_eq!(
            Config::parse("[build]\ntimeout = \"1y 1m\"\n").unwrap_err(),
            "2: build.timeout: `1y 1m` is too long (at most 1 year)"
        );
    }

    #[test]
    fn a_table_written_as_something_else_is_named_plainly() {
        for (text, want) in [
            (
                "[[app]]\ncommand = \"x\"\n",
                "1: app: `[[app]]` makes a list of tables; write `[app]`",
            ),
            (
                "branch = \"main\"\nheartbeat = \"on\"\n",
                "2: heartbeat: must be a table (`[heartbeat]`), not a string",
            ),
            (
                "app = 5\n",
                "1: app: must be a table (`[app]`), not an integer",
            ),
            (
                "[[slots.blue]]\nlisten = \"127.0.0.1:1\"\n",
                "1: slots.blue: `[[slots.blue]]` makes a list of tables; write `[slots.blue]`",
            ),
            (
                "slots = [1]\n",
                "1: slots: must be a table (`[slots]`), not an array",
            ),
            (
                "slots = { blue = 3 }\n",
                "1: slots: invalid type: integer `3`, expected a table",
            ),
        ] {
            assert_eq!(Config::parse(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn listen_addresses_clash_only_where_bind_would_fail() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        for (a, b, clashes) in [
            ("127.0.0.1:80", "127.0.0.1:80", true),
            ("127.0.0.1:80", "127.0.0.1:81", false),
            ("127.0.0.1:80", "127.0.0.2:80", false),
            ("0.0.0.0:80", "127.0.0.1:80", true),
            ("0.0.0.0:80", "[::1]:80", false),
            ("0.0.0.0:80", "[::]:80", true),
            ("[::]:80", "127.0.0.1:80", true),
            ("[::]:80", "[::1]:80", true),
            ("[::1]:80", "[::2]:80", false),
            ("[::ffff:127.0.0.1]:80", "127.0.0.1:80", true),
            ("[::ffff:127.0.0.1]:80", "[::1]:80", false),
        ] {
            assert_eq!(clash(&addr(a), &addr(b)), clashes, "{a} {b}");
            assert_eq!(clash(&addr(b), &addr(a)), clashes, "{b} {a}");
        }
        let both = "[router]\nlisten = \"0.0.0.0:8080\"\n[slots.blue]\nlisten = \"[::1]:8080\"\n";
        assert!(Config::parse(both).is_ok());
    }

    #[test]
    fn errors_name_no_rust_type() {
        for (text, want) in [
            (
                "keep_releases = -1\n",
                "1: keep_releases: invalid value: integer `-1`, expected a whole number of 1 or more",
            ),
            (
                "[heartbeat]\nfailures = 2.5\n",
                "2: heartbeat.failures: invalid type: floating point `2.5`, expected a whole number from 1 to 4294967295",
            ),
            (
                "[app]\nlinked_dirs = \"data\"\n",
                "2: app.linked_dirs: invalid type: string \"data\", expected a list (`[...]`)",
            ),
            // Too large, not too small: the message names the range.
            (
                "[heartbeat]\nfailures = 4294967296\n",
                "2: heartbeat.failures: invalid value: integer `4294967296`, expected a whole number from 1 to 4294967295",
            ),
        ] {
            assert_eq!(Config::parse(text).unwrap_err(), want);
        }
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            (
                "[app]\nready_timeout = \"3 parsecs\"\n",
                "2: app.ready_timeout: invalid duration",
            ),
            (
                "[app]\n'ready_timeout' = 'soon'\n",
                "2: app.ready_timeout: invalid duration",
            ),
            (
                "branch = \"main\"\nbogus = 1\n",
                "2: bogus: unknown field `bogus`",
            ),
            (
                "[router]\nlisten = \"nowhere\"\n",
                "2: router.listen: `nowhere` is not IP:port",
            ),
            (
                "[slots.blue]\nlisten = \"localhost:9090\"\n",
                "2: slots.blue.listen: `localhost:9090` is not IP:port",
            ),
            (
                "[slots.red]\nlisten = \"127.0.0.1:1\"\n",
                "1: slots.red: unknown field `red`",
            ),
            (
                "branch = \"a..b\"\n",
                "1: branch: `a..b` is not a valid branch name",
            ),
            (
                "branch = \"refs/heads/main\"\n",
                "1: branch: `refs/heads/main` is a ref: write the branch name alone (\"main\")",
            ),
            (
                "[router]\nswitch_path = \"/\"\n",
                "2: router.switch_path: `/` would take the app's home page",
            ),
            (
                "[router]\nswitch_path = \"/ops/switch?key=abc\"\n",
                "2: router.switch_path: `/ops/switch?key=abc` has a query: the front matches the request's path alone, so it would never be taken",
            ),
            (
                "[router]\nswitch_path = \"/sw#a\"\n",
                "2: router.switch_path: `/sw#a` is not a URL path: it must start with `/` and have no spaces, control characters or `#`",
            ),
            (
                "[router]\nswitch_path = \"/swé\"\n",
                "2: router.switch_path: `/swé` is not all ASCII: clients send such characters percent-encoded, so it would never be taken; write it as they send it (\"/sw%C3%A9\")",
            ),
            (
                "[app]\nhealth_path = \"/health#ok\"\n",
                "2: app.health_path: `/health#ok` is not a URL path",
            ),
            (
                "[app]\nready_timeout = \"500000000000years\"\n",
                "2: app.ready_timeout: `500000000000years` is too long (at most 1 year)",
            ),
            (
                "[app]\ndrain_timeout = \"2years\"\n",
                "2: app.drain_timeout: `2years` is too long (at most 1 year)",
            ),
            (
                "[heartbeat]\ninterval = \"0s\"\n",
                "2: heartbeat.interval: `0s` is too short (at least 100ms)",
            ),
            (
                "[heartbeat]\ninterval = \"0\"\n",
                "2: heartbeat.interval: `0` is too short (at least 100ms)",
            ),
            (
                "[switch]\nmigrate_timeout = \"18446744073709551615s\"\n",
                "2: switch.migrate_timeout: ",
            ),
            (
                "[mirror]\nqueue = 9223372036854775807\n",
                "2: mirror.queue: 9223372036854775807 is too many (at most 1000000)",
            ),
            (
                "[app]\nhealth_path = \"/a\\u0000b\"\n",
                "2: app.health_path: `/a\\0b` is not a URL path",
            ),
            (
                "[app]\nready_timeout = \"3s\"\n\n[app]\n",
                "4: app: not valid TOML: invalid table header: duplicate key `app` in document root",
            ),
            (
                "[switch]\nmigrate = \"\"\n[app\ncommand = \"x\"\n",
                "3: app: not valid TOML: invalid table header: expected",
            ),
            (
                "[mirror]\nmethods = [\n[\"PUT\",\n\"POST\"]]\n",
                "3: mirror: ",
            ),
            (
                "[heartbeat]\npath = \"/a b\"\n",
                "2: heartbeat.path: `/a b` is not a URL path",
            ),
            // A line that is not TOML at all, in a table: said so, not as the table's value.
            (
                "[switch]\nmigrate = \"\"\nthis is not toml\n",
                "3: switch: not valid TOML: expected `.`, `=`",
            ),
            (
                "[mirror]\nmax_body = \"300MiB\"\n",
                "2: mirror.max_body: 300MiB is more than the 256 MiB all mirrored copies may hold together: no copy that large could be sent",
            ),
            (
                "[mirror]\nmax_body = \"ten\"\n",
                "2: mirror.max_body: invalid size `ten`: a number of bytes, alone or with B, KB, KiB, MB, MiB, GB or GiB",
            ),
            // Nothing kept, no failure allowed, no copy queued: each a config that cannot work.
            ("keep_releases = 0\n", "1: keep_releases: must be at least 1"),
            (
                "[heartbeat]\nfailures = 0\n",
                "2: heartbeat.failures: must be at least 1",
            ),
            ("[mirror]\nqueue = 0\n", "2: mirror.queue: must be at least 1"),
            (
                "[mirror]\nmethods = [\"POST\", \"PUT\", \"POST\"]\n",
                "2: mirror.methods: `POST` is listed twice",
            ),
            (
                "[control]\nlisten = \"0.0.0.0:8081\"\n",
                "2: control.listen: 0.0.0.0:8081 is not a loopback",
            ),
            ("[app]\ncommand = \"node 'main.js\"\n", "2: app.command: "),
            ("", "1: sets nothing (the file is empty, or only comments)"),
            ("# all\n\n# comments\n", "1: sets nothing"),
            (
                "[app]\ncommand = \"'' sample-app\"\n",
                "2: app.command: names no program: its first word is empty",
            ),
            (
                "[build]\ncommand = \"\\\"\\\"\"\n",
                "2: build.command: names no program",
            ),
            (
                "[app]\nlinked_dirs = [\"../up\"]\n",
                "2: app.linked_dirs: `../up` must be",
            ),
            (
                "[slots.green]\nlisten = \"0.0.0.0:9090\"\n",
                "2: slots.green.listen: 0.0.0.0:9090 cannot be bound next to slots.blue.listen (127.0.0.1:9090)",
            ),
            (
                "[slots.green]\nlisten = \"127.0.0.1:9090\"\n",
                "2: slots.green.listen: same address as slots.blue.listen (127.0.0.1:9090)",
            ),
            (
                "slots = { blue = { listen = \"0.0.0.0:8080\" } }\n",
                "1: slots.blue.listen: same address as router.listen (0.0.0.0:8080)",
            ),
            (
                "# c\ncontrol.listen = \"127.0.0.1:9090\"\n",
                "2: control.listen: same address as slots.blue.listen (127.0.0.1:9090)",
            ),
            (
                "[slots.blue]\nlisten = \"127.0.0.1:7000\"\n[router]\n\nlisten = \"127.0.0.1:7000\"\n",
                "5: router.listen: same address as slots.blue.listen (127.0.0.1:7000)",
            ),
            (
                "[router]\nlisten = \"127.0.0.1:0\"\n",
                "2: router.listen: `127.0.0.1:0`: port 0 would be any free port",
            ),
            (
                "[slots.blue]\nlisten = \"0.0.0.0:0\"\n",
                "2: slots.blue.listen: `0.0.0.0:0`: port 0",
            ),
            (
                "[app]\nlinked_dirs = [\"data\", \"data/x\"]\n",
                "2: app.linked_dirs: `data/x` is inside `data`: linked dirs cannot nest",
            ),
            (
                "[app]\nlinked_dirs = [\"logs/a\", \"logs\"]\n",
                "2: app.linked_dirs: `logs/a` is inside `logs`",
            ),
            (
                "[app]\nlinked_dirs = [\"data\", \"data/\"]\n",
                "2: app.linked_dirs: `data/` is given twice",
            ),
            (
                "[app]\nlinked_dirs = [\"./data\", \"data\"]\n",
                "2: app.linked_dirs: `data` is given twice",
            ),
            (
                "[app]\nlinked_dirs = [\"./..\"]\n",
                "2: app.linked_dirs: `./..` must be a relative folder inside the release",
            ),
            (
                "[app]\nlinked_dirs = [\".\"]\n",
                "2: app.linked_dirs: `.` must be a relative folder inside the release",
            ),
            (
                "branch = \"HEAD\"\n",
                "1: branch: `HEAD` is not a valid branch name",
            ),
            (
                "branch = \"-x\"\n",
                "1: branch: `-x` is not a valid branch name",
            ),
            // A line break in the name is shown as written, not as toml's line join.
            (
                "branch = \"a\\nb\"\n",
                "1: branch: `a\\nb` is not a valid branch name",
            ),
            (
                "[slots.green]\nenv = { PORT = \"1\" }\n",
                "2: slots.green.env: `PORT` is set by bluegreen for each generation",
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
    fn linked_dirs_are_taken_as_the_release_path_they_name() {
        let config =
            Config::parse("[app]\nlinked_dirs = [\"./data\", \"logs/.\", \"a//b/\"]\n").unwrap();
        assert_eq!(config.app.linked_dirs, ["data", "logs", "a/b"]);
    }

    #[test]
    fn a_slot_table_keeps_the_defaults_of_the_keys_it_leaves_out() {
        let config = Config::parse("[slots.blue]\nenv = { X = \"1\" }\n").unwrap();
        let defaults = Config::default();
        assert_eq!(config.slots.blue.listen, defaults.slots.blue.listen);
        assert_eq!(
            config.slots.blue.env.get("X").map(String::as_str),
            Some("1")
        );
        assert!(
            !config.slots.blue.env.contains_key("REDIS_PORT"),
            "env is replaced"
        );
        assert_eq!(config.slots.green, defaults.slots.green);

        let config = Config::parse("[slots.green]\nlisten = \"127.0.0.1:5061\"\n").unwrap();
        assert_eq!(config.slots.green.listen.port(), 5061);
        assert_eq!(config.slots.green.env, defaults.slots.green.env);
    }

    #[test]
    fn errors_name_the_key_under_a_commented_table_header() {
        // The template `init` writes comments every table header.
        let text = TEMPLATE.replace("ready_timeout = \"30s\"", "ready_timeout = \"soon\"");
        let line = text.lines().position(|l| l.contains("\"soon\"")).unwrap() + 1;
        let err = Config::parse(&text).unwrap_err();
        let want = format!("{line}: app.ready_timeout: invalid duration `soon`");
        assert!(err.starts_with(&want), "got {err:?}, want {want:?}");
    }
}
