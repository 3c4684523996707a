//! The listen addresses `init` writes into a new root's config.
//!
//! A team with two apps on one host makes two roots, and both would get the same default
//! ports: the second `serve` could not listen. So `init` takes the defaults only when no
//! root beside the new one (in the same parent folder, `/srv/api` for `/srv/web`) names
//! one of their ports and nothing on this host listens on one; else the first set ten
//! ports further on (8090, 9100, 5070, 8091, then 8100, ...) that is free of both.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use crate::config::{Config, TEMPLATE};

/// How far apart two roots' sets of ports are.
const STEP: u16 = 10;
/// How many sets are tried before the defaults are kept (and the user told to choose).
const TRIES: u16 = 100;

/// The four listen addresses of a config, in the order of its keys' names below.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Listens([SocketAddr; 4]);

const KEYS: [&str; 4] = [
    "router.listen",
    "slots.blue.listen",
    "slots.green.listen",
    "control.listen",
];

impl Listens {
    pub fn of(config: &Config) -> Listens {
        Listens([
            config.router.listen,
            config.slots.blue.listen,
            config.slots.green.listen,
            config.control.listen,
        ])
    }

    fn shifted(self, by: u16) -> Listens {
        Listens(self.0.map(|mut addr| {
            addr.set_port(addr.port() + by);
            addr
        }))
    }

    fn ports(&self) -> [u16; 4] {
        self.0.map(|addr| addr.port())
    }

    /// The config template with these addresses in place of the defaults.
    pub fn config_text(&self) -> String {
        let defaults = Listens::of(&Config::default());
        let mut text = TEMPLATE.to_string();
        for (default, addr) in defaults.0.iter().zip(self.0) {
            text = text.replacen(&format!("\"{default}\""), &format!("\"{addr}\""), 1);
        }
        text
    }

    /// `router.listen 0.0.0.0:8090, slots.blue.listen 127.0.0.1:9100, ...`
    pub fn describe(&self) -> String {
        let pairs: Vec<String> = KEYS
            .iter()
            .zip(self.0)
            .map(|(key, addr)| format!("{key} {addr}"))
            .collect();
        pairs.join(", ")
    }
}

/// What `init` picked, and why when it is not the defaults.
pub struct Picked {
    pub listens: Listens,
    /// Empty for the defaults; else, e.g. `/srv/api names them; 8080 is in use on this host`.
    pub why: String,
}

/// The addresses for a new root at `root`: see the module's comment.
pub fn pick(root: &Path) -> Picked {
    let defaults = Listens::of(&Config::default());
    let neighbours = neighbours(root);
    let taken_by = |port: u16| {
        neighbours
            .iter()
            .filter(move |(_, listens)| listens.ports().contains(&port))
            .map(|(root, _)| root)
    };
    let in_use = |listens: &Listens| -> Vec<u16> {
        listens
            .0
            .iter()
            .filter(|addr| TcpListener::bind(addr).is_err())
            .map(|addr| addr.port())
            .collect()
    };
    let free = |listens: &Listens| {
        listens
            .ports()
            .iter()
            .all(|&p| taken_by(p).next().is_none())
            && in_use(listens).is_empty()
    };
    let Some(listens) = (0..TRIES)
        .map(|n| defaults.shifted(n * STEP))
        .find(|listens| free(listens))
    else {
        return Picked {
            listens: defaults,
            why: String::new(),
        };
    };
    if listens == defaults {
        return Picked {
            listens,
            why: String::new(),
        };
    }
    let mut reasons = Vec::new();
    let mut roots: Vec<&PathBuf> = defaults.ports().iter().flat_map(|&p| taken_by(p)).collect();
    roots.sort();
    roots.dedup();
    if !roots.is_empty() {
        let names: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        reasons.push(format!("{} names them", names.join(" and ")));
    }
    let busy = in_use(&defaults);
    if !busy.is_empty() {
        let ports: Vec<String> = busy.iter().map(u16::to_string).collect();
        reasons.push(format!(
            "{} {} in use on this host",
            ports.join(", "),
            if busy.len() == 1 { "is" } else { "are" }
        ));
    }
    Picked {
        listens,
        why: reasons.join("; "),
    }
}

/// The roots beside `root` whose config can be read, with their addresses.
fn neighbours(root: &Path) -> BTreeMap<PathBuf, Listens> {
    let Some(entries) = root.parent().and_then(|parent| parent.read_dir().ok()) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path != root)
        .filter_map(|path| {
            let config = Config::load(&path.join("bluegreen.toml")).ok()?;
            Some((path, Listens::of(&config)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_with_shifted_ports_names_them() {
        let defaults = Listens::of(&Config::default());
        let shifted = defaults.shifted(STEP);
        assert_eq!(
            Config::parse(&defaults.config_text()).unwrap(),
            Config::default()
        );
        let config = Config::parse(&shifted.config_text()).unwrap();
        assert_eq!(Listens::of(&config), shifted);
        assert_eq!(
            shifted.describe(),
            "router.listen 0.0.0.0:8090, slots.blue.listen 127.0.0.1:9100, slots.green.listen 127.0.0.1:5070, control.listen 127.0.0.1:8091"
        );
    }
}
