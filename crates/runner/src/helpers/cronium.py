"""Cronium runtime helpers for Python scripts.

Bundled mode: the run's files. API mode ($CRONIUM_API_ENDPOINT is unix:PATH): every call is
an HTTP request on the run's socket (one kept-alive connection), answered by the server at once;
when the socket cannot be reached, the helpers record a fallback and use the files instead.

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
_ENDPOINT = _os.environ.get("CRONIUM_API_ENDPOINT") or ""
_API = _ENDPOINT.startswith("unix:") or _os.environ.get("CRONIUM_HELPERS") == "api"
_conn = None


class _Unreachable(Exception):
    pass


def _fall_back(reason):
    global _API
    _API = False
    import sys as _sys
    _sys.stderr.write("cronium: the runtime API is unreachable (%s); using bundled mode\n" % reason)
    try:
        _append({"op": "fallback", "reason": reason})
    except OSError:
        pass


def _quote(part):
    safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~"
    return "".join(c if c in safe else "".join("%%%02X" % b for b in c.encode("utf-8")) for c in part)


def _connect():
    # A plain socket and a few lines of HTTP/1.1: importing http.client costs a Python run
    # tens of milliseconds, more than all its helper calls together.
    import socket as _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(120)
    sock.connect(_ENDPOINT[len("unix:"):])
    return [sock, b""]


def _exchange(conn, request):
    """Sends one request on the kept-alive connection; (status, body bytes)."""
    sock = conn[0]
    sock.sendall(request)
    buf = conn[1]
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the runner closed the connection")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the runner closed the connection")
        buf += chunk
    conn[1] = buf[length:]
    return status, buf[:length]


def _api(method, path, value=None, has_body=False):
    """One runtime API call; the answer's value. Raises _Unreachable when the socket is gone."""
    global _conn
    if not _ENDPOINT.startswith("unix:"):
        raise _Unreachable("CRONIUM_API_ENDPOINT is %r, not unix:PATH" % _ENDPOINT)
    body = _encode({"value": value}).encode("utf-8") if has_body else b""
    url = "/api/v1/runtime/" + "/".join(_quote(p) for p in path)
    request = (
        "%s %s HTTP/1.1\r\nHost: cronium\r\nAuthorization: Bearer %s\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (method, url, _os.environ.get("CRONIUM_API_TOKEN", ""), len(body))
    ).encode("utf-8") + body
    for attempt in (0, 1):
        try:
            if _conn is None:
                _conn = _connect()
            status, data = _exchange(_conn, request)
            break
        except (OSError, ValueError, IndexError) as e:
            # A kept-alive connection the runner closed is retried once on a new one.
            if _conn is not None:
                _conn[0].close()
            _conn = None
            if attempt == 1 or isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
                raise _Unreachable("%s: %s" % (_ENDPOINT, e))
    answer = _json.loads(data or b"null")
    if status != 200:
        err = (answer or {}).get("error") or {}
        raise RuntimeError("cronium runtime API %s: %s" % (status, err.get("message", err)))
    return answer.get("value")


def _live(method, path, value=None, has_body=False):
    """(True, value) from the API, or (False, None) after falling back to bundled mode."""
    if not _API:
        return False, None
    try:
        return True, _api(method, path, value, has_body)
    except _Unreachable as e:
        _fall_back(str(e))
        return False, None


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
    live, value = _live("GET", ["input"])
    if live:
        return {} if value is None else value
    return _read("input.json", {})


def output(value, *key_value):
    """output(obj) replaces the whole output; output(key, value) sets one key of it."""
    if key_value:
        if len(key_value) != 1:
            raise TypeError("cronium.output takes (obj) or (key, value)")
        if not isinstance(value, str):
            raise TypeError("cronium.output(key, value): key must be a string")
        if _live("PUT", ["output", value], key_value[0], True)[0]:
            return
        _append({"op": "output_key", "key": value, "value": key_value[0]})
    else:
        if _live("PUT", ["output"], value, True)[0]:
            return
        _append({"op": "output", "value": value})


def getVariable(name):
    """The variable's value, or None when it does not exist."""
    live, value = _live("GET", ["variables", name])
    if live:
        return value
    return _read("variables.json", {}).get(name)


def setVariable(name, value):
    """Writes a variable; later getVariable calls (in any language) see the new value."""
    if not isinstance(name, str) or not name:
        raise ValueError("cronium.setVariable: name must be a non-empty string")
    _encode(value)  # fail before writing anything if the value is not JSON
    if _live("PUT", ["variables", name], value, True)[0]:
        return
    _append({"op": "set_variable", "name": name, "value": value})
    variables = _read("variables.json", {})
    variables[name] = value
    tmp = _path("variables.json.%d.tmp" % _os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_encode(variables))
    _os.replace(tmp, _path("variables.json"))


def event():
    """Metadata of the run: id, name, job_id, execution_id, attempt, trigger, server, version."""
    live, value = _live("GET", ["event"])
    if live:
        return value
    return _read("event.json", {})


def setCondition(value):
    """Sets the workflow condition (a bool)."""
    if not isinstance(value, bool):
        raise TypeError("cronium.setCondition expects True or False")
    if _live("PUT", ["condition"], value, True)[0]:
        return
    _append({"op": "set_condition", "value": value})


get_variable = getVariable
set_variable = setVariable
set_condition = setCondition
