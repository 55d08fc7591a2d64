// Unit tests of the image and histogram panels' pure core.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const media = require(path.join(__dirname, '..', '..', 'runwatch', 'web', 'static', 'js', 'core', 'media.js'));

const hist = (step, counts, low = 0, high = counts.length, extra = {}) => media.histogramFromWire({
  name: 'q', step, timestamp: 100 + (step ?? 0), counts, low, high, size: counts.reduce((a, b) => a + b, 0),
  nan_count: 0, posinf_count: 0, neginf_count: 0, min: null, max: null, sum: 0, ...extra,
});

test('a histogram from the wire keeps its counts and parses its summary, infinities included', () => {
  const h = media.histogramFromWire({
    name: 'q', step: 3, timestamp: 5.5, counts: [1, 2], low: -1, high: 1, size: 5, nan_count: 1,
    posinf_count: 1, neginf_count: 0, min: -1, max: 0.5, sum: 'Infinity',
  });
  assert.deepEqual([h.step, h.counts, h.low, h.high, h.nanCount, h.posinfCount, h.sum], [3, [1, 2], -1, 1, 1, 1, Infinity]);
  assert.equal(media.histogramFromWire({ name: 'q' }), null);
  assert.ok(Number.isNaN(media.histogramFromWire({ counts: [], min: null }).min));
});

test('bin edges split the range evenly, ending exactly at high', () => {
  assert.deepEqual(media.binEdges(hist(0, [1, 1, 1, 1], 0, 1)), [0, 0.25, 0.5, 0.75, 1]);
  assert.deepEqual(media.binEdges(hist(0, [], 2, 2)), [2]);
});

test('quantiles interpolate inside bins; the ends are the data\'s min and max when known', () => {
  const h = hist(0, [2, 0, 2], 0, 3, { min: 0.1, max: 2.9 });
  assert.equal(media.histogramQuantile(h, 0.5), 1); // half of the values are in the first bin
  assert.equal(media.histogramQuantile(h, 0.25), 0.5);
  assert.equal(media.histogramQuantile(h, 0), 0.1);
  assert.equal(media.histogramQuantile(h, 1), 2.9);
  assert.equal(media.histogramQuantile(hist(0, [0, 4], 0, 2), 0), 1); // no min known: the first value's bin
  assert.ok(Number.isNaN(media.histogramQuantile(hist(0, [0, 0]), 0.5)));
});

test('the distribution bands hold one value per histogram and quantile, widening outwards', () => {
  const list = [hist(0, [1, 2, 1], 0, 3), hist(10, [0, 0, 0], 0, 3), hist(20, [1, 2, 1], 10, 13)];
  const { steps, bands, quantiles } = media.distributionBands(list);
  assert.deepEqual(steps, [0, 10, 20]);
  assert.equal(bands.length, quantiles.length);
  assert.ok(Number.isNaN(bands[4][1])); // the empty histogram
  assert.equal(bands[4][0], 1.5);
  assert.equal(bands[4][2], 11.5);
  for (let q = 1; q < bands.length; q++) assert.ok(bands[q][0] >= bands[q - 1][0]);
  assert.deepEqual(media.bandsExtent(bands), [0, 13]);
  assert.deepEqual(media.bandsExtent([[2, NaN], [2]]), [1.5, 2.5]);
  assert.equal(media.bandsExtent([[NaN]]), null);
});

test('a step picks the entry at or before it', () => {
  const steps = [0, 4, 8];
  assert.deepEqual([-1, 0, 3, 4, 7, 8, 100].map((s) => media.indexAtOrBefore(steps, s)), [-1, 0, 0, 1, 1, 2, 2]);
  assert.equal(media.indexAtOrBefore([], 3), -1);
});

test('live histograms join the list in step order, once each', () => {
  const list = [hist(0, [1]), hist(8, [1])];
  assert.equal(media.insertByStep(list, hist(4, [1])), true);
  assert.equal(media.insertByStep(list, hist(4, [1])), false); // the same one again (a replay after a reload)
  const later = { ...hist(4, [2]), ts: 999 };
  assert.equal(media.insertByStep(list, later), true);
  assert.equal(media.insertByStep(list, hist(null, [1])), true);
  assert.deepEqual(list.map((h) => [h.step, h.counts[0]]), [[null, 1], [0, 1], [4, 1], [4, 2], [8, 1]]);
});

test('thinning keeps the first and the last, evenly spaced', () => {
  const list = Array.from({ length: 101 }, (_, i) => i);
  assert.deepEqual(media.thinEvenly(list, 5), [0, 25, 50, 75, 100]);
  assert.deepEqual(media.thinEvenly([1, 2], 5), [1, 2]);
  assert.deepEqual(media.thinEvenly(list, 1), [100]);
});

test('image labels and the sliders\' step range', () => {
  assert.equal(media.imageLabel({ step: 7, caption: 'episode 0' }), 'step 7 · episode 0');
  assert.equal(media.imageLabel({ step: null }), 'no step');
  assert.deepEqual(media.stepRange([{ first_step: 5, last_step: 9 }, null, { first_step: 2, last_step: 6 }]), [2, 9]);
  assert.equal(media.stepRange([{ first_step: null, last_step: null }]), null);
});
