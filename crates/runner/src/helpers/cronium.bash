# Cronium runtime helpers for Bash scripts, sourced through BASH_ENV.
# Each helper calls the runner binary itself: in bundled mode it reads and writes the run's files
# in $CRONIUM_HELPER_DIR; in API mode it makes the HTTP call on the run's socket (no curl needed)
# and falls back to the files when the socket is gone. Values are JSON; strings are printed raw.
cronium.input() { "$CRONIUM_RUNNER_BIN" helper input "$@"; }
cronium.output() { "$CRONIUM_RUNNER_BIN" helper output "$@"; }
cronium.getVariable() { "$CRONIUM_RUNNER_BIN" helper getVariable "$@"; }
cronium.setVariable() { "$CRONIUM_RUNNER_BIN" helper setVariable "$@"; }
cronium.event() { "$CRONIUM_RUNNER_BIN" helper event "$@"; }
cronium.setCondition() { "$CRONIUM_RUNNER_BIN" helper setCondition "$@"; }
cronium_input() { "$CRONIUM_RUNNER_BIN" helper input "$@"; }
cronium_output() { "$CRONIUM_RUNNER_BIN" helper output "$@"; }
cronium_getVariable() { "$CRONIUM_RUNNER_BIN" helper getVariable "$@"; }
cronium_setVariable() { "$CRONIUM_RUNNER_BIN" helper setVariable "$@"; }
cronium_event() { "$CRONIUM_RUNNER_BIN" helper event "$@"; }
cronium_setCondition() { "$CRONIUM_RUNNER_BIN" helper setCondition "$@"; }
cronium_get_variable() { "$CRONIUM_RUNNER_BIN" helper getVariable "$@"; }
cronium_set_variable() { "$CRONIUM_RUNNER_BIN" helper setVariable "$@"; }
cronium_set_condition() { "$CRONIUM_RUNNER_BIN" helper setCondition "$@"; }
