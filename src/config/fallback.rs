//! What `status`, `switch` and `mirroring` take from a `bluegreen.toml` that does not load
//! whole: the daemon runs the config it read before, and an operator in an incident must
//! reach it while the file is half edited (a typo in `[app]` stopped `bluegreen switch`).

use std::path::Path;

use super::Config;

/// The keys the control commands use: where the daemon listens (`control`), the branch
/// their hints name, and the timeouts a switch waits by.
const USED: [&str; 4] = ["control", "branch", "heartbeat", "switch"];

impl Config {
    /// `Config::load`, or, for a file that is TOML but does not load whole, the default
    /// config with each of [`USED`] the file sets and that is valid on its own, and why
    /// the file does not load. A `control` table that is not valid fails as the file does:
    /// the daemon's address is not guessed.
    pub fn load_for_control(path: &Path) -> anyhow::Result<(Config, Option<String>)> {
        let text = Config::read(path)?;
        let error = match Config::from_text(path, &text) {
            Ok(config) => return Ok((config, None)),
            Err(e) => e,
        };
        let Ok(table) = toml::from_str::<toml::Table>(&text) else {
            return Err(error);
        };
        // Each key alone, as serde checks it, without the checks that span keys.
        let alone = |key: &str| -> Option<Result<Config, toml::de::Error>> {
            let mut one = toml::Table::new();
            one.insert(key.to_string(), table.get(key)?.clone());
            Some(toml::Value::Table(one).try_into())
        };
        let mut config = Config::default();
        for key in USED {
            let Some(Ok(part)) = alone(key) else {
                if key == "control" && table.contains_key(key) {
                    return Err(error);
                }
                continue;
            };
            match key {
                "control" => config.control = part.control,
                "branch" => config.branch = part.branch,
                "heartbeat" => config.heartbeat = part.heartbeat,
                _ => config.switch = part.switch,
            }
        }
        Ok((config, Some(format!("{error:#}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<(Config, Option<String>)> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bluegreen.toml");
        std::fs::write(&file, text).unwrap();
        Config::load_for_control(&file)
    }

    #[test]
    fn a_file_that_loads_is_taken_whole() {
        let (config, why) = load("[app]\ncommand = \"x\"\n").unwrap();
        assert_eq!(config.app.command, "x");
        assert_eq!(why, None);
    }

    #[test]
    fn a_broken_key_elsewhere_leaves_the_control_keys_and_says_why() {
        let text = "branch = \"prod\"\n[app]\nready_timeout = \"soon\"\n[control]\nlisten = \"127.0.0.1:7001\"\n[switch]\nmigrate_timeout = \"3s\"\n";
        let (config, why) = load(text).unwrap();
        assert_eq!(config.control.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.branch, "prod");
        assert_eq!(config.switch.migrate_timeout.as_secs(), 3);
        assert_eq!(config.app, Config::default().app);
        let why = why.unwrap();
        assert!(
            why.contains(":3: app.ready_timeout: invalid duration `soon`"),
            "{why}"
        );
    }

    #[test]
    fn a_broken_control_table_or_not_toml_fails_as_the_file_does() {
        for text in [
            "[control]\nlisten = \"everywhere\"\n",
            "[app\ncommand = \"x\"\n",
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains("bluegreen.toml:"), "{e}");
        }
    }

    #[test]
    fn a_broken_key_the_commands_use_takes_its_default() {
        let (config, why) = load("[heartbeat]\ntimeout = \"never\"\n").unwrap();
        assert_eq!(config.heartbeat, Config::default().heartbeat);
        assert!(why.is_some());
    }
}
