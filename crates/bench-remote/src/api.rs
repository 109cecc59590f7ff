//! The JSON call to a Cronium server's API that both benchmark harnesses make (this crate's
//! fan-out and container benchmarks, and `cronium-bench`): bearer token, JSON body, a non-2xx
//! answer or a body that is not JSON reported with the method and path.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {path}: {source}")]
    Http {
        method: String,
        path: String,
        source: reqwest::Error,
    },
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("unexpected answer to {method} {path}: {body}")]
    Shape {
        method: String,
        path: String,
        body: String,
    },
}

/// A client for benchmarking: no Nagle delay; `idle_per_host: 0` opens a new connection per
/// request.
pub fn client(idle_per_host: usize) -> Result<reqwest::Client, ApiError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(idle_per_host)
        .tcp_nodelay(true)
        .build()
        .map_err(|source| ApiError::Http {
            method: "build".into(),
            path: "client".into(),
            source,
        })
}

/// `method` `base``path` with `token`; the JSON answer (`Null` for an empty body).
pub async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, ApiError> {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = http.request(m, format!("{base}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let http_err = |source| ApiError::Http {
        method: method.into(),
        path: path.into(),
        source,
    };
    let resp = req.send().await.map_err(http_err)?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(http_err)?;
    if !(200..300).contains(&status) {
        return Err(ApiError::Status {
            method: method.into(),
            path: path.into(),
            status,
            body: text,
        });
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|_| ApiError::Shape {
        method: method.into(),
        path: path.into(),
        body: text,
    })
}
