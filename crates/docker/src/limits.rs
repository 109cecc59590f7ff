//! What an event asks of its container (image, CPU, memory, PIDs, network) and the rule that turns
//! that request into the limits actually applied: the event's value, else the global default, else
//! the global maximum, and never above the maximum.
//!
//! Not for talking to the engine: this module is pure so that the API can validate an event's
//! container settings when the event is saved, long before anything runs.

use std::fmt;

/// Resource limits of one container. `None` means "not limited" (after defaults are applied).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Fractional cores (0.5 = half a core), applied as `NanoCpus`.
    pub cpus: Option<f64>,
    /// Memory in bytes; swap is disabled (memory+swap = memory) so that a hog is killed, not paged.
    pub memory_bytes: Option<i64>,
    /// Maximum number of processes and threads in the container (contains fork bombs).
    pub pids: Option<i64>,
}

/// Network of a run's container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// No network at all: only the loopback interface.
    #[default]
    None,
    /// A fresh bridge network created for this execution and removed with it, so that the run
    /// can reach outside but no other container can reach it.
    Isolated,
    /// An existing network, by name (the operator's responsibility).
    Named(String),
}

/// The container settings of one event (from `target: { container: {...} }`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    /// The event's image; `None` uses the configured default for the script's language.
    pub image: Option<String>,
    pub limits: Limits,
    pub network: NetworkMode,
    /// The interpreter binary inside the image, when it is not on `PATH` under its usual name
    /// (`/bin/sh` for bash scripts in a busybox image). `None`: the runner searches `PATH`.
    pub interpreter_path: Option<String>,
}

/// A limit an event may not have. Names the field as the event file spells it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    #[error("container.{field}: {requested} exceeds the maximum allowed ({maximum})")]
    AboveMaximum {
        field: &'static str,
        requested: String,
        maximum: String,
    },
    #[error("container.{field}: {value} is not valid: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
}

impl LimitError {
    /// The field at fault: `cpus`, `memory` or `pids`.
    pub fn field(&self) -> &'static str {
        match self {
            LimitError::AboveMaximum { field, .. } | LimitError::Invalid { field, .. } => field,
        }
    }
}

/// The engine refuses memory limits below 6 MiB.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// Human-readable bytes (`256 MiB`), as used in limit errors and the out-of-memory message.
pub fn format_bytes(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

struct Cpus(f64);
impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cpus", self.0)
    }
}

/// Checks one limit's own validity (independent of maximums).
fn validate(limits: &Limits, host_cpus: Option<f64>) -> Result<(), LimitError> {
    if let Some(c) = limits.cpus {
        if !c.is_finite() || c < 0.01 {
            return Err(LimitError::Invalid {
                field: "cpus",
                value: c.to_string(),
                reason: "must be at least 0.01".into(),
            });
        }
        if let Some(host) = host_cpus {
            if c > host {
                return Err(LimitError::Invalid {
                    field: "cpus",
                    value: c.to_string(),
                    reason: format!("the Docker host has only {host} cpus"),
                });
            }
        }
    }
    if let Some(m) = limits.memory_bytes {
        if m < MIN_MEMORY {
            return Err(LimitError::Invalid {
                field: "memory",
                value: format_bytes(m),
                reason: format!("must be at least {}", format_bytes(MIN_MEMORY)),
            });
        }
    }
    if let Some(p) = limits.pids {
        if p < 1 {
            return Err(LimitError::Invalid {
                field: "pids",
                value: p.to_string(),
                reason: "must be at least 1".into(),
            });
        }
    }
    Ok(())
}

/// The limits applied to a run: per field, the event's value, else the default, else the maximum.
/// An explicit value above the maximum is refused (never silently lowered: the user asked for it).
pub(crate) fn effective(
    requested: &Limits,
    defaults: &Limits,
    maximums: &Limits,
    host_cpus: Option<f64>,
) -> Result<Limits, LimitError> {
    validate(requested, host_cpus)?;
    let cpus = requested.cpus.or(defaults.cpus).or(maximums.cpus);
    let memory_bytes = requested
        .memory_bytes
        .or(defaults.memory_bytes)
        .or(maximums.memory_bytes);
    let pids = requested.pids.or(defaults.pids).or(maximums.pids);
    if let (Some(v), Some(max)) = (cpus, maximums.cpus) {
        if v > max {
            return Err(LimitError::AboveMaximum {
                field: "cpus",
                requested: Cpus(v).to_string(),
                maximum: Cpus(max).to_string(),
            });
        }
    }
    if let (Some(v), Some(max)) = (memory_bytes, maximums.memory_bytes) {
        if v > max {
            return Err(LimitError::AboveMaximum {
                field: "memory",
                requested: format_bytes(v),
                maximum: format_bytes(max),
            });
        }
    }
    if let (Some(v), Some(max)) = (pids, maximums.pids) {
        if v > max {
            return Err(LimitError::AboveMaximum {
                field: "pids",
                requested: v.to_string(),
                maximum: max.to_string(),
            });
        }
    }
    Ok(Limits {
        cpus,
        memory_bytes,
        pids,
    })
}

/// Checks the global configuration once: defaults must be valid and within the maximums.
pub(crate) fn validate_config(defaults: &Limits, maximums: &Limits) -> Result<(), LimitError> {
    validate(maximums, None)?;
    effective(&Limits::default(), defaults, maximums, None).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1024 * 1024;

    fn max() -> Limits {
        Limits {
            cpus: Some(1.0),
            memory_bytes: Some(512 * MIB),
            pids: Some(200),
        }
    }

    #[test]
    fn event_values_override_defaults_and_defaults_fill_gaps() {
        let defaults = Limits {
            cpus: Some(0.5),
            memory_bytes: Some(128 * MIB),
            pids: None,
        };
        let eff = effective(
            &Limits {
                cpus: Some(0.25),
                ..Limits::default()
            },
            &defaults,
            &max(),
            Some(2.0),
        )
        .unwrap();
        assert_eq!(eff.cpus, Some(0.25));
        assert_eq!(eff.memory_bytes, Some(128 * MIB));
        // No default: the maximum applies, so that "unlimited" never sneaks past a maximum.
        assert_eq!(eff.pids, Some(200));
    }

    #[test]
    fn a_value_above_the_maximum_names_the_field_and_the_maximum() {
        let err = effective(
            &Limits {
                memory_bytes: Some(2048 * MIB),
                ..Limits::default()
            },
            &Limits::default(),
            &max(),
            None,
        )
        .unwrap_err();
        assert_eq!(err.field(), "memory");
        assert_eq!(
            err.to_string(),
            "container.memory: 2 GiB exceeds the maximum allowed (512 MiB)"
        );
        let err = effective(
            &Limits {
                cpus: Some(1.5),
                ..Limits::default()
            },
            &Limits::default(),
            &max(),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("container.cpus"), "{err}");
        assert!(err.to_string().contains("1 cpus"), "{err}");
    }

    #[test]
    fn nonsense_values_are_refused() {
        for (l, field) in [
            (
                Limits {
                    cpus: Some(f64::NAN),
                    ..Limits::default()
                },
                "cpus",
            ),
            (
                Limits {
                    cpus: Some(3.0),
                    ..Limits::default()
                },
                "cpus",
            ),
            (
                Limits {
                    memory_bytes: Some(1024),
                    ..Limits::default()
                },
                "memory",
            ),
            (
                Limits {
                    pids: Some(0),
                    ..Limits::default()
                },
                "pids",
            ),
        ] {
            let err = effective(&l, &Limits::default(), &Limits::default(), Some(2.0)).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn bytes_are_formatted_for_humans() {
        assert_eq!(format_bytes(64 * MIB), "64 MiB");
        assert_eq!(format_bytes(1536 * MIB), "1.5 GiB");
        assert_eq!(format_bytes(512), "512 B");
    }
}
