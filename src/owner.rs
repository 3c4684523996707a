//! Whose a root is, for what runs as root on another user's root: what it made there
//! would be root's, which that user (the daemon's and the hooks') could not change or
//! remove, so `serve`, `rollback`, `promote`, `init` and a push refuse it.

use std::os::unix::fs::MetadataExt;

use crate::layout::Layout;
use crate::slot::Slot;

/// The user a root belongs to, when it is not the one this runs as.
pub struct Owner {
    pub uid: u32,
    /// The account's name, if it has one.
    pub name: Option<String>,
}

impl Owner {
    /// The user `uid`, named if it has an account.
    pub fn of(uid: u32) -> Owner {
        Owner {
            uid,
            name: crate::fsops::user_name(uid),
        }
    }

    /// `app's (uid 1001)`, or `uid 1001's`.
    pub fn shown(&self) -> String {
        match &self.name {
            Some(name) => format!("{name}'s (uid {})", self.uid),
            None => format!("uid {}'s", self.uid),
        }
    }

    /// What `sudo -u` takes: the name, or `#uid`.
    pub fn user(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("#{}", self.uid))
    }
}

/// The root's owner when this runs as root and the root is another user's: by its blue
/// folder (the one `init` makes first), or, before there is one, by the root's folder
/// (a home made by `useradd` for `init` to fill). `None` otherwise.
pub fn other(layout: &Layout) -> Option<Owner> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let made = std::fs::metadata(layout.slot_dir(Slot::Blue))
        .or_else(|_| std::fs::metadata(layout.root()))
        .ok()?;
    let uid = made.uid();
    (uid != 0).then(|| Owner::of(uid))
}
