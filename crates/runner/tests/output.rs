//! Output capture: large volumes without loss, the output cap, long lines and invalid UTF-8.

mod common;

use common::*;
use cronium_protocol::{RunStatus, RunnerEvent, Stream, DEFAULT_MAX_OUTPUT_BYTES};
use serde_json::json;

fn expected_line(i: u64) -> String {
    format!(
        "{i:07} {}é☃ {}",
        "x".repeat((i % 50) as usize),
        "y".repeat(60)
    )
}

#[test]
fn fifty_megabytes_arrive_complete_and_in_order() {
    let scratch = Scratch::new();
    let n: u64 = 520_000;
    // Every 1000th line also goes to stderr, so seq must be contiguous across both streams.
    let src = format!(
        r#"import sys
out, err = sys.stdout, sys.stderr
for i in range({n}):
    line = "%07d %sé☃ %s\n" % (i, "x" * (i % 50), "y" * 60)
    out.write(line)
    if i % 1000 == 0:
        out.flush()
        err.write("E" + line)
        err.flush()
"#
    );
    let out = run(
        &scratch,
        &script("python", &src, json!({"max_output_bytes": 200_000_000u64})),
        &context(json!({})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    let mut seqs = Vec::new();
    let mut stdout_lines = 0u64;
    let mut stderr_lines = 0u64;
    let mut total_bytes = 0usize;
    for e in &out.events {
        if let RunnerEvent::Log {
            seq, stream, line, ..
        } = e
        {
            seqs.push(*seq);
            total_bytes += line.len() + 1;
            match stream {
                Stream::Stdout => {
                    assert_eq!(
                        line,
                        &expected_line(stdout_lines),
                        "stdout line {stdout_lines}"
                    );
                    stdout_lines += 1;
                }
                Stream::Stderr => {
                    assert_eq!(line, &format!("E{}", expected_line(stderr_lines * 1000)));
                    stderr_lines += 1;
                }
                Stream::System => panic!("unexpected system line {line}"),
            }
        }
    }
    assert_eq!(stdout_lines, n);
    assert_eq!(stderr_lines, n / 1000);
    assert!(total_bytes > 50_000_000, "only {total_bytes} bytes");
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert!(seqs == expected, "seq is not 1, 2, 3, ... without gaps");
    assert!(!out
        .events
        .iter()
        .any(|e| matches!(e, RunnerEvent::Truncated { .. })));
    scratch.assert_clean();
}

#[test]
fn default_cap_truncates_once_and_keeps_draining() {
    let scratch = Scratch::new();
    let done = scratch.path("done");
    // 12 MiB, more than the 10 MiB default and far more than a pipe buffer: if the runner stopped
    // reading at the cap, the script would block forever and never write the marker.
    let src = r#"import os, sys
line = "z" * 1023 + "\n"
for _ in range(12 * 1024):
    sys.stdout.write(line)
sys.stdout.flush()
open(os.environ["DONE"], "w").close()
"#;
    let out = run(
        &scratch,
        &script("python", src, json!({})),
        &context(json!({"env": {"DONE": done.to_str().unwrap()}})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    assert!(done.exists(), "script was blocked and never finished");
    let limit = DEFAULT_MAX_OUTPUT_BYTES;
    let kept_lines = out.stdout();
    let kept: u64 = kept_lines.iter().map(|l| l.len() as u64).sum();
    assert!(kept <= limit && kept > limit - 2048, "kept {kept}");
    let truncated: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            RunnerEvent::Truncated {
                kept_bytes,
                limit_bytes,
            } => Some((*kept_bytes, *limit_bytes)),
            _ => None,
        })
        .collect();
    assert_eq!(truncated, vec![(kept, limit)]);
    let marker = format!("[cronium] output truncated after {kept} bytes (limit {limit})");
    assert_eq!(out.lines(Stream::System), vec![marker.clone()]);
    // Nothing from the script after the marker.
    let marker_pos = out
        .events
        .iter()
        .position(|e| matches!(e, RunnerEvent::Log { line, .. } if *line == marker))
        .unwrap();
    assert!(!out.events[marker_pos..].iter().any(|e| matches!(
        e,
        RunnerEvent::Log {
            stream: Stream::Stdout,
            ..
        }
    )));
    scratch.assert_clean();
}

#[test]
fn invalid_utf8_is_delivered_as_readable_text() {
    let scratch = Scratch::new();
    let src =
        "printf 'ok \\xff\\xfe end\\n'\nprintf 'caf\\xc3\\xa9\\n'\nprintf 'no newline \\xc3'\n";
    let out = run(
        &scratch,
        &script("bash", src, json!({})),
        &context(json!({})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    assert_eq!(
        out.stdout(),
        vec!["ok \u{FFFD}\u{FFFD} end", "café", "no newline \u{FFFD}"]
    );
    scratch.assert_clean();
}

#[test]
fn long_lines_are_cut_into_64k_chunks() {
    let scratch = Scratch::new();
    let src = "import sys\nsys.stdout.write('a' * 200000 + '\\nshort\\n')\n";
    let out = run(
        &scratch,
        &script("python", src, json!({})),
        &context(json!({})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    let lines = out.stdout();
    let lens: Vec<usize> = lines.iter().map(String::len).collect();
    assert_eq!(lens, vec![65536, 65536, 65536, 200000 - 3 * 65536, 5]);
    assert_eq!(lines[..4].concat(), "a".repeat(200000));
    scratch.assert_clean();
}
