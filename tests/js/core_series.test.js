// Unit tests of the charts' pure core: series, smoothing, alignment, steps, grouping.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const series = require(path.join(__dirname, '..', '..', 'runwatch', 'web', 'static', 'js', 'core', 'series.js'));

function make(t, s, v) {
  const out = series.createSeries();
  t.forEach((ti, i) => series.appendPoint(out, ti, s[i], v[i]));
  return out;
}

test('seriesFromWire keeps NaN and infinities and reads bands and marks of buckets', () => {
  const plain = series.seriesFromWire({ t: [1, 2, 3], step: [0, null, 2], v: [1, null, '-Infinity'] });
  assert.deepEqual(plain.s, [0, null, 2]);
  assert.ok(Number.isNaN(plain.v[1]));
  assert.equal(plain.v[2], -Infinity);
  assert.equal(plain.lo, undefined);
  const banded = series.seriesFromWire({ t: [1, 2], step: [4, 9], v: [1.5, null], lo: [1, null], hi: [2, null], marks: { nan: [1], pinf: [0], ninf: [] } });
  assert.deepEqual(banded.lo.slice(0, 1), [1]);
  assert.deepEqual(banded.mk, [series.MARK_PINF, series.MARK_NAN]);
});

test('appendPoint keeps time order for a late point', () => {
  const s = make([1, 3, 2], [0, 2, 1], [10, 30, 20]);
  assert.deepEqual(s.t, [1, 2, 3]);
  assert.deepEqual(s.v, [10, 20, 30]);
});

test('decimateMinMax keeps extremes, the first NaN of a bucket, and the last point', () => {
  const n = 1000;
  const t = Array.from({ length: n }, (_, i) => i);
  const v = t.map((i) => (i === 500 ? 1000 : i === 700 ? NaN : Math.sin(i)));
  const out = series.decimateMinMax(make(t, t, v), 50);
  assert.ok(out.t.length <= 3 * 50 + 2, `${out.t.length} points`);
  assert.ok(out.v.includes(1000), 'the spike survives');
  assert.ok(out.v.some(Number.isNaN), 'the NaN survives');
  assert.equal(out.t[out.t.length - 1], n - 1);
  const small = make([1, 2], [0, 1], [1, 2]);
  assert.equal(series.decimateMinMax(small, 50), small);
});

test('smoothEma is TensorBoard\'s debiased moving average and passes NaN through', () => {
  const out = series.smoothEma([1, 2, 3, NaN, 4], 0.6);
  assert.equal(out[0], 1, 'debiased: the first value is itself');
  assert.ok(Math.abs(out[1] - 1.625) < 1e-12);
  assert.ok(Number.isNaN(out[3]));
  assert.ok(out[4] > out[2] && out[4] < 4);
  assert.deepEqual(series.smoothEma([1, 5], 0), [1, 5]);
});

test('chartData aligns traces on the union of x: missing points undefined, non-finite ones null and marked', () => {
  const a = make([10, 11, 12], [0, 1, 2], [1, NaN, Infinity]);
  const b = make([20, 21], [1, 3], [5, 6]);
  const data = series.chartData([{ series: a }, { series: b }], { x: 'step' });
  assert.deepEqual(Array.from(data.x), [0, 1, 2, 3]);
  assert.deepEqual(Array.from(data.columns[0].raw), [1, null, null, undefined]);
  assert.deepEqual(Array.from(data.columns[1].raw), [undefined, 5, undefined, 6]);
  assert.deepEqual(data.markers.map((m) => [m.trace, m.x, m.kind]), [[0, 1, 'nan'], [0, 2, 'pinf']]);
  assert.equal(data.points, 5);
  assert.equal(data.columns[0].smooth, null);
});

test('chartData on a log scale leaves out values at or below zero, and smooths when asked', () => {
  const a = make([1, 2, 3], [0, 1, 2], [-1, 0, 10]);
  const data = series.chartData([{ series: a }], { x: 'time', logY: true, smoothing: 0.5 });
  assert.deepEqual(data.columns[0].raw, [null, null, 10]);
  assert.equal(data.columns[0].smooth.length, 3);
});

test('chartData measures relative time from the run start', () => {
  const a = make([100, 101.5], [0, 1], [1, 2]);
  const data = series.chartData([{ series: a, startTs: 99 }], { x: 'relative' });
  assert.deepEqual(Array.from(data.x), [1, 2.5]);
});

test('a live point takes its event\'s global step; one without takes its run\'s latest, as the store reads it', () => {
  const history = make([1, 2, 3], [0, 1, 2], [1, 1, 1]);
  const counter = series.stepCounter([history]);
  assert.equal(counter.last, 2);
  assert.equal(series.liveStep(counter, 3), 3);
  assert.equal(series.liveStep(counter, null), 3, 'a sampler reading: the step it happened at');
  assert.equal(series.liveStep(counter, 7), 7);
  assert.equal(counter.last, 7);
  assert.equal(series.liveStep({ last: -1, lastTime: -Infinity }, undefined), 0);
});

test('groupByPrefix puts names without a prefix first and system last', () => {
  const groups = series.groupByPrefix(['val/acc', 'system/cpu', 'loss', 'train/loss10', 'train/loss2']);
  assert.deepEqual(groups.map((g) => g.prefix), ['', 'train', 'val', 'system']);
  assert.deepEqual(groups[1].names, ['train/loss2', 'train/loss10']);
});

test('chartSpecs draws merged metrics in one chart and every other name alone', () => {
  const specs = series.chartSpecs(['a', 'b', 'c'], [['b', 'a'], ['missing', 'x']]);
  assert.deepEqual(specs, [{ key: 'b', metrics: ['b', 'a'] }, { key: 'c', metrics: ['c'] }]);
});

test('makeMetricFilter: substrings, globs, and system/ hidden by default', () => {
  const all = series.makeMetricFilter('');
  assert.equal(all('loss'), true);
  assert.equal(all('system/cpu'), false);
  const glob = series.makeMetricFilter('train/*');
  assert.equal(glob('train/loss'), true);
  assert.equal(glob('val/loss'), false);
});

test('nearestIndex and unionX', () => {
  assert.equal(series.nearestIndex([0, 10, 20], 14), 1);
  assert.equal(series.nearestIndex([0, 10, 20], 16), 2);
  assert.equal(series.nearestIndex([], 1), -1);
  assert.deepEqual(Array.from(series.unionX([[1, 3], [2, 3, NaN]])), [1, 2, 3]);
});

test('laterThan treats a /ws float and its REST time rounded to microseconds as one instant', () => {
  // The producer's time.time(): the store keeps it rounded to the microsecond, below or above.
  const live = 1765131291.1234564;
  const storedDown = series.usec(1765131291.123456);
  const storedUp = series.usec(1765131291.123457);
  assert.equal(series.laterThan(live, storedDown), false);
  assert.equal(series.laterThan(live, storedUp), false);
  assert.equal(series.laterThan(live + 0.00001, storedDown), true);
  assert.equal(series.laterThan(live, -Infinity), true);
  const times = [1.000001, 2.0000004, 2.0000011, 3.5];
  assert.equal(series.firstLaterThan(times, series.usec(2.000001)), 3);
  assert.equal(series.firstLaterThan(times, -Infinity), 0);
  assert.equal(series.firstLaterThan(times, series.usec(4)), times.length);
});
