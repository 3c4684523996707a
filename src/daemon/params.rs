//! What a control request (and the front's `/switch`) asks is in its query, never in a
//! body.

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
