//! The dev page (`web/`), embedded in the binary and served at the api's
//! `/`: nothing to install or deploy beside `vodfarm`.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// One embedded file.
fn file(content_type: &'static str, body: &'static [u8]) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Routes: `/`, `/web/app.js`, `/web/style.css`, `/web/vendor/*`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let html = file(
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    );
    let js = file(
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    );
    let css = file(
        "text/css; charset=utf-8",
        include_bytes!("../web/style.css"),
    );
    let hls = file(
        "text/javascript; charset=utf-8",
        include_bytes!("../web/vendor/hls.min.js"),
    );
    let tus = file(
        "text/javascript; charset=utf-8",
        include_bytes!("../web/vendor/tus.min.js"),
    );
    Router::new()
        .route("/", get(move || async move { html }))
        .route("/web/app.js", get(move || async move { js }))
        .route("/web/style.css", get(move || async move { css }))
        .route("/web/vendor/hls.min.js", get(move || async move { hls }))
        .route("/web/vendor/tus.min.js", get(move || async move { tus }))
}
