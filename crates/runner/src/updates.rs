//! Reading back what the bundled helpers wrote: tails `.cronium/updates.jsonl` while the script
//! runs and once more after it ends, and turns each line into Output, Variable and Condition
//! events. Because it runs during the run, outputs and variable writes reach the controller even
//! if the script then fails, hangs or is killed. Not for writing the helper files (`bundle`).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use cronium_protocol::{HelperUpdate, RunnerEvent};
use serde_json::{Map, Value};

use crate::emit::Emitter;

/// Follows one updates file; keeps the merged output object.
pub struct UpdateTail {
    path: PathBuf,
    /// Opened on the first poll after a helper created the file.
    file: Option<File>,
    /// Bytes after the last newline seen (a line still being written).
    partial: Vec<u8>,
    output: Value,
    /// A fallback was already reported (each helper process reports its own).
    fell_back: bool,
}

impl UpdateTail {
    pub fn new(path: PathBuf) -> Self {
        UpdateTail {
            path,
            file: None,
            partial: Vec::new(),
            output: Value::Null,
            fell_back: false,
        }
    }

    /// Reads whatever was appended since the last call and emits the corresponding events.
    pub fn poll(&mut self, emitter: &Emitter) {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => {
                    diag!("cronium-runner: cannot follow {}: {e}", self.path.display());
                    return;
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let before = self.partial.len();
        if let Err(e) = file.read_to_end(&mut self.partial) {
            diag!("cronium-runner: reading helper updates: {e}");
        }
        if self.partial.len() == before {
            return;
        }
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=last_nl).collect();
        let mut output_changed = false;
        for line in complete.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<HelperUpdate>(line) {
                Ok(update) => output_changed |= self.apply(update, emitter),
                Err(e) => {
                    emitter.system_line(format!("[cronium] ignored an invalid helper update: {e}"))
                }
            }
        }
        if output_changed {
            emitter.event(&RunnerEvent::Output {
                value: self.output.clone(),
            });
        }
    }

    /// Applies one update; returns whether the output object changed.
    fn apply(&mut self, update: HelperUpdate, emitter: &Emitter) -> bool {
        match update {
            HelperUpdate::Output { value } => {
                self.output = value;
                true
            }
            HelperUpdate::OutputKey { key, value } => {
                if !self.output.is_object() {
                    self.output = Value::Object(Map::new());
                }
                if let Value::Object(map) = &mut self.output {
                    map.insert(key, value);
                }
                true
            }
            HelperUpdate::SetVariable { name, value } => {
                emitter.event(&RunnerEvent::Variable { name, value });
                false
            }
            HelperUpdate::SetCondition { value } => {
                emitter.event(&RunnerEvent::Condition { value });
                false
            }
            HelperUpdate::Fallback { reason } => {
                if !self.fell_back {
                    self.fell_back = true;
                    emitter.system_line(format!(
                        "[cronium] helpers fell back to bundled mode: {reason}"
                    ));
                    emitter.event(&RunnerEvent::HelperFallback { reason });
                }
                false
            }
        }
    }
}
