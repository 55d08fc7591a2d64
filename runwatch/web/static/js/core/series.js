/*
 * Pure core of the charts: metric series, live appends, decimation, the
 * global step, EMA smoothing, x axes, aligned chart columns, grouping.
 * No DOM, no clock, no I/O (classic script on runwatch.core, or a Node module).
 */
(function (root) {
  'use strict';
  const { parseValue } = typeof module === 'object' && module.exports ? require('./format.js') : root.runwatch.core;
  const SYSTEM_PREFIX = 'system/';

  /** An anchored, case-insensitive RegExp for a glob where * is any run of characters and ? one. */
  function globToRegExp(glob) {
    let source = '';
    for (const ch of glob) {
      if (ch === '*') source += '.*';
      else if (ch === '?') source += '.';
      else source += ch.replace(/[\\^$.+()|{}[\]]/g, '\\$&');
    }
    return new RegExp('^' + source + '$', 'i');
  }

  /**
   * A predicate on metric names from the filter box. Terms are separated by
   * spaces or commas and any may match; a term with * or ? is a glob over the
   * whole name, anything else a case-insensitive substring. The empty filter
   * shows every metric except system/*, which has its own panel.
   */
  function makeMetricFilter(text) {
    const terms = String(text || '').split(/[\s,]+/).filter(Boolean);
    if (terms.length === 0) return (name) => !name.startsWith(SYSTEM_PREFIX);
    const tests = terms.map((term) => {
      if (/[*?]/.test(term)) {
        const re = globToRegExp(term);
        return (name) => re.test(name);
      }
      const needle = term.toLowerCase();
      return (name) => name.toLowerCase().includes(needle);
    });
    return (name) => tests.some((test) => test(name));
  }


  // A series is parallel arrays in logging order: t (epoch seconds), s (the
  // run's global step, or null) and v (number; NaN for null/NaN, ±Infinity).
  // A downsampled one also has lo and hi (each bucket's finite min and max,
  // NaN where none) and mk (bit flags per point: 1 NaN, 2 +Inf, 4 -Inf in
  // the bucket), so charts draw a min/max band and keep non-finite markers.
  const MARK_NAN = 1;
  const MARK_PINF = 2;
  const MARK_NINF = 4;

  function createSeries(banded = false) {
    return banded ? { t: [], s: [], v: [], lo: [], hi: [], mk: [] } : { t: [], s: [], v: [] };
  }

  /**
   * A series from a wire series: GET /api/runs/{id}/metrics' {t, step, v} or
   * GET /api/compare's, which adds lo, hi and marks ({nan, pinf, ninf}: bucket
   * indices) when it downsampled.
   */
  function seriesFromWire(wire) {
    const t = (wire && wire.t) || [];
    const step = (wire && wire.step) || [];
    const v = (wire && wire.v) || [];
    const banded = Boolean(wire && Array.isArray(wire.lo) && Array.isArray(wire.hi));
    const out = createSeries(banded);
    for (let i = 0; i < t.length; i++) {
      out.t.push(Number(t[i]));
      out.s.push(step[i] === undefined || step[i] === null ? null : Number(step[i]));
      out.v.push(parseValue(v[i]));
      if (banded) {
        out.lo.push(parseValue(wire.lo[i]));
        out.hi.push(parseValue(wire.hi[i]));
        out.mk.push(0);
      }
    }
    if (banded && wire.marks) {
      const flag = (list, bit) => { for (const i of list || []) if (i >= 0 && i < out.mk.length) out.mk[i] |= bit; };
      flag(wire.marks.nan, MARK_NAN);
      flag(wire.marks.pinf, MARK_PINF);
      flag(wire.marks.ninf, MARK_NINF);
    }
    return out;
  }

  /** First index whose value is greater than x in an ascending array. */
  function upperBound(array, x) {
    let lo = 0;
    let hi = array.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (array[mid] <= x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Epoch seconds as whole microseconds, for comparing times across sources:
   * REST answers carry times rounded to microseconds and /ws carries the
   * producer's float, so one instant can differ by up to a microsecond.
   */
  const usec = (t) => Math.round(t * 1e6);
  /** Whether `t` (seconds) is after a stored time `storedUsec` by more than that rounding. */
  const laterThan = (t, storedUsec) => usec(t) > storedUsec + 1;

  /** First index of an ascending array of seconds whose time is laterThan `storedUsec`. */
  function firstLaterThan(times, storedUsec) {
    let lo = 0;
    let hi = times.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (laterThan(times[mid], storedUsec)) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** Appends a point, keeping time order (producers on other hosts may be slightly out of order). */
  function appendPoint(series, t, step, value) {
    const n = series.t.length;
    const at = n === 0 || t >= series.t[n - 1] ? n : upperBound(series.t, t);
    if (at === n) {
      series.t.push(t);
      series.s.push(step);
      series.v.push(value);
      if (series.lo) {
        series.lo.push(value);
        series.hi.push(value);
        series.mk.push(0);
      }
      return;
    }
    series.t.splice(at, 0, t);
    series.s.splice(at, 0, step);
    series.v.splice(at, 0, value);
    if (series.lo) {
      series.lo.splice(at, 0, value);
      series.hi.splice(at, 0, value);
      series.mk.splice(at, 0, 0);
    }
  }

  /**
   * Min/max decimation: cut the series' time range into `columns` buckets and
   * keep each bucket's min and max point (plus its first NaN, so a gap
   * survives), in time order, the way the server downsamples. The first and
   * last points are always kept so the latest value stays exact. Returns the
   * series itself when it is already small enough.
   */
  function decimateMinMax(series, columns) {
    const n = series.t.length;
    columns = Math.max(1, Math.floor(columns));
    if (n <= 2 * columns + 2) return series;
    const t0 = series.t[0];
    const span = series.t[n - 1] - t0 || 1;
    const keep = [0];
    let bucket = -1;
    let iMin = -1;
    let iMax = -1;
    let iNaN = -1;
    const flush = () => {
      const picked = [iMin, iMax, iNaN].filter((i) => i >= 0).sort((a, b) => a - b);
      for (const i of picked) if (i !== keep[keep.length - 1]) keep.push(i);
    };
    for (let i = 1; i < n - 1; i++) {
      const b = Math.min(columns - 1, Math.floor(((series.t[i] - t0) / span) * columns));
      if (b !== bucket) {
        flush();
        bucket = b;
        iMin = iMax = iNaN = -1;
      }
      const v = series.v[i];
      if (Number.isNaN(v)) {
        if (iNaN < 0) iNaN = i;
        continue;
      }
      if (iMin < 0 || v < series.v[iMin]) iMin = i;
      if (iMax < 0 || v > series.v[iMax]) iMax = i;
    }
    flush();
    keep.push(n - 1);
    const out = createSeries(Boolean(series.lo));
    for (const i of keep) {
      out.t.push(series.t[i]);
      out.s.push(series.s[i]);
      out.v.push(series.v[i]);
      if (series.lo) {
        out.lo.push(series.lo[i]);
        out.hi.push(series.hi[i]);
        out.mk.push(series.mk[i]);
      }
    }
    return out;
  }

  /**
   * The global step of a live metric event: its own (every logging call of a
   * monitor has one), else the latest step of its run, as the store reads a
   * call without one (the system sampler's). `counter.last` follows the run.
   */
  function liveStep(counter, step) {
    if (typeof step === 'number' && Number.isFinite(step)) {
      if (step > counter.last) counter.last = step;
      return step;
    }
    return counter.last >= 0 ? counter.last : 0;
  }

  /** A step counter continuing after the histories of a run's series (their largest step and time). */
  function stepCounter(seriesList) {
    const counter = { last: -1, lastTime: -Infinity };
    for (const s of seriesList) {
      const n = s.t.length;
      if (!n) continue;
      if (s.t[n - 1] > counter.lastTime) counter.lastTime = s.t[n - 1];
      for (let i = n - 1; i >= 0 && i >= n - 4; i--) if (s.s[i] !== null && s.s[i] > counter.last) counter.last = s.s[i];
    }
    return counter;
  }

  /**
   * TensorBoard's smoothing: an exponential moving average debiased at the
   * start, weight in [0, 1) (0 is no smoothing). Non-finite values are passed
   * through and do not enter the average.
   */
  function smoothEma(values, weight) {
    const out = new Array(values.length);
    if (!(weight > 0)) {
      for (let i = 0; i < values.length; i++) out[i] = values[i];
      return out;
    }
    let last = 0;
    let count = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (!Number.isFinite(v)) {
        out[i] = v;
        continue;
      }
      last = last * weight + (1 - weight) * v;
      count++;
      out[i] = last / (1 - Math.pow(weight, count));
    }
    return out;
  }

  /** The x of each point for an axis: "step" (global step), "time" (epoch seconds) or "relative" (seconds since startTs). */
  function xValues(series, mode, startTs) {
    if (mode === 'step') return series.s.map((s) => (s === null || s === undefined ? NaN : s));
    if (mode === 'relative') {
      const start = Number.isFinite(startTs) ? startTs : series.t.length ? series.t[0] : 0;
      return series.t.map((t) => t - start);
    }
    return series.t.slice();
  }

  function isAscending(xs) {
    for (let i = 1; i < xs.length; i++) if (!(xs[i] >= xs[i - 1])) return false;
    return true;
  }

  /**
   * The sorted union of several x arrays (finite values only), without
   * duplicates. Ascending arrays (the usual case: time and global steps
   * grow) are merged in one pass; anything else is sorted.
   */
  function unionX(xsList) {
    if (!xsList.every(isAscending)) {
      const all = [];
      for (const xs of xsList) for (const x of xs) if (Number.isFinite(x)) all.push(x);
      const sorted = Float64Array.from(all).sort();
      let m = 0;
      for (let i = 0; i < sorted.length; i++) if (m === 0 || sorted[i] !== sorted[m - 1]) sorted[m++] = sorted[i];
      return sorted.slice(0, m);
    }
    let total = 0;
    for (const xs of xsList) total += xs.length;
    const out = new Float64Array(total);
    const at = new Array(xsList.length).fill(0);
    let n = 0;
    let last = -Infinity;
    for (;;) {
      let best = Infinity;
      for (let k = 0; k < xsList.length; k++) {
        const xs = xsList[k];
        let i = at[k];
        while (i < xs.length && !(xs[i] > last && Number.isFinite(xs[i]))) i++; // skip duplicates and NaN
        at[k] = i;
        if (i < xs.length && xs[i] < best) best = xs[i];
      }
      if (best === Infinity) break;
      out[n++] = best;
      last = best;
    }
    return out.slice(0, n);
  }

  /**
   * Aligned columns for a chart (uPlot's data layout) from several traces.
   *
   * traces: [{series, startTs}]; opts: {x: "step" | "time" | "relative",
   * smoothing (EMA weight), logY}. Returns {x, columns, markers, points}:
   * `columns[i]` holds trace i's {raw, smooth (null without smoothing), lo,
   * hi (null without a band)}, arrays aligned with `x` in which a point the
   * trace does not have is undefined (a chart bridges it) and a non-finite
   * value, or a value at or below 0 on a log scale, is null (a gap). `markers`
   * lists {trace, x, kind} with kind "nan", "pinf" or "ninf"; `points`
   * counts the points drawn; `xs` and `smoothed` are each trace's own x and
   * smoothed values, in the order of its series (for read-outs).
   */
  function chartData(traces, opts) {
    const mode = (opts && opts.x) || 'time';
    const weight = (opts && opts.smoothing) || 0;
    const logY = Boolean(opts && opts.logY);
    const xsList = traces.map((tr) => xValues(tr.series, mode, tr.startTs));
    const x = unionX(xsList);
    const markers = [];
    const smoothedList = [];
    let points = 0;
    const drawable = (v) => (Number.isFinite(v) ? (logY && v <= 0 ? null : v) : null);
    const columns = traces.map((tr, k) => {
      const s = tr.series;
      const xs = xsList[k];
      const raw = new Array(x.length);
      const smooth = weight > 0 ? new Array(x.length) : null;
      const banded = Boolean(s.lo);
      const lo = banded ? new Array(x.length) : null;
      const hi = banded ? new Array(x.length) : null;
      const smoothed = weight > 0 ? smoothEma(s.v, weight) : null;
      smoothedList.push(smoothed);
      let j = 0;
      for (let i = 0; i < xs.length; i++) {
        const xi = xs[i];
        if (!Number.isFinite(xi)) continue;
        while (j < x.length && x[j] < xi) j++;
        if (j >= x.length) break;
        const v = s.v[i];
        raw[j] = drawable(v);
        if (smooth) smooth[j] = drawable(smoothed[i]);
        if (banded) {
          lo[j] = drawable(s.lo[i]);
          hi[j] = drawable(s.hi[i]);
        }
        points++;
        const mk = banded ? s.mk[i] : 0;
        if (Number.isNaN(v) || mk & MARK_NAN) markers.push({ trace: k, x: xi, kind: 'nan' });
        if (v === Infinity || mk & MARK_PINF) markers.push({ trace: k, x: xi, kind: 'pinf' });
        if (v === -Infinity || mk & MARK_NINF) markers.push({ trace: k, x: xi, kind: 'ninf' });
      }
      return { raw, smooth, lo, hi };
    });
    return { x, xs: xsList, columns, smoothed: smoothedList, markers, points };
  }

  /** The index of the point of an ascending x array nearest to `target` (-1 when none is finite). */
  function nearestIndex(xs, target) {
    let lo = 0;
    let hi = xs.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] < target) lo = mid + 1;
      else hi = mid;
    }
    let best = lo;
    if (lo > 0 && Math.abs(xs[lo - 1] - target) <= Math.abs(xs[lo] - target)) best = lo - 1;
    return Number.isFinite(xs[best]) ? best : -1;
  }

  /**
   * Metric names grouped by prefix (the part before the first "/"), as
   * [{prefix, names}]: names without a prefix first, under "", then the
   * prefixes in order, system/ last; names sorted naturally within a group.
   */
  function groupByPrefix(names) {
    const groups = new Map();
    for (const name of names) {
      const cut = name.indexOf('/');
      const prefix = cut > 0 ? name.slice(0, cut) : '';
      if (!groups.has(prefix)) groups.set(prefix, []);
      groups.get(prefix).push(name);
    }
    const natural = (a, b) => a.localeCompare(b, undefined, { numeric: true });
    const rank = (p) => (p === '' ? 0 : p === 'system' ? 2 : 1);
    return Array.from(groups.entries())
      .sort((a, b) => rank(a[0]) - rank(b[0]) || natural(a[0], b[0]))
      .map(([prefix, list]) => ({ prefix, names: list.sort(natural) }));
  }

  /**
   * Chart layout from metric names and the metrics a user put together:
   * [{key, metrics}] in name order, where `merged` is a list of metric lists
   * drawn in one chart each (its first metric gives the chart its place and
   * key); the other names get a chart of their own.
   */
  function chartSpecs(names, merged) {
    const present = new Set(names);
    const taken = new Set();
    const specs = [];
    for (const group of merged || []) {
      const metrics = group.filter((m) => present.has(m) && !taken.has(m));
      if (metrics.length === 0) continue;
      for (const m of metrics) taken.add(m);
      specs.push({ key: metrics[0], metrics });
    }
    for (const name of names) if (!taken.has(name)) specs.push({ key: name, metrics: [name] });
    const natural = (a, b) => a.key.localeCompare(b.key, undefined, { numeric: true });
    return specs.sort(natural);
  }

  const api = {
    MARK_NAN, MARK_PINF, MARK_NINF, globToRegExp, makeMetricFilter, createSeries, seriesFromWire, upperBound,
    usec, laterThan, firstLaterThan,
    appendPoint, decimateMinMax, liveStep, stepCounter, smoothEma, xValues, unionX, chartData, nearestIndex,
    groupByPrefix, chartSpecs,
  };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else Object.assign(((root.runwatch = root.runwatch || {}).core = root.runwatch.core || {}), api);
})(typeof globalThis !== 'undefined' ? globalThis : this);
