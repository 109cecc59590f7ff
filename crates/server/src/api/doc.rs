//! The OpenAPI document (`/api/v1/openapi.json`): every route with every status it can answer.
//!
//! The operations' own statuses (200/201/204, 404, 409, 413, 422) are written on each handler;
//! what every route behind the token shares is added here once, so that no route can forget
//! it: 401 (no token or a bad one, with `WWW-Authenticate: Bearer`) and 500 (the store failed,
//! the token lookup included), and from the routes' rules (`api::rules`, `crate::authz`) the
//! role each operation needs (`x-cronium-role` and a sentence of its description) with 403
//! where that role is above `viewer`. Every error has the `ErrorBody` schema.
//!
//! The document is exact: `tests/openapi.rs` validates real responses of every route against
//! it, and `scripts/fuzz-api.sh` (part of `scripts/test.sh`) runs schemathesis against it.

use std::borrow::Cow;

use cronium_core::spec::EventSpec;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::error::ErrorBody;
use super::{
    agents, apply, audit, channels, events, hooks, jobs, prune, runners, runtime, servers, tokens,
    users, variables, workflows,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Cronium API", description = "Events, jobs, logs, variables, tokens and servers of a Cronium server. \
Every route but `/healthz` and `POST /hooks/{name}` (signed instead) needs `Authorization: Bearer <token>`; each operation says the role it needs (`viewer` < `operator` < `admin`: a token acts with its user's role or a narrower one) and answers 403 below it. Errors are `ErrorBody`: \
`{\"error\": {\"code\", \"message\", \"field\"}}`, the field naming what is at fault."),
    paths(
        events::list, events::create, events::apply, events::show, events::delete, events::run,
        jobs::list, jobs::show, jobs::cancel, jobs::retry, jobs::logs, jobs::stream,
        variables::list, variables::show, variables::set, variables::delete,
        tokens::list, tokens::create, tokens::revoke,
        agents::list, agents::list_tokens, agents::create_token, agents::revoke_token,
        users::list, users::add, users::show, users::update, users::set_password,
        audit::list,
        servers::list, servers::create, servers::show, servers::delete, servers::test, servers::accept_key,
        servers::set_credential,
        runners::list, runners::add, runners::list_pins, runners::set_pin, runners::remove_pin,
        runners::start_rollout, runners::list_rollouts, runners::show_rollout, runners::rollback,
        runners::deploy,
        workflows::list, workflows::apply, workflows::show, workflows::delete, workflows::run,
        workflows::runs, workflows::show_run, workflows::retry, workflows::cancel, workflows::logs,
        apply::apply,
        prune::prune,
        super::transport_metrics, super::openapi, super::healthz, super::metrics,
        runtime::input, runtime::event, runtime::get_output, runtime::set_output,
        runtime::set_output_key, runtime::get_variable, runtime::set_variable,
        runtime::set_condition,
        hooks::receive, hooks::show_event_hook, hooks::rotate_event_hook,
        hooks::show_workflow_hook, hooks::rotate_workflow_hook,
        channels::list, channels::create, channels::show, channels::delete, channels::test,
    ),
    components(schemas(ErrorBody, super::dto::WorkflowLogLineDto)),
    modifiers(&SharedResponses),
    tags(
        (name = "events"), (name = "jobs"),
        (name = "workflows", description = "Workflows, their runs and node runs"),
        (name = "apply", description = "Many events or workflows in one transaction"), (name = "logs", description = "A job's log, paged or live"),
        (name = "variables"), (name = "tokens", description = "API tokens: each belongs to a user, may be narrowed to a role and expire"),
        (name = "users", description = "Accounts and their roles (admin, operator, viewer)"),
        (name = "audit", description = "The append-only log of every change, run, cancel and login"),
        (name = "servers", description = "SSH servers"),
        (name = "agents", description = "Agents (`cronium agent` processes and embedded ones) and the agent tokens that open the agent API, `/api/v1/agent/...`, and nothing else"),
        (name = "runners", description = "The runner binaries deployed to SSH servers, per OS, architecture and version; pins, rollouts and rollbacks"),
        (name = "retention", description = "Pruning what is past its retention"),
        (name = "runtime", description = "What a running script reads and writes, with its execution's token (CRONIUM_API_TOKEN)"),
        (name = "hooks", description = "Signed webhooks: `POST /hooks/{name}` (no token: the signature), each hook's URL and secret"),
        (name = "channels", description = "Notification channels: e-mail, Slack, Discord, signed webhook"),
        (name = "metrics"), (name = "meta", description = "Health, Prometheus metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The body of `PUT /api/v1/events/{name}`: the event file fields as for `POST`, except that
/// `name` may be left out (the path gives it).
pub struct EventApplyBody;

impl PartialSchema for EventApplyBody {
    fn schema() -> RefOr<Schema> {
        let mut schema = EventSpec::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.required.retain(|field| field != "name");
        }
        schema
    }
}

impl ToSchema for EventApplyBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EventApplyBody")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <EventSpec as ToSchema>::schemas(schemas);
    }
}

/// The body of `PUT /api/v1/workflows/{name}`: the workflow file fields (PRODUCT.md "Workflow
/// file") as JSON. The rules a schema cannot state (node ids unique, `after` naming known
/// nodes, no cycle, events that exist, each node an event, a workflow or an inline script)
/// are checked by the server, which names the node and field of the first one broken.
pub struct WorkflowApplyBody;

impl PartialSchema for WorkflowApplyBody {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::ArrayBuilder;
        let node = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A node: `id`, one of `event` / `workflow` / an inline script (`type`, `script`...), \
                 `after` (a list of ids or a map id -> success|failure|always|condition|not_condition), \
                 `join` (all|any), and the overrides `target`, `timeout`, `retries`, `env`, `input`, `helpers`",
            ))
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[a-z0-9_-]{1,64}$")),
            )
            .required("id");
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("name", cronium_core::spec_schema::name())
            .property("nodes", ArrayBuilder::new().items(node).min_items(Some(1)))
            .required("nodes")
            .into()
    }
}

impl ToSchema for WorkflowApplyBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("WorkflowApplyBody")
    }
}

/// Adds the bearer scheme, and 401 and 500 to every operation that needs the token.
struct SharedResponses;

const UNAUTHORIZED: &str = "Unauthorized";
const FORBIDDEN: &str = "Forbidden";
const INTERNAL: &str = "Internal";

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The same header, with an execution's runtime token (`crt_...`) instead.
        components.add_security_scheme(
            "runtime",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A running execution's CRONIUM_API_TOKEN"))
                    .build(),
            ),
        );
        // The agent API (`/api/v1/agent/...`, what `cronium agent` calls) takes only an agent
        // token (`cronium agent token create NAME`), and an agent token opens nothing else.
        components.add_security_scheme(
            "agent",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An agent token: good for the agent API (/api/v1/agent/...) only",
                    ))
                    .build(),
            ),
        );
        let error_content = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build()
        };
        components.responses.insert(
            UNAUTHORIZED.into(),
            ResponseBuilder::new()
                .description("No token, or one that is unknown, expired or revoked")
                .header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .enum_values(Some(["Bearer"])),
                        )
                        .build(),
                )
                .content("application/json", error_content())
                .build()
                .into(),
        );
        components.responses.insert(
            FORBIDDEN.into(),
            ResponseBuilder::new()
                .description("The token's role (or its user's) is below what this operation needs")
                .content("application/json", error_content())
                .build()
                .into(),
        );
        components.responses.insert(
            INTERNAL.into(),
            ResponseBuilder::new()
                .description("The server failed (details in its log, never in the answer)")
                .content("application/json", error_content())
                .build()
                .into(),
        );
        let rules = super::rules();
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                if let Some(rule) = rules
                    .iter()
                    .find(|r| r.path == *path && r.method.as_str() == method)
                {
                    let sentence = format!("Needs the `{}` role.", rule.role);
                    op.description = Some(match op.description.take() {
                        Some(d) if !d.is_empty() => format!("{d}\n\n{sentence}"),
                        _ => sentence,
                    });
                    op.extensions
                        .get_or_insert_with(Default::default)
                        .insert("x-cronium-role".into(), serde_json::json!(rule.role));
                    if rule.role != super::Role::Viewer {
                        op.responses
                            .responses
                            .insert("403".into(), RefOr::Ref(Ref::from_response_name(FORBIDDEN)));
                    }
                }
                // A path parameter is always required (utoipa loses it with `schema_with`).
                for p in op.parameters.iter_mut().flatten() {
                    if p.parameter_in == ParameterIn::Path {
                        p.required = Required::True;
                    }
                }
                // `/healthz` says `security(())`: one requirement that asks for nothing.
                let secured = op.security.iter().flatten().any(|req| {
                    serde_json::to_value(req)
                        .is_ok_and(|v| v.as_object().is_some_and(|m| !m.is_empty()))
                });
                if !secured {
                    continue;
                }
                let responses = &mut op.responses.responses;
                responses.insert(
                    "401".into(),
                    RefOr::Ref(Ref::from_response_name(UNAUTHORIZED)),
                );
                responses.insert("500".into(), RefOr::Ref(Ref::from_response_name(INTERNAL)));
            }
        }
    }
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("GET", item.get.as_mut()),
        ("PUT", item.put.as_mut()),
        ("POST", item.post.as_mut()),
        ("DELETE", item.delete.as_mut()),
        ("PATCH", item.patch.as_mut()),
        ("HEAD", item.head.as_mut()),
        ("OPTIONS", item.options.as_mut()),
        ("TRACE", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}
