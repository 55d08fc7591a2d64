/*
 * Pure core of the image and histogram panels: histograms from the wire, bin
 * edges, quantiles and the distribution bands over steps (as TensorBoard's
 * distributions draw them), step lookups for the sliders, and thinning.
 * No DOM, no clock, no I/O (classic script on runwatch.core, or a Node module).
 */
(function (root) {
  'use strict';
  const inNode = typeof module === 'object' && module.exports;
  const { parseValue } = inNode ? require('./format.js') : root.runwatch.core;
  const { upperBound } = inNode ? require('./series.js') : root.runwatch.core;

  /**
   * The quantiles of the distribution view, lowest first: the minimum, the
   * values at ±1.5, ±1, ±0.5 standard deviations of a normal distribution,
   * the median and the maximum. Bands are drawn between symmetric pairs.
   */
  const DISTRIBUTION_QUANTILES = [0, 0.0668, 0.1587, 0.3085, 0.5, 0.6915, 0.8413, 0.9332, 1];

  /** The most histograms of one name a panel keeps (thinned evenly past it, the newest always kept). */
  const MAX_HISTOGRAMS = 1000;

  /**
   * A histogram from its REST or wire form: ``counts`` as numbers, the range
   * and summary parsed (``sum`` may be "Infinity", ``min``/``max`` null when
   * there was no finite value). Null when the object is not a histogram.
   */
  function histogramFromWire(obj) {
    if (!obj || !Array.isArray(obj.counts)) return null;
    const step = obj.step === null || obj.step === undefined ? null : Number(obj.step);
    const num = (v) => (v === null || v === undefined ? NaN : parseValue(v));
    return {
      name: String(obj.name ?? ''),
      step: Number.isFinite(step) ? step : null,
      ts: typeof obj.timestamp === 'number' ? obj.timestamp : NaN,
      counts: obj.counts.map(Number),
      low: num(obj.low),
      high: num(obj.high),
      size: Number(obj.size) || 0,
      nanCount: Number(obj.nan_count) || 0,
      posinfCount: Number(obj.posinf_count) || 0,
      neginfCount: Number(obj.neginf_count) || 0,
      min: num(obj.min),
      max: num(obj.max),
      sum: num(obj.sum),
    };
  }

  /** The ``counts.length + 1`` equal bin edges from ``low`` to ``high``. */
  function binEdges(hist) {
    const n = hist.counts.length;
    const edges = new Array(n + 1);
    const width = (hist.high - hist.low) / (n || 1);
    for (let i = 0; i <= n; i++) edges[i] = i === n ? hist.high : hist.low + i * width;
    return edges;
  }

  /** How many values fell in the bins (NaN and ±Inf are counted apart). */
  function binnedCount(hist) {
    let total = 0;
    for (const c of hist.counts) total += c;
    return total;
  }

  /**
   * The value below which the fraction ``q`` of the binned values lie,
   * spread evenly inside each bin; q = 0 and 1 are the data's own min and max
   * when known. NaN when no value fell in a bin.
   */
  function histogramQuantile(hist, q) {
    const total = binnedCount(hist);
    if (!(total > 0)) return NaN;
    if (q <= 0 && Number.isFinite(hist.min)) return hist.min;
    if (q >= 1 && Number.isFinite(hist.max)) return hist.max;
    const edges = binEdges(hist);
    const target = Math.min(Math.max(q, 0), 1) * total;
    let seen = 0;
    for (let i = 0; i < hist.counts.length; i++) {
      const c = hist.counts[i];
      if (c > 0 && seen + c >= target) {
        const within = (target - seen) / c;
        return edges[i] + within * (edges[i + 1] - edges[i]);
      }
      seen += c;
    }
    return edges[edges.length - 1];
  }

  /**
   * The distribution over steps: for histograms in step order, their steps
   * and one array per quantile (NaN where a histogram had no binned value).
   */
  function distributionBands(histograms, quantiles = DISTRIBUTION_QUANTILES) {
    const steps = histograms.map((hist) => hist.step);
    const bands = quantiles.map((q) => histograms.map((hist) => histogramQuantile(hist, q)));
    return { steps, quantiles: quantiles.slice(), bands };
  }

  /** The finite extent [lo, hi] over the bands (a unit range around a single value; null without one). */
  function bandsExtent(bands) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const band of bands) {
      for (const v of band) {
        if (Number.isFinite(v)) {
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
      }
    }
    if (lo > hi) return null;
    return lo === hi ? [lo - 0.5, hi + 0.5] : [lo, hi];
  }

  /**
   * Adds a histogram to a list kept in step order (a null step goes first);
   * one already there (same step and time) is not added twice. Returns
   * whether it was added.
   */
  function insertByStep(list, hist) {
    const key = hist.step === null ? -Infinity : hist.step;
    let i = list.length;
    while (i > 0) {
      const before = list[i - 1];
      const beforeKey = before.step === null ? -Infinity : before.step;
      if (beforeKey < key || (beforeKey === key && !(before.ts > hist.ts))) break;
      i--;
    }
    for (let j = i - 1; j >= 0; j--) {
      const other = list[j];
      if ((other.step === null ? -Infinity : other.step) !== key) break;
      if (other.ts === hist.ts) return false;
    }
    list.splice(i, 0, hist);
    return true;
  }

  /** At most ``max`` entries of ``list``, evenly spaced, the first and the last kept (a new array). */
  function thinEvenly(list, max) {
    if (list.length <= max) return list.slice();
    if (max <= 1) return list.slice(-1);
    const out = [];
    const stride = (list.length - 1) / (max - 1);
    for (let i = 0; i < max; i++) out.push(list[Math.round(i * stride)]);
    return out;
  }

  /** Index of the last of ``steps`` (ascending) that is ≤ ``step``; -1 when all are after it. */
  function indexAtOrBefore(steps, step) {
    return upperBound(steps, step) - 1;
  }

  /** The line under an image: its step and caption. */
  function imageLabel(meta) {
    if (!meta) return '';
    const step = meta.step === null || meta.step === undefined ? 'no step' : `step ${meta.step}`;
    return meta.caption ? `${step} · ${meta.caption}` : step;
  }

  /** The step range a slider covers: the union of [first, last] over entries (null when none has a step). */
  function stepRange(entries) {
    let first = Infinity;
    let last = -Infinity;
    for (const entry of entries) {
      if (!entry) continue;
      if (Number.isFinite(entry.first_step) && entry.first_step < first) first = entry.first_step;
      if (Number.isFinite(entry.last_step) && entry.last_step > last) last = entry.last_step;
    }
    return first <= last ? [first, last] : null;
  }

  const api = {
    DISTRIBUTION_QUANTILES, MAX_HISTOGRAMS, histogramFromWire, binEdges, binnedCount, histogramQuantile,
    distributionBands, bandsExtent, indexAtOrBefore, insertByStep, thinEvenly, imageLabel, stepRange,
  };
  if (inNode) module.exports = api;
  else Object.assign(((root.runwatch = root.runwatch || {}).core = root.runwatch.core || {}), api);
})(typeof globalThis !== 'undefined' ? globalThis : this);
