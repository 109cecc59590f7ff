//! The workflow file (PRODUCT.md "Workflow file"): parsing from YAML or JSON through the same
//! path as event files, validation of everything that needs no store, the normalised form kept
//! as an immutable workflow version, and the [`WorkflowDefinition`] (the graph as data) the
//! store writes as rows.
//!
//! Every error names the node and the field (`nodes[3].after.deploy: unknown node`); a cycle is
//! spelled out (`nodes: cycle build -> deploy -> build`). An inline node's script and a node's
//! overrides are checked by the event rules of [`crate::spec`] with the node's path in front
//! (`nodes[2].script: is empty`). `after` keeps the order it was written in (serde_json's
//! `preserve_order`): upstream outputs merge in that order.
//!
//! What needs the store (do the events exist, do sub-workflows recurse or nest too deep) is
//! [`check_references`], which the server calls at apply time with what the store knows. Not
//! here: reading `script_file` from disk (the CLI does it, as for events), SQL, and the rules a
//! run follows (`cronium_model::workflow`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use cronium_model::workflow::{
    topological_order, EdgeKind, Join, NodeBody, NodeDefinition, WorkflowDefinition, MAX_DEPTH,
};
use cronium_model::{EventStatus, PolicyOverride};
use cronium_protocol::HelperMode;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::duration::HumanDuration;
use crate::schedule::{parse_timezone, Schedule};
use crate::spec::{
    self, default_timeout, empty_object, inline_event_name, utc, validate_agent_tags, validate_env,
    validate_name, validate_node_id, validate_retries, validate_target, validate_timeout,
    EventSpec, EventType, FieldPath, HttpSpec, Missed, NotifyRule, Overlap, Retries, ScheduleText,
    SpecError, Target,
};

/// A node's incoming edges `(upstream id, kind)` in the order written. Written as a list
/// (`after: [build]`, shorthand for success edges) or a map (`after: {deploy: failure}`); both
/// normalise to the map form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct After(pub Vec<(String, EdgeKind)>);

impl After {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for After {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (id, kind) in &self.0 {
            m.serialize_entry(id, kind)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for After {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = After;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of node ids, or a map of node id to edge kind")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<After, A::Error> {
                let mut edges = Vec::new();
                while let Some(id) = seq.next_element::<String>()? {
                    edges.push((id, EdgeKind::Success));
                }
                Ok(After(edges))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<After, A::Error> {
                let mut edges = Vec::new();
                while let Some(id) = map.next_key::<String>()? {
                    let kind = map.next_value::<EdgeKind>()?;
                    edges.push((id, kind));
                }
                Ok(After(edges))
            }
        }
        d.deserialize_any(V)
    }
}

/// One node as written: exactly one of `event`, `workflow` or an inline script (`type` with
/// `script` or `http`), its edges, and its overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: String,
    /// Runs a job of this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Runs this workflow as a sub-workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// An inline script: the event fields.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EventType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Only meaningful to the CLI, which replaces it with `script`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,
    #[serde(default, skip_serializing_if = "After::is_empty")]
    pub after: After,
    #[serde(default, skip_serializing_if = "is_all")]
    pub join: Join,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Merged over the run's input (an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helpers: Option<HelperMode>,
    /// Only an agent with all these tags runs the node's job (replaces the event's
    /// `agent_tags`; on an inline node, its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_tags: Option<Vec<String>>,
}

fn is_all(j: &Join) -> bool {
    *j == Join::All
}

/// A workflow as written in a workflow file or an API body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleText>,
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub missed: Missed,
    /// Read from the file, never stored in the spec (kept beside it, as for events).
    #[serde(default, skip_serializing)]
    pub status: EventStatus,
    /// The default input of a run (an object).
    #[serde(default = "empty_object")]
    pub input: Value,
    /// The whole run; none by default (each node has its own timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `true`: `POST /hooks/NAME`, signed with the hook's secret, runs the workflow with the
    /// request's JSON body as input.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub webhook: bool,
    /// Who hears about the workflow's runs (as an event's `notify`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyRule>,
    pub nodes: Vec<NodeSpec>,
    /// Indices into `nodes`, every node after its upstream nodes (computed by `validate`).
    #[serde(skip)]
    order: Vec<usize>,
}

/// Parses a YAML document (JSON is accepted too, being YAML).
pub fn parse_yaml(text: &str) -> Result<WorkflowSpec, SpecError> {
    let value: Value = serde_saphyr::from_str(text)
        .map_err(|e| SpecError::new("(document)", format!("not valid YAML: {e}")))?;
    from_value(value)
}

/// Parses a JSON document.
pub fn parse_json(text: &str) -> Result<WorkflowSpec, SpecError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| SpecError::new("(body)", format!("not valid JSON: {e}")))?;
    from_value(value)
}

/// Deserialises and validates a JSON value, naming the node and field at fault.
pub fn from_value(value: Value) -> Result<WorkflowSpec, SpecError> {
    let mut spec: WorkflowSpec = spec::deserialize(value, "expected a mapping of workflow fields")?;
    spec.validate()?;
    Ok(spec)
}

fn node_path(i: usize) -> String {
    format!("nodes[{i}]")
}

impl WorkflowSpec {
    /// Checks what the types alone cannot, and computes the order of the nodes.
    pub fn validate(&mut self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        parse_timezone(&self.timezone).map_err(|e| SpecError::new("timezone", e.to_string()))?;
        if let Some(s) = &self.schedule {
            Schedule::parse(&s.0, &self.timezone)
                .map_err(|e| SpecError::new("schedule", e.to_string()))?;
        }
        if let Some(t) = self.timeout {
            validate_timeout(FieldPath::ROOT, "timeout", t)?;
        }
        if !self.input.is_object() {
            return Err(SpecError::new(
                "input",
                "must be a mapping of keys to values",
            ));
        }
        spec::validate_notify(FieldPath::ROOT, &self.notify)?;
        if self.nodes.is_empty() {
            return Err(SpecError::new(
                "nodes",
                "a workflow needs at least one node",
            ));
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let path = node_path(i);
            let at = FieldPath(&path);
            validate_node_id(at, "id", &node.id)?;
            if let Some(first) = index.insert(node.id.as_str(), i) {
                return Err(at.error(
                    "id",
                    format!("`{}` is already the id of nodes[{first}]", node.id),
                ));
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let path = node_path(i);
            self.validate_node(FieldPath(&path), node)?;
        }
        let mut edges = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let path = node_path(i);
            let at = FieldPath(&path);
            let mut seen = Vec::new();
            for (id, _) in &node.after.0 {
                let field = format!("after.{id}");
                let Some(&from) = index.get(id.as_str()) else {
                    return Err(at.error(&field, "unknown node"));
                };
                if from == i {
                    return Err(at.error(&field, "a node cannot come after itself"));
                }
                if seen.contains(&from) {
                    return Err(at.error(&field, "listed twice"));
                }
                seen.push(from);
                edges.push((from, i));
            }
        }
        self.order = topological_order(self.nodes.len(), &edges).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&i| self.nodes[i].id.as_str()).collect();
            SpecError::new("nodes", format!("cycle {}", names.join(" -> ")))
        })?;
        Ok(())
    }

    /// One node's body and overrides.
    fn validate_node(&self, at: FieldPath<'_>, node: &NodeSpec) -> Result<(), SpecError> {
        let bodies: Vec<&str> = [
            node.event.as_ref().map(|_| "event"),
            node.workflow.as_ref().map(|_| "workflow"),
            node.kind.as_ref().map(|_| "type"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match bodies.as_slice() {
            [] => {
                return Err(at.error(
                    "",
                    "needs `event: NAME`, `workflow: NAME` or an inline script (`type` with \
                     `script`, or `type: http` with `http`)",
                ))
            }
            [_] => {}
            [_, second, ..] => {
                return Err(at.error(
                    second,
                    "a node runs one thing: an event, a workflow or an inline script (type), \
                     not several",
                ))
            }
        }
        if let Some(tags) = &node.agent_tags {
            validate_agent_tags(at, tags)?;
        }
        if node.input.as_ref().is_some_and(|v| !v.is_object()) {
            return Err(at.error("input", "must be a mapping of keys to values"));
        }
        if node.kind.is_none() {
            for (field, set) in [
                ("script", node.script.is_some()),
                ("script_file", node.script_file.is_some()),
                ("http", node.http.is_some()),
            ] {
                if set {
                    return Err(at.error(field, "only an inline node (with `type`) has one"));
                }
            }
        }
        if let Some(event) = &node.event {
            validate_name(event).map_err(|e| at.error("event", e.message))?;
            self.validate_overrides(at, node)?;
        }
        if let Some(workflow) = &node.workflow {
            validate_name(workflow).map_err(|e| at.error("workflow", e.message))?;
            if *workflow == self.name {
                return Err(at.error("workflow", "a workflow cannot run itself"));
            }
            for (field, set) in [
                ("target", node.target.is_some()),
                ("timeout", node.timeout.is_some()),
                ("retries", node.retries.is_some()),
                ("env", node.env.is_some()),
                ("helpers", node.helpers.is_some()),
                ("agent_tags", node.agent_tags.is_some()),
            ] {
                if set {
                    return Err(at.error(
                        field,
                        "a workflow node runs another workflow, whose own nodes set this",
                    ));
                }
            }
        }
        if node.kind.is_some() {
            if node.script_file.is_some() {
                return Err(at.error(
                    "script_file",
                    "is resolved by `cronium workflow apply -f`; send the script text in `script`",
                ));
            }
            self.inline_event(node).validate_fields(at)?;
        }
        Ok(())
    }

    /// The overrides of an `event:` node, by the event rules.
    fn validate_overrides(&self, at: FieldPath<'_>, node: &NodeSpec) -> Result<(), SpecError> {
        if let Some(t) = node.timeout {
            validate_timeout(at, "timeout", t)?;
        }
        if let Some(r) = &node.retries {
            validate_retries(at, r)?;
        }
        if let Some(env) = &node.env {
            validate_env(at, env)?;
        }
        if let Some(target) = &node.target {
            validate_target(at, target)?;
        }
        Ok(())
    }

    /// The event an inline node is stored as (`WORKFLOW/NODE`). Its input stays empty: the
    /// node's `input` is merged by the engine like any node's.
    fn inline_event(&self, node: &NodeSpec) -> EventSpec {
        EventSpec {
            name: inline_event_name(&self.name, &node.id),
            kind: node.kind.unwrap_or(EventType::Bash),
            description: node.description.clone(),
            script: node.script.clone(),
            script_file: None,
            schedule: None,
            timezone: utc(),
            timeout: node.timeout.unwrap_or_else(default_timeout),
            retries: node.retries.clone().unwrap_or_default(),
            overlap: Overlap::default(),
            missed: Missed::default(),
            target: node.target.clone().unwrap_or_default(),
            env: node.env.clone().unwrap_or_default(),
            input: empty_object(),
            max_executions: 0,
            status: EventStatus::Active,
            http: node.http.clone(),
            tags: Vec::new(),
            retain: None,
            keep: 0,
            helpers: None,
            webhook: false,
            notify: Vec::new(),
            agent_tags: node.agent_tags.clone().unwrap_or_default(),
        }
    }

    /// Indices into `nodes`, each after its upstream nodes (file order where the graph allows).
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The parsed schedule, if any. Only call on a validated spec.
    pub fn parsed_schedule(&self) -> Option<Schedule> {
        self.schedule
            .as_ref()
            .and_then(|s| Schedule::parse(&s.0, &self.timezone).ok())
    }

    /// The normalised JSON form stored as a workflow version (no `status`, which is kept beside
    /// it; `after` always as a map).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The version as the store writes it: the stored spec and the graph as data.
    pub fn definition(&self) -> WorkflowDefinition {
        let nodes = self
            .nodes
            .iter()
            .map(|node| {
                let (body, policy) = if let Some(name) = &node.event {
                    let retries = node.retries.as_ref();
                    let policy = PolicyOverride {
                        max_attempts: retries
                            .map(|r| i32::try_from(r.max_attempts).unwrap_or(i32::MAX)),
                        backoff_ms: retries.map(|r| r.backoff.as_millis()),
                        max_backoff_ms: retries.map(|r| r.max_backoff.as_millis()),
                        timeout_ms: node.timeout.map(|t| t.as_millis()),
                    };
                    (NodeBody::Event { name: name.clone() }, policy)
                } else if let Some(name) = &node.workflow {
                    (
                        NodeBody::Workflow { name: name.clone() },
                        PolicyOverride::default(),
                    )
                } else {
                    let event = self.inline_event(node);
                    let policy = event.policy();
                    let body = NodeBody::Inline {
                        spec: event.to_value(),
                        policy,
                    };
                    // The inline event's own policy, pinned to this version of the workflow.
                    (body, PolicyOverride::all(&policy))
                };
                let mut overrides = Map::new();
                if node.event.is_some() {
                    if let Some(t) = &node.target {
                        overrides.insert("target".into(), to_json(t));
                    }
                    if let Some(env) = &node.env {
                        overrides.insert("env".into(), to_json(env));
                    }
                    if let Some(tags) = &node.agent_tags {
                        overrides.insert("agent_tags".into(), to_json(tags));
                    }
                }
                if let Some(h) = &node.helpers {
                    overrides.insert("helpers".into(), to_json(h));
                }
                NodeDefinition {
                    id: node.id.clone(),
                    body,
                    join: node.join,
                    after: node.after.0.clone(),
                    input: node.input.clone().unwrap_or_else(empty_object),
                    overrides: if overrides.is_empty() {
                        Value::Null
                    } else {
                        Value::Object(overrides)
                    },
                    policy,
                }
            })
            .collect();
        WorkflowDefinition {
            name: self.name.clone(),
            status: self.status,
            spec: self.to_value(),
            input: self.input.clone(),
            timeout_ms: self.timeout.map(|t| t.as_millis()),
            nodes,
        }
    }

    /// The `workflow:` references of this workflow, for [`check_references`] of others.
    pub fn sub_workflows(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| n.workflow.clone())
            .collect()
    }
}

/// The node overrides the agent applies over an event spec (`target`, `env`, `helpers`), as
/// the store keeps them on a job (`jobs.overrides`): the one reading of that JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helpers: Option<HelperMode>,
    /// Read by the store when it enqueues the node's job (the job's `agent_tags`), not by the
    /// agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_tags: Option<Vec<String>>,
}

impl NodeOverrides {
    /// Reads a job's `overrides` (Null: none).
    pub fn from_value(value: &Value) -> Result<NodeOverrides, SpecError> {
        if value.is_null() {
            return Ok(NodeOverrides::default());
        }
        spec::deserialize(value.clone(), "expected a mapping of node overrides")
    }

    /// `spec` with the overrides applied: the target replaced, the env merged over the
    /// event's (the node's value wins). Helpers are the runner's business, not the spec's: the
    /// caller reads `helpers` itself.
    pub fn apply(&self, spec: &mut EventSpec) {
        if let Some(t) = &self.target {
            spec.target = t.clone();
        }
        if let Some(env) = &self.env {
            for (k, v) in env {
                spec.env.insert(k.clone(), v.clone());
            }
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Checks what needs the store, at apply time: every `event:` names an existing event, every
/// `workflow:` an existing workflow, and sub-workflows neither recurse (reach this workflow
/// again) nor nest deeper than [`MAX_DEPTH`] runs.
///
/// `event_exists` answers for a user event's name. `sub_workflows` gives the `workflow:`
/// references of another workflow's current version ([`WorkflowSpec::sub_workflows`]), `None`
/// when there is no such workflow; it is never asked about `spec` itself, whose references are
/// the new ones.
pub fn check_references(
    spec: &WorkflowSpec,
    event_exists: impl Fn(&str) -> bool,
    sub_workflows: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<(), SpecError> {
    for (i, node) in spec.nodes.iter().enumerate() {
        let path = node_path(i);
        let at = FieldPath(&path);
        if let Some(event) = &node.event {
            if !event_exists(event) {
                return Err(at.error("event", format!("unknown event `{event}`")));
            }
        }
        let Some(workflow) = &node.workflow else {
            continue;
        };
        if sub_workflows(workflow).is_none() {
            return Err(at.error("workflow", format!("unknown workflow `{workflow}`")));
        }
        let mut chain = vec![spec.name.clone(), workflow.clone()];
        nesting(spec, &sub_workflows, &mut chain).map_err(|why| at.error("workflow", why))?;
    }
    Ok(())
}

/// Walks every chain of sub-workflows from the last name of `chain` down, refusing one that
/// comes back to a name already in it (recursion) or grows past [`MAX_DEPTH`] runs.
fn nesting(
    spec: &WorkflowSpec,
    sub_workflows: &impl Fn(&str) -> Option<Vec<String>>,
    chain: &mut Vec<String>,
) -> Result<(), String> {
    let Some(last) = chain.last().cloned() else {
        return Ok(());
    };
    if chain[..chain.len() - 1].contains(&last) {
        return Err(format!("recursion: {}", chain.join(" -> ")));
    }
    if chain.len() > MAX_DEPTH as usize {
        return Err(format!(
            "nests workflows deeper than {MAX_DEPTH} levels: {}",
            chain.join(" -> ")
        ));
    }
    let children = if last == spec.name {
        spec.sub_workflows()
    } else {
        // An unknown name further down was refused when its parent was applied, or the
        // workflow was deleted since: a run of it would fail that node, not recurse.
        sub_workflows(&last).unwrap_or_default()
    };
    for child in children {
        chain.push(child);
        let r = nesting(spec, sub_workflows, chain);
        chain.pop();
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const RELEASE: &str = r#"
name: release
schedule: "0 0 3 * * *"
input: { version: "1.4" }
timeout: 2h
nodes:
  - id: build
    event: build-app
  - id: deploy
    event: deploy
    after: [build]
    target: { tags: [web], mode: runner-ssh }
  - id: smoke
    type: bash
    script: "curl -fsS http://web1/health && cronium.setCondition true"
    after: [deploy]
  - id: rollback
    event: rollback
    after: { deploy: failure, smoke: failure }
    join: any
  - id: announce
    event: notify-team
    after: { smoke: condition }
"#;

    #[test]
    fn product_example_parses() {
        let s = parse_yaml(RELEASE).unwrap();
        assert_eq!(s.name, "release");
        assert_eq!(s.timeout.unwrap().0.as_secs(), 7200);
        assert_eq!(s.nodes.len(), 5);
        assert_eq!(s.order(), &[0, 1, 2, 3, 4]);
        assert_eq!(
            s.nodes[3].after.0,
            [
                ("deploy".to_string(), EdgeKind::Failure),
                ("smoke".to_string(), EdgeKind::Failure)
            ]
        );
        assert_eq!(s.nodes[3].join, Join::Any);
        // The normalised form parses back to the same spec.
        assert_eq!(from_value(s.to_value()).unwrap(), s);
    }

    #[test]
    fn after_list_and_map_normalise_to_one_stored_form() {
        let list = parse_yaml(
            "name: w\nnodes:\n  - {id: a, event: e}\n  - {id: b, event: e, after: [a]}\n",
        )
        .unwrap();
        let map = parse_yaml(
            "name: w\nnodes:\n  - {id: a, event: e}\n  - {id: b, event: e, after: {a: success}}\n",
        )
        .unwrap();
        assert_eq!(list.to_value(), map.to_value());
        assert_eq!(
            list.to_value()["nodes"][1]["after"],
            json!({"a": "success"})
        );
        // `join: all` is the default and is not written.
        assert!(list.to_value()["nodes"][1].get("join").is_none());
    }

    /// The order of `after` is the order upstream outputs merge in: it must survive parsing,
    /// normalising and storing, whether keys sort that way or not.
    #[test]
    fn after_keeps_the_order_it_was_written_in() {
        let s = parse_yaml(
            "name: w\nnodes:\n  - {id: zeta, event: e}\n  - {id: alpha, event: e}\n  - {id: mid, \
             event: e}\n  - id: join\n    event: e\n    after: {zeta: success, alpha: always, \
             mid: failure}\n",
        )
        .unwrap();
        let ids = |s: &WorkflowSpec| -> Vec<String> {
            s.nodes[3]
                .after
                .0
                .iter()
                .map(|(id, _)| id.clone())
                .collect()
        };
        assert_eq!(ids(&s), ["zeta", "alpha", "mid"]);
        let text = serde_json::to_string(&s.to_value()).unwrap();
        let again = parse_json(&text).unwrap();
        assert_eq!(ids(&again), ["zeta", "alpha", "mid"]);
        let def = again.definition();
        let after: Vec<&str> = def.nodes[3]
            .after
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(after, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn every_bad_input_names_the_node_and_field() {
        let head = "name: w\nnodes:\n  - {id: build, event: build-app}\n";
        let cases: &[(&str, &str, &str)] = &[
            (
                "  - {id: deploy, event: deploy, after: [nope]}\n",
                "nodes[1].after.nope",
                "unknown node",
            ),
            (
                "  - {id: deploy, event: deploy, after: {build: sometimes}}\n",
                "nodes[1].after.build",
                "unknown variant",
            ),
            (
                "  - {id: deploy, event: deploy, after: [deploy]}\n",
                "nodes[1].after.deploy",
                "itself",
            ),
            (
                "  - {id: deploy, event: deploy, after: [build, build]}\n",
                "nodes[1].after.build",
                "listed twice",
            ),
            (
                "  - {id: deploy, event: deploy, after: 3}\n",
                "nodes[1].after",
                "list of node ids",
            ),
            (
                "  - {id: build, event: other}\n",
                "nodes[1].id",
                "already the id of nodes[0]",
            ),
            (
                "  - {id: Deploy, event: deploy}\n",
                "nodes[1].id",
                "contains `D`",
            ),
            (
                "  - {id: 'a.b', event: deploy}\n",
                "nodes[1].id",
                "contains `.`",
            ),
            ("  - {id: ''}\n", "nodes[1].id", "1 to 64"),
            ("  - {id: deploy}\n", "nodes[1]", "needs `event: NAME`"),
            (
                "  - {id: deploy, event: deploy, workflow: other}\n",
                "nodes[1].workflow",
                "not several",
            ),
            (
                "  - {id: deploy, event: deploy, type: bash, script: echo}\n",
                "nodes[1].type",
                "not several",
            ),
            (
                "  - {id: deploy, event: 'Bad Name'}\n",
                "nodes[1].event",
                "contains",
            ),
            (
                "  - {id: deploy, event: deploy, script: echo}\n",
                "nodes[1].script",
                "only an inline node",
            ),
            (
                "  - {id: deploy, event: deploy, surprise: 1}\n",
                "nodes[1].surprise",
                "unknown field `surprise`",
            ),
            (
                "  - {id: deploy, event: deploy, join: some}\n",
                "nodes[1].join",
                "unknown variant",
            ),
            (
                "  - {id: deploy, event: deploy, timeout: 0s}\n",
                "nodes[1].timeout",
                "greater than zero",
            ),
            (
                "  - {id: deploy, event: deploy, timeout: soon}\n",
                "nodes[1].timeout",
                "not a duration",
            ),
            (
                "  - {id: deploy, event: deploy, retries: {max_attempts: 0}}\n",
                "nodes[1].retries.max_attempts",
                "between 1 and 100",
            ),
            (
                "  - {id: deploy, event: deploy, retries: {backoff: 1m, max_backoff: 1s}}\n",
                "nodes[1].retries.max_backoff",
                "smaller",
            ),
            (
                "  - {id: deploy, event: deploy, env: {'1X': a}}\n",
                "nodes[1].env.1X",
                "variable names",
            ),
            (
                "  - {id: deploy, event: deploy, target: moon}\n",
                "nodes[1].target",
                "unknown target",
            ),
            (
                "  - {id: deploy, event: deploy, target: {servers: [a], concurrency: 0}}\n",
                "nodes[1].target.concurrency",
                "at least 1",
            ),
            (
                "  - {id: deploy, event: deploy, target: {tags: [a], min_success: '0%'}}\n",
                "nodes[1].target.min_success",
                "percentage",
            ),
            (
                "  - {id: deploy, event: deploy, target: {servers: [a], min_success: 2}}\n",
                "nodes[1].target.min_success",
                "more than the 1 server",
            ),
            (
                "  - {id: deploy, event: deploy, target: {tags: [a], batch: abc}}\n",
                "nodes[1].target.batch",
                "percentage",
            ),
            (
                "  - {id: deploy, event: deploy, target: {tags: [a], pause: 5s}}\n",
                "nodes[1].target.pause",
                "target.batch",
            ),
            (
                "  - {id: deploy, event: deploy, target: {container: {cpus: -1}}}\n",
                "nodes[1].target.container.cpus",
                "positive",
            ),
            (
                "  - {id: deploy, event: deploy, helpers: telepathy}\n",
                "nodes[1].helpers",
                "unknown variant",
            ),
            (
                "  - {id: deploy, event: deploy, agent_tags: [gpu, GPU]}\n",
                "nodes[1].agent_tags[1]",
                "contains `G`",
            ),
            (
                "  - {id: deploy, event: deploy, agent_tags: gpu}\n",
                "nodes[1].agent_tags",
                "sequence",
            ),
            (
                "  - {id: deploy, event: deploy, input: [1]}\n",
                "nodes[1].input",
                "mapping",
            ),
            (
                "  - {id: deploy, type: bash, script: '  '}\n",
                "nodes[1].script",
                "is empty",
            ),
            (
                "  - {id: deploy, type: bash}\n",
                "nodes[1].script",
                "required",
            ),
            (
                "  - {id: deploy, type: ruby, script: x}\n",
                "nodes[1].type",
                "ruby",
            ),
            (
                "  - {id: deploy, type: bash, script_file: a.sh}\n",
                "nodes[1].script_file",
                "cronium workflow apply -f",
            ),
            (
                "  - {id: deploy, type: http, http: {url: 'ftp://x'}}\n",
                "nodes[1].http.url",
                "http://",
            ),
            (
                "  - {id: deploy, type: http, http: {url: 'http://x'}, target: {container: {}}}\n",
                "nodes[1].target",
                "must be local",
            ),
            (
                "  - {id: deploy, type: bash, script: echo, http: {url: 'http://x'}}\n",
                "nodes[1].http",
                "only allowed for type http",
            ),
            (
                "  - {id: deploy, type: bash, script: echo, timeout: 0}\n",
                "nodes[1].timeout",
                "greater than zero",
            ),
            (
                "  - {id: deploy, workflow: other, target: local}\n",
                "nodes[1].target",
                "another workflow",
            ),
            (
                "  - {id: deploy, workflow: other, retries: {max_attempts: 2}}\n",
                "nodes[1].retries",
                "another workflow",
            ),
            (
                "  - {id: deploy, workflow: w}\n",
                "nodes[1].workflow",
                "cannot run itself",
            ),
            (
                "  - {id: deploy, workflow: 'a/b'}\n",
                "nodes[1].workflow",
                "contains `/`",
            ),
        ];
        for (node, field, needle) in cases {
            let doc = format!("{head}{node}");
            let e = parse_yaml(&doc).unwrap_err();
            assert_eq!(e.field, *field, "{node}: {e}");
            assert!(e.to_string().contains(needle), "{node}: {e}");
        }
    }

    #[test]
    fn workflow_level_errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("name: w\nnodes: []\n", "nodes", "at least one node"),
            ("name: w\n", "(document)", "missing field `nodes`"),
            ("name: W\nnodes: [{id: a, event: e}]\n", "name", "contains"),
            (
                "name: w\ntimeout: 0s\nnodes: [{id: a, event: e}]\n",
                "timeout",
                "greater than zero",
            ),
            (
                "name: w\ninput: 3\nnodes: [{id: a, event: e}]\n",
                "input",
                "mapping",
            ),
            (
                "name: w\nschedule: '61 * * * *'\nnodes: [{id: a, event: e}]\n",
                "schedule",
                "invalid cron",
            ),
            (
                "name: w\ntimezone: Mars/Base\nnodes: [{id: a, event: e}]\n",
                "timezone",
                "Mars/Base",
            ),
            (
                "name: w\noverlap: maybe\nnodes: [{id: a, event: e}]\n",
                "overlap",
                "unknown variant",
            ),
            (
                "name: w\nstatus: sleeping\nnodes: [{id: a, event: e}]\n",
                "status",
                "unknown variant",
            ),
            (
                "name: w\nsurprise: 1\nnodes: [{id: a, event: e}]\n",
                "surprise",
                "unknown field",
            ),
            ("- 1\n", "(document)", "mapping of workflow fields"),
            ("name: [unclosed\n", "(document)", "YAML"),
        ];
        for (doc, field, needle) in cases {
            let e = parse_yaml(doc).unwrap_err();
            assert_eq!(e.field, *field, "{doc}: {e}");
            assert!(e.to_string().contains(needle), "{doc}: {e}");
        }
        let e = parse_json("{").unwrap_err();
        assert_eq!(e.field, "(body)");
    }

    #[test]
    fn cycles_are_refused_and_spelled_out() {
        let cases: &[(&str, &str)] = &[
            (
                "  - {id: build, event: e, after: [deploy]}\n  - {id: deploy, event: e, after: [build]}\n",
                "nodes: cycle build -> deploy -> build",
            ),
            (
                "  - {id: start, event: e}\n  - {id: a, event: e, after: [start, c]}\n  - {id: b, event: e, after: [a]}\n  - {id: c, event: e, after: {b: failure}}\n  - {id: after, event: e, after: [c]}\n",
                "nodes: cycle a -> b -> c -> a",
            ),
        ];
        for (nodes, message) in cases {
            let e = parse_yaml(&format!("name: w\nnodes:\n{nodes}")).unwrap_err();
            assert_eq!(e.to_string(), *message);
        }
    }

    #[test]
    fn the_definition_is_the_graph_as_data() {
        let s = parse_yaml(RELEASE).unwrap();
        let d = s.definition();
        assert_eq!(
            (d.name.as_str(), d.timeout_ms),
            ("release", Some(7_200_000))
        );
        assert_eq!(d.input, json!({"version": "1.4"}));
        assert_eq!(d.spec, s.to_value());
        assert_eq!(d.status, EventStatus::Active);
        let deploy = &d.nodes[1];
        assert_eq!(
            deploy.body,
            NodeBody::Event {
                name: "deploy".into()
            }
        );
        assert_eq!(deploy.after, [("build".to_string(), EdgeKind::Success)]);
        assert_eq!(
            deploy.overrides,
            json!({"target": {"tags": ["web"], "mode": "runner-ssh", "continue_on_failure": true}})
        );
        assert_eq!(deploy.policy, PolicyOverride::default());
        assert_eq!(d.nodes[0].overrides, Value::Null);
        // The inline node is an event spec of its own, named WORKFLOW/NODE, with its policy.
        let NodeBody::Inline { spec, policy } = &d.nodes[2].body else {
            panic!("{:?}", d.nodes[2].body);
        };
        assert_eq!(spec["name"], "release/smoke");
        assert_eq!(spec["type"], "bash");
        assert_eq!(policy.timeout_ms, 3_600_000);
        assert_eq!(d.nodes[2].policy, PolicyOverride::all(policy));
        // Stored inline events parse back as stored versions, not as event files.
        let parsed = spec::from_stored_value(spec.clone()).unwrap();
        assert_eq!(parsed.name, "release/smoke");
        assert_eq!(
            spec::from_value(spec.clone()).unwrap_err().field,
            "name",
            "an event file cannot use a / name"
        );
        assert_eq!(d.nodes[3].join, Join::Any);
    }

    #[test]
    fn node_overrides_become_policy_and_overrides() {
        let s = parse_yaml(
            "name: w\nnodes:\n  - id: a\n    event: e\n    timeout: 90s\n    retries: {max_attempts: 3, backoff: 2s}\n    env: {A: b}\n    helpers: api\n    input: {k: 1}\n",
        )
        .unwrap();
        let n = &s.definition().nodes[0];
        assert_eq!(
            n.policy,
            PolicyOverride {
                max_attempts: Some(3),
                backoff_ms: Some(2000),
                max_backoff_ms: Some(300_000),
                timeout_ms: Some(90_000),
            }
        );
        assert_eq!(n.overrides, json!({"env": {"A": "b"}, "helpers": "api"}));
        assert_eq!(n.input, json!({"k": 1}));
        let o = NodeOverrides::from_value(&n.overrides).unwrap();
        assert_eq!(o.helpers, Some(HelperMode::Api));
        let mut event =
            crate::spec::parse_yaml("name: e\ntype: bash\nscript: x\nenv: {A: a, B: b}\n").unwrap();
        o.apply(&mut event);
        assert_eq!(event.env.get("A").map(String::as_str), Some("b"));
        assert_eq!(event.env.get("B").map(String::as_str), Some("b"));
        assert_eq!(
            NodeOverrides::from_value(&Value::Null).unwrap(),
            NodeOverrides::default()
        );
        assert_eq!(
            NodeOverrides::from_value(&json!({"retries": 1}))
                .unwrap_err()
                .field,
            "retries"
        );
    }

    #[test]
    fn references_need_the_store() {
        let s = parse_yaml(
            "name: top\nnodes:\n  - {id: a, event: known}\n  - {id: b, workflow: child}\n",
        )
        .unwrap();
        let subs = |graph: &'static [(&'static str, &'static [&'static str])]| {
            move |name: &str| {
                graph
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, refs)| refs.iter().map(|r| r.to_string()).collect())
            }
        };
        let known = |e: &str| e == "known";
        assert_eq!(check_references(&s, known, subs(&[("child", &[])])), Ok(()));
        let e = check_references(&s, |_| false, subs(&[("child", &[])])).unwrap_err();
        assert_eq!(e.to_string(), "nodes[0].event: unknown event `known`");
        let e = check_references(&s, known, subs(&[])).unwrap_err();
        assert_eq!(e.to_string(), "nodes[1].workflow: unknown workflow `child`");
        let e = check_references(&s, known, subs(&[("child", &["mid"]), ("mid", &["top"])]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "nodes[1].workflow: recursion: top -> child -> mid -> top"
        );
        // Recursion further down, not through this workflow, is refused too.
        let e =
            check_references(&s, known, subs(&[("child", &["x"]), ("x", &["child"])])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nodes[1].workflow: recursion: top -> child -> x -> child"
        );
        let deep: &[(&str, &[&str])] = &[
            ("child", &["l3"]),
            ("l3", &["l4"]),
            ("l4", &["l5"]),
            ("l5", &[]),
        ];
        assert_eq!(check_references(&s, known, subs(deep)), Ok(()));
        let deeper: &[(&str, &[&str])] = &[
            ("child", &["l3"]),
            ("l3", &["l4"]),
            ("l4", &["l5"]),
            ("l5", &["l6"]),
            ("l6", &[]),
        ];
        let e = check_references(&s, known, subs(deeper)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nodes[1].workflow: nests workflows deeper than 5 levels: top -> child -> l3 -> l4 -> l5 -> l6"
        );
    }
}
