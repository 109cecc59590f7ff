"""Cronium runtime helpers for Python scripts (bundled mode).

Written by cronium-runner into a library directory shared by runs (or, failing that, into the
run's .cronium/) and put on PYTHONPATH, so that `import cronium` works in every target. Never
locates data relative to this file: reads the run's data from $CRONIUM_HELPER_DIR and appends
updates to updates.jsonl there, which the runner forwards to the server.
"""

import json as _json
import os as _os

__all__ = [
    "input", "output", "getVariable", "get_variable", "setVariable", "set_variable",
    "event", "setCondition", "set_condition",
]

_DIR = _os.environ.get("CRONIUM_HELPER_DIR") or ".cronium"


def _path(name):
    return _os.path.join(_DIR, name)


def _read(name, default):
    try:
        with open(_path(name), encoding="utf-8") as f:
            value = _json.load(f)
    except FileNotFoundError:
        return default
    return default if value is None else value


def _encode(obj):
    # allow_nan=False: NaN/Infinity are not JSON and would break the runner's parser.
    return _json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _append(update):
    line = (_encode(update) + "\n").encode("utf-8")
    # One write() on an O_APPEND descriptor: lines from concurrent writers never interleave.
    fd = _os.open(_path("updates.jsonl"), _os.O_WRONLY | _os.O_APPEND | _os.O_CREAT, 0o600)
    try:
        view = memoryview(line)
        while view:
            view = view[_os.write(fd, view):]
    finally:
        _os.close(fd)


def input():
    """The run's whole input (a dict, {} when the run has none)."""
    return _read("input.json", {})


def output(value, *key_value):
    """output(obj) replaces the whole output; output(key, value) sets one key of it."""
    if key_value:
        if len(key_value) != 1:
            raise TypeError("cronium.output takes (obj) or (key, value)")
        if not isinstance(value, str):
            raise TypeError("cronium.output(key, value): key must be a string")
        _append({"op": "output_key", "key": value, "value": key_value[0]})
    else:
        _append({"op": "output", "value": value})


def getVariable(name):
    """The variable's value, or None when it does not exist."""
    return _read("variables.json", {}).get(name)


def setVariable(name, value):
    """Writes a variable; later getVariable calls (in any language) see the new value."""
    if not isinstance(name, str) or not name:
        raise ValueError("cronium.setVariable: name must be a non-empty string")
    _encode(value)  # fail before writing anything if the value is not JSON
    _append({"op": "set_variable", "name": name, "value": value})
    variables = _read("variables.json", {})
    variables[name] = value
    tmp = _path("variables.json.%d.tmp" % _os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_encode(variables))
    _os.replace(tmp, _path("variables.json"))


def event():
    """Metadata of the run: id, name, job_id, execution_id, attempt, trigger, server, version."""
    return _read("event.json", {})


def setCondition(value):
    """Sets the workflow condition (a bool)."""
    if not isinstance(value, bool):
        raise TypeError("cronium.setCondition expects True or False")
    _append({"op": "set_condition", "value": value})


get_variable = getVariable
set_variable = setVariable
set_condition = setCondition
