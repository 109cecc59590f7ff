//! The runtime helpers in bundled mode, in Bash, Python and Node: input, output (whole and by
//! key), getVariable, setVariable (visible to later reads in any language, reported as Variable
//! events), event metadata, complex JSON values and setCondition.

mod common;

use common::*;
use cronium_protocol::RunStatus;
use serde_json::{json, Value};

fn input() -> Value {
    json!({
        "name": "bob",
        "nested": {"list": [1, 2.5, {"k": "v"}], "uni": "日本 ✓ é", "none": null},
        "numstr": "123",
        "flag": false
    })
}

/// Nested arrays/objects, unicode, numbers, null, and strings that look like numbers.
fn complex() -> Value {
    json!({
        "unicode": "héllo ☃ 日本語 🚀",
        "arr": [1, [2, [3, {"deep": null}]], "x"],
        "num": -12.75,
        "big": 9007199254740991_i64,
        "zero": 0,
        "looks_numeric": "42",
        "looks_bool": "true",
        "empty": {},
        "quote": "a \"quoted\"\nnew line"
    })
}

fn helper_context() -> Value {
    context(json!({
        "server": "web1",
        "input": input(),
        "variables": {"greeting": "hi there", "obj": {"a": [1, 2]}},
    }))
}

fn expected_event() -> Value {
    json!({
        "id": 42, "name": "test-event", "job_id": 11, "execution_id": 22,
        "attempt": 2, "trigger": "manual", "server": "web1", "version": 3
    })
}

fn line_value(out: &RunOutput, prefix: &str) -> String {
    out.stdout()
        .iter()
        .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {:?}", out.stdout()))
}

fn json_line(out: &RunOutput, prefix: &str) -> Value {
    let text = line_value(out, prefix);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{prefix}{text}: {e}"))
}

#[test]
fn bash_helpers() {
    let scratch = Scratch::new();
    let complex_arg = complex().to_string().replace('\'', "'\\''");
    let src = format!(
        r#"set -e
echo "input=$(cronium.input)"
echo "name=$(cronium.input name)"
echo "alias=$(cronium_input name)"
echo "nested=$(cronium.input nested)"
echo "numstr=$(cronium.input numstr)"
echo "flag=$(cronium.input flag)"
echo "missing=[$(cronium.input nope)]"
echo "greeting=$(cronium.getVariable greeting)"
echo "obj=$(cronium.getVariable obj)"
echo "novar=[$(cronium.getVariable nope)]"
cronium.setVariable counter 5
echo "counter=$(cronium_getVariable counter)"
cronium.setVariable label '"007"'
echo "label=$(cronium.getVariable label)"
cronium_setVariable word 'hello world'
echo "word=$(cronium.getVariable word)"
cronium.setVariable complex '{complex_arg}'
echo "complex=$(cronium.getVariable complex)"
echo "event=$(cronium.event)"
echo "event_name=$(cronium.event name)"
echo "event_attempt=$(cronium_event attempt)"
echo "env=$CRONIUM_JOB_ID/$CRONIUM_EXECUTION_ID/$CRONIUM_EVENT_ID/$CRONIUM_EVENT_NAME/$CRONIUM_ATTEMPT/$CRONIUM_TRIGGER/$CRONIUM_SERVER"
cronium.output '{{"replaced": true}}'
cronium.output '{{"first": true}}'
cronium.output count 3
cronium_output label '"x"'
cronium.output nested '{complex_arg}'
cronium.setCondition true
cronium_setCondition false
if cronium.setCondition maybe 2>/dev/null; then echo "bad condition accepted"; fi
"#
    );
    let out = run(
        &scratch,
        &script("bash", &src, json!({})),
        &helper_context(),
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Succeeded, "{:?}", out.events);
    assert_eq!(out.code, 0);

    assert_eq!(json_line(&out, "input="), input());
    assert_eq!(line_value(&out, "name="), "bob");
    assert_eq!(line_value(&out, "alias="), "bob");
    assert_eq!(json_line(&out, "nested="), input()["nested"]);
    assert_eq!(line_value(&out, "numstr="), "123");
    assert_eq!(line_value(&out, "flag="), "false");
    assert_eq!(line_value(&out, "missing="), "[]");
    assert_eq!(line_value(&out, "greeting="), "hi there");
    assert_eq!(json_line(&out, "obj="), json!({"a": [1, 2]}));
    assert_eq!(line_value(&out, "novar="), "[]");
    assert_eq!(line_value(&out, "counter="), "5");
    // A JSON string argument stays a string, printed raw.
    assert_eq!(line_value(&out, "label="), "007");
    assert_eq!(line_value(&out, "word="), "hello world");
    assert_eq!(json_line(&out, "complex="), complex());
    assert_eq!(json_line(&out, "event="), expected_event());
    assert_eq!(line_value(&out, "event_name="), "test-event");
    assert_eq!(line_value(&out, "event_attempt="), "2");
    assert_eq!(
        line_value(&out, "env="),
        "11/22/42/test-event/2/manual/web1"
    );
    assert!(!out.stdout().iter().any(|l| l.contains("bad condition")));

    assert_eq!(
        out.variables(),
        vec![
            ("counter".to_string(), json!(5)),
            ("label".to_string(), json!("007")),
            ("word".to_string(), json!("hello world")),
            ("complex".to_string(), complex()),
        ]
    );
    assert_eq!(
        out.last_output(),
        Some(json!({"first": true, "count": 3, "label": "x", "nested": complex()}))
    );
    assert_eq!(out.conditions(), vec![true, false]);
    scratch.assert_clean();
}

#[test]
fn python_helpers() {
    let scratch = Scratch::new();
    let src = format!(
        r#"import json, subprocess
import cronium
complex = json.loads({complex:?})
print("input=" + json.dumps(cronium.input()))
print("greeting=" + json.dumps(cronium.getVariable("greeting")))
print("novar=" + json.dumps(cronium.get_variable("nope")))
cronium.setVariable("counter", 5)
cronium.set_variable("label", "007")
cronium.setVariable("complex", complex)
print("counter=" + json.dumps(cronium.getVariable("counter")))
print("label=" + json.dumps(cronium.getVariable("label")))
print("complex=" + json.dumps(cronium.getVariable("complex")))
# A later read in another language sees the new value.
print("from_bash=" + subprocess.run(["bash", "-c", "cronium.getVariable label"],
      capture_output=True, text=True).stdout.strip())
print("event=" + json.dumps(cronium.event()))
cronium.output({{"first": True, "nested": complex}})
cronium.output("count", 3)
cronium.setCondition(True)
cronium.set_condition(False)
try:
    cronium.setCondition("yes")
    print("bad condition accepted")
except TypeError:
    pass
"#,
        complex = complex().to_string()
    );
    let out = run(
        &scratch,
        &script("python", &src, json!({})),
        &helper_context(),
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Succeeded, "{:?}", out.events);

    assert_eq!(json_line(&out, "input="), input());
    assert_eq!(json_line(&out, "greeting="), json!("hi there"));
    assert_eq!(json_line(&out, "novar="), Value::Null);
    assert_eq!(json_line(&out, "counter="), json!(5));
    assert_eq!(json_line(&out, "label="), json!("007"));
    assert_eq!(json_line(&out, "complex="), complex());
    assert_eq!(line_value(&out, "from_bash="), "007");
    assert_eq!(json_line(&out, "event="), expected_event());
    assert!(!out.stdout().iter().any(|l| l.contains("bad condition")));

    assert_eq!(
        out.variables(),
        vec![
            ("counter".to_string(), json!(5)),
            ("label".to_string(), json!("007")),
            ("complex".to_string(), complex()),
        ]
    );
    assert_eq!(
        out.last_output(),
        Some(json!({"first": true, "nested": complex(), "count": 3}))
    );
    assert_eq!(out.conditions(), vec![true, false]);
    scratch.assert_clean();
}

#[test]
fn node_helpers() {
    let scratch = Scratch::new();
    let src = format!(
        r#"const cronium = require('cronium');
const {{ execFileSync }} = require('child_process');
const complex = {complex};
console.log('input=' + JSON.stringify(cronium.input()));
console.log('greeting=' + JSON.stringify(cronium.getVariable('greeting')));
console.log('novar=' + JSON.stringify(cronium.getVariable('nope')));
cronium.setVariable('counter', 5);
cronium.set_variable('label', '007');
cronium.setVariable('complex', complex);
console.log('counter=' + JSON.stringify(cronium.getVariable('counter')));
console.log('label=' + JSON.stringify(cronium.getVariable('label')));
console.log('complex=' + JSON.stringify(cronium.getVariable('complex')));
console.log('from_python=' + execFileSync('{python}', ['-c', 'import cronium, json; print(json.dumps(cronium.getVariable("complex")))']).toString().trim());
console.log('event=' + JSON.stringify(cronium.event()));
cronium.output({{ first: true, nested: complex }});
cronium.output('count', 3);
cronium.setCondition(true);
cronium.set_condition(false);
try {{ cronium.setCondition('yes'); console.log('bad condition accepted'); }} catch (e) {{}}
"#,
        complex = complex(),
        python = python()
    );
    let out = run(
        &scratch,
        &script("node", &src, json!({})),
        &helper_context(),
    );
    let fin = out.finished();
    assert_eq!(fin.status, RunStatus::Succeeded, "{:?}", out.events);

    assert_eq!(json_line(&out, "input="), input());
    assert_eq!(json_line(&out, "greeting="), json!("hi there"));
    assert_eq!(json_line(&out, "novar="), Value::Null);
    assert_eq!(json_line(&out, "counter="), json!(5));
    assert_eq!(json_line(&out, "label="), json!("007"));
    assert_eq!(json_line(&out, "complex="), complex());
    assert_eq!(json_line(&out, "from_python="), complex());
    assert_eq!(json_line(&out, "event="), expected_event());
    assert!(!out.stdout().iter().any(|l| l.contains("bad condition")));

    assert_eq!(
        out.variables(),
        vec![
            ("counter".to_string(), json!(5)),
            ("label".to_string(), json!("007")),
            ("complex".to_string(), complex()),
        ]
    );
    assert_eq!(
        out.last_output(),
        Some(json!({"first": true, "nested": complex(), "count": 3}))
    );
    assert_eq!(out.conditions(), vec![true, false]);
    scratch.assert_clean();
}

#[test]
fn null_input_reads_as_empty_object() {
    let scratch = Scratch::new();
    let src = "import cronium, json\nprint('input=' + json.dumps(cronium.input()))\n";
    let out = run(
        &scratch,
        &script("python", src, json!({})),
        &context(json!({"input": null})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    assert_eq!(json_line(&out, "input="), json!({}));
}

#[test]
fn environment_layers_manifest_then_context() {
    let scratch = Scratch::new();
    let src = "echo \"A=$A B=$B C=$C\"\n";
    let out = run(
        &scratch,
        &script(
            "bash",
            src,
            json!({"env": {"A": "manifest", "B": "manifest"}}),
        ),
        &context(json!({"env": {"B": "context", "C": "context"}})),
    );
    assert_eq!(out.finished().status, RunStatus::Succeeded);
    assert_eq!(out.stdout(), vec!["A=manifest B=context C=context"]);
}
