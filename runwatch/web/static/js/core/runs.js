/*
 * Pure core of the runs table: the filter language, columns (built-in,
 * config keys, metric statistics), sorting, and which columns apply.
 * No DOM, no clock, no I/O (classic script on runwatch.core, or a Node module).
 */
(function (root) {
  'use strict';
  const { parseTime, parseValue } = typeof module === 'object' && module.exports
    ? Object.assign({}, require('./format.js'))
    : root.runwatch.core;

  /** Built-in columns: id → {label, numeric}. */
  const BUILTIN_COLUMNS = {
    run: { label: 'Run' },
    status: { label: 'Status' },
    tags: { label: 'Tags' },
    start: { label: 'Started', numeric: true },
    duration: { label: 'Duration', numeric: true },
    step: { label: 'Step', numeric: true },
    steps: { label: 'Steps', numeric: true, rl: true },
    episodes: { label: 'Episodes', numeric: true, rl: true },
    reward: { label: 'Final reward', numeric: true, rl: true },
  };
  const METRIC_STATS = ['last', 'min', 'max'];

  /** Nested config as flat dotted keys: {opt: {lr: 1}} → {"opt.lr": 1}; lists stay values. */
  function flattenConfig(config, prefix = '', out = {}) {
    if (!config || typeof config !== 'object' || Array.isArray(config)) return out;
    for (const [key, value] of Object.entries(config)) {
      const path = prefix ? `${prefix}.${key}` : key;
      if (value && typeof value === 'object' && !Array.isArray(value)) flattenConfig(value, path, out);
      else out[path] = value;
    }
    return out;
  }

  /** Every flat config key of the runs, sorted. */
  function configKeys(runs) {
    const keys = new Set();
    for (const run of runs) for (const key of Object.keys(flattenConfig(run.config))) keys.add(key);
    return Array.from(keys).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  }

  /**
   * A column from its id: a built-in ("run", "status", "start" ...),
   * "config:<key>" or "metric:<name>:<last|min|max>"; null for an unknown id.
   */
  function parseColumn(id) {
    if (Object.prototype.hasOwnProperty.call(BUILTIN_COLUMNS, id)) return { id, type: 'builtin', ...BUILTIN_COLUMNS[id] };
    if (id.startsWith('config:') && id.length > 7) {
      const key = id.slice(7);
      return { id, type: 'config', key, label: key };
    }
    const m = /^metric:(.+):(last|min|max)$/.exec(id);
    if (m) return { id, type: 'metric', name: m[1], stat: m[2], label: `${m[1]} (${m[2]})`, numeric: true };
    return null;
  }

  /** The metric names the metric columns of `ids` read. */
  function metricsOfColumns(ids) {
    const names = new Set();
    for (const id of ids) {
      const col = parseColumn(id);
      if (col && col.type === 'metric') names.add(col.name);
    }
    return Array.from(names);
  }

  /** How long a run has lasted at `now` (epoch seconds). */
  function duration(run, now) {
    const start = parseTime(run.start_time);
    if (!Number.isFinite(start)) return NaN;
    const end = parseTime(run.end_time);
    if (Number.isFinite(end)) return end - start;
    if (run.status === 'running' || run.status === 'paused') return now - start;
    const updated = parseTime(run.updated_at);
    return Number.isFinite(updated) ? updated - start : now - start;
  }

  /** A cell's value (a number, a string, a list, or null when the run has none). */
  function columnValue(run, col, now) {
    if (col.type === 'config') {
      const value = flattenConfig(run.config)[col.key];
      return value === undefined ? null : value;
    }
    if (col.type === 'metric') {
      const stats = run.metrics && run.metrics[col.name];
      if (!stats) return null;
      return parseValue(stats[col.stat]);
    }
    switch (col.id) {
      case 'run': return run.run_id;
      case 'status': return run.status || null;
      case 'tags': return run.tags || [];
      case 'start': return parseTime(run.start_time);
      case 'duration': return duration(run, now);
      case 'step': return run.step ?? null;
      case 'steps': return run.total_steps ? run.total_steps : null;
      case 'episodes': return run.total_episodes ? run.total_episodes : null;
      case 'reward': return run.final_reward === null || run.final_reward === undefined ? null : parseValue(run.final_reward);
      default: return null;
    }
  }

  /** Sort order of two cell values: numbers (NaN after finite), then text; a missing value always last. */
  function compareCells(a, b) {
    const missing = (v) => v === null || v === undefined || (Array.isArray(v) && v.length === 0);
    if (missing(a) || missing(b)) return missing(a) - missing(b);
    const numA = typeof a === 'number';
    const numB = typeof b === 'number';
    if (numA && numB) {
      if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) - Number.isNaN(b);
      return a - b;
    }
    if (numA !== numB) return numA ? -1 : 1;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  /** The runs sorted by a column (a stable sort; missing values last in either direction). */
  function sortRuns(runs, colId, dir, now) {
    const col = parseColumn(colId) || parseColumn('start');
    const sign = dir === 'asc' ? 1 : -1;
    return runs
      .map((run, index) => ({ run, index, value: columnValue(run, col, now) }))
      .sort((a, b) => {
        const missing = (v) => v === null || v === undefined || (Array.isArray(v) && v.length === 0) || (typeof v === 'number' && Number.isNaN(v));
        const ma = missing(a.value);
        const mb = missing(b.value);
        if (ma || mb) return ma - mb || a.index - b.index;
        return sign * compareCells(a.value, b.value) || a.index - b.index;
      })
      .map((entry) => entry.run);
  }

  /**
   * The filter box's language, terms separated by spaces (quotes group):
   * plain text matches the run id, kind, tags and note; status:<s>; tag:<t>;
   * <config key>=<value> (also !=, <, >, <=, >=; numbers compare as numbers).
   */
  function parseRunQuery(text) {
    const query = { text: [], status: [], tags: [], config: [] };
    const tokens = String(text || '').match(/(?:[^\s"]+|"[^"]*")+/g) || [];
    for (const raw of tokens) {
      const token = raw.replace(/"/g, '');
      if (!token) continue;
      const lower = token.toLowerCase();
      if (lower.startsWith('status:') && token.length > 7) query.status.push(lower.slice(7));
      else if (lower.startsWith('tag:') && token.length > 4) query.tags.push(lower.slice(4));
      else {
        const m = /^([^=<>!]+?)(!=|<=|>=|=|<|>)(.*)$/.exec(token);
        if (m) query.config.push({ key: m[1].replace(/^config\./, ''), op: m[2], value: m[3] });
        else query.text.push(lower);
      }
    }
    return query;
  }

  function compareConfig(actual, op, wanted) {
    if (actual === undefined) return op === '!=';
    const a = typeof actual === 'number' ? actual : Number(actual);
    const w = Number(wanted);
    const numeric = wanted.trim() !== '' && Number.isFinite(w) && (typeof actual === 'number' || Number.isFinite(a));
    if (numeric) {
      switch (op) {
        case '=': return a === w;
        case '!=': return a !== w;
        case '<': return a < w;
        case '>': return a > w;
        case '<=': return a <= w;
        case '>=': return a >= w;
        default: return false;
      }
    }
    const text = typeof actual === 'string' ? actual : JSON.stringify(actual);
    if (op === '=') return text.toLowerCase() === wanted.toLowerCase();
    if (op === '!=') return text.toLowerCase() !== wanted.toLowerCase();
    return false;
  }

  /** Whether a run matches a parsed query: every term must match. */
  function matchRun(run, query) {
    const tags = (run.tags || []).map((t) => String(t).toLowerCase());
    const haystack = [run.run_id, run.kind, run.note, ...tags].filter(Boolean).join('\n').toLowerCase();
    if (!query.text.every((term) => haystack.includes(term))) return false;
    if (query.status.length && !query.status.includes(String(run.status).toLowerCase())) return false;
    if (!query.tags.every((tag) => tags.includes(tag))) return false;
    if (query.config.length) {
      const flat = flattenConfig(run.config);
      if (!query.config.every((c) => compareConfig(flat[c.key], c.op, c.value))) return false;
    }
    return true;
  }

  /** Whether any of the runs has RL columns' data (update_step's steps, episodes or a final reward). */
  function hasRlData(runs) {
    return runs.some((run) => Number(run.total_steps) > 0 || Number(run.total_episodes) > 0
      || (run.final_reward !== null && run.final_reward !== undefined));
  }

  /** The visible columns: the built-ins (RL ones only when a run has them) then the chosen ones. */
  function visibleColumns(runs, chosen) {
    const rl = hasRlData(runs);
    const ids = Object.keys(BUILTIN_COLUMNS).filter((id) => rl || !BUILTIN_COLUMNS[id].rl);
    for (const id of chosen || []) if (!ids.includes(id) && parseColumn(id)) ids.push(id);
    return ids.map(parseColumn);
  }

  const api = {
    BUILTIN_COLUMNS, METRIC_STATS, flattenConfig, configKeys, parseColumn, metricsOfColumns, columnValue,
    compareCells, sortRuns, parseRunQuery, matchRun, hasRlData, visibleColumns, runDurationOf: duration,
  };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else Object.assign(((root.runwatch = root.runwatch || {}).core = root.runwatch.core || {}), api);
})(typeof globalThis !== 'undefined' ? globalThis : this);
