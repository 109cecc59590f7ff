//! One authenticated SSH connection: host key verification, login, and the small exec helper
//! used for deployment and housekeeping commands. Not the pool (see `pool.rs`) and not the
//! long-running execution channels (see `runner_run.rs` and `direct.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::ChannelMsg;

use crate::{Credential, ServerConfig, SshConfig, SshError};

/// What the server presented during the handshake, shared between the handler and the caller.
#[derive(Default)]
struct Observed {
    key: Option<PublicKey>,
    rejected_reason: Option<String>,
}

pub(crate) struct ClientHandler {
    expected: Option<PublicKey>,
    observed: Arc<Mutex<Observed>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(_) => {
                if let Ok(mut o) = self.observed.lock() {
                    o.rejected_reason = Some(
                        "the server offered a host certificate; only plain host keys can be pinned"
                            .into(),
                    );
                }
                return Ok(false);
            }
        };
        let accept = match &self.expected {
            Some(expected) => expected.key_data() == key.key_data(),
            None => true,
        };
        if let Ok(mut o) = self.observed.lock() {
            o.key = Some(key);
        }
        Ok(accept)
    }
}

/// An authenticated connection.
pub(crate) struct Conn {
    pub handle: Handle<ClientHandler>,
    /// The server's host key, OpenSSH format, no comment.
    pub host_key: String,
    /// The `cronium-runner serve` channel of this connection, once a run started it.
    pub serve: tokio::sync::Mutex<Option<crate::serve_run::ServeSession>>,
    /// runner-ssh runs started on this connection (the first does not start a serve session).
    pub runner_runs: std::sync::atomic::AtomicU64,
}

pub(crate) fn key_openssh(key: &PublicKey) -> String {
    let mut k = key.clone();
    k.set_comment("");
    k.to_openssh().unwrap_or_default().trim().to_string()
}

pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Fingerprint of an OpenSSH-format key string, or the string itself when it does not parse.
pub(crate) fn fingerprint_of(openssh: &str) -> String {
    PublicKey::from_openssh(openssh.trim())
        .map(|k| fingerprint(&k))
        .unwrap_or_else(|_| openssh.to_string())
}

/// Key exchange methods, best first.
///
/// The post-quantum hybrid where the host offers it (OpenSSH 9.9 and later). Then ECDH on
/// NIST P-256 ahead of X25519: both give 128-bit security, but OpenSSH does X25519 in its own
/// portable reference code and P-256 in OpenSSL's constant-time assembly, so on hosts without the
/// hybrid (Debian 12, Ubuntu 22.04 and 24.04, RHEL 9) P-256 costs sshd a sixth less CPU per new
/// connection, which is most of a cold fan-out (see BENCHMARKS.md). The rest is russh's default
/// order; the extension markers must stay.
const KEX_ORDER: &[russh::kex::Name] = &[
    russh::kex::MLKEM768X25519_SHA256,
    russh::kex::ECDH_SHA2_NISTP256,
    russh::kex::CURVE25519,
    russh::kex::CURVE25519_PRE_RFC_8731,
    russh::kex::DH_GEX_SHA256,
    russh::kex::DH_G18_SHA512,
    russh::kex::DH_G17_SHA512,
    russh::kex::DH_G16_SHA512,
    russh::kex::DH_G15_SHA512,
    russh::kex::DH_G14_SHA256,
    russh::kex::EXTENSION_SUPPORT_AS_CLIENT,
    russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
];

/// Opens a new connection: TCP, handshake with host key check, authentication; all within
/// `connect_timeout`.
pub(crate) async fn connect(server: &ServerConfig, cfg: &SshConfig) -> Result<Conn, SshError> {
    server.validate()?;
    let expected = match &server.host_key {
        Some(k) => {
            Some(
                PublicKey::from_openssh(k.trim()).map_err(|e| SshError::InvalidConfig {
                    field: "host_key",
                    reason: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    let observed = Arc::new(Mutex::new(Observed::default()));
    let handler = ClientHandler {
        expected: expected.clone(),
        observed: observed.clone(),
    };
    let preferred = russh::Preferred {
        kex: std::borrow::Cow::Borrowed(KEX_ORDER),
        // AES-GCM first: hardware-accelerated on both ends, which matters for runner uploads.
        cipher: std::borrow::Cow::Borrowed(&[
            russh::cipher::AES_256_GCM,
            russh::cipher::CHACHA20_POLY1305,
            russh::cipher::AES_256_CTR,
            russh::cipher::AES_128_CTR,
        ]),
        ..Default::default()
    };
    let rconfig = client::Config {
        keepalive_interval: Some(cfg.keepalive_interval),
        keepalive_max: cfg.keepalive_max,
        nodelay: true,
        preferred,
        ..Default::default()
    };
    let unreachable = |reason: String| SshError::Unreachable {
        server: server.name.clone(),
        addr: server.addr(),
        reason,
    };
    let attempt = async {
        let handle = client::connect(
            Arc::new(rconfig),
            (server.host.as_str(), server.port),
            handler,
        )
        .await;
        let mut handle = match handle {
            Ok(h) => h,
            Err(e) => {
                let o = observed
                    .lock()
                    .map(|o| (o.key.clone(), o.rejected_reason.clone()));
                let (seen, rejected) = o.unwrap_or((None, None));
                if let Some(reason) = rejected {
                    return Err(SshError::HostKeyRejected {
                        server: server.name.clone(),
                        reason,
                    });
                }
                if let (Some(exp), Some(seen)) = (&expected, seen) {
                    if exp.key_data() != seen.key_data() {
                        return Err(SshError::HostKeyChanged {
                            server: server.name.clone(),
                            expected: fingerprint(exp),
                            observed: fingerprint(&seen),
                            observed_key: key_openssh(&seen),
                        });
                    }
                }
                return Err(unreachable(e.to_string()));
            }
        };
        let auth_err = |reason: String| SshError::Auth {
            server: server.name.clone(),
            user: server.user.clone(),
            reason,
        };
        let result = match &server.credential {
            Credential::Key { pem, passphrase } => {
                let key =
                    russh::keys::decode_secret_key(pem, passphrase.as_deref()).map_err(|e| {
                        SshError::InvalidConfig {
                            field: "credential.key",
                            reason: format!("cannot read the private key: {e}"),
                        }
                    })?;
                let hash = if key.algorithm().is_rsa() {
                    handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(|e| unreachable(e.to_string()))?
                        .flatten()
                } else {
                    None
                };
                handle
                    .authenticate_publickey(
                        server.user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
            }
            Credential::Password(p) => {
                handle
                    .authenticate_password(server.user.clone(), p.clone())
                    .await
            }
        }
        .map_err(|e| unreachable(format!("during authentication: {e}")))?;
        if !result.success() {
            let what = match server.credential {
                Credential::Key { .. } => "the server did not accept the key",
                Credential::Password(_) => "the server did not accept the password",
            };
            return Err(auth_err(what.into()));
        }
        let host_key = observed
            .lock()
            .ok()
            .and_then(|o| o.key.as_ref().map(key_openssh))
            .unwrap_or_default();
        Ok(Conn {
            handle,
            host_key,
            serve: tokio::sync::Mutex::new(None),
            runner_runs: std::sync::atomic::AtomicU64::new(0),
        })
    };
    match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(unreachable(format!(
            "no answer within {} ms (connect timeout)",
            cfg.connect_timeout.as_millis()
        ))),
    }
}

/// Output of a short command.
#[derive(Debug, Default)]
pub(crate) struct ExecOutput {
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Runs a short command on its own channel, writes `stdin` (then EOF) and collects the output.
/// Errors are channel-level failures (connection gone); a failing command is an `ExecOutput`.
pub(crate) async fn exec(
    conn: &Conn,
    command: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<ExecOutput, String> {
    let work = async {
        let channel = conn
            .handle
            .channel_open_session()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        let (mut read, write) = channel.split();
        write
            .exec(true, command)
            .await
            .map_err(|e| format!("exec request failed: {e}"))?;
        if let Some(data) = stdin {
            write
                .data_bytes(data.to_vec())
                .await
                .map_err(|e| format!("cannot send data: {e}"))?;
        }
        let _ = write.eof().await;
        let mut out = ExecOutput::default();
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    out.stderr
                        .extend_from_slice(format!("killed by signal {signal_name:?}").as_bytes());
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        Ok(out)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "command did not finish within {} ms",
            timeout.as_millis()
        )),
    }
}
