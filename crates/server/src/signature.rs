//! HMAC-SHA256 signatures of webhooks, both ways: the requests `/hooks/NAME` receives, and the
//! requests a `webhook` notification channel sends.
//!
//! Cronium's form: `X-Cronium-Timestamp: UNIX_SECONDS` and `X-Cronium-Signature:
//! sha256=HEX(HMAC-SHA256(secret, "{timestamp}.{body}"))`, the timestamp within
//! [`MAX_SKEW_SECS`] of the receiver's clock. GitHub's form: `X-Hub-Signature-256:
//! sha256=HEX(HMAC-SHA256(secret, body))`. Comparison is constant-time (`verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const TIMESTAMP_HEADER: &str = "x-cronium-timestamp";
pub const SIGNATURE_HEADER: &str = "x-cronium-signature";
pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const GITHUB_DELIVERY_HEADER: &str = "x-github-delivery";

/// How far a timestamp may be from the receiver's clock, either way.
pub const MAX_SKEW_SECS: i64 = 300;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// `sha256=HEX` of Cronium's form, for a sender.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// `sha256=HEX` of GitHub's form (the body alone).
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Why a signature was refused. The receiver answers 401 whatever it is, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature: send X-Cronium-Timestamp and X-Cronium-Signature (or GitHub's X-Hub-Signature-256)")]
    Missing,
    #[error("{0}: not of the form sha256=HEX")]
    Malformed(&'static str),
    #[error("X-Cronium-Timestamp: not a number of seconds since 1970")]
    BadTimestamp,
    #[error("X-Cronium-Timestamp: more than 5 minutes away from the server's clock")]
    Stale,
    #[error("X-GitHub-Delivery: required with X-Hub-Signature-256 (the replay key)")]
    NoDelivery,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// The digest of `sha256=HEX`.
fn digest_of(value: &str, header: &'static str) -> Result<Vec<u8>, SignatureError> {
    let hex_part = value
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed(header))?;
    let bytes = hex::decode(hex_part).map_err(|_| SignatureError::Malformed(header))?;
    if bytes.len() != 32 {
        return Err(SignatureError::Malformed(header));
    }
    Ok(bytes)
}

/// Checks Cronium's form at `now_secs`. The answer is the replay key to remember until the
/// timestamp leaves the window (the signature's hex).
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<String, SignatureError> {
    let digest = digest_of(signature, "X-Cronium-Signature")?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now_secs - ts).abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale);
    }
    let mut m = mac(secret);
    m.update(ts.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(hex::encode(digest))
}

/// Checks GitHub's form.
pub fn verify_github(secret: &[u8], signature: &str, body: &[u8]) -> Result<(), SignatureError> {
    let digest = digest_of(signature, "X-Hub-Signature-256")?;
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_refuse_tampering() {
        let s = b"cwh_secret";
        let sig = sign(s, 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(s, "1700000000", &sig, b"{\"a\":1}", 1_700_000_100).is_ok());
        assert_eq!(
            verify(s, "1700000000", &sig, b"{\"a\":2}", 1_700_000_100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", "1700000000", &sig, b"{\"a\":1}", 1_700_000_100),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        assert_eq!(
            verify(s, "1700000001", &sig, b"{\"a\":1}", 1_700_000_100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(s, "1700000000", &sig, b"{\"a\":1}", 1_700_000_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(s, "soon", &sig, b"", 0),
            Err(SignatureError::BadTimestamp)
        );
        assert!(matches!(
            verify(s, "1", "md5=00", b"", 1),
            Err(SignatureError::Malformed(_))
        ));
        let gh = sign_github(s, b"payload");
        assert!(verify_github(s, &gh, b"payload").is_ok());
        assert_eq!(
            verify_github(s, &gh, b"payload2"),
            Err(SignatureError::Mismatch)
        );
    }

    /// The value `openssl dgst -sha256 -hmac` computes, as the README's curl example does.
    #[test]
    fn matches_a_known_hmac() {
        // HMAC-SHA256(key = "key", "The quick brown fox jumps over the lazy dog")
        assert_eq!(
            sign_github(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
