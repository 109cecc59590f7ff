//! POSIX shell quoting for the command lines sent over exec channels. Everything that reaches a
//! remote shell from configuration or user input goes through [`quote`]; nothing is interpolated
//! raw.

use crate::SshError;

/// Quotes `s` as one POSIX shell word: single quotes, with embedded single quotes written as
/// `'\''`. Safe for any byte string without NUL.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes `s` as one bash word in ANSI-C form (`$'...'`): backslash, single quote and every
/// control character escaped, so that the result never contains a raw newline and can travel as
/// one line.
pub fn quote_ansi_c(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Checks that `name` can be an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`): names are
/// placed unquoted before `=`, so anything else is refused rather than escaped.
pub fn validate_env_name(name: &str) -> Result<(), SshError> {
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(SshError::InvalidRequest {
            field: format!("env.{name}"),
            reason: "an environment variable name must match [A-Za-z_][A-Za-z0-9_]*".into(),
        })
    }
}

/// Rejects values a remote shell cannot carry (NUL bytes end C strings).
pub(crate) fn validate_env_value(name: &str, value: &str) -> Result<(), SshError> {
    if value.contains('\0') {
        return Err(SshError::InvalidRequest {
            field: format!("env.{name}"),
            reason: "the value contains a NUL byte".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_survives_hostile_values() {
        assert_eq!(quote("a'b"), "'a'\\''b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn ansi_c_quote_is_one_line() {
        assert_eq!(quote_ansi_c("a'b\\c\nd"), "$'a\\'b\\\\c\\x0ad'");
        assert!(!quote_ansi_c("x\r\n\t").contains('\n'));
    }

    #[test]
    fn env_names_are_checked() {
        assert!(validate_env_name("LOG_LEVEL").is_ok());
        assert!(validate_env_name("_x1").is_ok());
        for bad in ["", "1A", "A-B", "A B", "A;rm", "A=B"] {
            let err = validate_env_name(bad).unwrap_err().to_string();
            assert!(err.contains("env."), "{bad}: {err}");
        }
    }
}
