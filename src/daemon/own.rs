//! The daemon's own answers on its listeners, beside the workers' it passes on: a
//! one-line text, marked [`Own`] so that the data path can tell it from a worker's (see
//! `proxy::handle`), or a JSON body (the front's `/switch`).

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::upstream::{self, Body};

/// Marks an answer as the daemon's own, not a worker's (see `proxy::handle`).
#[derive(Clone, Copy)]
pub struct Own;

/// A one-line text answer.
pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(upstream::full(format!("{text}\n")));
    *response.status_mut() = status;
    response.extensions_mut().insert(Own);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(upstream::full(format!("{value}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
