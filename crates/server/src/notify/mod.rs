//! Notifications: what a message says ([`message`]) and how it is written for each kind of
//! channel and sent ([`deliver`]). The outbox is the store's; `background::notify` fills it
//! (from the final states of jobs and workflow runs) and empties it (deliveries with retries).
//!
//! [`Hub`] is what the API, the use cases and the background task share: the server's public
//! URL (links in messages, hook URLs), the HTTP client of deliveries, and the waker of the
//! delivery task.

pub mod deliver;
pub mod message;

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;

/// Shared by everything that sends notifications or shows hook URLs.
pub struct Hub {
    configured_url: Option<String>,
    listen_url: OnceLock<String>,
    /// Wakes the delivery task (a channel test, a new outbox row).
    pub wake: Notify,
    /// Slack, Discord and webhook deliveries.
    pub http: reqwest::Client,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("public_url", &self.public_url())
            .finish()
    }
}

/// How long one delivery may take (connect, send, answer).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

impl Hub {
    /// `public_url`: `--public-url` (None: the address the server listens on, set by
    /// [`Hub::set_listen_url`]).
    pub fn new(public_url: Option<String>) -> Hub {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            // A notification goes where it was told, not where a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cronium/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Hub {
            configured_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            listen_url: OnceLock::new(),
            wake: Notify::new(),
            http,
        }
    }

    /// The base of links: `--public-url`, else the listen address.
    pub fn public_url(&self) -> &str {
        if let Some(u) = &self.configured_url {
            return u;
        }
        self.listen_url
            .get()
            .map_or("http://127.0.0.1:8080", String::as_str)
    }

    /// Called by `serve` once the listener is bound (`http://ADDR` or `https://ADDR`).
    pub fn set_listen_url(&self, url: String) {
        let _ = self.listen_url.set(url);
    }
}
