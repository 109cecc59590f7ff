//! How a server's SSH credential is kept at rest: JSON encrypted with the installation's key and
//! bound to the server's name. Only the agent (to connect) and the API (to register) use it.

use cronium_core::crypto::SecretBox;
use cronium_ssh::Credential;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Stored {
    Key {
        pem: String,
        passphrase: Option<String>,
    },
    Password {
        password: String,
    },
}

fn context(server: &str) -> String {
    format!("server:{server}")
}

/// `key` or `password`.
pub fn kind(c: &Credential) -> &'static str {
    match c {
        Credential::Key { .. } => "key",
        Credential::Password(_) => "password",
    }
}

pub fn encrypt(secrets: &SecretBox, server: &str, c: &Credential) -> Vec<u8> {
    let stored = match c {
        Credential::Key { pem, passphrase } => Stored::Key {
            pem: pem.clone(),
            passphrase: passphrase.clone(),
        },
        Credential::Password(p) => Stored::Password {
            password: p.clone(),
        },
    };
    let clear = serde_json::to_vec(&stored).unwrap_or_default();
    secrets.encrypt(&context(server), &clear)
}

pub fn decrypt(secrets: &SecretBox, server: &str, data: &[u8]) -> Result<Credential, String> {
    let clear = secrets
        .decrypt(&context(server), data)
        .map_err(|e| format!("credential of server {server}: {e}"))?;
    let stored: Stored = serde_json::from_slice(&clear)
        .map_err(|e| format!("credential of server {server}: {e}"))?;
    Ok(match stored {
        Stored::Key { pem, passphrase } => Credential::Key { pem, passphrase },
        Stored::Password { password } => Credential::Password(password),
    })
}
