//! Checks of user-given SSH material, for the API to reject bad input when a server is
//! registered rather than at its first run.

/// Whether `pem` is a private key this client can use (with `passphrase` when encrypted).
pub fn validate_private_key(pem: &str, passphrase: Option<&str>) -> Result<(), String> {
    russh::keys::decode_secret_key(pem, passphrase)
        .map(|_| ())
        .map_err(|e| format!("cannot read the private key: {e}"))
}

/// Whether `key` is an OpenSSH public key line (`ssh-ed25519 AAAA...`).
pub fn validate_host_key(key: &str) -> Result<(), String> {
    russh::keys::PublicKey::from_openssh(key.trim())
        .map(|_| ())
        .map_err(|_| {
            "is not an OpenSSH public key (expected e.g. 'ssh-ed25519 AAAA...')".to_string()
        })
}
