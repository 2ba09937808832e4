//! Query strings: axum's `Query` rejections as problems that name the parameter.

use axum::extract::rejection::QueryRejection;

use crate::problem::{FieldError, Problem};

/// The problem for a query string serde refused: an unknown or repeated parameter names
/// itself; anything else is a 400. `known` lists the parameters the route takes, for the
/// message.
pub fn problem(rejection: QueryRejection, known: &str) -> Problem {
    let text = rejection.body_text();
    let reason = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    // axum reports the parameter's path before serde's message ("colour: unknown field
    // ..."), so the message is looked for anywhere in the text, not only at its start.
    let named = |marker: &str| {
        reason
            .split_once(marker)
            .and_then(|(_, rest)| rest.split('`').next())
            .map(|name| shortened(name, 64))
    };
    if let Some(name) = named("unknown field `") {
        return Problem::validation(vec![field(
            &name,
            format!("is not a known parameter; use {known}"),
        )]);
    }
    if let Some(name) = named("duplicate field `") {
        return Problem::validation(vec![field(&name, "may be given only once")]);
    }
    Problem::bad_request(format!(
        "the query string cannot be read: {}",
        shortened(reason, 200)
    ))
}

/// At most `max` characters of client-supplied text, so an answer never echoes a flood.
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

pub fn field(name: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: name.to_owned(),
        message: message.into(),
    }
}
