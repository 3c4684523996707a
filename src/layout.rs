//! `Layout`: the one module that knows where things live under a root.
//!
//! Nothing else joins path strings. See DESIGN.md "Layout on disk"; names that start
//! with a dot (`.tmp-*`, `.lock`) are ours and never releases or builds.

use std::path::{Path, PathBuf};

use crate::slot::Slot;

/// The config file's name in a root.
pub const CONFIG: &str = "bluegreen.toml";

/// Paths of one root.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout for `root`, made absolute so hooks, builds and workers that change
    /// folder still agree on every path, and resolved (no `..`, no symlink) as git hands
    /// the hook its repo: a linked dir's link written by `promote --root ../app` must not
    /// depend on the folder it ran in, nor on a symlink to the root staying put.
    pub fn new(root: &Path) -> std::io::Result<Layout> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()?.join(root)
        };
        // A root `init` is about to make: its parent resolved, when that exists.
        let resolved = root.canonicalize().ok().or_else(|| {
            let parent = root.parent()?.canonicalize().ok()?;
            Some(parent.join(root.file_name()?))
        });
        // `components` drops `.` parts: `--root .` names the folder, not `/srv/app/.`.
        Ok(Layout {
            root: resolved.unwrap_or_else(|| root.components().collect()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What names this root to its daemon over the control API (`Bluegreen-Root`): a
    /// digest of its resolved path, so that two spellings of one root agree and a path
    /// of any bytes fits a header.
    pub fn identity(&self) -> String {
        use sha2::Digest;
        let resolved = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        let digest = sha2::Sha256::digest(resolved.as_os_str().as_encoded_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join(CONFIG)
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn repo(&self, slot: Slot) -> PathBuf {
        self.root.join(format!("{slot}.git"))
    }

    /// The folder git runs the slot repo's hooks from (`core.hooksPath = hooks`).
    pub fn hooks_dir(&self, slot: Slot) -> PathBuf {
        self.repo(slot).join("hooks")
    }

    /// The slot repo's hook: a link to the bluegreen binary.
    pub fn hook(&self, slot: Slot) -> PathBuf {
        self.hooks_dir(slot).join("post-receive")
    }

    pub fn builds_dir(&self) -> PathBuf {
        self.root.join("builds")
    }

    /// A finished build. It exists only once the build succeeded (renamed into place).
    pub fn build_dir(&self, key: &str) -> PathBuf {
        self.builds_dir().join(key)
    }

    pub fn build_log(&self, key: &str) -> PathBuf {
        self.builds_dir().join(format!("{key}.log"))
    }

    pub fn build_lock(&self, key: &str) -> PathBuf {
        self.builds_dir().join(format!(".{key}.lock"))
    }

    /// Held shared by every deploy that is using the build (from `ensure` until its
    /// release is copied), and exclusive by the clean-up that removes unused builds.
    pub fn build_use_lock(&self, key: &str) -> PathBuf {
        self.builds_dir().join(format!(".{key}.use"))
    }

    /// Where builds happen before they are finished; never read as a build.
    pub fn build_tmp_root(&self) -> PathBuf {
        self.builds_dir().join(".tmp")
    }

    pub fn build_tmp_dir(&self, key: &str) -> PathBuf {
        self.build_tmp_root()
            .join(format!("{key}.{}", std::process::id()))
    }

    pub fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.root.join(slot.name())
    }

    pub fn releases_dir(&self, slot: Slot) -> PathBuf {
        self.slot_dir(slot).join("releases")
    }

    pub fn release_dir(&self, slot: Slot, id: &str) -> PathBuf {
        self.releases_dir(slot).join(id)
    }

    pub fn release_tmp_dir(&self, slot: Slot, id: &str) -> PathBuf {
        self.releases_dir(slot).join(format!(".tmp-{id}"))
    }

    /// The symlink naming the release the slot should run.
    pub fn current_link(&self, slot: Slot) -> PathBuf {
        self.slot_dir(slot).join("current")
    }

    /// What `current` holds for a release: relative, so a root can be moved.
    pub fn current_target(&self, id: &str) -> PathBuf {
        Path::new("releases").join(id)
    }

    pub fn shared_dir(&self, slot: Slot) -> PathBuf {
        self.slot_dir(slot).join("shared")
    }

    /// Held while a deploy, rollback or promote changes a slot's releases and `current`:
    /// one change at a time (the daemon's start of the result is not waited for under it).
    pub fn slot_lock(&self, slot: Slot) -> PathBuf {
        self.slot_dir(slot).join(".lock")
    }

    /// A push's turn to build for `slot`: held by one push at a time, from its look at
    /// the branch tip to its release (see `release::push_turn`).
    pub fn push_lock(&self, slot: Slot) -> PathBuf {
        self.slot_dir(slot).join(".push.lock")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// A slot's worker output, when not under systemd (journald keeps it there).
    pub fn slot_log(&self, slot: Slot) -> PathBuf {
        self.logs_dir().join(format!("{slot}.log"))
    }

    /// Held by the running `bluegreen serve`: one daemon per root.
    pub fn serve_lock(&self) -> PathBuf {
        self.root.join("run").join("serve.lock")
    }

    /// Made by a daemon as its stop begins (and removed by the next at its start): a
    /// client the stopping daemon no longer answers says why.
    pub fn stopping_mark(&self) -> PathBuf {
        self.root.join("run").join("stopping")
    }

    /// Whether a `bluegreen serve` holds this root now (`Some`), and its pid when this
    /// user may see it.
    pub fn served_by(&self) -> Option<Option<u32>> {
        let lock = self.serve_lock();
        crate::fsops::held(&lock).then(|| crate::procfs::flock_holder(&lock))
    }

    /// Process groups of running generations, so a daemon that was killed can have its
    /// orphans stopped by the next one.
    pub fn workers_dir(&self) -> PathBuf {
        self.root.join("run").join("workers")
    }

    /// The daemon's record of the worker process group `pgid` (see `daemon::workers`).
    pub fn worker_file(&self, pgid: u32) -> PathBuf {
        self.workers_dir().join(pgid.to_string())
    }

    /// The daemon's own log when `bluegreen demo` runs it (a unit's goes to journald).
    pub fn serve_log(&self) -> PathBuf {
        self.logs_dir().join("serve.log")
    }
}
