//! Runner artifacts (the binaries the server can deploy, per OS and architecture) and each
//! server's detected platform.
//!
//! Not for finding or hashing the files (the server does that at start) nor for choosing one
//! for a host (`cronium-ssh` does).

use sqlx::any::AnyRow;

use crate::row::{i64_col, text};
use crate::{Store, StoreError};

/// A registered runner binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRow {
    pub id: i64,
    pub version: String,
    pub os: String,
    pub arch: String,
    pub sha256: String,
    pub size: i64,
    /// The file on the Cronium server's file system.
    pub path: String,
    pub added_at: i64,
    /// When the server last found the file at start.
    pub seen_at: i64,
}

/// An artifact found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    pub version: String,
    pub os: String,
    pub arch: String,
    pub sha256: String,
    pub size: i64,
    pub path: String,
}

/// A server's OS and architecture as detected on contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPlatform {
    pub os: String,
    pub arch: String,
    pub detected_at: i64,
}

const ARTIFACT_COLS: &str = "id, version, os, arch, sha256, size, path, added_at, seen_at";

fn artifact_row(row: &AnyRow) -> Result<ArtifactRow, StoreError> {
    Ok(ArtifactRow {
        id: i64_col(row, "id")?,
        version: text(row, "version")?,
        os: text(row, "os")?,
        arch: text(row, "arch")?,
        sha256: text(row, "sha256")?,
        size: i64_col(row, "size")?,
        path: text(row, "path")?,
        added_at: i64_col(row, "added_at")?,
        seen_at: i64_col(row, "seen_at")?,
    })
}

fn check_name(field: &str, v: &str) -> Result<(), StoreError> {
    if v.is_empty() {
        return Err(StoreError::Invalid(format!("{field}: must not be empty")));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(StoreError::Invalid(format!(
            "{field}: '{v}' may only contain letters, digits, '_', '-' and '.'"
        )));
    }
    Ok(())
}

impl Store {
    /// Registers an artifact found at start, or refreshes the row of the same build (os, arch
    /// and sha256): its path, version and size as found now, `seen_at` = `now`. `added_at` is
    /// the first registration.
    pub async fn register_artifact(
        &self,
        a: &NewArtifact,
        now: i64,
    ) -> Result<ArtifactRow, StoreError> {
        check_name("version", &a.version)?;
        check_name("os", &a.os)?;
        check_name("arch", &a.arch)?;
        if a.sha256.len() != 64 || !a.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StoreError::Invalid(format!(
                "sha256: '{}' is not 64 hex digits",
                a.sha256
            )));
        }
        if a.size <= 0 {
            return Err(StoreError::Invalid(format!(
                "size: {} is not a file size",
                a.size
            )));
        }
        if a.path.is_empty() {
            return Err(StoreError::Invalid("path: must not be empty".into()));
        }
        let row = sqlx::query(&format!(
            "INSERT INTO runner_artifacts (version, os, arch, sha256, size, path, added_at, seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (os, arch, sha256) DO UPDATE SET version = excluded.version, \
             size = excluded.size, path = excluded.path, seen_at = excluded.seen_at \
             RETURNING {ARTIFACT_COLS}"
        ))
        .bind(&a.version)
        .bind(&a.os)
        .bind(&a.arch)
        .bind(a.sha256.to_ascii_lowercase())
        .bind(a.size)
        .bind(&a.path)
        .bind(now)
        .fetch_one(&self.write)
        .await?;
        artifact_row(&row)
    }

    /// Every registered artifact: by OS, architecture, newest first.
    pub async fn list_artifacts(&self) -> Result<Vec<ArtifactRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLS} FROM runner_artifacts ORDER BY os, arch, seen_at DESC, id DESC"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(artifact_row).collect()
    }

    /// Stores the platform a server reported. Writes only when it differs from the stored one
    /// (so `detected_at` is when it was first seen as it is); returns whether it wrote. Does not
    /// touch `updated_at`: the agent's bookkeeping, not an operator's change.
    pub async fn set_server_platform(
        &self,
        id: i64,
        os: &str,
        arch: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        check_name("os", os)?;
        check_name("arch", arch)?;
        let done = sqlx::query(
            "UPDATE servers SET os = $1, arch = $2, platform_detected_at = $3 \
             WHERE id = $4 AND (os IS NULL OR arch IS NULL OR os <> $1 OR arch <> $2)",
        )
        .bind(os)
        .bind(arch)
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
