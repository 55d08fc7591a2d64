// Unit tests of the views' pure core: URL state, the runs table, alerts, log lines.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const CORE = path.join(__dirname, '..', '..', 'runwatch', 'web', 'static', 'js', 'core');
const url = require(path.join(CORE, 'urlstate.js'));
const runs = require(path.join(CORE, 'runs.js'));
const alerts = require(path.join(CORE, 'alerts.js'));
const events = require(path.join(CORE, 'events.js'));

test('the compare view\'s state round-trips through the URL, run ids with commas included', () => {
  const state = {
    runs: ['run,1', 'b/2'], metrics: 'train/*', x: 'time', smoothing: 0.6, logY: true, hidden: ['b/2'],
    wide: ['loss'], merged: [['loss', 'val/loss']], collapsed: ['system'],
  };
  const hash = url.compareHash(state);
  assert.ok(hash.startsWith('#/compare?runs=run%2C1,b%2F2'), hash);
  const parsed = url.compareStateFromParams(url.parseHash(hash).params);
  assert.deepEqual(parsed, state);
});

test('the compare view\'s defaults are left out of the URL and restored from it', () => {
  const hash = url.compareHash({ runs: ['a'] });
  assert.equal(hash, '#/compare?runs=a');
  const parsed = url.compareStateFromParams(url.parseHash(hash).params);
  assert.equal(parsed.x, 'step');
  assert.equal(parsed.smoothing, 0);
  assert.equal(parsed.logY, false);
  const bad = url.compareStateFromParams(url.parseHash('#/compare?x=nope&smooth=7').params);
  assert.equal(bad.x, 'step');
  assert.equal(bad.smoothing, 0.99);
});

test('the runs table\'s state round-trips through the URL', () => {
  const state = { q: 'status:running lr>0.01', sort: 'metric:loss:min', dir: 'asc', cols: ['config:lr', 'metric:loss:min'] };
  const parsed = url.runsTableStateFromParams(url.parseHash(url.runsTableHash(state)).params);
  assert.deepEqual(parsed, state);
  assert.equal(url.runsTableHash({ q: '', sort: 'start', dir: 'desc', cols: [] }), '#/');
});

const RUNS = [
  { run_id: 'a', kind: 'training', status: 'running', config: { lr: 0.1, opt: { name: 'adam' } }, tags: ['best'], note: 'baseline', start_time: 1, metrics: { loss: { last: 0.5, min: 0.2, max: 1 } } },
  { run_id: 'b', kind: 'training', status: 'completed', config: { lr: 0.01 }, tags: [], note: '', start_time: 2, total_episodes: 3, final_reward: 7, metrics: { loss: { last: 0.3, min: 0.1, max: 2 } } },
  { run_id: 'c', kind: 'training', status: 'failed', config: {}, tags: ['Best'], note: '', start_time: 3, metrics: {} },
];
const pick = (query) => RUNS.filter((r) => runs.matchRun(r, runs.parseRunQuery(query))).map((r) => r.run_id);

test('the filter language: text, status, tag and config comparisons', () => {
  assert.deepEqual(pick('baseline'), ['a']);
  assert.deepEqual(pick('status:completed'), ['b']);
  assert.deepEqual(pick('tag:best'), ['a', 'c']);
  assert.deepEqual(pick('lr=0.01'), ['b']);
  assert.deepEqual(pick('lr>0.05'), ['a']);
  assert.deepEqual(pick('opt.name=adam'), ['a']);
  assert.deepEqual(pick('config.lr!=0.1'), ['b', 'c']);
  assert.deepEqual(pick('status:running tag:best'), ['a']);
  assert.deepEqual(pick(''), ['a', 'b', 'c']);
});

test('sorting by a metric or config column puts runs without a value last in either direction', () => {
  const ids = (col, dir) => runs.sortRuns(RUNS, col, dir, 10).map((r) => r.run_id);
  assert.deepEqual(ids('metric:loss:min', 'asc'), ['b', 'a', 'c']);
  assert.deepEqual(ids('metric:loss:min', 'desc'), ['a', 'b', 'c']);
  assert.deepEqual(ids('config:lr', 'asc'), ['b', 'a', 'c']);
  assert.deepEqual(ids('start', 'desc'), ['c', 'b', 'a']);
});

test('RL columns show only when a run has update_step steps, episodes or a final reward', () => {
  const withRl = runs.visibleColumns(RUNS, ['config:lr']).map((c) => c.id);
  assert.ok(withRl.includes('steps') && withRl.includes('episodes') && withRl.includes('reward'));
  assert.equal(withRl[withRl.length - 1], 'config:lr');
  const without = runs.visibleColumns([RUNS[0], RUNS[2]], []).map((c) => c.id);
  assert.ok(!without.includes('steps') && !without.includes('episodes') && !without.includes('reward'));
  assert.equal(runs.columnValue(RUNS[0], runs.parseColumn('episodes'), 0), null);
  const stepsOnly = runs.visibleColumns([{ ...RUNS[0], total_steps: 40 }], []).map((c) => c.id);
  assert.ok(stepsOnly.includes('steps'));
});

test('every run has the Step column: its latest global step, sortable, missing before any call', () => {
  const logged = [{ ...RUNS[0], step: 900 }, { ...RUNS[1], step: 12000 }, { ...RUNS[2], step: null }];
  assert.ok(runs.visibleColumns([logged[0]], []).map((c) => c.id).includes('step'));
  assert.equal(runs.columnValue(logged[1], runs.parseColumn('step'), 0), 12000);
  assert.equal(runs.columnValue(logged[2], runs.parseColumn('step'), 0), null);
  assert.deepEqual(runs.sortRuns(logged, 'step', 'desc', 10).map((r) => r.run_id), ['b', 'a', 'c']);
});

test('columns and config keys', () => {
  assert.deepEqual(runs.configKeys(RUNS), ['lr', 'opt.name']);
  assert.deepEqual(runs.parseColumn('metric:val/loss:max'), { id: 'metric:val/loss:max', type: 'metric', name: 'val/loss', stat: 'max', label: 'val/loss (max)', numeric: true });
  assert.equal(runs.parseColumn('nonsense'), null);
  assert.deepEqual(runs.metricsOfColumns(['config:lr', 'metric:loss:min', 'metric:loss:last']), ['loss']);
});

const T = (state, ts, extra = {}) => ({ run_id: 'r1', rule: 'nan_loss', severity: 'critical', labels: {}, state, updated_at: ts, ...extra });

test('alert transitions become instances with their history; a resolved one stays listed', () => {
  const list = alerts.alertInstances([
    T('resolved', 12), T('firing', 11, { active_since: 10 }), T('pending', 10, { active_since: 10 }),
    T('firing', 20, { run_id: 'r2', active_since: 19 }),
  ]);
  assert.deepEqual(list.map((i) => [i.run_id, i.state]), [['r2', 'firing'], ['r1', 'resolved']]);
  const resolved = list[1];
  assert.deepEqual(resolved.history.map((h) => h.state), ['pending', 'firing', 'resolved']);
  assert.equal(resolved.firedAt, 11);
  assert.deepEqual(alerts.alertWindow(resolved, 30), { since: -20, until: 42 });
  assert.deepEqual(alerts.alertWindow(list[0], 30), { since: -10, until: null });
  assert.deepEqual(alerts.stateCounts(list), { firing: 1, pending: 0, resolved: 1, inactive: 0 });
  assert.deepEqual(alerts.filterInstances(list, { state: 'resolved' }).map((i) => i.run_id), ['r1']);
  assert.deepEqual(alerts.filterInstances(list, { run: 'R2' }).map((i) => i.run_id), ['r2']);
  assert.deepEqual(alerts.filterInstances(list, { severity: 'warning' }), []);
  const annotated = alerts.alertInstances([T('firing', 1, { annotations: { summary: 'NaN' } }), T('resolved', 2)]);
  assert.deepEqual(annotated[0].annotations, { summary: 'NaN' }, 'a resolution without annotations keeps the firing ones');
});

test('a log record reads as a log line; a traceback is kept apart as text', () => {
  const line = events.logLine({
    kind: 'log', event_type: 'log',
    event_data: { logger: 'train', message: 'diverged', module: 'm', exception: { type: 'ValueError', message: 'x', traceback: 'Traceback...\n' } },
  });
  assert.equal(line.message, 'diverged');
  assert.equal(line.source, 'train');
  assert.equal(line.traceback, 'Traceback...\n');
  assert.deepEqual(line.data, { module: 'm', exception: { type: 'ValueError', message: 'x' } });
  const error = events.logLine({ kind: 'exception', event_type: 'error', event_data: { error_type: 'KeyError', message: 'k', traceback: 'TB', component: 'trainer' } });
  assert.equal(error.message, 'KeyError: k');
  assert.equal(error.traceback, 'TB');
  const plain = events.logLine({ kind: 'log', event_type: 'episode_end', event_data: {} });
  assert.equal(plain.data, null);
});

test('a live alert event becomes the same row as a stored one, and applies to the active set', () => {
  const row = events.prepareEventRow(events.wireToEventRow({ kind: 'alert', timestamp: 5, rule: 'r', state: 'firing', severity: 'error', labels: { m: 'loss' } }));
  assert.equal(row.event_type, 'alert');
  const active = new Map();
  events.applyAlert(active, events.alertFromRow(row));
  assert.equal(active.size, 1);
  events.applyAlert(active, { ...events.alertFromRow(row), state: 'resolved' });
  assert.equal(active.size, 0);
});
