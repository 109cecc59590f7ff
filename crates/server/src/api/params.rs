//! The path parameters of the API, typed once so that the handlers and the OpenAPI document
//! agree on them (a name's pattern, an id's integer format). A value that does not parse is a
//! 422 naming the parameter (see `extract::Path`). (`doc.rs` marks every path parameter
//! required: utoipa drops that for a field whose schema is given with `schema_with`.)

use serde::Deserialize;
use utoipa::IntoParams;

/// An event, by name.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventName {
    /// The event's name.
    #[param(schema_with = cronium_core::spec_schema::name, example = "nightly-backup")]
    pub name: String,
}

/// A server, by name.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServerName {
    /// The server's name.
    #[param(schema_with = cronium_core::spec_schema::name, example = "web1")]
    pub name: String,
}

/// What `variables::validate_name` accepts.
pub const VARIABLE_NAME_PATTERN: &str = r"^[A-Za-z0-9._-]{1,200}$";

/// A variable, by name.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VariableName {
    /// The variable's name: 1 to 200 of letters, digits, `-`, `_` and `.`.
    #[param(schema_with = variable_name)]
    pub name: String,
}

fn variable_name() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(VARIABLE_NAME_PATTERN))
}

/// A job, by id.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobId {
    /// The job's id.
    pub id: i64,
}

/// A token, by id.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenId {
    /// The token's id.
    pub id: i64,
}

/// A workflow, by name.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkflowName {
    /// The workflow's name.
    #[param(schema_with = cronium_core::spec_schema::name, example = "release")]
    pub name: String,
}

/// A workflow run, by id.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RunId {
    /// The workflow run's id.
    pub id: i64,
}

/// What `usecases::users::validate_name` accepts.
pub const USER_NAME_PATTERN: &str = r"^[a-z0-9][a-z0-9._-]{0,63}$";

/// A user, by name.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserName {
    /// The user's name: 1 to 64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or a digit.
    #[param(schema_with = user_name, example = "alice")]
    pub name: String,
}

fn user_name() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(USER_NAME_PATTERN))
}

/// A notification channel, by name.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelName {
    /// The channel's name.
    #[param(schema_with = cronium_core::spec_schema::name, example = "ops-slack")]
    pub name: String,
}

/// A webhook, by the name of its event or workflow.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HookName {
    /// The event's (or else the workflow's) name.
    #[param(schema_with = cronium_core::spec_schema::name, example = "deploy")]
    pub name: String,
}
