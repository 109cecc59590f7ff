//! Making sure a run's image is on the engine: present, or pulled with its progress reported as
//! system log lines, or a clear error naming the image.
//!
//! Not for building images: the recipes for the default runtime images live in `images/` and
//! `scripts/build-images.sh`, because most hosts this runs on cannot reach a registry.

use std::collections::HashMap;

use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use cronium_core::transport::EventSink;
use futures::StreamExt;

use crate::error::{is_not_found, DockerError};
use crate::executor::system_line;

/// Whether `image` (name, `name:tag` or `name@digest`) is on the engine.
pub(crate) async fn present(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Splits `registry:5000/a/b:tag` into (`registry:5000/a/b`, `tag`), defaulting the tag to
/// `latest` like the CLI does (the API would otherwise pull every tag of the repository).
fn split_reference(image: &str) -> (String, String) {
    if image.contains('@') {
        // A digest reference is pulled as-is.
        return (image.to_string(), String::new());
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(i) => (
            image[..last_slash + i].to_string(),
            image[last_slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

/// Pulls `image`, forwarding progress to `sink` (one line per layer and status change, not per
/// progress tick, so that a pull does not flood the job's log).
pub(crate) async fn pull(
    docker: &Docker,
    image: &str,
    sink: &EventSink,
) -> Result<(), DockerError> {
    let (from_image, tag) = split_reference(image);
    let options = CreateImageOptions {
        from_image: Some(from_image),
        tag: (!tag.is_empty()).then_some(tag),
        ..Default::default()
    };
    let _ = sink
        .send(system_line(format!("pulling image {image}")))
        .await;
    let mut stream = docker.create_image(Some(options), None, None);
    let mut last_status: HashMap<String, String> = HashMap::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| DockerError::ImageUnavailable {
            image: image.to_string(),
            reason: format!("it is not on this Docker engine and pulling it failed: {e}"),
        })?;
        let Some(status) = info.status else { continue };
        let id = info.id.unwrap_or_default();
        if last_status.get(&id) == Some(&status) {
            continue;
        }
        last_status.insert(id.clone(), status.clone());
        let line = if id.is_empty() {
            format!("pull {image}: {status}")
        } else {
            format!("pull {image}: {id}: {status}")
        };
        let _ = sink.send(system_line(line)).await;
    }
    if present(docker, image).await? {
        Ok(())
    } else {
        Err(DockerError::ImageUnavailable {
            image: image.to_string(),
            reason: "the pull ended but the image is still not on the engine".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_default_to_latest_and_keep_registry_ports() {
        assert_eq!(
            split_reference("alpine"),
            ("alpine".into(), "latest".into())
        );
        assert_eq!(
            split_reference("cronium/python:1"),
            ("cronium/python".into(), "1".into())
        );
        assert_eq!(
            split_reference("reg:5000/a/b"),
            ("reg:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_reference("reg:5000/a/b:2"),
            ("reg:5000/a/b".into(), "2".into())
        );
        assert_eq!(
            split_reference("a@sha256:00"),
            ("a@sha256:00".into(), String::new())
        );
    }
}
