//! The `http` target, for `http` events: the agent makes the request itself with a real HTTP
//! client and reports it through the same event stream a runner would (log lines, output,
//! final result), so that storage, live logs and statuses need no special case.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use cronium_core::clock::now_ms;
use cronium_core::spec::HttpSpec;
use cronium_core::transport::EventSink;
use cronium_model::queue::ExecutionUpdate;
use cronium_model::ExecutionStatus;
use cronium_protocol::{Finished, RunStatus, RunnerEvent, Stream, EXIT_CANCELLED, EXIT_TIMEOUT};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::Target;
use crate::claim_gate::ClaimGate;
use crate::exec::{ExecResult, JobError, RunCtx};

/// The http target: one execution, the event's request.
pub(crate) struct Http;

#[async_trait]
impl Target for Http {
    async fn run(&self, ctx: &RunCtx, gate: &mut ClaimGate) -> Result<Vec<ExecResult>, JobError> {
        let h = ctx
            .spec
            .http
            .as_ref()
            .ok_or_else(|| JobError::fatal("http: settings missing"))?;
        // An http event sees no variables, but a response may still echo a secret.
        ctx.variables().await?;
        let exec = ctx.start_execution().await?;
        gate.open();
        let sink = ctx.recorder.sink_for(Some(exec));
        let _ = ctx
            .inner
            .queue
            .update_execution(
                &ctx.lease,
                exec,
                &ExecutionUpdate {
                    status: Some(ExecutionStatus::Running),
                    started_at: Some(now_ms()),
                    mode: Some("http".into()),
                    ..Default::default()
                },
            )
            .await;
        let finished = run_http(
            &ctx.inner.http,
            h,
            ctx.spec.timeout.0,
            &sink,
            ctx.cancel.clone(),
        )
        .await;
        drop(sink);
        Ok(vec![ExecResult::new(Some(exec), None, finished)])
    }
}

/// Largest response body kept in the output and the log.
const MAX_BODY: usize = 1024 * 1024;

async fn log(sink: &EventSink, seq: &mut u64, stream: Stream, line: String) {
    *seq += 1;
    let _ = sink
        .send(RunnerEvent::Log {
            seq: *seq,
            stream,
            line,
            ts_ms: now_ms(),
        })
        .await;
}

/// Performs the request and returns its final record. The output is
/// `{status, headers, body, json?}`.
async fn run_http(
    client: &reqwest::Client,
    spec: &HttpSpec,
    timeout: Duration,
    sink: &EventSink,
    cancel: CancellationToken,
) -> Finished {
    let started = Instant::now();
    let mut seq = 0;
    let method = spec.method.to_ascii_uppercase();
    let finish = |status, code: Option<i32>, error: Option<String>, started: Instant| Finished {
        status,
        exit_code: code,
        signal: None,
        run_ms: started.elapsed().as_millis() as u64,
        error,
        usage: None,
    };
    let m = match reqwest::Method::from_bytes(method.as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            return finish(
                RunStatus::Failed,
                None,
                Some(format!("invalid method {method}")),
                started,
            )
        }
    };
    let mut rb = client
        .request(m, &spec.url)
        .timeout(spec.timeout.map(|t| t.0).unwrap_or(timeout));
    for (k, v) in &spec.headers {
        rb = rb.header(k, v);
    }
    if let Some(body) = &spec.body {
        rb = rb.body(body.clone());
    }
    log(
        sink,
        &mut seq,
        Stream::System,
        format!("{method} {}", spec.url),
    )
    .await;

    let response = tokio::select! {
        r = rb.send() => r,
        _ = cancel.cancelled() => {
            log(sink, &mut seq, Stream::System, "cancelled".into()).await;
            return finish(RunStatus::Cancelled, Some(EXIT_CANCELLED), None, started);
        }
    };
    let response = match response {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            log(
                sink,
                &mut seq,
                Stream::System,
                format!("timed out after {:?}", started.elapsed()),
            )
            .await;
            return finish(
                RunStatus::TimedOut,
                Some(EXIT_TIMEOUT),
                Some("request timed out".into()),
                started,
            );
        }
        Err(e) => {
            let msg = format!("request failed: {e}");
            log(sink, &mut seq, Stream::System, msg.clone()).await;
            return finish(RunStatus::Failed, Some(1), Some(msg), started);
        }
    };
    let status = response.status();
    let mut headers = Map::new();
    for (k, v) in response.headers() {
        headers.insert(
            k.to_string(),
            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    let body = tokio::select! {
        b = response.bytes() => b,
        _ = cancel.cancelled() => {
            return finish(RunStatus::Cancelled, Some(EXIT_CANCELLED), None, started);
        }
    };
    let (body, truncated) = match body {
        Ok(b) if b.len() > MAX_BODY => (b.slice(..MAX_BODY), true),
        Ok(b) => (b, false),
        Err(e) => {
            let msg = format!("reading the response failed: {e}");
            log(sink, &mut seq, Stream::System, msg.clone()).await;
            return finish(RunStatus::Failed, Some(1), Some(msg), started);
        }
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    log(
        sink,
        &mut seq,
        Stream::System,
        format!(
            "HTTP {} in {} ms, {} bytes",
            status,
            started.elapsed().as_millis(),
            body.len()
        ),
    )
    .await;
    for line in text.lines() {
        log(sink, &mut seq, Stream::Stdout, line.to_string()).await;
    }
    if truncated {
        log(
            sink,
            &mut seq,
            Stream::System,
            format!("[cronium] response body truncated after {MAX_BODY} bytes"),
        )
        .await;
    }
    let mut output = json!({"status": status.as_u16(), "headers": headers, "body": text});
    if let Ok(parsed) = serde_json::from_str::<Value>(&text) {
        output["json"] = parsed;
    }
    let _ = sink.send(RunnerEvent::Output { value: output }).await;

    let ok = if spec.expect_status.is_empty() {
        status.is_success()
    } else {
        spec.expect_status.contains(&status.as_u16())
    };
    if ok {
        finish(RunStatus::Succeeded, Some(0), None, started)
    } else {
        let expected = if spec.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            format!("{:?}", spec.expect_status)
        };
        finish(
            RunStatus::Failed,
            Some(1),
            Some(format!(
                "unexpected status {} (expected {expected})",
                status.as_u16()
            )),
            started,
        )
    }
}
