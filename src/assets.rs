//! Static files served for plain GET requests that are not RPCs (the demo page).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, BoxBody};

/// One file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The URL path it is served at, e.g. `/` or `/app.js`.
    pub path: &'static str,
    /// Its `content-type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// A set of files, usually embedded in the binary with `include_bytes!`.
#[derive(Debug, Clone, Default)]
pub struct Assets {
    files: Arc<Vec<Asset>>,
}

impl Assets {
    /// Files to serve.
    pub fn new(files: Vec<Asset>) -> Assets {
        Assets {
            files: Arc::new(files),
        }
    }

    /// Answers a GET or HEAD for one of the files; `None` when no file has that path.
    pub(crate) fn serve<B>(&self, req: &Request<B>) -> Option<Response<BoxBody>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return None;
        }
        let asset = self.files.iter().find(|a| a.path == req.uri().path())?;
        let body = if req.method() == Method::HEAD {
            body::empty()
        } else {
            body::full(asset.body)
        };
        let mut res = Response::new(body);
        *res.status_mut() = StatusCode::OK;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
        Some(res)
    }
}
