// Unit tests of the dashboard's pure core: parsing, formatting, state patches.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const CORE = path.join(__dirname, '..', '..', 'runwatch', 'web', 'static', 'js', 'core');
const format = require(path.join(CORE, 'format.js'));
const state = require(path.join(CORE, 'state.js'));
const sessions = require(path.join(CORE, 'sessions.js'));

test('parseTime reads numbers, numeric strings and ISO times with microseconds', () => {
  assert.equal(format.parseTime(12.5), 12.5);
  assert.equal(format.parseTime('12.5'), 12.5);
  assert.equal(format.parseTime('1970-01-01T00:00:01.250000+00:00'), 1.25);
  assert.equal(format.parseTime('1970-01-01T00:00:01Z'), 1);
  assert.ok(Number.isNaN(format.parseTime('')));
  assert.ok(Number.isNaN(format.parseTime(null)));
});

test('parseValue maps the wire forms of NaN and infinities', () => {
  assert.ok(Number.isNaN(format.parseValue(null)));
  assert.equal(format.parseValue('Infinity'), Infinity);
  assert.equal(format.parseValue('-Infinity'), -Infinity);
  assert.equal(format.parseValue('inf'), Infinity);
  assert.equal(format.parseValue(3), 3);
  assert.equal(format.parseValue(true), 1);
});

test('formatValue writes NaN and infinities and keeps four significant digits', () => {
  assert.equal(format.formatValue(NaN), 'NaN');
  assert.equal(format.formatValue(Infinity), '+Inf');
  assert.equal(format.formatValue(-Infinity), '-Inf');
  assert.equal(format.formatValue(0.123456), '0.1235');
  assert.equal(format.formatValue(1234567), '1.23e+6');
  assert.equal(format.formatValue(42), '42');
  assert.equal(format.formatValue(undefined), '—');
});

test('durations, relative times and steps are written for axes', () => {
  assert.equal(format.formatDuration(3725), '1h 02m');
  assert.equal(format.formatDuration(-1), '—');
  assert.equal(format.formatRelative(90), '1m 30s');
  assert.equal(format.formatRelative(2.5), '2.5s');
  assert.equal(format.formatStep(1500000), '1.5M');
  assert.equal(format.formatStep(25000), '25k');
  assert.equal(format.formatStep(12), '12');
});

test('mergeState merges objects key by key, replaces lists and deletes on null', () => {
  const merged = state.mergeState({ a: { b: 1, c: 2 }, l: [1], gone: 1 }, { a: { c: 3 }, l: [2], gone: null });
  assert.deepEqual(merged, { a: { b: 1, c: 3 }, l: [2] });
  const proto = state.mergeState({}, JSON.parse('{"__proto__": {"x": 1}}'));
  assert.equal(Object.getPrototypeOf(proto), Object.prototype, 'a "__proto__" key stays data');
  assert.deepEqual(Object.keys(proto), ['__proto__']);
});

test('patchChanges lists what a patch sets and removes, objects key by key, bounded', () => {
  const changes = state.patchChanges({ a: null, b: { c: 2 }, d: [1], e: {} });
  assert.deepEqual(changes, [{ path: 'a', op: '-' }, { path: 'b.c', op: '~' }, { path: 'd', op: '~' }, { path: 'e', op: '~' }]);
  const bounded = state.patchChanges({ a: 1, b: 2, c: 3 }, 2);
  assert.deepEqual(bounded, [{ path: 'a', op: '~' }, { path: 'b', op: '~' }, { more: 1 }]);
});

test('a liveness verdict does not reopen an ended session', () => {
  assert.equal(sessions.sessionStatusAfter({ kind: 'log', type: 'application_appears_hung' }, 'active'), 'hung');
  assert.equal(sessions.sessionStatusAfter({ kind: 'log', type: 'application_appears_hung' }, 'ended'), null);
  assert.equal(sessions.sessionStatusAfter({ kind: 'lifecycle', transition: 'completed' }, 'active'), 'ended');
  assert.deepEqual(sessions.sessionTags({ tags: '["a","b"]', gpu: 'x' }), ['a', 'b', 'gpu:x']);
});

test('a datacat session shows suspended once silent past its timeout, and active after a heartbeat', () => {
  const datacat = { suspend_after_seconds: 60 };
  assert.equal(sessions.sessionStatusAt(datacat, 'active', 1000, 1060), 'active');
  assert.equal(sessions.sessionStatusAt(datacat, 'active', 1000, 1060.5), 'suspended');
  assert.equal(sessions.sessionStatusAt(datacat, 'suspended', 1100, 1110), 'active');
  assert.equal(sessions.sessionStatusAt(datacat, 'active', NaN, 5000), 'active'); // never heartbeated
  assert.equal(sessions.sessionStatusAt(datacat, 'ended', 1000, 5000), 'ended');
  assert.equal(sessions.sessionStatusAt({ suspend_after_seconds: null }, 'active', 1000, 5000), 'active');
  assert.deepEqual(sessions.sessionTags({ tags: '["a"]', datacat: '{"type":"gauge"}' }), ['a']);
});
