//! An event's job policy as data (attempts, backoff, timeout, execution limit): what is copied
//! onto every job of the event, so that the store can build a job from rows alone (a workflow
//! node's job is made inside the transaction that ended its upstream node, where no spec is
//! parsed).

use serde::{Deserialize, Serialize};

/// The retry, timeout and limit settings of an event, in the units the queue keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt up to `max_backoff_ms`.
    pub backoff_ms: i64,
    pub max_backoff_ms: i64,
    pub timeout_ms: i64,
    /// At most this many jobs are ever created for the event (0 = no limit).
    pub max_executions: i64,
}

impl Default for JobPolicy {
    /// The product's defaults for an event file that says nothing (PRODUCT.md "Event file"):
    /// one attempt, 5 s then up to 5 min of backoff, a 1 h timeout, no limit.
    fn default() -> Self {
        JobPolicy {
            max_attempts: 1,
            backoff_ms: 5_000,
            max_backoff_ms: 300_000,
            timeout_ms: 3_600_000,
            max_executions: 0,
        }
    }
}

/// A workflow node's overrides of its event's policy (`retries`, `timeout` on the node); `None`
/// keeps the event's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyOverride {
    pub max_attempts: Option<i32>,
    pub backoff_ms: Option<i64>,
    pub max_backoff_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
}

impl PolicyOverride {
    /// Every field set from `policy` (the execution limit is the event's, never a node's).
    pub fn all(policy: &JobPolicy) -> Self {
        PolicyOverride {
            max_attempts: Some(policy.max_attempts),
            backoff_ms: Some(policy.backoff_ms),
            max_backoff_ms: Some(policy.max_backoff_ms),
            timeout_ms: Some(policy.timeout_ms),
        }
    }

    /// `base` with the fields this override sets replaced.
    pub fn apply(&self, base: &JobPolicy) -> JobPolicy {
        JobPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            backoff_ms: self.backoff_ms.unwrap_or(base.backoff_ms),
            max_backoff_ms: self.max_backoff_ms.unwrap_or(base.max_backoff_ms),
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            max_executions: base.max_executions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_replaces_only_what_it_sets() {
        let event = JobPolicy {
            max_attempts: 3,
            backoff_ms: 1000,
            max_backoff_ms: 9000,
            timeout_ms: 600_000,
            max_executions: 7,
        };
        assert_eq!(PolicyOverride::default().apply(&event), event);
        let node = PolicyOverride {
            timeout_ms: Some(5000),
            ..Default::default()
        };
        assert_eq!(
            node.apply(&event),
            JobPolicy {
                timeout_ms: 5000,
                ..event
            }
        );
        // The limit stays the event's even when every other field is overridden.
        let all = PolicyOverride::all(&JobPolicy::default()).apply(&event);
        assert_eq!(
            all,
            JobPolicy {
                max_executions: 7,
                ..JobPolicy::default()
            }
        );
    }
}
