/*
 * Pure core of the URL state: each view keeps what a person would share (the
 * compare view's runs, metrics and chart settings; the runs table's filter,
 * sort and columns) in the hash's query, #/compare?runs=a,b&x=step ...
 * No DOM, no clock, no I/O (classic script on runwatch.core, or a Node module).
 */
(function (root) {
  'use strict';

  const X_MODES = ['step', 'relative', 'time'];

  function safeDecode(text) {
    try {
      return decodeURIComponent(text.replace(/\+/g, ' '));
    } catch (_err) {
      return text;
    }
  }

  /** {path, params} of a location hash: "#/compare?runs=a,b" → {path: "/compare", params: Map}. */
  function parseHash(hash) {
    const text = String(hash || '').replace(/^#/, '');
    const cut = text.indexOf('?');
    const path = (cut >= 0 ? text.slice(0, cut) : text) || '/';
    const params = new Map();
    if (cut >= 0) {
      for (const part of text.slice(cut + 1).split('&')) {
        if (!part) continue;
        const eq = part.indexOf('=');
        const key = safeDecode(eq >= 0 ? part.slice(0, eq) : part);
        // The raw value: list values are split on "," before decoding.
        if (!params.has(key)) params.set(key, eq >= 0 ? part.slice(eq + 1) : '');
      }
    }
    return { path, params };
  }

  /** A comma-separated list parameter: each item URI-encoded, so an item may hold a comma. */
  function readList(params, key) {
    const raw = params.get(key);
    if (!raw) return [];
    return raw.split(',').map(safeDecode).filter(Boolean);
  }

  function readText(params, key) {
    const raw = params.get(key);
    return raw === undefined ? '' : safeDecode(raw);
  }

  function writeList(items) {
    return items.map((item) => encodeURIComponent(item)).join(',');
  }

  /** "path?key=value&..." from ordered [key, value] pairs, leaving out empty values. */
  function buildHash(path, pairs) {
    const query = pairs
      .filter(([, value]) => value !== '' && value !== null && value !== undefined)
      .map(([key, value]) => `${encodeURIComponent(key)}=${value}`)
      .join('&');
    return '#' + path + (query ? '?' + query : '');
  }

  const COMPARE_DEFAULTS = { x: 'step', smoothing: 0, logY: false };

  /**
   * The compare view's state from the hash query: runs (ids, in order),
   * metrics (the metric filter text), x, smoothing (0 to 0.99), logY,
   * hidden (run ids toggled off), wide (chart keys shown full width),
   * merged (lists of metrics drawn in one chart; "~" separates the metrics
   * of one chart, "," the charts) and collapsed (prefix groups closed).
   */
  function compareStateFromParams(params) {
    const smoothing = Number(readText(params, 'smooth'));
    const x = readText(params, 'x');
    return {
      runs: readList(params, 'runs'),
      metrics: readText(params, 'metrics'),
      x: X_MODES.includes(x) ? x : COMPARE_DEFAULTS.x,
      smoothing: Number.isFinite(smoothing) ? Math.min(0.99, Math.max(0, smoothing)) : 0,
      logY: readText(params, 'log') === '1',
      hidden: readList(params, 'hide'),
      wide: readList(params, 'wide'),
      merged: readList(params, 'merge').map((group) => group.split('~').filter(Boolean)).filter((g) => g.length > 1),
      collapsed: readList(params, 'closed'),
    };
  }

  /** The hash of a compare view's state (defaults left out). */
  function compareHash(state) {
    return buildHash('/compare', [
      ['runs', writeList(state.runs || [])],
      ['metrics', state.metrics ? encodeURIComponent(state.metrics) : ''],
      ['x', state.x && state.x !== COMPARE_DEFAULTS.x ? state.x : ''],
      ['smooth', state.smoothing > 0 ? String(Math.round(state.smoothing * 100) / 100) : ''],
      ['log', state.logY ? '1' : ''],
      ['hide', writeList(state.hidden || [])],
      ['wide', writeList(state.wide || [])],
      ['merge', (state.merged || []).map((group) => group.map(encodeURIComponent).join('~')).join(',')],
      ['closed', writeList(state.collapsed || [])],
    ]);
  }

  /** The runs table's state from the hash query: q (filter text), sort (a column id), dir, cols (column ids). */
  function runsTableStateFromParams(params) {
    const dir = readText(params, 'dir');
    return {
      q: readText(params, 'q'),
      sort: readText(params, 'sort') || 'start',
      dir: dir === 'asc' ? 'asc' : 'desc',
      cols: readList(params, 'cols'),
    };
  }

  function runsTableHash(state) {
    return buildHash('/', [
      ['q', state.q ? encodeURIComponent(state.q) : ''],
      ['sort', state.sort && state.sort !== 'start' ? encodeURIComponent(state.sort) : ''],
      ['dir', state.dir === 'asc' ? 'asc' : ''],
      ['cols', writeList(state.cols || [])],
    ]);
  }

  const api = {
    X_MODES, safeDecode, parseHash, readList, readText, buildHash, compareStateFromParams, compareHash,
    runsTableStateFromParams, runsTableHash,
  };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else Object.assign(((root.runwatch = root.runwatch || {}).core = root.runwatch.core || {}), api);
})(typeof globalThis !== 'undefined' ? globalThis : this);
