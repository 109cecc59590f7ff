//! Turns the runner event streams of one job's executions into stored state: numbered log lines
//! (one sequence per job, across attempts and servers), execution status and timings, outputs and
//! variable writes. It is the only writer of a job's log, so numbering needs no coordination.
//!
//! Lines are stored in batches: whatever has arrived while the previous batch was being written
//! goes in the next one, so an idle job's line reaches viewers at once and a flood of output is
//! written in large transactions.

use std::collections::HashMap;
use std::sync::Arc;

use cronium_core::clock::now_ms;
use cronium_core::logbus::LogBus;
use cronium_core::transport::EventSink;
use cronium_model::ExecutionStatus;
use cronium_protocol::{RunnerEvent, Stream};
use cronium_store::{ExecutionUpdate, NewLogLine};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::queue::{JobQueue, Lease};

const BATCH: usize = 2_000;

/// What the recorder learnt about each execution.
#[derive(Debug, Default, Clone)]
pub struct ExecutionFacts {
    pub output: Option<Value>,
    pub condition: Option<bool>,
    pub runner_version: Option<String>,
    pub setup_ms: Option<u64>,
    pub started_at: Option<i64>,
}

pub struct Recorder {
    tx: mpsc::Sender<(Option<i64>, RunnerEvent)>,
    task: JoinHandle<HashMap<Option<i64>, ExecutionFacts>>,
    forwarders: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Recorder {
    pub fn start(queue: Arc<dyn JobQueue>, bus: Arc<LogBus>, lease: Lease, first_seq: i64) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Option<i64>, RunnerEvent)>(4 * BATCH);
        let task = tokio::spawn(async move {
            let mut facts: HashMap<Option<i64>, ExecutionFacts> = HashMap::new();
            let mut seq = first_seq - 1;
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let mut lines = Vec::new();
                let mut touched_outputs = Vec::new();
                for (exec, event) in batch.drain(..) {
                    let f = facts.entry(exec).or_default();
                    match event {
                        RunnerEvent::Log {
                            stream,
                            line,
                            ts_ms,
                            ..
                        } => {
                            seq += 1;
                            lines.push(NewLogLine {
                                execution_id: exec,
                                seq,
                                stream: stream.as_str().to_string(),
                                line,
                                ts: if ts_ms > 0 { ts_ms } else { now_ms() },
                            });
                        }
                        RunnerEvent::Started {
                            runner_version,
                            setup_ms,
                            ..
                        } => {
                            f.runner_version = Some(runner_version.clone());
                            f.setup_ms = Some(setup_ms);
                            f.started_at = Some(now_ms());
                            if let Some(id) = exec {
                                let update = ExecutionUpdate {
                                    status: Some(ExecutionStatus::Running),
                                    started_at: f.started_at,
                                    setup_ms: Some(setup_ms as i64),
                                    runner_version: Some(runner_version),
                                    ..Default::default()
                                };
                                if let Err(e) = queue.update_execution(&lease, id, &update).await {
                                    tracing::warn!(error = %e, "recording execution start");
                                }
                            }
                        }
                        RunnerEvent::Output { value } => {
                            f.output = Some(value);
                            if !touched_outputs.contains(&exec) {
                                touched_outputs.push(exec);
                            }
                        }
                        RunnerEvent::Variable { name, value } => {
                            if let Err(e) = queue.set_variable(&name, &value).await {
                                tracing::warn!(error = %e, variable = %name, "storing a variable write");
                                seq += 1;
                                lines.push(NewLogLine {
                                    execution_id: exec,
                                    seq,
                                    stream: Stream::System.as_str().into(),
                                    line: format!("[cronium] could not store variable {name}: {e}"),
                                    ts: now_ms(),
                                });
                            }
                        }
                        RunnerEvent::Condition { value } => f.condition = Some(value),
                        RunnerEvent::Truncated { .. } | RunnerEvent::Finished(_) => {}
                    }
                }
                // Outputs are written as they change, so a script that later fails or times out
                // keeps what it produced.
                for exec in touched_outputs {
                    if let (Some(id), Some(out)) =
                        (exec, facts.get(&exec).and_then(|f| f.output.clone()))
                    {
                        let update = ExecutionUpdate {
                            output: Some(out),
                            ..Default::default()
                        };
                        if let Err(e) = queue.update_execution(&lease, id, &update).await {
                            tracing::warn!(error = %e, "recording output");
                        }
                    }
                }
                if !lines.is_empty() {
                    let last = seq;
                    let mut attempt = 0;
                    loop {
                        match queue.append_logs(lease.job_id, &lines).await {
                            Ok(()) => break,
                            Err(e) if attempt < 5 => {
                                attempt += 1;
                                tracing::warn!(error = %e, attempt, "storing log lines, retrying");
                                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt))
                                    .await;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, lines = lines.len(), "log lines could not be stored");
                                break;
                            }
                        }
                    }
                    bus.publish(lease.job_id, last);
                }
            }
            facts
        });
        Recorder {
            tx,
            task,
            forwarders: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A sink for one execution's events (what a transport writes to).
    pub fn sink_for(&self, execution_id: Option<i64>) -> EventSink {
        let (etx, mut erx) = mpsc::channel::<RunnerEvent>(BATCH);
        let tx = self.tx.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(e) = erx.recv().await {
                if tx.send((execution_id, e)).await.is_err() {
                    break;
                }
            }
        });
        if let Ok(mut f) = self.forwarders.lock() {
            f.push(forwarder);
        }
        etx
    }

    /// A line written by the agent itself.
    pub async fn system(&self, execution_id: Option<i64>, line: impl Into<String>) {
        let _ = self
            .tx
            .send((
                execution_id,
                RunnerEvent::Log {
                    seq: 0,
                    stream: Stream::System,
                    line: line.into(),
                    ts_ms: now_ms(),
                },
            ))
            .await;
    }

    /// Waits until everything sent so far is stored; returns what was learnt per execution.
    /// Every sink handed out must have been dropped.
    pub async fn close(self) -> HashMap<Option<i64>, ExecutionFacts> {
        let forwarders = self.forwarders.into_inner().unwrap_or_default();
        for f in forwarders {
            let _ = f.await;
        }
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}
