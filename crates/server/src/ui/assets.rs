//! The static assets (CSS, JavaScript, icon), compiled into the binary and served under
//! content-hashed names (`/assets/app.3f2a9c1e04b7.css`) with `Cache-Control: immutable`: a
//! browser fetches each version once, and a new build changes the name.
//!
//! Thirty lines of our own rather than memory-serve: three small files need no build script,
//! no compression step and no extra dependency; the hash is the SHA-256 of the bytes, computed
//! once at first use.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::UiError;

pub struct Asset {
    /// Where it is served, hash included.
    pub path: String,
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

pub struct Assets {
    pub css: Asset,
    pub js: Asset,
    pub icon: Asset,
}

fn asset(stem: &str, ext: &str, bytes: &'static [u8], content_type: &'static str) -> Asset {
    let hash = hex::encode(&Sha256::digest(bytes)[..6]);
    Asset {
        path: format!("/assets/{stem}.{hash}.{ext}"),
        bytes,
        content_type,
    }
}

pub fn get() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| Assets {
        css: asset(
            "app",
            "css",
            include_bytes!("../../assets/app.css"),
            "text/css; charset=utf-8",
        ),
        js: asset(
            "app",
            "js",
            include_bytes!("../../assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        icon: asset(
            "icon",
            "svg",
            include_bytes!("../../assets/icon.svg"),
            "image/svg+xml",
        ),
    })
}

/// `GET /assets/{file}`: only the current hashed names exist.
pub async fn serve(Path(file): Path<String>) -> Response {
    let a = get();
    let wanted = format!("/assets/{file}");
    match [&a.css, &a.js, &a.icon]
        .into_iter()
        .find(|x| x.path == wanted)
    {
        Some(x) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(x.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            x.bytes,
        )
            .into_response(),
        None => UiError::NotFound(format!("no asset `{file}`")).into_response(),
    }
}
