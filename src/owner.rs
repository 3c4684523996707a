//! Whose a root is, for what runs as another user on it (root by `sudo`, or a member of
//! the root's group): what it made there would be that user's, which the root's user (the
//! daemon's and the hooks') could not change or remove, so `serve`, `rollback`,
//! `promote`, `init` and a push refuse it.

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

/// The root's owner when it is not the user this runs as: by its blue folder (the one
/// `init` makes first), or, for root, before there is one, by the root's folder (a home
/// made by `useradd` for `init` to fill). `None` when they are the same, or before `init`
/// made the blue folder of a root a user other than root fills (its folder may be
/// root's, made with `install -d` for that user).
pub fn other(layout: &Layout) -> Option<Owner> {
    let me = nix::unistd::geteuid();
    let blue = std::fs::metadata(layout.slot_dir(Slot::Blue));
    let made = if me.is_root() {
        blue.or_else(|_| std::fs::metadata(layout.root())).ok()?
    } else {
        blue.ok()?
    };
    let uid = made.uid();
    (uid != me.as_raw()).then(|| Owner::of(uid))
}

/// The user this runs as, for a refusal: `root`, `deploy (uid 1002)`, `uid 1002`; and
/// the possessive of that (`root's`, `deploy's`).
pub fn me() -> (String, String) {
    let me = nix::unistd::geteuid();
    if me.is_root() {
        return ("root".into(), "root's".into());
    }
    let owner = Owner::of(me.as_raw());
    match &owner.name {
        Some(name) => (format!("{name} (uid {})", owner.uid), format!("{name}'s")),
        None => (format!("uid {}", owner.uid), format!("uid {}'s", owner.uid)),
    }
}
