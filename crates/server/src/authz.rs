//! Authorization: which role each route needs, declared next to the route, in one place.
//!
//! Routes of the API and of the pages are built with [`Routes::route`], which takes only a
//! [`Guarded`] method router, and a [`Guarded`] is made only by [`get`], [`post`], [`put`],
//! [`patch`] and [`delete`], each with the [`Role`] it needs:
//!
//! ```ignore
//! Routes::new().route("/events", get(Role::Viewer, events::list).post(Role::Operator, events::create))
//! ```
//!
//! so a route without a rule does not compile. Each method's handler is wrapped in its own
//! check (a `route_layer` on that method alone), which reads the [`Actor`] the authentication
//! layer put in the request (an API token's, or a page session's) and answers 403 when the
//! actor's role (a token's narrower role included) is below the rule's; a request that
//! reached a guarded route without an actor is a 500, never a pass. [`Routes`] keeps the table
//! of every (method, path, role): the OpenAPI document reads it (each operation says the role
//! it needs, and 403 where it can be refused), and the tests compare it with the document and
//! walk it with each role.
//!
//! Rules finer than a role (a token's owner, a user changing their own password) are the use
//! cases' (`usecases::tokens`, `usecases::users`), as every other rule is.

use axum::extract::Request;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use axum::Router;
pub use cronium_model::Role;

use crate::usecases::Actor;

/// One route's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub method: Method,
    /// The path as routed (`/events/{name}`), with the prefix it is nested under.
    pub path: String,
    pub role: Role,
}

/// A method router whose every method carries its role.
pub struct Guarded<S> {
    inner: MethodRouter<S>,
    rules: Vec<(Method, Role)>,
}

async fn authorize(role: Role, req: Request, next: Next) -> Response {
    let Some(actor) = req.extensions().get::<Actor>() else {
        tracing::error!(path = %req.uri().path(), "a guarded route was reached without an actor");
        return crate::api::error::ApiError::Internal("no actor".into()).into_response();
    };
    if actor.role.allows(role) {
        return next.run(req).await;
    }
    let message = format!(
        "this needs the {role} role; {} acts as {}",
        actor.username, actor.role
    );
    if actor.session_id.is_some() {
        crate::ui::error::UiError::Forbidden(format!(
            "You are logged in as {} ({}); this needs the {role} role.",
            actor.username, actor.role
        ))
        .into_response()
    } else {
        crate::api::error::ApiError::Forbidden(message).into_response()
    }
}

macro_rules! guarded_method {
    ($($name:ident => $method:ident,)+) => {
        $(
            #[doc = concat!("A `", stringify!($method), "` route that needs `role`.")]
            pub fn $name<H, T, S>(role: Role, handler: H) -> Guarded<S>
            where
                H: Handler<T, S>,
                T: 'static,
                S: Clone + Send + Sync + 'static,
            {
                Guarded::empty().$name(role, handler)
            }
        )+

        impl<S: Clone + Send + Sync + 'static> Guarded<S> {
            fn empty() -> Self {
                Guarded {
                    inner: MethodRouter::new(),
                    rules: Vec::new(),
                }
            }

            fn with(mut self, method: Method, role: Role, router: MethodRouter<S>) -> Self {
                let router = router.route_layer(middleware::from_fn(
                    move |req: Request, next: Next| authorize(role, req, next),
                ));
                self.inner = self.inner.merge(router);
                self.rules.push((method, role));
                self
            }

            $(
                #[doc = concat!("Adds a `", stringify!($method), "` handler that needs `role`.")]
                pub fn $name<H, T>(self, role: Role, handler: H) -> Self
                where
                    H: Handler<T, S>,
                    T: 'static,
                {
                    self.with(Method::$method, role, routing::$name(handler))
                }
            )+
        }
    };
}

guarded_method! {
    get => GET,
    post => POST,
    put => PUT,
    patch => PATCH,
    delete => DELETE,
}

/// A router whose every route has its rule, and the table of those rules.
pub struct Routes<S> {
    router: Router<S>,
    rules: Vec<Rule>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Routes {
            router: Router::new(),
            rules: Vec::new(),
        }
    }

    /// Adds a route; every method of it carries its role.
    pub fn route(mut self, path: &str, g: Guarded<S>) -> Self {
        self.router = self.router.route(path, g.inner);
        self.rules
            .extend(g.rules.into_iter().map(|(method, role)| Rule {
                method,
                path: path.to_string(),
                role,
            }));
        self
    }

    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.rules.extend(other.rules);
        self
    }

    /// The rules, every path prefixed with `prefix` (where the router will be nested).
    pub fn rules(&self, prefix: &str) -> Vec<Rule> {
        self.rules
            .iter()
            .map(|r| Rule {
                path: format!("{prefix}{}", r.path),
                ..r.clone()
            })
            .collect()
    }

    pub fn into_router(self) -> Router<S> {
        self.router
    }
}
