//! A key request as the node received it: kept whole so that forwarding passes it on unchanged.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, Uri};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

use kvorum_wire::headers::HOPS_HEADER;

/// A key request as it arrived: what forwarding passes on unchanged.
pub struct Incoming {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Incoming {
    pub(crate) fn hops(&self) -> u32 {
        self.headers
            .get(HOPS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The body parsed as JSON, after checking its content type.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
    }
}
