//! The labels that mark containers and networks as created by Cronium. They are the only thing the
//! reaper trusts: an object without [`LABEL_MANAGED`]` = true` is never touched.

use std::collections::HashMap;

/// Present (value `true`) on every container and network this crate creates.
pub const LABEL_MANAGED: &str = "io.cronium.managed";
/// The job id the object belongs to.
pub const LABEL_JOB: &str = "io.cronium.job";
/// The execution id the object belongs to.
pub const LABEL_EXECUTION: &str = "io.cronium.execution";
/// Creation time, seconds since the Unix epoch (the engine's own timestamps differ per object type).
pub const LABEL_CREATED: &str = "io.cronium.created";
/// Prefix of container and network names, for humans reading `docker ps`.
pub const NAME_PREFIX: &str = "cronium";

pub(crate) fn for_run(
    job_id: i64,
    execution_id: i64,
    created_epoch: u64,
) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_JOB.to_string(), job_id.to_string()),
        (LABEL_EXECUTION.to_string(), execution_id.to_string()),
        (LABEL_CREATED.to_string(), created_epoch.to_string()),
    ])
}

/// The engine-side filter selecting only our objects.
pub(crate) fn managed_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{LABEL_MANAGED}=true")])])
}

/// What the reaper reads back from an object's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub job_id: Option<i64>,
    pub execution_id: Option<i64>,
    pub created_epoch: Option<u64>,
}

impl Owner {
    /// `None` when the object is not ours (the engine filter should already have excluded it; this
    /// is checked again because deleting someone else's container is the one unforgivable bug).
    pub(crate) fn parse(labels: Option<&HashMap<String, String>>) -> Option<Owner> {
        let labels = labels?;
        if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true") {
            return None;
        }
        Some(Owner {
            job_id: labels.get(LABEL_JOB).and_then(|v| v.parse().ok()),
            execution_id: labels.get(LABEL_EXECUTION).and_then(|v| v.parse().ok()),
            created_epoch: labels.get(LABEL_CREATED).and_then(|v| v.parse().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_without_the_managed_label_are_not_ours() {
        let mut l = for_run(7, 9, 100);
        assert_eq!(
            Owner::parse(Some(&l)),
            Some(Owner {
                job_id: Some(7),
                execution_id: Some(9),
                created_epoch: Some(100)
            })
        );
        l.insert(LABEL_MANAGED.into(), "false".into());
        assert_eq!(Owner::parse(Some(&l)), None);
        l.remove(LABEL_MANAGED);
        assert_eq!(Owner::parse(Some(&l)), None);
        assert_eq!(Owner::parse(None), None);
    }
}
