//! The payload sweep: removes cached payload archives unused for longer than the configured age,
//! once at start and then every [`INTERVAL`]. The cache is only an accelerator (an archive is
//! rebuilt from its event version when needed), so a failed pass is logged and retried later.

use std::time::Duration;

use cronium_core::payload::PayloadCache;
use tokio_util::sync::CancellationToken;

/// Time between passes.
pub const INTERVAL: Duration = Duration::from_secs(3600);

pub async fn run(cache: PayloadCache, max_age: Duration, shutdown: CancellationToken) {
    loop {
        match cache.cleanup(max_age) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "old payloads removed"),
            Err(e) => tracing::warn!(error = %e, "payload sweep"),
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
