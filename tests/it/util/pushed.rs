//! What a push shows the pusher: the `remote:` lines of the hook, and whether git took it.

/// The outcome of a push as the pusher sees it.
#[derive(Debug)]
pub struct Pushed {
    pub ok: bool,
    pub text: String,
}

impl Pushed {
    /// Asserts the push output contains `needle`.
    pub fn says(&self, needle: &str) -> &Pushed {
        assert!(
            self.text.contains(needle),
            "push output lacks {needle:?}:\n{}",
            self.text
        );
        self
    }

    /// Asserts the push output does not contain `needle`.
    pub fn never_says(&self, needle: &str) -> &Pushed {
        assert!(
            !self.text.contains(needle),
            "push output has {needle:?}:\n{}",
            self.text
        );
        self
    }

    /// Asserts the last `remote:` line is `slot`'s verdict when no daemon of the root
    /// could be told of the release, for `why`.
    pub fn told_no_daemon(&self, slot: &str, why: &str) {
        let verdict = format!(
            "{slot}: no daemon told ({why}); the release is current and starts when this root's daemon does"
        );
        assert_eq!(
            self.remote_lines().last().map(String::as_str),
            Some(&*verdict),
            "{}",
            self.text
        );
    }

    /// The `remote:` lines, without the prefix.
    pub fn remote_lines(&self) -> Vec<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("remote: "))
            .map(|l| l.trim_end().to_string())
            .collect()
    }
}
