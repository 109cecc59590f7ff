//! Encryption at rest for secrets (secret variables, server credentials): XChaCha20-Poly1305 with
//! a 256-bit key taken from `CRONIUM_ENCRYPTION_KEY` or from `secret.key` in the data directory
//! (created on first start, mode 0600). Each ciphertext is bound to what it protects (its
//! "context", e.g. `variable:db_password`), so a ciphertext copied to another row does not decrypt.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("CRONIUM_ENCRYPTION_KEY must be 32 bytes in base64 or 64 hex characters")]
    BadKey,
    #[error("cannot read or create the key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("a secret could not be decrypted (wrong encryption key, or tampered data)")]
    Decrypt,
}

/// Encrypts and decrypts secrets with the installation's key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_key(key: &[u8; 32]) -> Self {
        SecretBox {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Parses a key given as 64 hex characters or base64 of 32 bytes.
    pub fn from_text(text: &str) -> Result<Self, CryptoError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|_| CryptoError::BadKey)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| CryptoError::BadKey)?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self::from_key(&key))
    }

    /// The key from `CRONIUM_ENCRYPTION_KEY` when given, else `DATA_DIR/secret.key`, created
    /// with a random key (mode 0600) when missing.
    pub fn load(env_key: Option<&str>, data_dir: &Path) -> Result<Self, CryptoError> {
        if let Some(k) = env_key.filter(|k| !k.trim().is_empty()) {
            return Self::from_text(k);
        }
        let path = data_dir.join("secret.key");
        let io = |source| CryptoError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_text(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_private(&path, hex::encode(key).as_bytes()).map_err(io)?;
                Ok(Self::from_key(&key))
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn encrypt(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            // Encryption only fails for messages beyond 256 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    pub fn decrypt(&self, context: &str, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if data.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = data.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// Writes a file readable by its owner only, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Prefix of per-execution runtime tokens (`CRONIUM_API_TOKEN`), so that secret scanners and
/// the API tell them from API tokens (`crn_`) at a glance.
pub const RUNTIME_TOKEN_PREFIX: &str = "crt_";

/// A fresh runtime token: 256 random bits, hex, with [`RUNTIME_TOKEN_PREFIX`].
pub fn new_runtime_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("{RUNTIME_TOKEN_PREFIX}{}", hex::encode(b))
}

/// SHA-256 (hex) of a token: what the store keeps instead of the token.
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let b = SecretBox::from_key(&[7u8; 32]);
        let ct = b.encrypt("variable:a", b"hunter2");
        assert!(!ct.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(b.decrypt("variable:a", &ct).unwrap(), b"hunter2");
        assert!(
            b.decrypt("variable:b", &ct).is_err(),
            "bound to its context"
        );
        let other = SecretBox::from_key(&[8u8; 32]);
        assert!(other.decrypt("variable:a", &ct).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load(None, dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = SecretBox::load(None, dir.path()).unwrap();
        let ct = a.encrypt("x", b"y");
        assert_eq!(b.decrypt("x", &ct).unwrap(), b"y");
        assert!(SecretBox::load(Some("short"), dir.path()).is_err());
    }
}
