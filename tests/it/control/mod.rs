//! The control API and the commands that use it: `status` for a person and for scripts,
//! a forced switch, and bad requests refused with a reason.

mod api;
mod callers;
mod status;
