'use strict';
// Cronium runtime helpers for Node.js scripts.
//
// Bundled mode: the run's files, below. API mode ($CRONIUM_API_ENDPOINT set, or CRONIUM_HELPERS
// is api): the helpers are synchronous functions and Node has no synchronous socket, so each call
// runs `cronium-runner helper --json OP ...`, the same client the Bash helpers use, which speaks
// HTTP on the run's socket and falls back to bundled mode (recording it) when it cannot.
//
// Written by cronium-runner into a library directory shared by runs (or, failing that, into the
// run's .cronium/) and reachable through NODE_PATH, so that require('cronium') works in every
// target. Never locates data relative to this file: reads the run's data from $CRONIUM_HELPER_DIR
// and appends updates to updates.jsonl there, which the runner forwards to the server.

const fs = require('fs');
const path = require('path');

const DIR = process.env.CRONIUM_HELPER_DIR || '.cronium';

function file(name) {
  return path.join(DIR, name);
}

function read(name, dflt) {
  let text;
  try {
    text = fs.readFileSync(file(name), 'utf8');
  } catch (e) {
    if (e.code === 'ENOENT') return dflt;
    throw e;
  }
  const value = JSON.parse(text);
  return value === null ? dflt : value;
}

// undefined is not JSON; treat it as null, as JSON.stringify does inside arrays.
function json(value) {
  return value === undefined ? null : value;
}

function append(update) {
  const line = Buffer.from(JSON.stringify(update) + '\n', 'utf8');
  // One write() on an O_APPEND descriptor: lines from concurrent writers never interleave.
  const fd = fs.openSync(file('updates.jsonl'), 'a', 0o600);
  try {
    let off = 0;
    while (off < line.length) off += fs.writeSync(fd, line, off);
  } finally {
    fs.closeSync(fd);
  }
}

const API = !!process.env.CRONIUM_API_ENDPOINT || process.env.CRONIUM_HELPERS === 'api';

function api(op, ...args) {
  const { execFileSync } = require('child_process');
  let out;
  try {
    out = execFileSync(process.env.CRONIUM_RUNNER_BIN, ['helper', '--json', op, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (e) {
    const msg = (e.stderr || '').toString().trim() || e.message;
    throw new Error(msg);
  }
  out = out.trim();
  return out === '' ? undefined : JSON.parse(out);
}

function input() {
  if (API) {
    const v = api('input');
    return v === null || v === undefined ? {} : v;
  }
  return read('input.json', {});
}

function output(value, ...rest) {
  if (rest.length > 0) {
    if (typeof value !== 'string') throw new TypeError('cronium.output(key, value): key must be a string');
    if (API) return void api('output', value, JSON.stringify(json(rest[0])));
    append({ op: 'output_key', key: value, value: json(rest[0]) });
  } else {
    if (API) return void api('output', JSON.stringify(json(value)));
    append({ op: 'output', value: json(value) });
  }
}

function getVariable(name) {
  if (API) {
    const v = api('getVariable', String(name));
    return v === undefined ? null : v;
  }
  const vars = read('variables.json', {});
  return Object.prototype.hasOwnProperty.call(vars, name) ? vars[name] : null;
}

function setVariable(name, value) {
  if (typeof name !== 'string' || name === '') throw new TypeError('cronium.setVariable: name must be a non-empty string');
  const v = json(value);
  if (API) return void api('setVariable', name, JSON.stringify(v));
  append({ op: 'set_variable', name, value: v });
  const vars = read('variables.json', {});
  vars[name] = v;
  const tmp = file(`variables.json.${process.pid}.tmp`);
  fs.writeFileSync(tmp, JSON.stringify(vars));
  fs.renameSync(tmp, file('variables.json'));
}

function event() {
  if (API) return api('event');
  return read('event.json', {});
}

function setCondition(value) {
  if (typeof value !== 'boolean') throw new TypeError('cronium.setCondition expects true or false');
  if (API) return void api('setCondition', String(value));
  append({ op: 'set_condition', value });
}

module.exports = {
  input,
  output,
  getVariable,
  get_variable: getVariable,
  setVariable,
  set_variable: setVariable,
  event,
  setCondition,
  set_condition: setCondition,
};
