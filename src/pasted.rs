//! Words quoted for a person to paste into an interactive shell: the copy-paste commands
//! of hints (`git push blue 'x;y:main'`), of `init`'s next steps and of the demo's guide.

use std::path::Path;

/// `word` as a shell reads it back: as is when it holds only characters no shell
/// treats specially, else in single quotes. A branch name may hold `;`, `$`, `{`
/// (`x;touch${IFS}f`), a path a space. Not `shell_words::quote`, which is for `sh`
/// reading a command line (the config's): it leaves `x{a,b}` and `x!y` bare, which an
/// interactive bash would expand into other words.
pub fn quoted(word: &str) -> String {
    let plain = |c: char| c.is_alphanumeric() || "._/+@:-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The refspec that pushes the checked-out commit to `branch`, quoted: `HEAD:main`
/// deploys from whatever branch the pusher is on (`git push blue main` needs a local
/// `main`, and git's default branch is often `master`).
pub fn refspec(branch: &str) -> String {
    quoted(&format!("HEAD:{branch}"))
}

/// [`quoted`] for a path (one that is not UTF-8 shown as `display` shows it).
pub fn path(path: &Path) -> String {
    quoted(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_quoted_where_a_shell_would_read_it_otherwise() {
        assert_eq!(quoted("feature/x-1.2:main"), "feature/x-1.2:main");
        assert_eq!(quoted("x;touch${IFS}f:main"), "'x;touch${IFS}f:main'");
        assert_eq!(quoted("it's:main"), r"'it'\''s:main'");
        assert_eq!(quoted("x{a,b}:main"), "'x{a,b}:main'");
        assert_eq!(quoted("x!y:main"), "'x!y:main'");
        assert_eq!(refspec("main"), "HEAD:main");
        assert_eq!(refspec("prod;$(id)"), "'HEAD:prod;$(id)'");
        assert_eq!(quoted(""), "''");
        assert_eq!(path(Path::new("/tmp/my demo/root")), "'/tmp/my demo/root'");
        assert_eq!(path(Path::new("/srv/app")), "/srv/app");
    }
}
