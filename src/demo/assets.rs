//! The demo page, built from web-demo/ (`npm --prefix web-demo run build`) and embedded, so
//! running the demo needs no Node. A test fails when web-demo/dist is stale.

use crate::assets::{Asset, Assets};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const INDEX: &[u8] = include_bytes!("../../web-demo/dist/index.html");

/// The page's files: `/` (and `/index.html`), `/app.js`, `/app.css`.
pub fn assets() -> Assets {
    Assets::new(vec![
        Asset {
            path: "/",
            content_type: HTML,
            body: INDEX,
        },
        Asset {
            path: "/index.html",
            content_type: HTML,
            body: INDEX,
        },
        Asset {
            path: "/app.js",
            content_type: JS,
            body: include_bytes!("../../web-demo/dist/app.js"),
        },
        Asset {
            path: "/app.css",
            content_type: CSS,
            body: include_bytes!("../../web-demo/dist/app.css"),
        },
    ])
}
