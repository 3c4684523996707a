//! Making and checking a root: `init` (and again, as a repair), and `check` refusing a
//! bad config with its file, line and key.

mod config;
mod hooks;
mod init;
