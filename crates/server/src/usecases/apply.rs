//! Config as code: a whole directory's events or workflows applied in one store transaction
//! (all or nothing), with `prune` (delete what the list does not name) and `dry_run` (the
//! same transaction rolled back: exactly what a real apply would do).
//!
//! Every item is validated first, as a single apply would validate it, and the first error
//! names the item and its field (`items[2].nodes[1].after.build: unknown node`), so that the
//! CLI can name the file.

use std::collections::HashMap;

use cronium_core::spec;
use cronium_core::workflow::{self, WorkflowSpec};
use cronium_store::{BatchResult, EventApply, HookKind, StoreError};
use serde_json::Value;

use super::workflows::{reschedule, validate_references, validate_targets};
use super::{audit, channels, check_target, hooks, Actor, UseCaseError, UseCaseResult};
use crate::scheduler;
use crate::state::AppState;

/// What to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Events,
    Workflows,
}

/// The outcome for one name, in list order, then the deletions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub result: BatchResult,
}

fn at(i: usize, e: UseCaseError) -> UseCaseError {
    match e {
        UseCaseError::Invalid { field, message } => {
            let old = field.unwrap_or_default();
            let rest = message
                .strip_prefix(&format!("{old}: "))
                .unwrap_or(&message)
                .to_string();
            let field = if old.is_empty() {
                format!("items[{i}]")
            } else {
                format!("items[{i}].{old}")
            };
            UseCaseError::invalid(field, rest)
        }
        other => other,
    }
}

/// Applies `items` (each the JSON of an event or workflow file) in one transaction. A real
/// apply is recorded with one audit entry per object created, updated or deleted (`event.apply`,
/// `event.delete`, `workflow.apply`, `workflow.delete`, with the object before and after),
/// written after the transaction; a refused one with one entry naming the batch.
pub async fn apply_batch(
    state: &AppState,
    actor: &Actor,
    kind: Kind,
    items: Vec<Value>,
    prune: bool,
    dry_run: bool,
    now: i64,
) -> UseCaseResult<Vec<Change>> {
    let count = items.len();
    let (word, result) = match kind {
        Kind::Events => ("event", events(state, items, prune, dry_run, now).await),
        Kind::Workflows => (
            "workflow",
            workflows(state, items, prune, dry_run, now).await,
        ),
    };
    if dry_run {
        return result.map(|(c, _)| c);
    }
    match result {
        Ok((changes, audited)) => {
            for a in audited {
                audit::append(state, a.entry(actor, word)).await;
            }
            Ok(changes)
        }
        Err(e) => {
            audit::append(
                state,
                audit::entry(
                    actor,
                    &format!("{word}.apply"),
                    format!("batch of {count} {word}s"),
                    None,
                    None,
                    format!("error: {e}"),
                ),
            )
            .await;
            Err(e)
        }
    }
}

/// One object a batch changed, for the audit log.
struct Audited {
    name: String,
    result: BatchResult,
    before: Option<Value>,
    after: Option<Value>,
}

impl Audited {
    fn entry(self, actor: &Actor, word: &str) -> cronium_store::NewAudit {
        let verb = match self.result {
            BatchResult::Deleted => "delete",
            _ => "apply",
        };
        audit::entry(
            actor,
            &format!("{word}.{verb}"),
            format!("{word} {}", self.name),
            self.before,
            self.after,
            "ok",
        )
    }
}

async fn events(
    state: &AppState,
    items: Vec<Value>,
    prune: bool,
    dry_run: bool,
    now: i64,
) -> UseCaseResult<(Vec<Change>, Vec<Audited>)> {
    let mut batch = Vec::with_capacity(items.len());
    let mut webhooks = Vec::with_capacity(items.len());
    for (i, value) in items.into_iter().enumerate() {
        let s = spec::from_value(value).map_err(|e| at(i, e.into()))?;
        check_target(state, "target", &s.target)
            .await
            .map_err(|e| at(i, e))?;
        channels::check_notify(state, &s.notify)
            .await
            .map_err(|e| at(i, e))?;
        hooks::check_unique(state, HookKind::Event, &s.name, s.webhook)
            .await
            .map_err(|e| at(i, e))?;
        webhooks.push((s.name.clone(), s.webhook));
        batch.push(EventApply {
            name: s.name.clone(),
            status: s.status,
            spec: s.to_value(),
            policy: s.policy(),
        });
    }
    let before: HashMap<String, Value> = state
        .store
        .list_events()
        .await?
        .iter()
        .map(|e| (e.name.clone(), super::events::audit_json(e)))
        .collect();
    let changes = state
        .store
        .apply_events_batch(&batch, prune, dry_run, now)
        .await?;
    let audited = changes
        .iter()
        .filter(|c| c.result != BatchResult::Unchanged)
        .map(|c| Audited {
            name: c.name.clone(),
            result: c.result,
            before: before.get(&c.name).cloned(),
            after: c.row.as_ref().map(super::events::audit_json),
        })
        .collect();
    if !dry_run {
        for c in &changes {
            if let (Some(row), BatchResult::Created | BatchResult::Updated) = (&c.row, c.result) {
                scheduler::reschedule(state, row).await?;
            }
            if c.result == BatchResult::Deleted {
                hooks::deleted(state, HookKind::Event, &c.name).await?;
            }
        }
        for (name, webhook) in &webhooks {
            hooks::applied(state, HookKind::Event, name, *webhook).await?;
        }
        state.scheduler_wake.notify_one();
    }
    Ok((
        changes
            .into_iter()
            .map(|c| Change {
                name: c.name,
                result: c.result,
            })
            .collect(),
        audited,
    ))
}

async fn workflows(
    state: &AppState,
    items: Vec<Value>,
    prune: bool,
    dry_run: bool,
    now: i64,
) -> UseCaseResult<(Vec<Change>, Vec<Audited>)> {
    let mut specs: Vec<WorkflowSpec> = Vec::with_capacity(items.len());
    for (i, value) in items.into_iter().enumerate() {
        let s = workflow::from_value(value).map_err(|e| at(i, e.into()))?;
        if let Some(j) = specs.iter().position(|o| o.name == s.name) {
            return Err(UseCaseError::invalid(
                format!("items[{i}].name"),
                format!("`{}` is also the name of items[{j}]", s.name),
            ));
        }
        validate_targets(state, &s).await.map_err(|e| at(i, e))?;
        channels::check_notify(state, &s.notify)
            .await
            .map_err(|e| at(i, e))?;
        hooks::check_unique(state, HookKind::Workflow, &s.name, s.webhook)
            .await
            .map_err(|e| at(i, e))?;
        specs.push(s);
    }
    // Sub-workflows of the batch count with their new references (recursion across files is
    // caught here), and are applied before the workflows that use them.
    let refs: HashMap<String, Vec<String>> = specs
        .iter()
        .map(|s| (s.name.clone(), s.sub_workflows()))
        .collect();
    for (i, s) in specs.iter().enumerate() {
        validate_references(&state.store, s, &refs)
            .await
            .map_err(|e| at(i, e))?;
    }
    let order = dependency_order(&specs);
    let defs: Vec<_> = order.iter().map(|&i| specs[i].definition()).collect();
    let before: HashMap<String, Value> = state
        .store
        .list_workflows()
        .await?
        .iter()
        .map(|w| (w.name.clone(), super::workflows::audit_json(w)))
        .collect();
    let changes = state
        .store
        .apply_workflows_batch(&defs, prune, dry_run, now)
        .await
        .map_err(|e| match e {
            // The store names the item by its place in the applied order.
            StoreError::Invalid(m) => renumber(&m, &order),
            other => other.into(),
        })?;
    let mut out = Vec::with_capacity(changes.len());
    let mut audited = Vec::new();
    for c in changes {
        if c.result != BatchResult::Unchanged {
            audited.push(Audited {
                name: c.name.clone(),
                result: c.result,
                before: before.get(&c.name).cloned(),
                after: c.row.as_ref().map(super::workflows::audit_json),
            });
        }
        if !dry_run {
            if let (Some(row), BatchResult::Created | BatchResult::Updated) = (&c.row, c.result) {
                if let Some(s) = specs.iter().find(|s| s.name == row.name) {
                    reschedule(state, row, s, now).await?;
                }
            }
            if c.result == BatchResult::Deleted {
                hooks::deleted(state, HookKind::Workflow, &c.name).await?;
            }
            if let Some(s) = specs.iter().find(|s| s.name == c.name) {
                hooks::applied(state, HookKind::Workflow, &s.name, s.webhook).await?;
            }
        }
        out.push(Change {
            name: c.name,
            result: c.result,
        });
    }
    // Report in the order given.
    out.sort_by_key(|c| {
        specs
            .iter()
            .position(|s| s.name == c.name)
            .unwrap_or(usize::MAX)
    });
    Ok((out, audited))
}

/// Indices of `specs`, each after the batch's workflows it runs as sub-workflows (file order
/// otherwise). References were checked for recursion already; a cycle left would keep file
/// order.
fn dependency_order(specs: &[WorkflowSpec]) -> Vec<usize> {
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let edges: Vec<(usize, usize)> = specs
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.sub_workflows()
                .into_iter()
                .filter_map(|sub| index.get(sub.as_str()).map(|&j| (j, i)))
                .collect::<Vec<_>>()
        })
        .collect();
    cronium_model::workflow::topological_order(specs.len(), &edges)
        .unwrap_or_else(|_| (0..specs.len()).collect())
}

/// `items[K].rest` with K the applied position turned back into the given one.
fn renumber(message: &str, order: &[usize]) -> UseCaseError {
    let parsed = message
        .strip_prefix("items[")
        .and_then(|r| r.split_once("]."))
        .and_then(|(k, rest)| Some((k.parse::<usize>().ok()?, rest)));
    match parsed {
        Some((k, rest)) => {
            let i = order.get(k).copied().unwrap_or(k);
            match rest.split_once(": ") {
                Some((field, m)) => UseCaseError::invalid(format!("items[{i}].{field}"), m),
                None => UseCaseError::invalid(format!("items[{i}]"), rest),
            }
        }
        None => StoreError::Invalid(message.to_string()).into(),
    }
}
