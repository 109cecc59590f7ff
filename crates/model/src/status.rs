//! The statuses of jobs, executions and events, and how the runner's result maps onto them.

use cronium_protocol::RunStatus;

use crate::vocabulary;

vocabulary! {
    /// Where a job is in its life (PRODUCT.md "Statuses").
    pub enum JobStatus ("job status") {
        /// Waiting to be claimed (first attempt, or a retry waiting out its backoff).
        Queued = "queued",
        /// Claimed by a worker holding its lease.
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        /// Some servers succeeded, some failed.
        Partial = "partial",
    }
}

impl JobStatus {
    /// The statuses a job ends in.
    pub const FINAL: &'static [JobStatus] = &[
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::TimedOut,
        JobStatus::Cancelled,
        JobStatus::Partial,
    ];

    /// True once the job has ended: nothing about it changes any more.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// A job whose single execution ended as the runner reports ends the same way.
impl From<RunStatus> for JobStatus {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Succeeded => JobStatus::Succeeded,
            RunStatus::Failed => JobStatus::Failed,
            RunStatus::TimedOut => JobStatus::TimedOut,
            RunStatus::Cancelled => JobStatus::Cancelled,
        }
    }
}

vocabulary! {
    /// Where one execution (one attempt on one server, or the one local or container run) is.
    pub enum ExecutionStatus ("execution status") {
        /// Claimed, not started.
        Pending = "pending",
        /// Getting the runner onto a server.
        Deploying = "deploying",
        /// Output streaming.
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        /// The worker vanished; the output up to that point is kept.
        Lost = "lost",
        /// Not attempted: the server was unreachable and the target says `skip_unreachable`
        /// (the reason is the execution's note).
        Skipped = "skipped",
    }
}

impl ExecutionStatus {
    /// True once the execution has ended.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ExecutionStatus::Pending | ExecutionStatus::Deploying | ExecutionStatus::Running
        )
    }
}

/// The one mapping of the runner's result onto an execution's status.
impl From<RunStatus> for ExecutionStatus {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Succeeded => ExecutionStatus::Succeeded,
            RunStatus::Failed => ExecutionStatus::Failed,
            RunStatus::TimedOut => ExecutionStatus::TimedOut,
            RunStatus::Cancelled => ExecutionStatus::Cancelled,
        }
    }
}

vocabulary! {
    /// Whether an event runs. Kept only in the store's `events.status` (an event file's
    /// `status:` is read into it, never stored inside the spec). An event file without
    /// `status:` makes an active event.
    #[derive(Default)]
    pub enum EventStatus ("event status") {
        /// Fires on its schedule; can be run by hand.
        #[default]
        Active = "active",
        /// Does not fire; can still be run by hand.
        Paused = "paused",
        /// Being written: does not fire.
        Draft = "draft",
        /// Kept for its history: does not fire and cannot be run.
        Archived = "archived",
    }
}

vocabulary! {
    /// What the server makes of an SSH server's health checks (`cronium_core::health::judge`):
    /// judged when read, from the latest contact and reading and the configured thresholds.
    pub enum ServerHealth ("server health") {
        /// Never checked yet, or no contact yet and too few failures to say.
        Unknown = "unknown",
        Healthy = "healthy",
        /// Answering, but a threshold is crossed (disk or memory nearly exhausted).
        Degraded = "degraded",
        /// Checks failed several times in a row, or the last contact is too old.
        Unreachable = "unreachable",
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// serde, `as_str` and `FromStr` agree on every value, so the JSON the API returns and the
    /// text the store keeps are one spelling.
    #[test]
    fn every_value_has_one_spelling() {
        fn check<T>(all: &[T], as_str: fn(&T) -> &'static str)
        where
            T: serde::Serialize
                + serde::de::DeserializeOwned
                + FromStr
                + PartialEq
                + std::fmt::Debug,
            <T as FromStr>::Err: std::fmt::Debug,
        {
            for v in all {
                let text = as_str(v);
                assert_eq!(serde_json::to_value(v).unwrap(), text);
                assert_eq!(&serde_json::from_value::<T>(text.into()).unwrap(), v);
                assert_eq!(&T::from_str(text).unwrap(), v);
            }
        }
        check(JobStatus::ALL, |v| v.as_str());
        check(ExecutionStatus::ALL, |v| v.as_str());
        check(EventStatus::ALL, |v| v.as_str());
        check(ServerHealth::ALL, |v| v.as_str());
        check(crate::Trigger::ALL, |v| v.as_str());
        assert_eq!(JobStatus::TimedOut.as_str(), "timed_out");
    }

    #[test]
    fn unknown_values_are_refused_with_the_valid_ones_listed() {
        let err = JobStatus::from_str("done").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown job status `done`; expected one of queued, running, succeeded, failed, \
             timed_out, cancelled, partial"
        );
        // Case matters: the store and the API only ever use the lowercase spelling.
        assert!(EventStatus::from_str("Active").is_err());
    }

    #[test]
    fn final_statuses() {
        let finals: Vec<_> = JobStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, JobStatus::FINAL.iter().collect::<Vec<_>>());
        assert!(ExecutionStatus::Lost.is_final());
        assert!(!ExecutionStatus::Deploying.is_final());
        assert_eq!(
            ExecutionStatus::from(RunStatus::TimedOut),
            ExecutionStatus::TimedOut
        );
        assert_eq!(JobStatus::from(RunStatus::Cancelled), JobStatus::Cancelled);
    }
}
