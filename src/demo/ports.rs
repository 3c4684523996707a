//! The demo's four listen addresses, checked before anything is made: a taken one is
//! named with its flag, and the same command given again with a set that is free now.

use std::net::{SocketAddr, TcpListener};

use crate::cli::DemoArgs;

/// How far apart the sets of ports tried after a taken one are, and how many are tried.
const PORT_STEP: u16 = 10;
const PORT_TRIES: u16 = 100;

/// Refuses taken ports up front, naming the flag to change, and the same command (its
/// folder too) with a set of ports that is free now.
pub fn check(args: &DemoArgs, exe: &std::path::Path) -> anyhow::Result<()> {
    let flags = ["--front", "--blue", "--green", "--control"];
    let addrs = [args.front, args.blue, args.green, args.control];
    let free = |addr: &SocketAddr| TcpListener::bind(addr).is_ok();
    let Some((addr, flag)) = addrs.iter().zip(flags).find(|(addr, _)| !free(addr)) else {
        return Ok(());
    };
    // The whole set moved by tens, as `init` moves a second root's, until all four are
    // free (the listeners above are closed again before the next is tried).
    let moved = (1..=PORT_TRIES).find_map(|k| {
        let set = addrs.map(|mut addr| {
            addr.set_port(addr.port().checked_add(k * PORT_STEP)?);
            Some(addr)
        });
        set.iter()
            .all(|addr| addr.as_ref().is_some_and(free))
            .then(|| set.map(Option::unwrap))
    });
    let Some(moved) = moved else {
        anyhow::bail!("{addr} is taken; pick free ports with {flag}");
    };
    // Named as the guide names it: the path this runs from, which may not be on PATH.
    let mut command = format!("{} demo", crate::pasted::path(exe));
    if let Some(dir) = &args.dir {
        command.push(' ');
        command.push_str(&crate::pasted::path(dir));
    }
    for (flag, addr) in flags.iter().zip(moved) {
        command.push_str(&format!(" {flag} {addr}"));
    }
    anyhow::bail!("{addr} is taken; pick free ports with {flag} (these are free now: `{command}`)")
}
