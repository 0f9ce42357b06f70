//! The `builtin:echo` upstream: answers with the request it received, as JSON, so a new
//! user sees exactly what a real upstream would get (the normalized path, the identity
//! headers, the forwarding headers).

use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Map, Value};

use crate::body::Body;
use crate::error::json_response;
use crate::request_body::{BodyError, RequestBody};

/// The echo of one request. The body is read and counted, not kept; its limits apply
/// as they would to a real upstream.
pub(crate) async fn respond(req: Request<RequestBody>) -> Result<Response, BodyError> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            body_bytes += data.len() as u64;
        }
    }
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let value = match <[Value; 1]>::try_from(values) {
            Ok([one]) => one,
            Err(many) => Value::Array(many),
        };
        headers.insert(name.as_str().to_owned(), value);
    }
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({
            "upstream": "builtin:echo",
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body_bytes": body_bytes,
        }),
    ))
}

type Response = http::Response<Body>;
