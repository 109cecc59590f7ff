//! Request extractors whose rejections are [`ApiError`]s: a path parameter, a query string or a
//! body that cannot be read gets the one JSON error shape (a 422 naming the parameter, a 413),
//! never axum's plain-text answers, which the OpenAPI document does not describe.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// `axum::extract::Path` answering with an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` answering with an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The raw request body (parsed by [`super::body::json`], whose errors name the field); over
/// [`super::MAX_BODY`] it is a 413 in the one error shape.
#[derive(FromRequest)]
#[from_request(rejection(ApiError))]
pub struct Body(pub axum::body::Bytes);
