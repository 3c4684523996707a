//! bluegreen: blue/green, zero-downtime deploys to one Linux host, driven by `git push`.
//!
//! From push to served request:
//!
//! 1. `git push blue main` runs [`hook`] (the binary, through `blue.git/hooks/post-receive`):
//!    [`git`] resolves the commit, [`build`] makes the build once per key, [`release`]
//!    copies it into a versioned release and flips `blue/current`, then [`verdict`] asks
//!    the daemon to run it.
//! 2. [`daemon`] (`bluegreen serve`) starts a new generation of the app for the release,
//!    waits until it is healthy, routes the slot to it and drains the old one.
//! 3. Requests reach the active slot through the front router, or a slot directly
//!    through its own listener; `/switch`, the heartbeat, mirroring and migration move
//!    traffic and data between the slots.
//!
//! Domain modules ([`config`], [`layout`], [`slot`], [`git`], [`build`], [`release`],
//! [`state`], [`fsops`], [`tree_copy`], [`argv`], [`client`], [`procfs`], [`owner`],
//! [`lines`], [`pasted`], [`peer`], [`slot_repo`], [`exit`]) never import a role ([`hook`], [`init`], [`rollout`],
//! [`verdict`], [`ctl`], [`daemon`], [`demo`], [`sample_app`]). Around them: [`cli`]
//! parses the command line and [`run`] calls the role; [`logging`], [`stderr`] and
//! [`interrupt`] are the process's log, its stderr that never blocks for good, and the
//! hook's handling of a Ctrl-C during a build.

pub mod argv;
pub mod build;
pub mod cli;
pub mod client;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod demo;
pub mod exit;
pub mod fsops;
pub mod git;
pub mod hook;
pub mod init;
pub mod interrupt;
pub mod layout;
pub mod lines;
pub mod logging;
pub mod owner;
pub mod pasted;
pub mod peer;
pub mod procfs;
pub mod release;
pub mod rollout;
pub mod run;
pub mod sample_app;
pub mod slot;
pub mod slot_repo;
pub mod state;
pub mod stderr;
pub mod tree_copy;
pub mod verdict;
