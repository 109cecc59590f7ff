//! The container target: the same payload and run context as the local target, handed to the
//! static runner in a fresh container per run (the Docker transport, `cronium-docker`), its
//! stream recorded the same way.

use async_trait::async_trait;
use cronium_core::spec::{ContainerNetwork, ContainerTarget};
use cronium_docker::{ContainerSpec, Limits, NetworkMode};
use cronium_model::queue::ExecutionUpdate;

use super::Target;
use crate::claim_gate::ClaimGate;
use crate::exec::{failed, ExecResult, JobError, RunCtx};

/// The container target: one execution, in a container of the target's image.
pub(crate) struct Container<'a>(pub(crate) &'a ContainerTarget);

/// The container settings of an event, as the Docker transport takes them.
pub fn container_spec(c: &ContainerTarget) -> ContainerSpec {
    ContainerSpec {
        image: c.image.clone(),
        limits: Limits {
            cpus: c.cpus,
            memory_bytes: c.memory.map(|m| i64::try_from(m.0).unwrap_or(i64::MAX)),
            pids: c.pids,
        },
        network: match &c.network {
            ContainerNetwork::None => NetworkMode::None,
            ContainerNetwork::Isolated => NetworkMode::Isolated,
            ContainerNetwork::Named(n) => NetworkMode::Named(n.clone()),
        },
        interpreter_path: None,
    }
}

#[async_trait]
impl Target for Container<'_> {
    async fn run(&self, ctx: &RunCtx, gate: &mut ClaimGate) -> Result<Vec<ExecResult>, JobError> {
        gate.open();
        let (inner, job, spec) = (&ctx.inner, &ctx.job, &ctx.spec);
        // Retryable: the engine may be back (or another agent may have one) by the next attempt.
        let docker = inner.docker.as_ref().ok_or_else(|| {
            JobError::retryable("the container target is unavailable: this agent has no Docker engine (see `cronium serve` logs)")
        })?;
        let interpreter = spec
            .kind
            .interpreter()
            .ok_or_else(|| JobError::fatal("http events do not run in containers"))?;
        let payload = ctx.payload()?;
        let variables = ctx.variables().await?;
        let exec = ctx.start_execution().await?;
        let mut req = ctx.run_request(&payload, exec, None, variables);
        // Interpreter paths of this machine mean nothing inside the image.
        req.context.interpreters.clear();
        let sink = ctx.recorder.sink_for(Some(exec));
        let cspec = container_spec(self.0);
        let helpers = ctx.enable_api(&mut req, Ok(())).await;
        let mut extra = ExecutionUpdate {
            mode: Some("container".into()),
            ..helpers
        };
        let finished = match docker
            .run(
                job.id,
                exec,
                interpreter,
                &cspec,
                &req,
                &sink,
                ctx.cancel.clone(),
            )
            .await
        {
            Ok(run) => {
                let note = format!(
                    "image {}{}",
                    run.image,
                    if run.oom_killed {
                        "; out of memory"
                    } else {
                        ""
                    }
                );
                extra.note = Some(note);
                run.finished
            }
            Err(e) => failed(e.to_string()),
        };
        drop(sink);
        let mut r = ExecResult::new(Some(exec), None, finished);
        r.extra = extra;
        Ok(vec![r])
    }
}
