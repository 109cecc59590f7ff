//! Applying many events or many workflows in one transaction (`cronium event apply -f DIR`,
//! `cronium workflow apply -f DIR`): all or nothing, optionally deleting what the list does not
//! name (`prune`), or only reporting what would change (`dry_run`: the same transaction, rolled
//! back, so the answer is exactly what a real apply would do).
//!
//! Each item goes through the single-item apply's own code (`apply_event_in`,
//! `apply_workflow_in`), in list order, so workflows may use the sub-workflows listed before
//! them. A refusal names the item (`items[2].nodes[1].event: ...`) and nothing is written.

use cronium_model::workflow::WorkflowDefinition;
use cronium_model::{EventStatus, JobPolicy};
use serde::Serialize;
use serde_json::Value;

use crate::events::{
    apply_event_in, check_name, check_policy, delete_event_rows, event_cols, event_row, Applied,
    EventRow,
};
use crate::row::{i64_col, text, to_json};
use crate::workflows::{apply_workflow_in, delete_workflow_in, validate_definition, WorkflowRow};
use crate::{Store, StoreError};

/// One event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct EventApply {
    pub name: String,
    pub status: EventStatus,
    pub spec: Value,
    pub policy: JobPolicy,
}

/// What a batch did (or, dry, would do) to one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BatchResult {
    Created,
    Updated,
    Unchanged,
    /// Not in the list, and `prune` was asked for.
    Deleted,
}

impl From<Applied> for BatchResult {
    fn from(a: Applied) -> Self {
        match a {
            Applied::Created => BatchResult::Created,
            Applied::Updated => BatchResult::Updated,
            Applied::Unchanged => BatchResult::Unchanged,
        }
    }
}

/// The outcome for one name; `row` is the row as written (None for a deletion).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchChange<R> {
    pub name: String,
    pub result: BatchResult,
    pub row: Option<R>,
}

/// Prefixes a refusal with the item it is about.
fn at_item(i: usize, e: StoreError) -> StoreError {
    match e {
        StoreError::Invalid(m) => StoreError::Invalid(format!("items[{i}].{m}")),
        other => other,
    }
}

impl Store {
    /// Applies `items` (events by name) in one transaction; with `prune`, deletes every user
    /// event not in the list (inline workflow nodes are never touched; jobs stay, as for a
    /// deleted event). With `dry_run` nothing is kept. Changes in list order, then deletions
    /// by name.
    pub async fn apply_events_batch(
        &self,
        items: &[EventApply],
        prune: bool,
        dry_run: bool,
        now: i64,
    ) -> Result<Vec<BatchChange<EventRow>>, StoreError> {
        let mut texts = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            check_name(&item.name).map_err(|e| at_item(i, e))?;
            check_policy("policy", &item.policy).map_err(|e| at_item(i, e))?;
            if items[..i].iter().any(|o| o.name == item.name) {
                return Err(StoreError::Invalid(format!(
                    "items[{i}].name: `{}` is listed twice",
                    item.name
                )));
            }
            texts.push(to_json("spec", &item.spec)?);
        }
        let mut tx = self.begin_write().await?;
        let mut changes = Vec::new();
        for (i, (item, spec_text)) in items.iter().zip(&texts).enumerate() {
            let (row, applied) = apply_event_in(
                &mut tx,
                self.for_update(),
                &item.name,
                item.status,
                &item.spec,
                spec_text,
                Some(&item.policy),
                now,
            )
            .await
            .map_err(|e| at_item(i, e))?;
            changes.push(BatchChange {
                name: item.name.clone(),
                result: applied.into(),
                row: Some(row),
            });
        }
        if prune {
            let rows = sqlx::query(concat!(
                "SELECT ",
                event_cols!(),
                " FROM events WHERE workflow_id IS NULL ORDER BY name"
            ))
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let event = event_row(row)?;
                if items.iter().any(|i| i.name == event.name) {
                    continue;
                }
                delete_event_rows(&mut tx, event.id).await?;
                changes.push(BatchChange {
                    name: event.name,
                    result: BatchResult::Deleted,
                    row: None,
                });
            }
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(changes)
    }

    /// Applies `defs` (workflows by name) in one transaction, in list order; with `prune`,
    /// deletes every workflow not in the list (their active runs cancelled, as
    /// [`Store::delete_workflow`] does). With `dry_run` nothing is kept.
    pub async fn apply_workflows_batch(
        &self,
        defs: &[WorkflowDefinition],
        prune: bool,
        dry_run: bool,
        now: i64,
    ) -> Result<Vec<BatchChange<WorkflowRow>>, StoreError> {
        let mut texts = Vec::with_capacity(defs.len());
        for (i, def) in defs.iter().enumerate() {
            validate_definition(def).map_err(|e| at_item(i, e))?;
            if defs[..i].iter().any(|o| o.name == def.name) {
                return Err(StoreError::Invalid(format!(
                    "items[{i}].name: `{}` is listed twice",
                    def.name
                )));
            }
            texts.push(to_json("spec", &def.spec)?);
        }
        let mut tx = self.begin_write().await?;
        let mut changes = Vec::new();
        for (i, (def, spec_text)) in defs.iter().zip(&texts).enumerate() {
            let (row, applied) = apply_workflow_in(&mut tx, self.for_update(), def, spec_text, now)
                .await
                .map_err(|e| at_item(i, e))?;
            changes.push(BatchChange {
                name: def.name.clone(),
                result: applied.into(),
                row: Some(row),
            });
        }
        let mut deleted = Vec::new();
        if prune {
            let rows = sqlx::query("SELECT id, name FROM workflows ORDER BY name")
                .fetch_all(&mut *tx)
                .await?;
            for row in &rows {
                let name = text(row, "name")?;
                if defs.iter().any(|d| d.name == name) {
                    continue;
                }
                let id = i64_col(row, "id")?;
                delete_workflow_in(&mut tx, self.for_update(), id, now).await?;
                deleted.push(id);
                changes.push(BatchChange {
                    name,
                    result: BatchResult::Deleted,
                    row: None,
                });
            }
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
            for id in deleted {
                self.graphs.evict(id);
            }
        }
        Ok(changes)
    }
}
