//! [`Client`]: one server's API (base URL, bearer token, one pooled `reqwest` client) and its
//! calls; [`Builder`] sets the connection options the callers differ on (the benchmarks' pool,
//! the agent's user agent).

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::sse::SseReader;

/// The API of one server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// Without a trailing `/`; paths are appended as given (`/api/v1/jobs`).
    base: String,
    token: Option<String>,
}

/// How to build a [`Client`]. Defaults: a 5 s connect timeout, `TCP_NODELAY`, reqwest's pool
/// (idle connections kept per host), no overall timeout, no token.
#[derive(Clone, Debug)]
pub struct Builder {
    base: String,
    token: Option<String>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    tcp_nodelay: bool,
    pool_max_idle_per_host: Option<usize>,
    pool_idle_timeout: Option<Duration>,
    user_agent: Option<String>,
}

impl Builder {
    /// The bearer token sent with every request; blank is none.
    pub fn token(mut self, token: impl Into<String>) -> Builder {
        let t = token.into().trim().to_string();
        self.token = (!t.is_empty()).then_some(t);
        self
    }

    /// How long connecting may take; `None`: as long as the OS lets it.
    pub fn connect_timeout(mut self, t: Option<Duration>) -> Builder {
        self.connect_timeout = t;
        self
    }

    /// The default whole-request timeout (a call's own one replaces it); `None`: no limit,
    /// which an event stream needs.
    pub fn timeout(mut self, t: Option<Duration>) -> Builder {
        self.timeout = t;
        self
    }

    /// Nagle's algorithm off (the default) so that a small request is not held back.
    pub fn tcp_nodelay(mut self, on: bool) -> Builder {
        self.tcp_nodelay = on;
        self
    }

    /// Idle connections kept per host; 0 opens a new connection per request.
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Builder {
        self.pool_max_idle_per_host = Some(n);
        self
    }

    /// How long an idle pooled connection is kept.
    pub fn pool_idle_timeout(mut self, t: Duration) -> Builder {
        self.pool_idle_timeout = Some(t);
        self
    }

    pub fn user_agent(mut self, ua: impl Into<String>) -> Builder {
        self.user_agent = Some(ua.into());
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let mut b = reqwest::Client::builder().tcp_nodelay(self.tcp_nodelay);
        if let Some(t) = self.connect_timeout {
            b = b.connect_timeout(t);
        }
        if let Some(t) = self.timeout {
            b = b.timeout(t);
        }
        if let Some(n) = self.pool_max_idle_per_host {
            b = b.pool_max_idle_per_host(n);
        }
        if let Some(t) = self.pool_idle_timeout {
            b = b.pool_idle_timeout(t);
        }
        if let Some(ua) = self.user_agent {
            b = b.user_agent(ua);
        }
        Ok(Client {
            http: b.build().map_err(Error::Build)?,
            base: self.base,
            token: self.token,
        })
    }
}

impl Client {
    /// A builder for the server at `base` (`http://127.0.0.1:8080`, or a prefix of its routes:
    /// `http://host/api/v1/agent`).
    pub fn builder(base: &str) -> Builder {
        Builder {
            base: base.trim_end_matches('/').to_string(),
            token: None,
            connect_timeout: Some(Duration::from_secs(5)),
            timeout: None,
            tcp_nodelay: true,
            pool_max_idle_per_host: None,
            pool_idle_timeout: None,
            user_agent: None,
        }
    }

    /// The base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method` `path` with an optional JSON body; the JSON answer (`Null` for an empty one,
    /// a 204).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        self.send(method, path, body, None).await
    }

    /// `POST path` with `body` as JSON; the answer parsed as `T`.
    pub async fn post<B, T>(
        &self,
        path: &str,
        body: &B,
        timeout: Option<Duration>,
    ) -> Result<T, Error>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.send(Method::POST, path, Some(body), timeout).await
    }

    /// `GET path`; the answer parsed as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        self.send::<(), T>(Method::GET, path, None, timeout).await
    }

    /// The general call: `method` `path`, an optional JSON body, an optional timeout for the
    /// whole call (else the client's). A 2xx answer is parsed as `T` (an empty one as JSON
    /// `null`); any other is [`Error::Status`].
    pub async fn send<B, T>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<T, Error>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let mut rb = self.prepare(method.clone(), path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        let (status, bytes) = self.answer(&method, path, rb).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return T::deserialize(Value::Null)
                .map_err(|e| Error::shape(method, path, status, e, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::shape(method, path, status, e, &bytes))
    }

    /// `GET path` answered with text (the Prometheus page, `/metrics`).
    pub async fn text(&self, path: &str) -> Result<String, Error> {
        let rb = self.prepare(Method::GET, path);
        let (_, bytes) = self.answer(&Method::GET, path, rb).await?;
        String::from_utf8(bytes).map_err(|e| {
            let bytes = e.as_bytes().to_vec();
            Error::shape(Method::GET, path, 200, e.utf8_error(), &bytes)
        })
    }

    /// Opens the event stream at `path` (`GET`, `Accept: text/event-stream`), resuming after
    /// `last_event_id` when given (`Last-Event-ID`). A non-2xx answer is [`Error::Status`].
    pub async fn stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseReader, Error> {
        let mut rb = self
            .prepare(Method::GET, path)
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id);
        }
        let resp = rb.send().await.map_err(|source| Error::Unreachable {
            method: Method::GET,
            path: path.into(),
            source,
        })?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(Error::status(Method::GET, path, status, &text));
        }
        Ok(SseReader::new(resp))
    }

    fn prepare(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends `rb`; a 2xx answer's status and body, else the answer as an [`Error::Status`].
    async fn answer(
        &self,
        method: &Method,
        path: &str,
        rb: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), Error> {
        let unreachable = |source| Error::Unreachable {
            method: method.clone(),
            path: path.into(),
            source,
        };
        let resp = rb.send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(Error::status(
                method.clone(),
                path,
                status.as_u16(),
                &String::from_utf8_lossy(&bytes),
            ));
        }
        Ok((status.as_u16(), bytes.to_vec()))
    }
}
