//! Commands from the config turned into argv without a shell.
//!
//! A command is split into words (shell quoting rules, no shell), then `{port}`, `$NAME`
//! and `${NAME}` inside each word are filled from an explicit env map: values come from
//! the config and the daemon only, never from a push. A `$NAME` the map does not hold
//! is left as written, so `sh -c 'echo $HOME'` still reaches its shell intact.
//!
//! The script of a shell's `-c` (`sh -c '...'`, `bash -lc '...'`) gets `{port}` alone:
//! its shell reads `$NAME` from the env the command runs with, which holds the same
//! values. Pasted into the script, a value was run as shell code (`a b;rm -rf x`, a
//! quote) and a secret of `build.env` was shown to every local user in the process
//! list (`ps` prints the script).

use std::collections::BTreeMap;

use anyhow::Context;

/// Why `program` could not be started in `dir`, for the pusher or operator. The OS says
/// `No such file or directory` alike for a program not on the PATH, for a script whose
/// `#!` interpreter is missing and for a `dir` that is gone: this says which, and which
/// PATH was searched (under systemd, or over a non-interactive SSH, often not the one of
/// the user's shell).
/// `path` is the PATH the command's own env sets, if it sets one (the one searched then).
pub fn not_started(
    program: &str,
    dir: &std::path::Path,
    path: Option<&String>,
    e: &std::io::Error,
) -> String {
    // A script of the tree: its mode or first line is what to fix.
    if e.raw_os_error() == Some(libc::ENOEXEC) {
        return format!("{e}: it is no program and has no `#!` line (add one, such as `#!/bin/sh`, or write `sh {program}`)");
    }
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.join(program);
        let unexecutable = program.contains('/')
            && std::fs::metadata(&file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 == 0);
        if unexecutable {
            return format!("{e}: it has no execute bit (in git: `git update-index --chmod=+x {program}`, then commit; or write `sh {program}`)");
        }
    }
    if e.kind() != std::io::ErrorKind::NotFound {
        return e.to_string();
    }
    // The child's `chdir` failed with the same error: the program was never looked for.
    if !dir.is_dir() {
        return format!("{e}: the folder {} is not there", dir.display());
    }
    if program.contains('/') {
        return match dir.join(program).exists() {
            true => format!("{e}: its `#!` interpreter is missing"),
            false => e.to_string(),
        };
    }
    let path = path
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    match std::env::split_paths(&path).any(|dir| dir.join(program).is_file()) {
        true => format!("{e}: its `#!` interpreter is missing"),
        false => format!(
            "not found in PATH={}: give its full path",
            path.to_string_lossy()
        ),
    }
}

/// Splits a command line into words, refusing unbalanced quotes.
pub fn split(command: &str) -> anyhow::Result<Vec<String>> {
    shell_words::split(command)
        .with_context(|| format!("cannot split command `{command}` into words"))
}

/// Splits `command` and fills each word from `env`; `{port}` is `env["PORT"]`. A shell's
/// `-c` script gets `{port}` alone (see the module's doc).
pub fn expand(command: &str, env: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    let words = split(command)?;
    anyhow::ensure!(!words.is_empty(), "the command is empty");
    let script = shell_script(&words);
    Ok(words
        .iter()
        .enumerate()
        .map(|(i, w)| expand_word(w, env, script == Some(i)))
        .collect())
}

/// Shells that take a script with `-c` and read `$NAME` from their env.
const SHELLS: [&str; 7] = ["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash"];

/// Which word is the script `words` has a shell run with `-c`: the first operand after
/// an option cluster holding `c` (`-c`, `-ec`, `-lc`), past the name an `-o`/`-O`
/// takes (`bash -o pipefail -c ...`).
fn shell_script(words: &[String]) -> Option<usize> {
    let program = std::path::Path::new(&words[0]).file_name()?.to_str()?;
    if !SHELLS.contains(&program) {
        return None;
    }
    let mut c = false;
    let mut skip = false;
    for (i, word) in words.iter().enumerate().skip(1) {
        if std::mem::take(&mut skip) {
            continue;
        }
        let flags = match word.strip_prefix(['-', '+']) {
            // Long options (`--norc`), and `--` that ends them.
            Some(rest) if rest.starts_with('-') || rest.is_empty() => continue,
            Some(flags) => flags,
            None => return c.then_some(i),
        };
        c |= word.starts_with('-') && flags.contains('c');
        skip = flags.ends_with(['o', 'O']);
    }
    None
}

/// `word` filled from `env`; in a shell's script, `{port}` alone.
fn expand_word(word: &str, env: &BTreeMap<String, String>, script: bool) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find(['$', '{']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let (name, len) = if rest.starts_with("{port}") {
            ("PORT", "{port}".len())
        } else if script {
            ("", 0)
        } else if let Some(tail) = rest.strip_prefix("${") {
            match tail.find('}') {
                Some(end) if is_name(&tail[..end]) => (&tail[..end], end + 3),
                _ => ("", 0),
            }
        } else if let Some(tail) = rest.strip_prefix('$') {
            let end = tail
                .find(|c: char| c != '_' && !c.is_ascii_alphanumeric())
                .unwrap_or(tail.len());
            if is_name(&tail[..end]) {
                (&tail[..end], end + 1)
            } else {
                ("", 0)
            }
        } else {
            ("", 0)
        };
        match env.get(name) {
            Some(value) if len > 0 => {
                out.push_str(value);
                rest = &rest[len..];
            }
            _ => {
                let keep = if len > 0 { len } else { 1 };
                out.push_str(&rest[..keep]);
                rest = &rest[keep..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && s.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_is_not_called_a_missing_program() {
        let e = std::io::Error::from_raw_os_error(2);
        let dir = std::path::Path::new("/nonexistent/blue/releases/x");
        assert_eq!(
            not_started("node", dir, None, &e),
            "No such file or directory (os error 2): the folder /nonexistent/blue/releases/x is not there"
        );
        assert_eq!(
            not_started("./run.sh", dir, None, &e),
            not_started("node", dir, None, &e)
        );
    }

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("PORT".into(), "4100".into()),
            ("REDIS_PORT".into(), "6379".into()),
        ])
    }

    #[test]
    fn fills_port_and_names() {
        let argv = expand("node main.js {port} $REDIS_PORT --x=${PORT}", &env()).unwrap();
        assert_eq!(argv, ["node", "main.js", "4100", "6379", "--x=4100"]);
    }

    #[test]
    fn leaves_unknown_names_and_shell_syntax_alone() {
        let argv = expand("sh -c 'echo $HOME $! ${} {x} $'", &env()).unwrap();
        assert_eq!(argv, ["sh", "-c", "echo $HOME $! ${} {x} $"]);
    }

    #[test]
    fn a_shells_script_gets_port_alone_and_reads_names_from_its_env() {
        let mut env = env();
        env.insert("TOK".into(), "s3cret; id".into());
        let argv = expand("sh -c 'echo $TOK ${TOK} {port}' x $TOK", &env).unwrap();
        assert_eq!(
            argv,
            ["sh", "-c", "echo $TOK ${TOK} 4100", "x", "s3cret; id"]
        );
        let argv = expand("/bin/bash -o pipefail -lc 'run $TOK' $TOK", &env).unwrap();
        assert_eq!(
            argv,
            [
                "/bin/bash",
                "-o",
                "pipefail",
                "-lc",
                "run $TOK",
                "s3cret; id"
            ]
        );
        assert_eq!(
            expand("bash --norc -e -c 'a $TOK'", &env).unwrap()[4],
            "a $TOK"
        );
        // Not a shell's script: filled as any word.
        assert_eq!(expand("sh run.sh $TOK", &env).unwrap()[2], "s3cret; id");
        assert_eq!(expand("env -c $TOK", &env).unwrap()[2], "s3cret; id");
        assert_eq!(expand("bash +c $TOK", &env).unwrap()[2], "s3cret; id");
    }

    #[test]
    fn a_value_is_never_re_split_or_re_expanded() {
        let mut env = env();
        env.insert("EVIL".into(), "a b; $PORT".into());
        assert_eq!(expand("app $EVIL", &env).unwrap(), ["app", "a b; $PORT"]);
    }

    #[test]
    fn refuses_unbalanced_quotes_and_empty() {
        assert!(expand("node 'main.js", &env()).is_err());
        assert!(expand("  ", &env()).is_err());
    }
}
