//! What a control request (and the front's `/switch`) asks is in its query, never in a
//! body: the query's parameters, percent-decoded (`?to=bl%75e` is `?to=blue`), each
//! known one at most once and nothing else. None holds a control character once decoded
//! (nor a Unicode line separator): quoted back in a refusal, a `%0A` split it over two
//! lines, and a `not-deployed` reason's `%E2%80%A8` the event that keeps it.

use http::{header, HeaderMap};

/// Ok when a request comes without a body, as every endpoint takes it. A body is never
/// read, so its size costs nothing; ignored, a body such as `to=blue` (`curl -d`) would
/// be taken for having been obeyed.
pub fn no_body(headers: &HeaderMap) -> Result<(), String> {
    // hyper has refused a length that is not a number, and two that differ.
    let empty = match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => true,
    };
    match empty && !headers.contains_key(header::TRANSFER_ENCODING) {
        true => Ok(()),
        false => Err("this endpoint takes no request body: give parameters in the query (e.g. POST /switch?to=green)".into()),
    }
}

/// The `key=value` pairs of a query, decoded, each of `known` at most once and nothing
/// else. `key` alone is `key=`.
pub fn params(query: &str, known: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key
            .chars()
            .chain(value.chars())
            .any(crate::logging::is_control)
        {
            return Err(format!(
                "`{}` may not hold a control character (such as %0A)",
                crate::logging::quotable(&key)
            ));
        }
        if !known.contains(&key.as_ref()) {
            return Err(format!("unknown parameter `{key}` ({})", known.join(", ")));
        }
        if pairs.iter().any(|(seen, _)| *seen == key) {
            return Err(format!("`{key}` is given twice"));
        }
        pairs.push((key.into_owned(), value.into_owned()));
    }
    Ok(pairs)
}

/// Whether `key` is in the query alone, without `=` (`?force`), which [`params`] gives as
/// `key=` (`?force=`, what `force=$FORCE` with `FORCE` unset sends, is not the same ask).
pub fn alone(query: &str, key: &str) -> bool {
    query.split('&').any(|segment| {
        !segment.contains('=')
            && form_urlencoded::parse(segment.as_bytes()).any(|(name, _)| name == key)
    })
}

/// A yes/no query parameter `name=value`, as `force` and `enabled` take it.
pub fn flag(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        other => Err(format!(
            "{name}=`{other}`: use {name}=1 (or true, yes) or {name}=0 (false, no)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_alone_is_told_from_an_empty_value() {
        assert!(alone("to=blue&force", "force"));
        assert!(alone("f%6Frce", "force"));
        assert!(!alone("to=blue&force=", "force"));
        assert!(!alone("to=blue", "force"));
    }

    #[test]
    fn values_and_names_are_percent_decoded() {
        let want = vec![("to".to_string(), "blue".to_string())];
        assert_eq!(params("to=bl%75e", &["to"]).unwrap(), want);
        assert_eq!(params("t%6F=blue", &["to"]).unwrap(), want);
        assert_eq!(
            params("to=blue&t%6F=green", &["to"]).unwrap_err(),
            "`to` is given twice"
        );
        assert_eq!(
            params("n=%31%30&x", &["n", "x"]).unwrap(),
            vec![("n".into(), "10".into()), ("x".into(), String::new())]
        );
        // `&&` and a trailing `&` are no parameters; `%` not followed by two hex digits
        // stands for itself.
        assert_eq!(params("&to=%ZZ&", &["to"]).unwrap()[0].1, "%ZZ");
        assert_eq!(
            params("bogus=1", &["to"]).unwrap_err(),
            "unknown parameter `bogus` (to)"
        );
    }

    #[test]
    fn a_control_character_is_refused_on_one_line() {
        assert_eq!(
            params("to=blue%0Agreen", &["to"]).unwrap_err(),
            "`to` may not hold a control character (such as %0A)"
        );
        assert_eq!(
            params("t%0Do=blue", &["to"]).unwrap_err(),
            "`t o` may not hold a control character (such as %0A)"
        );
        assert_eq!(
            params("reason=x%E2%80%A8y", &["reason"]).unwrap_err(),
            "`reason` may not hold a control character (such as %0A)"
        );
    }
}
