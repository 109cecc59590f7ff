//! The content of a notification, built once when the outbox row is written (so a retry
//! sends what the first attempt sent, even after retention removed the job): the event or
//! workflow, the rule that matched, status, exit code, duration, the last log lines (masked,
//! as stored) and a link to the job or run page. Stored as JSON; rendered as text per channel.

use serde_json::{json, Value};

/// Log lines a message carries.
pub const LOG_TAIL_LINES: i64 = 20;
/// Longest log line kept in a message (the rest is cut with `…`).
const MAX_LINE_CHARS: usize = 500;

/// What a message is about.
pub struct Subject<'a> {
    /// `job` or `workflow_run`.
    pub kind: &'a str,
    pub id: i64,
    /// The event's or workflow's name.
    pub name: &'a str,
    pub on: &'a str,
    pub status: &'a str,
    pub exit_code: Option<i32>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<&'a str>,
    pub trigger: &'a str,
    pub url: String,
    pub log_tail: Vec<String>,
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

fn cut(line: &str) -> String {
    if line.chars().count() <= MAX_LINE_CHARS {
        line.to_string()
    } else {
        let mut s: String = line.chars().take(MAX_LINE_CHARS).collect();
        s.push('…');
        s
    }
}

/// The stored form (also the body a `webhook` channel receives, with `text` added).
pub fn build(s: &Subject<'_>) -> Value {
    let duration_ms = match (s.started_at, s.finished_at) {
        (Some(a), Some(b)) if b >= a => Some(b - a),
        _ => None,
    };
    let mut v = json!({
        "kind": s.kind,
        "id": s.id,
        "name": s.name,
        "on": s.on,
        "status": s.status,
        "exit_code": s.exit_code,
        "duration_ms": duration_ms,
        "started_at": s.started_at.and_then(rfc3339),
        "finished_at": s.finished_at.and_then(rfc3339),
        "error": s.error,
        "trigger": s.trigger,
        "url": s.url,
        "log_tail": s.log_tail.iter().map(|l| cut(l)).collect::<Vec<_>>(),
    });
    let text = title(&v);
    if let Some(o) = v.as_object_mut() {
        o.insert("title".into(), Value::String(text));
    }
    v
}

fn human_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        if s < 3600 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
        }
    }
}

/// One line: `✖ event backup failed (exit 3) after 1.2s [job 12]`.
pub fn title(m: &Value) -> String {
    let word = |k: &str| m[k].as_str().unwrap_or("").to_string();
    if word("kind") == "test" {
        return format!("✔ a test message of the channel {}", word("name"));
    }
    let icon = match word("on").as_str() {
        "recovery" => "✔ recovered:",
        "success" => "✔",
        "timeout" => "⏱",
        _ => "✖",
    };
    let what = if word("kind") == "workflow_run" {
        "workflow"
    } else {
        "event"
    };
    let mut t = format!(
        "{icon} {what} {} {}",
        word("name"),
        word("status").replace('_', " ")
    );
    if let Some(code) = m["exit_code"].as_i64() {
        t.push_str(&format!(" (exit {code})"));
    }
    if let Some(ms) = m["duration_ms"].as_i64() {
        t.push_str(&format!(" after {}", human_ms(ms)));
    }
    let id_word = if what == "workflow" { "run" } else { "job" };
    t.push_str(&format!(" [{id_word} {}]", m["id"]));
    t
}

/// The plain text of a message (e-mail body, Slack and Discord text).
pub fn text(m: &Value, fence: bool) -> String {
    let mut out = title(m);
    out.push('\n');
    if let Some(e) = m["error"].as_str().filter(|e| !e.is_empty()) {
        out.push_str(&format!("error: {e}\n"));
    }
    if let Some(t) = m["trigger"].as_str() {
        out.push_str(&format!("trigger: {t}\n"));
    }
    if let Some(u) = m["url"].as_str() {
        out.push_str(u);
        out.push('\n');
    }
    let lines: Vec<&str> = m["log_tail"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !lines.is_empty() {
        out.push_str(if fence {
            "```\n"
        } else {
            "\nlast log lines:\n"
        });
        for l in lines {
            // A fence inside the log would end the block early.
            out.push_str(&l.replace("```", "'''"));
            out.push('\n');
        }
        if fence {
            out.push_str("```\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_says_what_ended_how() {
        let m = build(&Subject {
            kind: "job",
            id: 12,
            name: "backup",
            on: "failure",
            status: "failed",
            exit_code: Some(3),
            started_at: Some(1_000),
            finished_at: Some(2_200),
            error: None,
            trigger: "schedule",
            url: "http://h/jobs/12".into(),
            log_tail: vec!["disk full".into()],
        });
        assert_eq!(
            m["title"],
            "✖ event backup failed (exit 3) after 1.2s [job 12]"
        );
        let t = text(&m, true);
        assert!(
            t.contains("http://h/jobs/12") && t.contains("```\ndisk full\n```"),
            "{t}"
        );
    }
}
