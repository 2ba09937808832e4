//! The JSON body extractor: reads at most [`MAX_BODY_BYTES`], insists on
//! `application/json`, and turns every parse or validation failure into a problem with the
//! offending field named.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};

pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A declared length above this is refused without reading any of the body.
const REFUSE_UNREAD_BYTES: u64 = 1024 * 1024;

pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let headers = request.headers();
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        let encoded = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if !is_json || encoded {
            return Err(Problem::unsupported_media_type());
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // A body declared far beyond the limit is refused before waiting for it. One only a
        // little over is read up to the limit, so that the client, still sending, gets to
        // read the answer instead of a reset connection.
        if declared.is_some_and(|length| length > REFUSE_UNREAD_BYTES) {
            return Err(Problem::payload_too_large(MAX_BODY_BYTES));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::payload_too_large(MAX_BODY_BYTES)
                } else {
                    Problem::bad_request("the body could not be read")
                }
            })?;
        parse(&bytes).map(Json)
    }
}

/// Deserializes a body that must be exactly one JSON object, naming the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(Problem::malformed_body(
            "the body must be a JSON object",
            Vec::new(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        let message = describe(&inner);
        if inner.is_syntax() || inner.is_eof() {
            Problem::malformed_body(format!("the body is not valid JSON: {message}"), Vec::new())
        } else {
            let field = missing_field_path(&field, &message).unwrap_or(field);
            let field = if field == "." { String::new() } else { field };
            Problem::malformed_body(
                "the body does not have the expected shape; see errors",
                vec![FieldError { field, message }],
            )
        }
    })?;
    deserializer.end().map_err(|_| {
        Problem::malformed_body("the body has more after its JSON object", Vec::new())
    })?;
    Ok(value)
}

/// serde reports a missing field at its parent's path; name the field itself.
fn missing_field_path(parent: &str, message: &str) -> Option<String> {
    let name = message.strip_prefix("missing field `")?.strip_suffix('`')?;
    Some(if parent == "." {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    })
}

/// serde's message in the client's terms: without its line and column suffix, and without
/// the names of our Rust types or the wording of the libraries that parse ids and times.
fn describe(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" at line ") {
        Some(cut) => &text[..cut],
        None => &text,
    };
    if text.starts_with("UUID parsing failed") {
        return "must be a UUID".to_owned();
    }
    match text.find("expected struct ") {
        Some(at) => format!("{}expected a JSON object", &text[..at]),
        None => text.to_owned(),
    }
}

/// Field errors from the validator crate, with dotted paths for nested structs.
pub fn field_errors(errors: &validator::ValidationErrors) -> Vec<FieldError> {
    let mut out = Vec::new();
    collect(errors, "", &mut out);
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

fn collect(errors: &validator::ValidationErrors, prefix: &str, out: &mut Vec<FieldError>) {
    use validator::ValidationErrorsKind;
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    let message = error.message.as_ref().map_or_else(
                        || format!("is not valid ({})", error.code),
                        |m| m.to_string(),
                    );
                    out.push(FieldError {
                        field: path.clone(),
                        message,
                    });
                }
            }
            ValidationErrorsKind::Struct(inner) => collect(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    collect(inner, &format!("{path}[{index}]"), out);
                }
            }
        }
    }
}
