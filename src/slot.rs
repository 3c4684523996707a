//! `Slot`: blue or green, the two deploy targets of a root.
//!
//! A slot names a bare repo, a folder of releases, a listener and an env. There are
//! exactly two; everything that takes a slot name from the outside parses it here, so an
//! unknown slot is refused in one place with one message.

use std::fmt;
use std::str::FromStr;

/// One of the two deploy targets.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    /// Both slots, in the order the design lists them.
    pub const ALL: [Slot; 2] = [Slot::Blue, Slot::Green];

    pub fn name(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// The standby of this slot when it is active, and the other way round.
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    /// Index into per-slot arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Slot {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Slot> {
        match s {
            "blue" => Ok(Slot::Blue),
            "green" => Ok(Slot::Green),
            other => anyhow::bail!("unknown slot `{other}` (expected blue or green)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_and_refuses_others() {
        assert_eq!("blue".parse::<Slot>().unwrap(), Slot::Blue);
        assert_eq!("green".parse::<Slot>().unwrap().other(), Slot::Blue);
        let err = "red".parse::<Slot>().unwrap_err().to_string();
        assert_eq!(err, "unknown slot `red` (expected blue or green)");
    }
}
