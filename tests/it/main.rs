//! Integration tests: real git pushes into real bare repos, the real binary, real
//! child processes, real sockets on 127.0.0.1. One test binary (see `util` for the harness).

mod control;
mod daemon;
mod demo;
mod front;
mod mirror;
mod proxy;
mod push;
mod releases;
mod service;
mod setup;
mod two_roots;
mod upgrade;
mod util;
