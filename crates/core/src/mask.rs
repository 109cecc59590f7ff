//! Masking of secret values in what a run produces (log lines, outputs, error messages), so that
//! a secret never reaches the store, a viewer or an error in clear text.
//!
//! A [`Masker`] is built per job from every secret the run can see (secret variables, the SSH
//! credentials of its servers) and replaces each occurrence with [`MASK`], leftmost-longest
//! (one automaton for all of them: `aho-corasick`). Besides the value itself it knows the forms a
//! script naturally prints: the value as it appears inside a JSON string (escapes, and `\uXXXX`
//! for non-ASCII as Python's `json.dumps` writes it) and, for a value of several lines, each of
//! its lines. It cannot know a transformed value (base64, reversed, hashed, one character per
//! line...), and values shorter than [`MIN_SECRET_CHARS`] are not masked at all, because
//! masking `1` or `yes` would destroy the logs while protecting next to nothing.
//!
//! Not for deciding what is secret (the agent does) nor for storing anything.

use std::borrow::Cow;
use std::collections::BTreeSet;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets (and parts of multi-line secrets) shorter than this many characters are not masked.
pub const MIN_SECRET_CHARS: usize = 6;

/// The masker could not be built (only for sets of secrets far larger than any real one).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the secret masker: {0}")]
pub struct MaskError(#[from] aho_corasick::BuildError);

/// Whether `secret` is long enough to be masked.
pub fn maskable(secret: &str) -> bool {
    secret.chars().count() >= MIN_SECRET_CHARS
}

/// Replaces known secret values with [`MASK`]. Cheap to use when it knows no secret.
#[derive(Clone, Default)]
pub struct Masker {
    /// Every form searched for, deduplicated (the automaton is rebuilt from it when extended).
    patterns: BTreeSet<String>,
    automaton: Option<AhoCorasick>,
}

impl std::fmt::Debug for Masker {
    // Never print the secrets themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} patterns)", self.patterns.len())
    }
}

/// The texts of a JSON value that are secret: a string, a number's digits, and every string and
/// number inside an array or object (keys are names, not secrets). Booleans and null are not.
pub fn secret_texts(value: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if !s.is_empty() => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut out);
    out
}

/// `s` as it appears between the quotes of a JSON string (serde_json, Node's JSON.stringify).
fn json_escaped(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

/// `s` JSON-escaped with non-ASCII characters as `\uXXXX` (surrogate pairs beyond the BMP), as
/// Python's `json.dumps` writes it by default.
fn json_ascii_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in json_escaped(s).chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

impl Masker {
    /// A masker for `secrets` (see [`Masker::extend`]).
    pub fn new<I, S>(secrets: I) -> Result<Masker, MaskError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut m = Masker::default();
        m.extend(secrets)?;
        Ok(m)
    }

    /// True when it masks nothing.
    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// Adds secrets: each value, its JSON-escaped forms and, for a value of several lines, each
    /// line; forms shorter than [`MIN_SECRET_CHARS`] are left out. On error the masker is
    /// unchanged, and the caller must not go on as if the new secrets were masked.
    pub fn extend<I, S>(&mut self, secrets: I) -> Result<(), MaskError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns = self.patterns.clone();
        for secret in secrets {
            let secret = secret.as_ref();
            let mut forms = vec![secret.to_string()];
            if secret.contains('\n') {
                // Output is stored line by line: a multi-line value is seen one line at a time.
                forms.extend(secret.lines().map(|l| l.trim_end_matches('\r').to_string()));
            }
            for form in forms {
                if !maskable(&form) {
                    continue;
                }
                patterns.insert(json_escaped(&form));
                patterns.insert(json_ascii_escaped(&form));
                patterns.insert(form);
            }
        }
        if patterns.len() == self.patterns.len() {
            return Ok(());
        }
        // Leftmost-longest: of a secret and a longer one that contains it, the longer wins, so
        // no tail of it is left in clear.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)?;
        self.patterns = patterns;
        self.automaton = Some(automaton);
        Ok(())
    }

    /// `text` with every secret replaced by [`MASK`]; borrowed when there was none.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(ac) = &self.automaton else {
            return Cow::Borrowed(text);
        };
        if ac.find(text).is_none() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        ac.replace_all_with(text, &mut out, |_, _, dst| {
            dst.push_str(MASK);
            true
        });
        Cow::Owned(out)
    }

    /// Masks `text` in place.
    pub fn mask_string(&self, text: &mut String) {
        if let Cow::Owned(masked) = self.mask(text) {
            *text = masked;
        }
    }

    /// Masks every string of a JSON value, recursively, object keys included; a number whose
    /// digits hold a secret becomes the masked string.
    pub fn mask_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => self.mask_string(s),
            Value::Number(n) => {
                if let Cow::Owned(masked) = self.mask(&n.to_string()) {
                    *value = Value::String(masked);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.mask_value(i)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.mask_value(&mut v);
                    map.insert(self.mask(&key).into_owned(), v);
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    /// Masks `head`, a piece of text that `tail` continues (one long line cut in two by the
    /// runner's line cap), so that a secret split between them is masked too: returns `head`
    /// masked, with a secret that starts in it and ends in `tail` masked whole at its end, and
    /// how many bytes at the start of `tail` belonged to that secret (drop them from `tail`).
    pub fn mask_across(&self, head: &str, tail: &str) -> (String, usize) {
        let Some(ac) = &self.automaton else {
            return (head.to_string(), 0);
        };
        let joined = format!("{head}{tail}");
        let cut = head.len();
        let mut out = String::with_capacity(head.len());
        let mut at = 0;
        let mut consumed = 0;
        for m in ac.find_iter(&joined) {
            if m.start() >= cut {
                break;
            }
            out.push_str(&joined[at..m.start()]);
            out.push_str(MASK);
            at = m.end();
            if m.end() > cut {
                // Patterns and text are UTF-8, so a match ends on a character boundary.
                consumed = m.end() - cut;
                break;
            }
        }
        if at < cut {
            out.push_str(&joined[at..cut]);
        }
        (out, consumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_alone_inside_a_line_and_every_occurrence() {
        let m = Masker::new(["hunter2-secret"]).unwrap();
        assert_eq!(m.mask("hunter2-secret"), "***");
        assert_eq!(
            m.mask("token=hunter2-secret; again hunter2-secret."),
            "token=***; again ***."
        );
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn longest_secret_wins_when_one_contains_another() {
        let m = Masker::new(["abcdef", "abcdefghij"]).unwrap();
        assert_eq!(m.mask("x abcdefghij y abcdefg"), "x *** y ***g");
    }

    #[test]
    fn short_and_empty_secrets_are_not_masked() {
        let m = Masker::new(["", "a", "12345"]).unwrap();
        assert!(m.is_empty());
        assert_eq!(m.mask("a 12345"), "a 12345");
        assert!(!maskable("ab✓de"));
        assert!(maskable("ab✓def"));
    }

    #[test]
    fn json_escaped_forms_are_masked() {
        let m = Masker::new(["pa\"ss\\wörd"]).unwrap();
        // serde_json / JSON.stringify, and Python's json.dumps (ASCII escapes).
        assert_eq!(m.mask(r#"{"p": "pa\"ss\\wörd"}"#), r#"{"p": "***"}"#);
        assert_eq!(m.mask(r#"{"p": "pa\"ss\\w\u00f6rd"}"#), r#"{"p": "***"}"#);
        let emoji = Masker::new(["key-🔑-value"]).unwrap();
        assert_eq!(emoji.mask(r#""key-\ud83d\udd11-value""#), r#""***""#);
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_masked() {
        let m = Masker::new(["first-line\r\nsecond-line\nab"]).unwrap();
        assert_eq!(m.mask("first-line"), "***");
        assert_eq!(m.mask("> second-line <"), "> *** <");
        assert_eq!(m.mask("ab"), "ab");
    }

    #[test]
    fn json_values_are_masked_recursively_keys_included() {
        let m = Masker::new(["s3cr3t-value", "424242"]).unwrap();
        let mut v = json!({
            "plain": "ok",
            "nested": [{"deep": "x s3cr3t-value y"}, 4242420, true, null],
            "s3cr3t-value": 1,
            "pin": 424242
        });
        m.mask_value(&mut v);
        assert_eq!(
            v,
            json!({
                "plain": "ok",
                "nested": [{"deep": "x *** y"}, "***0", true, null],
                "***": 1,
                "pin": "***"
            })
        );
    }

    #[test]
    fn secret_texts_of_json_values() {
        assert_eq!(secret_texts(&json!("abc")), ["abc"]);
        assert_eq!(secret_texts(&json!(123456)), ["123456"]);
        assert!(secret_texts(&json!(true)).is_empty());
        assert!(secret_texts(&json!(null)).is_empty());
        // In the order they were written (serde_json keeps object keys in order).
        assert_eq!(
            secret_texts(&json!({"user": "u", "pw": ["p1", 2]})),
            ["u", "p1", "2"]
        );
    }

    #[test]
    fn a_secret_cut_between_two_pieces_is_masked_whole() {
        let m = Masker::new(["0123456789"]).unwrap();
        let (head, consumed) = m.mask_across("xx 0123456789 yy 01234", "56789 zz");
        assert_eq!((head.as_str(), consumed), ("xx *** yy ***", 5));
        // Nothing straddles: the head is masked on its own and the tail is left whole.
        let (head, consumed) = m.mask_across("aa 0123456789", " 0123456789");
        assert_eq!((head.as_str(), consumed), ("aa ***", 0));
        let (head, consumed) = Masker::default().mask_across("abc", "def");
        assert_eq!((head.as_str(), consumed), ("abc", 0));
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let m = Masker::new(["very-secret"]).unwrap();
        assert!(!format!("{m:?}").contains("very-secret"));
    }
}
