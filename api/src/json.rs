//! The JSON body extractor: reads at most [`MAX_BODY_BYTES`], insists on
//! `application/json`, and turns every parse or validation failure into a problem with the
//! offending field named.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};

pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(Problem::unsupported_media_type());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| Problem::payload_too_large(MAX_BODY_BYTES))?;
        parse(&bytes).map(Json)
    }
}

/// Deserializes a body, naming the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
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
    })
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

/// serde's message without its line and column suffix, which means nothing to a client.
fn describe(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
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
