//! The OpenAPI (JSON Schema) form of the event file, for the server's document (behind the
//! `utoipa` feature). Most of it is derived from the `spec` types themselves; this module holds
//! the schemas of what those types read with a hand-written `Deserialize` (targets, schedules,
//! durations, sizes, container networks) and of the fields whose rules live in
//! [`EventSpec::validate`](crate::spec::EventSpec::validate) (names, environment keys, HTTP
//! methods and statuses), so that the document says what the parser accepts.
//!
//! Not here: rules a schema cannot state (a cron expression's meaning, a time zone's existence,
//! `max_backoff >= backoff`); the API answers those with a 422 naming the field.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema,
    SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::duration::{ByteSize, HumanDuration};
use crate::fanout::ServerCount;
use crate::spec::{
    ContainerNetwork, ContainerTarget, Retain, ScheduleText, ServersTarget, Target, NAME_PATTERN,
};

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn any() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::AnyValue)
}

/// A string or a non-negative integer (durations and sizes are written either way).
fn string_or_integer() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Integer]))
}

fn closed_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
}

/// A name of an event or server (see [`crate::spec::validate_name`]).
pub fn name() -> RefOr<Schema> {
    string()
        .pattern(Some(NAME_PATTERN))
        .description(Some(
            "1 to 100 of a-z, 0-9, `-`, `_` and `.`; not `.` or `..`",
        ))
        .into()
}

/// A list of names (the servers of a target).
pub fn names() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(string().pattern(Some(NAME_PATTERN)))
        .into()
}

/// The runtime helpers' mode; null (or absent) is the server's default.
pub fn helpers() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some([
            serde_json::json!("bundled"),
            serde_json::json!("api"),
            serde_json::Value::Null,
        ]))
        .description(Some(
            "`bundled` (files, works offline) or `api` (live calls); default: the server's --helpers",
        ))
        .into()
}

/// Environment variables: names of letters, digits and `_` not starting with a digit.
pub fn env() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(string().pattern(Some("^[A-Za-z_][A-Za-z0-9_]*$"))))
        .additional_properties(Some(string()))
        .into()
}

/// The methods an `http` event may use, in any case (the parser upper-cases them).
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

pub fn http_method() -> RefOr<Schema> {
    // `[Gg][Ee][Tt]`: JSON Schema patterns have no case-insensitive flag.
    let any_case = |m: &str| -> String {
        m.chars()
            .map(|c| format!("[{}{}]", c, c.to_ascii_lowercase()))
            .collect()
    };
    let alternatives: Vec<String> = HTTP_METHODS.iter().map(|m| any_case(m)).collect();
    string()
        .pattern(Some(format!("^(?:{})$", alternatives.join("|"))))
        .default(Some("GET".into()))
        .into()
}

pub fn http_statuses() -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(100))
                .maximum(Some(599)),
        )
        .into()
}

impl PartialSchema for HumanDuration {
    fn schema() -> RefOr<Schema> {
        // `minimum` constrains only the integer form, `pattern` only the string form.
        string_or_integer()
            .description(Some(
                "A duration: `30s`, `10m`, `1h30m`, `500ms`; a plain number is seconds",
            ))
            .minimum(Some(0))
            .pattern(Some(r"\S"))
            .examples(["30s", "1h30m"])
            .into()
    }
}
impl ToSchema for HumanDuration {}

impl PartialSchema for ByteSize {
    fn schema() -> RefOr<Schema> {
        string_or_integer()
            .description(Some(
                "A size: `256m`, `1g`, `512k` (powers of 1024) or a number of bytes",
            ))
            .minimum(Some(1))
            .pattern(Some(
                r"^\s*\+?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\s*[kKmMgG]?[bB]?\s*$",
            ))
            .examples(["256m", "1g"])
            .into()
    }
}
impl ToSchema for ByteSize {}

impl PartialSchema for Retain {
    fn schema() -> RefOr<Schema> {
        string_or_integer()
            .description(Some(
                "How long finished jobs are kept: a duration of at least 1m (`30d`, `12h`; a \
                 plain number is seconds), or `forever` (also `0`)",
            ))
            .minimum(Some(0))
            .pattern(Some(r"\S"))
            .examples(["90d", "forever"])
            .into()
    }
}
impl ToSchema for Retain {}

impl PartialSchema for ServerCount {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .description(Some(
                "A number of servers (at least 1) or a percentage of the targeted servers, \
                 rounded up (`\"60%\"`, from 1% to 100%)",
            ))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .item(string().pattern(Some(crate::fanout::PERCENT_PATTERN)))
            .examples([serde_json::json!(2), serde_json::json!("60%")])
            .into()
    }
}
impl ToSchema for ServerCount {}

impl PartialSchema for ContainerNetwork {
    fn schema() -> RefOr<Schema> {
        string()
            .description(Some(
                "`none` (default: no network), `isolated` (a network for this job) or the name of an existing Docker network",
            ))
            .default(Some("none".into()))
            .into()
    }
}
impl ToSchema for ContainerNetwork {}

impl PartialSchema for ScheduleText {
    fn schema() -> RefOr<Schema> {
        let one_key = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("every", any())
            .property("at", any())
            .property("cron", any())
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
            .min_properties(Some(1))
            .max_properties(Some(1));
        AnyOfBuilder::new()
            .description(Some(
                "Cron text with 5 or 6 fields (seconds first when 6), or one of `{every: 30s}`, `{at: <RFC 3339>}`, `{cron: <text>}`",
            ))
            .item(string())
            .item(one_key)
            .into()
    }
}
impl ToSchema for ScheduleText {}

impl PartialSchema for Target {
    fn schema() -> RefOr<Schema> {
        // A servers target names at least one server or one tag.
        let non_empty = |field: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .required(field)
                .property(field, ArrayBuilder::new().items(any()).min_items(Some(1)))
        };
        AnyOfBuilder::new()
            .description(Some(
                "`local` (default), servers by name or tag, or `{container: {...}}`",
            ))
            .item(string().enum_values(Some(["local", "container"])))
            .item(
                AllOfBuilder::new()
                    .item(Ref::from_schema_name(ServersTarget::name()))
                    .item(
                        AnyOfBuilder::new()
                            .item(non_empty("servers"))
                            .item(non_empty("tags")),
                    ),
            )
            .item(
                closed_object()
                    .required("container")
                    .property("container", Ref::from_schema_name(ContainerTarget::name())),
            )
            .item(closed_object().required("local").property("local", any()))
            .into()
    }
}

impl ToSchema for Target {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Target")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ServersTarget::name().into(), ServersTarget::schema()));
        <ServersTarget as ToSchema>::schemas(schemas);
        schemas.push((ContainerTarget::name().into(), ContainerTarget::schema()));
        <ContainerTarget as ToSchema>::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_builds() {
        for schema in [
            name(),
            names(),
            env(),
            http_method(),
            http_statuses(),
            HumanDuration::schema(),
            ByteSize::schema(),
            ContainerNetwork::schema(),
            ServerCount::schema(),
            ScheduleText::schema(),
            Target::schema(),
        ] {
            let json = serde_json::to_value(&schema).expect("serializes");
            assert!(json.is_object(), "{json}");
        }
    }
}
