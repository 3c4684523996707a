//! The listen addresses `init` writes into a new root's config.
//!
//! A team with two apps on one host makes two roots, and both would get the same default
//! ports: the second `serve` could not listen. So `init` takes the defaults only when no
//! root beside the new one (in the same parent folder, `/srv/api` for `/srv/web`) names
//! one of their ports and nothing on this host listens on one; else the first set ten
//! ports further on (8090, 9100, 5070, 8091, then 8100, ...) that is free of both.
//!
//! Looking costs one `stat` per folder beside the root, and a read of each one's
//! `bluegreen.toml` that is a plain file: a parent of more than [`MAX_NEIGHBOURS`]
//! entries (`/home` on a large host, where each folder may be an automount) is not
//! looked through, and only what listens on the host counts there. A neighbour's config
//! this version refuses (being edited, or another version's) still names its ports.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use crate::config::{Config, LISTEN_KEYS, TEMPLATE};
use crate::layout::Layout;

/// How far apart two roots' sets of ports are.
const STEP: u16 = 10;
/// How many sets are tried before the defaults are kept (and the user told to choose).
const TRIES: u16 = 100;
/// The most entries a parent folder may have to be looked through for roots.
const MAX_NEIGHBOURS: usize = 1000;

/// The four listen addresses of a config, in the order of [`LISTEN_KEYS`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Listens([SocketAddr; 4]);

impl Listens {
    pub fn of(config: &Config) -> Listens {
        Listens(config.listens())
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
        if *self != defaults {
            text = text.replacen(
                "every key with its default. ",
                "every key with its default, but the four listen\n# addresses: their default ports were taken (in use here, or named by a root beside this\n# one). ",
                1,
            );
        }
        for (default, addr) in defaults.0.iter().zip(self.0) {
            text = text.replacen(&format!("\"{default}\""), &format!("\"{addr}\""), 1);
        }
        text
    }

    /// `router.listen 0.0.0.0:8090, slots.blue.listen 127.0.0.1:9100, ...`
    pub fn describe(&self) -> String {
        let pairs: Vec<String> = LISTEN_KEYS
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
    /// Roots beside this one whose config this user may not read (another app's user's,
    /// mode 0640): their ports could not be passed over, unless their daemons listen.
    pub unread: Vec<PathBuf>,
}

/// The addresses for a new root at `root`: see the module's comment.
pub fn pick(root: &Path) -> Picked {
    let defaults = Listens::of(&Config::default());
    let (neighbours, unread) = neighbours(root);
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
    let found = (0..TRIES)
        .map(|n| defaults.shifted(n * STEP))
        .find(|listens| free(listens));
    if found == Some(defaults) {
        return Picked {
            listens: defaults,
            why: String::new(),
            unread,
        };
    }
    let mut reasons = Vec::new();
    let mut roots: Vec<&PathBuf> = defaults.ports().iter().flat_map(|&p| taken_by(p)).collect();
    roots.sort();
    roots.dedup();
    if !roots.is_empty() {
        let names: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        let verb = if names.len() == 1 { "names" } else { "name" };
        reasons.push(format!("{} {verb} them", names.join(" and ")));
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
    if found.is_none() {
        let last = defaults.shifted((TRIES - 1) * STEP).ports()[0];
        reasons.push(format!(
            "so is every set ten ports further on, up to router.listen's {last}: \
             these are the defaults, set the four listen addresses by hand"
        ));
    }
    Picked {
        listens: found.unwrap_or(defaults),
        why: reasons.join("; "),
        unread,
    }
}

/// The roots beside `root` whose config can be read, with their addresses; and those
/// whose config is there but this user may not read it.
fn neighbours(root: &Path) -> (BTreeMap<PathBuf, Listens>, Vec<PathBuf>) {
    let Some(entries) = root.parent().and_then(|parent| parent.read_dir().ok()) else {
        return Default::default();
    };
    // Names only (no `stat` yet): a folder, or a symlink that may lead to one.
    let folders: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| {
            entry
                .file_type()
                .is_ok_and(|kind| kind.is_dir() || kind.is_symlink())
        })
        .map(|entry| entry.path())
        .take(MAX_NEIGHBOURS + 1)
        .collect();
    if folders.len() > MAX_NEIGHBOURS {
        return Default::default();
    }
    let mut unread = Vec::new();
    let found = folders
        .into_iter()
        .filter(|path| path != root)
        .filter_map(|path| {
            let file = Layout::new(&path).ok()?.config_file();
            match listens_in(&file) {
                Ok(listens) => Some((path, listens?)),
                // A plain file there, that this user may not read.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && file.is_file() => {
                    unread.push(path);
                    None
                }
                Err(_) => None,
            }
        })
        .collect();
    unread.sort();
    (found, unread)
}

/// The listen addresses `file` sets, each key it does not set being the default's; none
/// when it is not TOML; an error when it cannot be read as a config is (not a plain file,
/// which is never opened: a FIFO would block init; too large; another user's). Only these
/// keys are read: a config refused for anything else still holds ports its daemon may use.
fn listens_in(file: &Path) -> std::io::Result<Option<Listens>> {
    let bytes = crate::fsops::read_regular(file, crate::config::MAX_BYTES)?;
    let doc = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok());
    let Some(doc) = doc else {
        return Ok(None);
    };
    let mut listens = Listens::of(&Config::default());
    for (addr, key) in listens.0.iter_mut().zip(LISTEN_KEYS) {
        let mut parts = key.split('.');
        let Some(first) = parts.next() else {
            continue;
        };
        let first = doc.get(first);
        let value = parts.fold(first, |value, part| value?.get(part));
        if let Some(set) = value.and_then(|v| v.as_str()?.parse().ok()) {
            *addr = set;
        }
    }
    Ok(Some(listens))
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
        // The header, which says every key has its default, says which do not.
        assert!(defaults
            .config_text()
            .starts_with("# bluegreen.toml: every key with its default. "));
        assert!(shifted.config_text().starts_with(
            "# bluegreen.toml: every key with its default, but the four listen\n# addresses: their default ports were taken (in use here, or named by a root beside this\n# one). "
        ));
        assert_eq!(
            shifted.describe(),
            "router.listen 0.0.0.0:8090, slots.blue.listen 127.0.0.1:9100, slots.green.listen 127.0.0.1:5070, control.listen 127.0.0.1:8091"
        );
    }

    #[test]
    fn a_neighbours_config_names_its_ports_even_where_this_version_refuses_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bluegreen.toml");
        // An unknown key: `Config::load` refuses the file, its daemon may still listen.
        std::fs::write(
            &file,
            "future_key = 1\n[router]\nlisten = \"0.0.0.0:8090\"\n[control]\nlisten = \"127.0.0.1:8091\"\n",
        )
        .unwrap();
        let mut want = Listens::of(&Config::default());
        want.0[0].set_port(8090);
        want.0[3].set_port(8091);
        assert_eq!(listens_in(&file).unwrap(), Some(want));
        std::fs::write(&file, "[router\n").unwrap();
        assert_eq!(listens_in(&file).unwrap(), None);
        // Not a plain file: never opened (a FIFO there would block `init`).
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        assert!(listens_in(&file).is_err());
    }

    #[test]
    fn when_every_set_is_taken_the_defaults_are_kept_and_the_user_told() {
        let tmp = tempfile::tempdir().unwrap();
        let defaults = Listens::of(&Config::default());
        for n in 0..TRIES {
            let root = tmp.path().join(format!("app{n:03}"));
            std::fs::create_dir(&root).unwrap();
            let text = defaults.shifted(n * STEP).config_text();
            std::fs::write(root.join("bluegreen.toml"), text).unwrap();
        }
        let picked = pick(&tmp.path().join("new"));
        assert_eq!(picked.listens, defaults);
        assert!(
            picked.why.starts_with(&format!(
                "{} names them",
                tmp.path().join("app000").display()
            )),
            "{}",
            picked.why
        );
        assert!(
            picked.why.ends_with(
                "so is every set ten ports further on, up to router.listen's 9070: \
                 these are the defaults, set the four listen addresses by hand"
            ),
            "{}",
            picked.why
        );
    }

    #[test]
    fn a_parent_of_too_many_entries_is_not_looked_through() {
        let tmp = tempfile::tempdir().unwrap();
        let api = tmp.path().join("api");
        std::fs::create_dir(&api).unwrap();
        std::fs::write(api.join("bluegreen.toml"), TEMPLATE).unwrap();
        let new = tmp.path().join("new");
        assert_eq!(neighbours(&new).0.keys().collect::<Vec<_>>(), [&api]);
        for n in 0..MAX_NEIGHBOURS {
            std::fs::create_dir(tmp.path().join(format!("user{n}"))).unwrap();
        }
        assert!(neighbours(&new).0.is_empty());
    }
}
