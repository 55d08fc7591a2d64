/*
 * runwatch live dashboard: one plain ES2020 file, no build step, no dependencies.
 * It speaks the protocol in docs/protocol.md (REST under api/, live events on ws).
 *
 * Why a hand-written canvas line chart instead of a charting library:
 *  - the dashboard ships inside the Python package and must work offline, so
 *    there is no CDN and no npm; a vendored chart library would be many times
 *    the size of this renderer, which only needs lines, gaps, NaN markers,
 *    hover and drag-to-zoom;
 *  - it is fast enough for 1M-point series because it never holds them: the
 *    server downsamples history to min/max buckets (max_points = 2 x canvas
 *    width), live points are compacted to min/max per pixel column once a chart
 *    holds more than 4 x its width, and dense ranges are drawn as at most ~2
 *    points per pixel column.
 *
 * Layout of this file:
 *   1. pure core: parsing, metric filter, state merge, event normalisation,
 *      min/max decimation, ticks, formatting. No DOM, no clock, no I/O, so it
 *      can be tested in Node (it is exported as module.exports there).
 *   2. I/O shell: auth token, REST client, live websocket with reconnect.
 *   3. rendering helpers: frame scheduler, DOM builder, JSON tree.
 *   4. the canvas chart.
 *   5. views (runs list, run page, sessions list, session page) and the hash router.
 */
(function (root) {
  'use strict';

  // ===========================================================================
  // 1. Pure core
  // ===========================================================================

  const RUN_STATUSES = ['running', 'paused', 'completed', 'failed', 'crashed', 'hung'];
  const LEVELS = ['debug', 'info', 'warning', 'error', 'critical'];
  const EVENT_KINDS = ['log', 'lifecycle', 'exception', 'alert'];
  // Mirrors runwatch.events.STATUS_AFTER.
  const STATUS_AFTER = {
    started: 'running', paused: 'paused', resumed: 'running', completed: 'completed', failed: 'failed',
  };
  const RUN_PAGE_KINDS = ['metric', 'log', 'alert', 'lifecycle', 'state', 'exception', 'heartbeat'];
  const RUNS_LIST_KINDS = ['lifecycle', 'heartbeat'];
  // The store commits in batches (every 0.5 s by default): a REST read right
  // after a live event may not see it yet, so views read again after this long.
  const STORE_SETTLE_MS = 1500;
  const SYSTEM_PREFIX = 'system/';
  const ACTIVE_ALERT_STATES = new Set(['firing', 'pending']);

  /** Seconds since the epoch from a number, a numeric string or an ISO-8601 string; NaN if unparseable. */
  function parseTime(value) {
    if (typeof value === 'number') return value;
    if (typeof value !== 'string' || value.trim() === '') return NaN;
    const text = value.trim();
    if (/^[+-]?\d+(\.\d+)?$/.test(text)) return Number(text);
    // Date.parse keeps milliseconds at best and is lenient in engine-specific
    // ways, so the fraction (the server sends microseconds) is added separately.
    const m = /^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$/i.exec(text);
    if (!m) return Date.parse(text) / 1000;
    let zone = m[3] || 'Z'; // the protocol's timestamps are UTC
    if (/^[+-]\d{4}$/.test(zone)) zone = zone.slice(0, 3) + ':' + zone.slice(3);
    const whole = Date.parse(m[1].replace(' ', 'T') + zone.toUpperCase());
    return whole / 1000 + (m[2] ? Number(m[2]) : 0);
  }

  /** A metric value from JSON: null is NaN, "Infinity"/"-Infinity" (or "inf") are ±Infinity. */
  function parseValue(value) {
    if (typeof value === 'number') return value;
    if (value === null || value === undefined) return NaN;
    if (typeof value === 'boolean') return value ? 1 : 0;
    if (typeof value === 'string') {
      const s = value.trim().toLowerCase();
      if (s === 'infinity' || s === '+infinity' || s === 'inf' || s === '+inf') return Infinity;
      if (s === '-infinity' || s === '-inf') return -Infinity;
      return s === '' ? NaN : Number(s);
    }
    return NaN;
  }

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

  function isPlainObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  }

  function setOwn(target, key, value) {
    // defineProperty so that a key named "__proto__" stays data, not a prototype.
    Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
  }

  /**
   * Deep-merge a state patch into a state, as runwatch.events.merge_state does:
   * nested objects merge key by key, lists and scalars replace, null deletes.
   * Returns a new object; neither argument is modified.
   */
  function mergeState(base, patch) {
    const out = {};
    if (isPlainObject(base)) for (const key of Object.keys(base)) setOwn(out, key, base[key]);
    if (!isPlainObject(patch)) return out;
    for (const key of Object.keys(patch)) {
      const value = patch[key];
      if (value === null) delete out[key];
      else if (isPlainObject(value)) setOwn(out, key, mergeState(isPlainObject(out[key]) ? out[key] : {}, value));
      else setOwn(out, key, value);
    }
    return out;
  }

  /**
   * The EventRow (as GET /api/runs/{id}/events returns it) for a live wire
   * event, or null for kinds that are not timeline events (metric, state,
   * heartbeat). The mapping mirrors how the store writes event rows
   * (runwatch/store/encode.py), so live and fetched rows look the same.
   */
  function wireToEventRow(event) {
    if (!event || typeof event !== 'object') return null;
    const base = { id: null, timestamp: event.timestamp, kind: event.kind };
    switch (event.kind) {
      case 'log':
        return { ...base, event_type: event.type, level: event.level || 'info', event_data: event.data || {} };
      case 'lifecycle': {
        const data = { status: STATUS_AFTER[event.transition] || event.transition };
        if (event.transition === 'started') {
          data.kind = event.run_kind || 'training';
          if (event.config != null) data.config = event.config;
        }
        if (event.final_reward != null) data.final_reward = event.final_reward;
        if (event.metadata != null) data.metadata = event.metadata;
        return { ...base, event_type: 'run_' + event.transition, level: 'info', event_data: data };
      }
      case 'exception':
        return {
          ...base, event_type: 'error', level: event.severity || 'error',
          event_data: {
            category: event.category, severity: event.severity, component: event.component,
            message: event.message, error_type: event.error_type, traceback: event.traceback,
          },
        };
      case 'alert':
        return {
          ...base, event_type: 'alert', level: LEVELS.includes(event.severity) ? event.severity : 'warning',
          event_data: {
            rule: event.rule, state: event.state, severity: event.severity, value: event.value,
            labels: event.labels || {}, annotations: event.annotations || {}, active_since: event.active_since,
          },
        };
      default:
        return null;
    }
  }

  /** Adds the client-side fields of an EventRow: _ts (epoch seconds) and _key (for de-duplication). */
  function prepareEventRow(row) {
    row._ts = parseTime(row.timestamp);
    row.level = row.level || 'info';
    if (row.event_data === undefined || row.event_data === null) row.event_data = {};
    const size = JSON.stringify(row.event_data).length;
    row._key = `${row.kind}|${row.event_type}|${Math.round(row._ts * 1000)}|${size}`;
    return row;
  }

  /** Newest first; ties keep the server's id order (higher id is newer). */
  function compareEventsNewestFirst(a, b) {
    if (b._ts !== a._ts) return b._ts - a._ts;
    return (b.id ?? 0) - (a.id ?? 0);
  }

  /** The alert an alert EventRow describes. */
  function alertFromRow(row) {
    const data = row.event_data || {};
    return {
      rule: data.rule ?? row.event_type, state: data.state, severity: data.severity ?? row.level,
      value: data.value, labels: data.labels || {}, annotations: data.annotations || {},
      active_since: data.active_since, ts: row._ts,
    };
  }

  function alertKey(alert) {
    const labels = Object.keys(alert.labels || {}).sort().map((k) => `${k}=${alert.labels[k]}`).join(',');
    return `${alert.rule}{${labels}}`;
  }

  /** Applies one alert transition to a Map of active (pending/firing) alerts. Apply oldest first. */
  function applyAlert(active, alert) {
    const key = alertKey(alert);
    if (ACTIVE_ALERT_STATES.has(alert.state)) active.set(key, alert);
    else active.delete(key);
  }

  // A series is three parallel arrays in time order: t (epoch seconds),
  // s (step or null) and v (number; NaN for null/NaN, ±Infinity).
  function createSeries() {
    return { t: [], s: [], v: [] };
  }

  /** A series from the metrics endpoint's {t, step, v} arrays. */
  function seriesFromWire(wire) {
    const t = (wire && wire.t) || [];
    const step = (wire && wire.step) || [];
    const v = (wire && wire.v) || [];
    const out = createSeries();
    for (let i = 0; i < t.length; i++) {
      out.t.push(Number(t[i]));
      out.s.push(step[i] === undefined || step[i] === null ? null : Number(step[i]));
      out.v.push(parseValue(v[i]));
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

  /** Appends a point, keeping time order (producers on other hosts may be slightly out of order). */
  function appendPoint(series, t, step, value) {
    const n = series.t.length;
    if (n === 0 || t >= series.t[n - 1]) {
      series.t.push(t);
      series.s.push(step);
      series.v.push(value);
      return;
    }
    const i = upperBound(series.t, t);
    series.t.splice(i, 0, t);
    series.s.splice(i, 0, step);
    series.v.splice(i, 0, value);
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
    const out = createSeries();
    for (const i of keep) {
      out.t.push(series.t[i]);
      out.s.push(series.s[i]);
      out.v.push(series.v[i]);
    }
    return out;
  }

  /** "Nice" tick values (1, 2, 5 x 10^k steps) covering [lo, hi]. */
  function niceTicks(lo, hi, maxTicks) {
    if (!(hi > lo) || !Number.isFinite(lo) || !Number.isFinite(hi)) return Number.isFinite(lo) ? [lo] : [];
    const raw = (hi - lo) / Math.max(1, maxTicks);
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / magnitude;
    // The nice step nearest to the raw one on a log scale (d3's thresholds).
    const step = (norm >= Math.SQRT2 * 5 ? 10 : norm >= Math.sqrt(10) ? 5 : norm >= Math.SQRT2 ? 2 : 1) * magnitude;
    const first = Math.ceil(lo / step);
    // A step below the numbers' float resolution (two epoch times a microsecond
    // apart) would make k++ a no-op and the loop endless: no ticks to draw then.
    if (!Number.isFinite(first) || Math.abs(first) >= 2 ** 52) return [lo];
    const ticks = [];
    for (let k = first; k * step <= hi + step * 1e-9 && ticks.length <= 4 * maxTicks + 10; k++) ticks.push(k * step);
    return ticks;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172800, 604800];

  /**
   * Tick times (epoch seconds) for [lo, hi] on round local-clock boundaries.
   * `offsetSeconds` is the local UTC offset (east positive).
   */
  function timeTicks(lo, hi, maxTicks, offsetSeconds) {
    if (!(hi > lo)) return { ticks: Number.isFinite(lo) ? [lo] : [], step: 1 };
    const raw = (hi - lo) / Math.max(1, maxTicks);
    if (raw < 1) {
      // Sub-second ranges: the step is the ticks' spacing, so labels can show the fraction it needs.
      const ticks = niceTicks(lo, hi, maxTicks);
      return { ticks, step: ticks.length > 1 ? ticks[1] - ticks[0] : raw };
    }
    // The round step nearest to the raw one on a log scale.
    let step = Math.ceil(raw / 86400) * 86400;
    if (raw <= TIME_STEPS[TIME_STEPS.length - 1]) {
      step = TIME_STEPS.reduce((best, s) => (Math.abs(Math.log(s / raw)) < Math.abs(Math.log(best / raw)) ? s : best));
    }
    const ticks = [];
    for (let t = Math.ceil((lo + offsetSeconds) / step) * step - offsetSeconds; t <= hi; t += step) ticks.push(t);
    return { ticks, step };
  }

  /** A y range with a little headroom; a flat series gets a symmetric band. */
  function paddedRange(lo, hi) {
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
    if (lo === hi) {
      const pad = Math.abs(lo) * 0.1 || 1;
      return [lo - pad, hi + pad];
    }
    const pad = (hi - lo) * 0.06;
    return [lo - pad, hi + pad];
  }

  function formatValue(v) {
    if (v === null || v === undefined) return '—';
    if (typeof v !== 'number') v = parseValue(v);
    if (Number.isNaN(v)) return 'NaN';
    if (v === Infinity) return '+Inf';
    if (v === -Infinity) return '-Inf';
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(4)));
  }

  function formatCount(n) {
    if (n === null || n === undefined || n === '') return '—';
    const v = Number(n);
    if (!Number.isFinite(v)) return String(n);
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    return String(Math.round(v * 100) / 100);
  }

  function formatDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return '—';
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    const pad = (x) => String(x).padStart(2, '0');
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${pad(m)}m`;
    if (m) return `${m}m ${pad(sec)}s`;
    return `${sec}s`;
  }

  /** Local wall-clock text for epoch seconds: HH:MM:SS, optionally with the date and milliseconds. */
  function formatClock(ts, { date = false, millis = false } = {}) {
    if (!Number.isFinite(ts)) return '—';
    const d = new Date(ts * 1000);
    const p = (x, n = 2) => String(x).padStart(n, '0');
    let text = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    if (millis) text += '.' + p(d.getMilliseconds(), 3);
    if (date) text = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` + text;
    return text;
  }

  function formatTickTime(ts, step) {
    const d = new Date(Math.round(ts * 1000));
    const p = (x) => String(x).padStart(2, '0');
    if (step >= 86400) return `${p(d.getMonth() + 1)}-${p(d.getDate())}`;
    if (step >= 60) return `${p(d.getHours())}:${p(d.getMinutes())}`;
    const text = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    if (!(step < 1 - 1e-9)) return text;
    // Ticks less than a second apart would all read the same second.
    const digits = step >= 0.1 - 1e-9 ? 1 : step >= 0.01 - 1e-9 ? 2 : 3;
    return text + '.' + String(d.getMilliseconds()).padStart(3, '0').slice(0, digits);
  }

  /** How long a run has lasted at `now` (epoch seconds). */
  function runDuration(row, now) {
    const start = parseTime(row.start_time);
    if (!Number.isFinite(start)) return NaN;
    const end = parseTime(row.end_time);
    if (Number.isFinite(end)) return end - start;
    if (row.status === 'running' || row.status === 'paused') return now - start;
    const updated = parseTime(row.updated_at);
    return Number.isFinite(updated) ? updated - start : now - start;
  }

  function statusClass(status) {
    return 'status-' + (RUN_STATUSES.includes(status) ? status : 'unknown');
  }

  /** A one-line description of an EventRow for the timeline. */
  function summarizeEvent(row) {
    const d = row.event_data || {};
    switch (row.kind) {
      case 'lifecycle': {
        let text = `status → ${d.status ?? '?'}`;
        if (d.final_reward != null) text += ` · final reward ${formatValue(parseValue(d.final_reward))}`;
        if (d.metadata && d.metadata.reason) text += ` · ${d.metadata.reason}`;
        return text;
      }
      case 'exception':
        return `${d.error_type || 'Error'}: ${d.message || ''}${d.component ? ` (${d.component})` : ''}`;
      case 'alert': {
        let text = `${d.rule ?? '?'} ${d.state ?? ''}`;
        if (d.value != null) text += ` · value ${formatValue(parseValue(d.value))}`;
        const summary = d.annotations && (d.annotations.summary || d.annotations.description);
        if (summary) text += ` · ${summary}`;
        return text;
      }
      default: {
        const text = JSON.stringify(d);
        return text === '{}' ? '' : text.length > 240 ? text.slice(0, 239) + '…' : text;
      }
    }
  }

  // ---- alerts from GET /api/alerts, and sessions (docs/sessions.md) ----

  /** The alert an item of GET /api/alerts describes (ts: when it last changed, epoch seconds). */
  function alertFromApi(item) {
    const updated = parseTime(item.updated_at);
    const since = parseTime(item.active_since);
    return {
      rule: item.rule, state: item.state, severity: item.severity, value: item.value,
      labels: item.labels || {}, annotations: item.annotations || {}, active_since: item.active_since,
      ts: Number.isFinite(updated) ? updated : since,
    };
  }

  /**
   * Like applyAlert, but a transition older than what the map holds for the
   * same alert is ignored (a buffered live event replayed after a fresher
   * snapshot from GET /api/alerts).
   */
  function applyAlertIfNewer(active, alert) {
    const current = active.get(alertKey(alert));
    if (current && Number.isFinite(current.ts) && alert.ts < current.ts) return false;
    applyAlert(active, alert);
    return true;
  }

  const SESSION_STATUSES = ['active', 'suspended', 'hung', 'crashed', 'ended'];
  // Mirrors runwatch.sessions.RUN_STATUSES_OF (run status → session status).
  const SESSION_STATUS_OF_RUN = {
    running: 'active', paused: 'active', hung: 'hung', crashed: 'crashed', completed: 'ended', failed: 'ended',
  };
  // Mirrors runwatch.store.encode.LIVENESS_STATUS: log events that set a live run's status.
  const LIVENESS_VERDICTS = {
    application_appears_hung: 'hung', application_crashed: 'crashed', application_recovered: 'active',
  };

  /**
   * The session status a live wire event sets, given the current one; null
   * when it sets none. A liveness verdict does not reopen an ended session
   * (the store applies verdicts to live runs only).
   */
  function sessionStatusAfter(event, current) {
    if (!event || typeof event !== 'object') return null;
    if (event.kind === 'lifecycle') {
      const run = STATUS_AFTER[event.transition];
      return run ? SESSION_STATUS_OF_RUN[run] : null;
    }
    if (event.kind === 'log') {
      const status = LIVENESS_VERDICTS[event.type];
      if (!status || current === 'ended') return null;
      return status;
    }
    return null;
  }

  /**
   * The status a session shows at `now` (epoch seconds): a live session of
   * datacat's (one with suspend_after_seconds) that heartbeated is suspended
   * once silent for longer than that, and active again after a heartbeat, as
   * the server computes it when read; others keep their stored status.
   */
  function sessionStatusAt(session, status, lastHeartbeat, now) {
    const after = session && session.suspend_after_seconds;
    if (typeof after !== 'number' || (status !== 'active' && status !== 'suspended')) return status;
    if (!Number.isFinite(lastHeartbeat)) return status;
    return now - lastHeartbeat > after ? 'suspended' : 'active';
  }

  /** The tag list of a live session metric (its tags map "tags" to the JSON text of the list). */
  function sessionTags(tags) {
    if (!isPlainObject(tags)) return [];
    const out = [];
    for (const [key, raw] of Object.entries(tags)) {
      let value = raw;
      if (typeof raw === 'string') {
        try {
          value = JSON.parse(raw);
        } catch (_err) {
          value = raw;
        }
      }
      if (key === 'tags' && Array.isArray(value) && value.every((tag) => typeof tag === 'string')) out.unshift(...value);
      else if (key !== 'user_id' && key !== 'metadata' && key !== 'datacat') out.push(`${key}:${typeof raw === 'string' ? raw : JSON.stringify(raw)}`);
    }
    return out;
  }

  /** A session event (GET /api/sessions/{id} shape) from a live log wire event. */
  function sessionEventFromWire(event) {
    return { timestamp: event.timestamp, name: event.type, level: event.level || 'info', data: event.data || {} };
  }

  /** Adds _ts and a de-duplication _key to a session event. */
  function prepareSessionEvent(event) {
    event._ts = parseTime(event.timestamp);
    event.level = event.level || 'info';
    if (event.data === undefined || event.data === null) event.data = {};
    // Milliseconds from whole microseconds: a REST answer's ISO time and the same
    // event's /ws float then agree (rounding the float straight to ms may not).
    event._key = `${event.name}|${Math.round(Math.round(event._ts * 1e6) / 1000)}|${JSON.stringify(event.data).length}`;
    return event;
  }

  /**
   * What a state patch does, as [{path, op}] in its order: op "~" (a value
   * set: lists and scalars replace) or "-" (null: removed); objects merge, so
   * their keys are listed one by one. At most `limit` entries (then one {more: n}).
   */
  function patchChanges(patch, limit = 50) {
    const out = [];
    let more = 0;
    const walk = (part, path) => {
      for (const [key, value] of Object.entries(part)) {
        const at = path ? `${path}.${key}` : key;
        if (isPlainObject(value) && Object.keys(value).length) walk(value, at);
        else if (out.length < limit) out.push({ path: at, op: value === null ? '-' : '~' });
        else more++;
      }
    };
    walk(isPlainObject(patch) ? patch : {}, '');
    if (more) out.push({ more });
    return out;
  }

  const core = {
    RUN_STATUSES, LEVELS, EVENT_KINDS, STATUS_AFTER, SYSTEM_PREFIX, SESSION_STATUSES,
    parseTime, parseValue, globToRegExp, makeMetricFilter, mergeState, wireToEventRow, prepareEventRow,
    compareEventsNewestFirst, alertFromRow, alertFromApi, alertKey, applyAlert, applyAlertIfNewer,
    createSeries, seriesFromWire, appendPoint,
    decimateMinMax, niceTicks, timeTicks, paddedRange, formatValue, formatCount, formatDuration, formatClock,
    runDuration, summarizeEvent, sessionStatusAfter, sessionStatusAt, sessionTags, sessionEventFromWire,
    prepareSessionEvent,
    patchChanges,
  };

  if (typeof document === 'undefined') {
    // Loaded outside a browser (unit tests): expose the pure core only.
    if (typeof module !== 'undefined' && module.exports) module.exports = core;
    return;
  }

  // ===========================================================================
  // 2. I/O shell: auth, REST, websocket
  // ===========================================================================

  const TOKEN_KEY = 'runwatch.token';
  const auth = { token: null };

  /** Takes ?token= from the page URL into sessionStorage and out of the address bar. */
  function initAuth() {
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get('token');
    let stored = null;
    try {
      if (fromUrl) sessionStorage.setItem(TOKEN_KEY, fromUrl);
      stored = sessionStorage.getItem(TOKEN_KEY);
    } catch (_err) {
      // Storage can be disabled; the token then lives for this page only.
    }
    auth.token = fromUrl || stored || null;
    if (fromUrl) {
      params.delete('token');
      const query = params.toString();
      history.replaceState(null, '', location.pathname + (query ? '?' + query : '') + location.hash);
    }
  }

  /** The directory index.html was served from; API and websocket paths are relative to it. */
  function baseUrl() {
    return location.origin + location.pathname.replace(/[^/]*$/, '');
  }

  class ApiError extends Error {
    constructor(status, message, field) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.field = field ?? null;
    }
  }

  function apiUrl(path, params) {
    const url = new URL(path, baseUrl());
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
    }
    return url;
  }

  function authHeaders() {
    return auth.token ? { Authorization: 'Bearer ' + auth.token } : {};
  }

  /** GET a JSON endpoint; throws ApiError with the server's error message. */
  async function apiGet(path, params) {
    let response;
    try {
      response = await fetch(apiUrl(path, params), {
        headers: { Accept: 'application/json', ...authHeaders() }, cache: 'no-store',
      });
    } catch (_err) {
      throw new ApiError(0, 'server unreachable', null);
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_err) {
      // Not JSON (a proxy's error page, say): reported below by status.
    }
    if (!response.ok) {
      const error = body && body.error;
      let message = (error && error.message) || `${response.status} ${response.statusText}`.trim();
      if (response.status === 401 || response.status === 403) {
        message += auth.token ? ' (the token was rejected)' : ' (open the dashboard with ?token=…)';
      }
      throw new ApiError(response.status, message, error && error.field);
    }
    return body;
  }

  const runPath = (runId, rest = '') => `api/runs/${encodeURIComponent(runId)}${rest}`;

  /** The header dot that shows the live connection's state. */
  const connStatus = {
    set(state) {
      const el = document.getElementById('conn-status');
      if (!el) return;
      el.dataset.state = state;
      const text = { idle: 'idle', connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' }[state];
      el.querySelector('.conn-text').textContent = text || state;
    },
  };

  let bannerTimer = 0;
  function showBanner(text, kind = 'warning', ms = 8000) {
    const el = document.getElementById('banner');
    if (!el) return;
    el.textContent = text;
    el.dataset.kind = kind;
    el.hidden = false;
    clearTimeout(bannerTimer);
    if (ms) bannerTimer = setTimeout(() => { el.hidden = true; }, ms);
  }

  function wsUrl(filter) {
    const url = new URL('ws', baseUrl());
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    // The filter goes in the query too, so the connection is filtered from its
    // first message; the subscribe message then confirms it.
    if (filter.runs) url.searchParams.set('runs', filter.runs.join(','));
    if (filter.kinds) url.searchParams.set('kinds', filter.kinds.join(','));
    if (filter.metrics) url.searchParams.set('metrics', filter.metrics.join(','));
    url.searchParams.set('format', 'columns');
    if (auth.token) url.searchParams.set('token', auth.token);
    return url.href;
  }

  /**
   * The events a `columns` message stands for, in timestamp order. Columns
   * are a third of the bytes of one object per event, so JSON.parse — the
   * costly part with fast runs — does a third of the work.
   */
  function eventsOfColumns(data) {
    const events = Array.isArray(data.events) ? data.events.slice() : [];
    for (const block of Array.isArray(data.metrics) ? data.metrics : []) {
      const { names, steps, timestamps, values } = block;
      for (let row = 0; row < timestamps.length; row++) {
        const rowValues = {};
        for (let column = 0; column < names.length; column++) rowValues[names[column]] = values[column][row];
        events.push({
          kind: 'metric', run_id: block.run_id, timestamp: timestamps[row],
          step: steps[row], values: rowValues, tags: block.tags,
        });
      }
    }
    return events.sort((a, b) => a.timestamp - b.timestamp);
  }

  /**
   * A /ws subscription that reconnects with exponential backoff and jitter.
   * Handlers: onSubscribed() after every (re)connection, once the server has
   * confirmed the filter (the caller re-fetches history then, which covers
   * whatever was missed while disconnected); onEvents(events) per batch;
   * onLagged(dropped) when the server dropped events for this client.
   */
  class LiveSocket {
    constructor(filter, handlers) {
      this.filter = filter;
      this.handlers = handlers;
      this.ws = null;
      this.attempt = 0;
      this.retryTimer = 0;
      this.closed = false;
    }

    start() {
      this.connect();
      return this;
    }

    connect() {
      if (this.closed) return;
      connStatus.set(this.attempt ? 'reconnecting' : 'connecting');
      let ws;
      try {
        ws = new WebSocket(wsUrl(this.filter));
      } catch (_err) {
        this.scheduleRetry();
        return;
      }
      this.ws = ws;
      let subscribed = false;
      let fallback = 0;
      const markSubscribed = () => {
        clearTimeout(fallback);
        if (subscribed || ws !== this.ws) return;
        subscribed = true;
        this.attempt = 0;
        connStatus.set('live');
        this.handlers.onSubscribed?.();
      };
      ws.onopen = () => {
        ws.send(JSON.stringify({ subscribe: { ...this.filter, format: 'columns' } }));
        // Should an older server not confirm, do not wait forever for it.
        fallback = setTimeout(markSubscribed, 2000);
      };
      ws.onmessage = (message) => {
        if (ws !== this.ws) return;
        let data;
        try {
          data = JSON.parse(message.data);
        } catch (_err) {
          return;
        }
        switch (data && data.type) {
          case 'subscribed':
            markSubscribed();
            break;
          case 'batch':
            markSubscribed();
            this.handlers.onEvents?.(Array.isArray(data.events) ? data.events : []);
            break;
          case 'columns':
            markSubscribed();
            this.handlers.onEvents?.(eventsOfColumns(data));
            break;
          case 'lagged':
            this.handlers.onLagged?.(data.dropped);
            break;
          default:
            break; // unknown message types are ignored, so the server can add some
        }
      };
      ws.onerror = () => {}; // a close event always follows
      ws.onclose = (event) => {
        clearTimeout(fallback);
        if (ws !== this.ws) return;
        this.ws = null;
        if (this.closed) return;
        // 1008: dropped for lagging past the hard limit; the reconnection re-fetches history.
        if (event.code === 1008) this.handlers.onLagged?.(null);
        this.scheduleRetry();
      };
    }

    scheduleRetry() {
      if (this.closed) return;
      connStatus.set('reconnecting');
      const delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
      this.attempt = Math.min(this.attempt + 1, 10);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    }

    close() {
      this.closed = true;
      clearTimeout(this.retryTimer);
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000);
      connStatus.set('idle');
    }
  }

  /** Calls fn at most once per `ms`, always running a trailing call. */
  function throttle(fn, ms) {
    let last = 0;
    let timer = 0;
    const wrapped = () => {
      const wait = last + ms - Date.now();
      if (wait <= 0) {
        clearTimeout(timer);
        timer = 0;
        last = Date.now();
        fn();
      } else if (!timer) {
        timer = setTimeout(() => { timer = 0; wrapped(); }, wait);
      }
    };
    wrapped.cancel = () => { clearTimeout(timer); timer = 0; };
    return wrapped;
  }

  // ===========================================================================
  // 3. Rendering helpers
  // ===========================================================================

  // Every redraw goes through one requestAnimationFrame: events only mark
  // things dirty, so a burst of batches costs one draw per frame.
  const frame = { jobs: new Map(), requested: false };

  function schedule(key, fn) {
    frame.jobs.set(key, fn);
    if (!frame.requested) {
      frame.requested = true;
      requestAnimationFrame(runFrame);
    }
  }

  function runFrame() {
    frame.requested = false;
    const jobs = Array.from(frame.jobs.values());
    frame.jobs.clear();
    for (const job of jobs) {
      try {
        job();
      } catch (err) {
        console.error('runwatch: render failed', err);
      }
    }
  }

  /** Builds an element: h('div', {class: 'x', onclick: fn}, child, 'text', [more]). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else if (value === true) el.setAttribute(key, '');
      else el.setAttribute(key, String(value));
    }
    appendChildren(el, children);
    return el;
  }

  function appendChildren(el, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) appendChildren(el, child);
      else el.append(child instanceof Node ? child : String(child));
    }
  }

  function statusBadge(status, attrs = {}) {
    return h('span', { ...attrs, class: `badge ${statusClass(status)}` }, status || 'unknown');
  }

  function setStatusBadge(el, status) {
    el.className = `badge ${statusClass(status)}`;
    el.textContent = status || 'unknown';
  }

  /**
   * A collapsible JSON tree. `open` (a Map of path → boolean) remembers what
   * the user expanded across re-renders; nodes deeper than `depth` start
   * closed, and closed nodes build their children only when opened.
   */
  function jsonTree(value, { open = new Map(), depth = 1, empty = '(empty)' } = {}) {
    const tree = h('div', { class: 'tree' });
    if (isPlainObject(value) || Array.isArray(value)) {
      const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
      if (entries.length === 0) tree.append(h('div', { class: 'muted' }, empty));
      appendTreeEntries(tree, entries, '', 0, { open, depth });
    } else {
      tree.append(treeLeaf(null, value));
    }
    return tree;
  }

  const TREE_CHILD_LIMIT = 500;

  function appendTreeEntries(parent, entries, path, level, opts) {
    for (const [key, value] of entries.slice(0, TREE_CHILD_LIMIT)) {
      parent.append(treeNode(key, value, path + '\u0000' + key, level, opts));
    }
    if (entries.length > TREE_CHILD_LIMIT) {
      parent.append(h('div', { class: 'tree-more muted' }, `… ${entries.length - TREE_CHILD_LIMIT} more`));
    }
  }

  function treeNode(key, value, path, level, opts) {
    const isArray = Array.isArray(value);
    if (!isArray && !isPlainObject(value)) return treeLeaf(key, value);
    const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
    if (entries.length === 0) return treeLeaf(key, value);
    const details = h('details', { class: 'tree-node' });
    const remembered = opts.open.get(path);
    details.open = remembered !== undefined ? remembered : level < opts.depth;
    const children = h('div', { class: 'tree-children' });
    let built = false;
    const build = () => {
      if (built) return;
      built = true;
      appendTreeEntries(children, entries, path, level + 1, opts);
    };
    if (details.open) build();
    details.addEventListener('toggle', () => {
      opts.open.set(path, details.open);
      if (details.open) build();
    });
    details.append(
      h('summary', null, h('span', { class: 'tree-key' }, String(key)),
        h('span', { class: 'tree-meta' }, isArray ? ` [${entries.length}]` : ` {${entries.length}}`)),
      children,
    );
    return details;
  }

  function treeLeaf(key, value) {
    let text;
    let type = value === null ? 'null' : typeof value;
    if (Array.isArray(value)) {
      text = '[]';
      type = 'empty';
    } else if (isPlainObject(value)) {
      text = '{}';
      type = 'empty';
    } else if (type === 'string') {
      text = JSON.stringify(value);
    } else {
      text = String(value);
    }
    const long = text.length > 300;
    return h('div', { class: 'tree-leaf' },
      key !== null ? [h('span', { class: 'tree-key' }, String(key)), h('span', { class: 'tree-colon' }, ': ')] : null,
      h('span', { class: `tree-val tv-${type}`, title: long ? text : null }, long ? text.slice(0, 299) + '…' : text));
  }

  /** Canvas colours come from CSS custom properties, so dark/light mode is the stylesheet's business. */
  const theme = {
    cache: null,
    get() {
      if (!this.cache) {
        const css = getComputedStyle(document.documentElement);
        const read = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
        this.cache = {
          line: read('--chart-line', '#2563eb'),
          grid: read('--chart-grid', '#e5e7eb'),
          axis: read('--chart-axis', '#9ca3af'),
          text: read('--chart-text', '#6b7280'),
          nan: read('--chart-nan', '#dc2626'),
          hover: read('--chart-hover', '#111827'),
          select: read('--chart-select', 'rgba(37,99,235,0.15)'),
          font: '11px ' + read('--font-sans', 'system-ui, sans-serif'),
        };
      }
      return this.cache;
    },
  };

  // ===========================================================================
  // 4. The canvas chart
  // ===========================================================================

  const CHART_HEIGHT = 150; // CSS pixels; keep in sync with .chart canvas in style.css
  const PAD = { left: 52, right: 10, top: 8, bottom: 20 };

  /**
   * Strokes one series' line into the current path state of ctx and returns
   * the pixel x of its NaN and ±Inf points (for markers). Points whose x is
   * null are skipped; a non-finite value breaks the line into a gap. When more
   * than two points fall in each pixel column, each column is drawn as one
   * vertical min–max segment.
   */
  function strokeSeries(ctx, xs, vs, sx, sy, x0, x1, plotWidth) {
    const n = xs.length;
    let visible = 0;
    for (let i = 0; i < n; i++) if (xs[i] !== null && xs[i] >= x0 && xs[i] <= x1) visible++;
    const dense = visible > 2 * plotWidth;
    const markers = { nan: [], pinf: [], ninf: [], visible };
    const lastMarker = { nan: NaN, pinf: NaN, ninf: NaN };
    const mark = (type, px) => {
      const col = Math.round(px);
      if (col !== lastMarker[type]) {
        markers[type].push(col);
        lastMarker[type] = col;
      }
    };
    ctx.beginPath();
    let penDown = false;
    let isolated = []; // single points between gaps are drawn as dots
    let runLength = 0;
    let runStart = null;
    let col = null;
    let colMin = 0;
    let colMax = 0;
    let colFirst = 0;
    let colLast = 0;
    const flushColumn = () => {
      if (col === null) return;
      if (!penDown) {
        ctx.moveTo(col, colFirst);
        penDown = true;
      } else {
        ctx.lineTo(col, colFirst);
      }
      if (colMin !== colMax) {
        ctx.lineTo(col, colMin);
        ctx.lineTo(col, colMax);
      }
      ctx.lineTo(col, colLast);
      col = null;
    };
    const endRun = () => {
      if (runLength === 1 && runStart) isolated.push(runStart);
      runLength = 0;
      runStart = null;
    };
    for (let i = 0; i < n; i++) {
      const x = xs[i];
      if (x === null || x === undefined) continue;
      const v = vs[i];
      const px = sx(x);
      if (!Number.isFinite(v)) {
        if (dense) flushColumn();
        penDown = false;
        endRun();
        if (Number.isNaN(v)) mark('nan', px);
        else mark(v > 0 ? 'pinf' : 'ninf', px);
        continue;
      }
      const py = sy(v);
      if (runLength === 0) runStart = [px, py];
      runLength++;
      if (dense) {
        const c = Math.floor(px) + 0.5;
        if (c !== col) {
          flushColumn();
          col = c;
          colMin = colMax = colFirst = colLast = py;
        } else {
          if (py < colMin) colMin = py;
          if (py > colMax) colMax = py;
          colLast = py;
        }
      } else if (!penDown) {
        ctx.moveTo(px, py);
        penDown = true;
      } else {
        ctx.lineTo(px, py);
      }
    }
    if (dense) flushColumn();
    endRun();
    ctx.stroke();
    if (isolated.length) {
      ctx.beginPath();
      for (const [px, py] of isolated) {
        ctx.moveTo(px + 2, py);
        ctx.arc(px, py, 2, 0, Math.PI * 2);
      }
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fill();
    }
    return markers;
  }

  /** The finite min and max of vs over points whose x lies in [x0, x1]. */
  function valueExtent(xs, vs, x0, x1) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i];
      if (x === null || x < x0 || x > x1) continue;
      const v = vs[i];
      if (!Number.isFinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    return [lo, hi];
  }

  function xExtent(xs) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const x of xs) {
      if (x === null) continue;
      if (x < lo) lo = x;
      if (x > hi) hi = x;
    }
    return [lo, hi];
  }

  /** One metric's chart: a canvas with hover read-out, drag-to-zoom and double-click reset. */
  class Chart {
    constructor(page, name) {
      this.page = page;
      this.name = name;
      this.cssWidth = 0;
      this.hoverPx = null;
      this.drag = null;
      this.view = null; // the last drawn mapping, for turning pixels back into x values
      this.canvas = h('canvas', { 'aria-label': `chart of ${name}` });
      this.lastEl = h('span', { class: 'chart-last' });
      this.tip = h('div', { class: 'chart-tip', hidden: true });
      this.el = h('div', { class: 'chart', 'data-metric': name, 'data-points': '0' },
        h('div', { class: 'chart-head' }, h('span', { class: 'chart-name', title: name }, name), this.lastEl),
        h('div', { class: 'chart-body' }, this.canvas, this.tip));
      this.bindPointer();
    }

    /** What the chart shows: the zoomed-in data while zoomed and loaded, else the live series. */
    get series() {
      return this.page.seriesFor(this.name);
    }

    get visible() {
      return !this.el.hidden;
    }

    invalidate() {
      if (this.visible) schedule(this, () => this.draw());
    }

    updateCount() {
      this.el.dataset.points = String(this.series.t.length);
    }

    bindPointer() {
      const c = this.canvas;
      const clampPx = (px) => Math.max(PAD.left, Math.min(this.cssWidth - PAD.right, px));
      c.addEventListener('pointermove', (e) => {
        this.hoverPx = e.offsetX;
        if (this.drag) this.drag.x1 = clampPx(e.offsetX);
        this.invalidate();
      });
      c.addEventListener('pointerleave', () => {
        this.hoverPx = null;
        this.invalidate();
      });
      c.addEventListener('pointerdown', (e) => {
        if (e.button !== 0 || !this.view) return;
        c.setPointerCapture(e.pointerId);
        this.drag = { x0: clampPx(e.offsetX), x1: clampPx(e.offsetX) };
      });
      c.addEventListener('pointerup', () => {
        const drag = this.drag;
        this.drag = null;
        const view = this.view;
        if (drag && view && Math.abs(drag.x1 - drag.x0) >= 5) {
          const a = view.invert(Math.min(drag.x0, drag.x1));
          const b = view.invert(Math.max(drag.x0, drag.x1));
          this.page.zoomTo(a, b, view.mode, this.name);
        }
        this.invalidate();
      });
      c.addEventListener('pointercancel', () => {
        this.drag = null;
        this.invalidate();
      });
      c.addEventListener('dblclick', () => this.page.resetZoom());
    }

    draw() {
      const width = this.cssWidth;
      if (!width || !this.visible) return;
      const height = CHART_HEIGHT;
      const canvas = this.canvas;
      const dpr = window.devicePixelRatio || 1;
      const pw = Math.round(width * dpr);
      const ph = Math.round(height * dpr);
      if (canvas.width !== pw || canvas.height !== ph) {
        canvas.width = pw;
        canvas.height = ph;
      }
      const ctx = canvas.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, width, height);
      const colors = theme.get();
      ctx.font = colors.font;

      const mode = this.page.xMode;
      const zoom = this.page.zoom;
      const series = this.series;
      const xs = mode === 'step' ? series.s : series.t;
      const vs = series.v;
      const live = this.page.store.get(this.name);
      const lastValue = live && live.v.length ? live.v[live.v.length - 1] : undefined;
      this.lastEl.textContent = lastValue === undefined ? '' : formatValue(lastValue);
      this.lastEl.classList.toggle('nonfinite', lastValue !== undefined && !Number.isFinite(lastValue));
      this.updateCount();

      const plot = { l: PAD.left, r: width - PAD.right, t: PAD.top, b: height - PAD.bottom };
      const plotWidth = Math.max(1, plot.r - plot.l);
      let x0;
      let x1;
      if (zoom && zoom.mode === mode) {
        x0 = zoom.x0;
        x1 = zoom.x1;
      } else {
        [x0, x1] = xExtent(xs);
      }
      if (!Number.isFinite(x0)) {
        this.view = null;
        ctx.fillStyle = colors.text;
        ctx.textAlign = 'center';
        ctx.textBaseline = 'middle';
        ctx.fillText(zoom && zoom.loading ? 'loading…' : mode === 'step' ? 'no step values' : 'no data',
          width / 2, height / 2);
        this.tip.hidden = true;
        return;
      }
      if (x0 === x1) {
        x0 -= 1;
        x1 += 1;
      }
      const [vlo, vhi] = valueExtent(xs, vs, x0, x1);
      const [y0, y1] = paddedRange(vlo, vhi);
      const sx = (x) => plot.l + ((x - x0) / (x1 - x0)) * plotWidth;
      const sy = (v) => plot.b - ((v - y0) / (y1 - y0)) * (plot.b - plot.t);
      this.view = { mode, invert: (px) => x0 + ((px - plot.l) / plotWidth) * (x1 - x0) };

      // Grid and axis labels.
      ctx.strokeStyle = colors.grid;
      ctx.lineWidth = 1;
      ctx.fillStyle = colors.text;
      ctx.textAlign = 'right';
      ctx.textBaseline = 'middle';
      ctx.beginPath();
      for (const y of niceTicks(y0, y1, 3)) {
        const py = Math.round(sy(y)) + 0.5;
        if (py < plot.t - 1 || py > plot.b + 1) continue;
        ctx.moveTo(plot.l, py);
        ctx.lineTo(plot.r, py);
        ctx.fillText(formatValue(y), plot.l - 6, py);
      }
      ctx.stroke();
      ctx.textAlign = 'center';
      ctx.textBaseline = 'top';
      const maxXTicks = Math.max(2, Math.floor(plotWidth / 60));
      let xTicks;
      let xLabel;
      if (mode === 'time') {
        const offset = -new Date(x0 * 1000).getTimezoneOffset() * 60;
        const { ticks, step } = timeTicks(x0, x1, maxXTicks, offset);
        xTicks = ticks;
        xLabel = (t) => formatTickTime(t, step);
      } else {
        xTicks = niceTicks(x0, x1, maxXTicks).filter((x) => Number.isInteger(x) || x1 - x0 < maxXTicks);
        xLabel = formatValue;
      }
      ctx.strokeStyle = colors.axis;
      ctx.beginPath();
      ctx.moveTo(plot.l, plot.b + 0.5);
      ctx.lineTo(plot.r, plot.b + 0.5);
      let labelEnd = -Infinity;
      for (const x of xTicks) {
        const px = Math.round(sx(x)) + 0.5;
        if (px < plot.l - 1 || px > plot.r + 1) continue;
        ctx.moveTo(px, plot.b);
        ctx.lineTo(px, plot.b + 4);
        const label = xLabel(x);
        const half = ctx.measureText(label).width / 2;
        if (px - half < labelEnd + 8 || px + half > width) continue; // would overlap: tick only
        ctx.fillText(label, px, plot.b + 5);
        labelEnd = px + half;
      }
      ctx.stroke();

      // The line, clipped to the plot area.
      ctx.save();
      ctx.beginPath();
      ctx.rect(plot.l, plot.t - 1, plotWidth, plot.b - plot.t + 2);
      ctx.clip();
      ctx.strokeStyle = colors.line;
      ctx.lineWidth = 1.5;
      ctx.lineJoin = 'round';
      const markers = strokeSeries(ctx, xs, vs, sx, sy, x0, x1, plotWidth);
      ctx.restore();
      if (markers.visible === 0) {
        ctx.fillStyle = colors.text;
        ctx.textAlign = 'center';
        ctx.textBaseline = 'middle';
        ctx.fillText(zoom && zoom.loading ? 'loading…' : 'no data in this range', (plot.l + plot.r) / 2, (plot.t + plot.b) / 2);
      }

      // NaN markers sit on the x axis, ±Inf markers at the top or bottom edge.
      ctx.fillStyle = colors.nan;
      const triangle = (px, py, up) => {
        ctx.moveTo(px - 3.5, py);
        ctx.lineTo(px + 3.5, py);
        ctx.lineTo(px, up ? py - 5 : py + 5);
        ctx.closePath();
      };
      ctx.beginPath();
      for (const px of markers.nan) if (px >= plot.l - 1 && px <= plot.r + 1) triangle(px, plot.b, true);
      for (const px of markers.ninf) if (px >= plot.l - 1 && px <= plot.r + 1) triangle(px, plot.b, true);
      for (const px of markers.pinf) if (px >= plot.l - 1 && px <= plot.r + 1) triangle(px, plot.t, false);
      ctx.fill();

      this.drawHover(ctx, xs, vs, sx, sy, plot, x0, x1, colors, mode, series);

      if (this.drag) {
        ctx.fillStyle = colors.select;
        const a = Math.min(this.drag.x0, this.drag.x1);
        ctx.fillRect(a, plot.t, Math.abs(this.drag.x1 - this.drag.x0), plot.b - plot.t);
      }
    }

    drawHover(ctx, xs, vs, sx, sy, plot, x0, x1, colors, mode, series) {
      const px = this.hoverPx;
      if (px === null || px < plot.l || px > plot.r || this.drag) {
        this.tip.hidden = true;
        return;
      }
      const target = this.view.invert(px);
      let best = -1;
      let bestDistance = Infinity;
      for (let i = 0; i < xs.length; i++) {
        const x = xs[i];
        if (x === null || x < x0 || x > x1) continue;
        const d = Math.abs(x - target);
        if (d < bestDistance) {
          bestDistance = d;
          best = i;
        }
      }
      if (best < 0) {
        this.tip.hidden = true;
        return;
      }
      const bx = sx(xs[best]);
      const v = vs[best];
      ctx.strokeStyle = colors.axis;
      ctx.lineWidth = 1;
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(Math.round(bx) + 0.5, plot.t);
      ctx.lineTo(Math.round(bx) + 0.5, plot.b);
      ctx.stroke();
      ctx.setLineDash([]);
      if (Number.isFinite(v)) {
        ctx.fillStyle = colors.hover;
        ctx.beginPath();
        ctx.arc(bx, sy(v), 3, 0, Math.PI * 2);
        ctx.fill();
      }
      const step = series.s[best];
      const parts = [formatValue(v)];
      if (step !== null && step !== undefined) parts.push(`step ${step}`);
      parts.push(formatClock(series.t[best], { millis: mode === 'time' && x1 - x0 < 10 }));
      this.tip.textContent = parts.join(' · ');
      this.tip.classList.toggle('nonfinite', !Number.isFinite(v));
      this.tip.hidden = false;
      const left = bx > this.cssWidth / 2 ? bx - this.tip.offsetWidth - 8 : bx + 8;
      this.tip.style.left = `${Math.max(0, left)}px`;
    }
  }

  /** A small line with no axes, for the system panel. */
  function drawSparkline(canvas, series, width, height) {
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr)) canvas.width = Math.round(width * dpr);
    if (canvas.height !== Math.round(height * dpr)) canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const [x0, x1] = xExtent(series.t);
    if (!Number.isFinite(x0) || width <= 0) return;
    const span = x1 - x0 || 1;
    const [lo, hi] = paddedRange(...valueExtent(series.t, series.v, x0, x1));
    const colors = theme.get();
    ctx.strokeStyle = colors.line;
    ctx.lineWidth = 1.25;
    const markers = strokeSeries(ctx, series.t, series.v, (x) => 1 + ((x - x0) / span) * (width - 2),
      (v) => height - 2 - ((v - lo) / (hi - lo)) * (height - 4), x0, x1, width);
    ctx.fillStyle = colors.nan;
    for (const px of markers.nan.concat(markers.pinf, markers.ninf)) ctx.fillRect(px - 1, height - 3, 2, 3);
  }

  // ===========================================================================
  // 5. Views and router
  // ===========================================================================

  const storage = {
    get(key, fallback) {
      try {
        return localStorage.getItem(key) ?? fallback;
      } catch (_err) {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(key, value);
      } catch (_err) {
        // Preferences are a convenience; ignore disabled storage.
      }
    },
  };

  function errorText(err) {
    return err instanceof ApiError ? err.message : String(err && err.message ? err.message : err);
  }

  // ---------------------------------------------------------------- runs list

  /**
   * What the runs and sessions lists share: a throttled re-load, a /ws
   * subscription that re-loads on every (re)connection and lag, a slow re-read
   * for verdicts no event announces (hung and crashed are decided when events
   * stop arriving, or by another process), and a 1 s clock for relative times.
   * Subclasses define load(), onEvents(events) and tick().
   */
  class LiveListPage {
    constructor(root) {
      this.root = root;
      this.closed = false;
      this.refresh = throttle(() => this.load(), 1000);
    }

    startLive(kinds) {
      this.socket = new LiveSocket({ kinds }, {
        onSubscribed: () => this.refresh(),
        onEvents: (events) => this.onEvents(events),
        onLagged: () => this.refresh(),
      }).start();
      this.slowTimer = setInterval(() => this.refresh(), 15000);
      this.tickTimer = setInterval(() => this.tick(), 1000);
    }

    unmount() {
      this.closed = true;
      this.socket?.close();
      this.refresh.cancel();
      clearInterval(this.slowTimer);
      clearInterval(this.tickTimer);
      clearTimeout(this.settleTimer);
    }
  }

  const RUN_COLUMNS = ['Run', 'Kind', 'Status', 'Started', 'Duration', 'Steps', 'Episodes', 'Final reward'];

  class RunsPage extends LiveListPage {
    constructor(root) {
      super(root);
      this.rows = new Map(); // run_id → {tr, row}
    }

    mount() {
      this.countEl = h('span', { class: 'muted' });
      this.errorEl = h('div', { class: 'error', hidden: true });
      this.tbody = h('tbody');
      this.emptyEl = h('div', { class: 'empty', hidden: true }, 'No runs yet. Start one from Python with WebMonitor(MonitorConfig(...)).start_training(), or run: runwatch demo');
      this.root.append(h('section', { class: 'card' },
        h('div', { class: 'card-head' }, h('h1', null, 'Runs'), this.countEl),
        this.errorEl,
        h('div', { class: 'table-wrap' },
          h('table', { id: 'runs-table', class: 'table' },
            h('thead', null, h('tr', null, RUN_COLUMNS.map((c, i) => h('th', { class: i >= 5 ? 'num' : null }, c)))),
            this.tbody)),
        this.emptyEl));
      this.load();
      this.startLive(RUNS_LIST_KINDS);
    }

    /**
     * A lifecycle event changes its row's status at once. The refresh it
     * triggers can be answered before the store has committed the event, and
     * no later event announces the change again, so the live status stands
     * until a fetched row is at least as new as the event, and one more
     * refresh follows once the store has it (end time, final reward).
     */
    onEvents(events) {
      const now = Date.now() / 1000;
      let lifecycle = false;
      for (const event of events) {
        if (!event || event.kind !== 'lifecycle') continue;
        lifecycle = true;
        const status = STATUS_AFTER[event.transition];
        const entry = this.rows.get(event.run_id);
        if (!status || !entry) continue;
        entry.live = { status, t: parseTime(event.timestamp), final_reward: event.final_reward };
        this.fillRow(entry.tr, this.currentRow(entry), now);
      }
      this.refresh();
      if (lifecycle) {
        clearTimeout(this.settleTimer);
        this.settleTimer = setTimeout(() => this.refresh(), STORE_SETTLE_MS);
      }
    }

    /** The fetched row, with the status of a newer live lifecycle event the store had not committed. */
    currentRow(entry) {
      const live = entry.live;
      if (!live) return entry.row;
      if (!(parseTime(entry.row.updated_at) < live.t - 0.001)) {
        entry.live = null; // the fetched row has it
        return entry.row;
      }
      const row = { ...entry.row, status: live.status };
      if (live.final_reward !== null && live.final_reward !== undefined) row.final_reward = live.final_reward;
      if ((live.status === 'completed' || live.status === 'failed') && !row.end_time) row.end_time = live.t;
      return row;
    }

    async load() {
      const gen = (this.loadGen = (this.loadGen || 0) + 1);
      let body;
      try {
        body = await apiGet('api/runs', { limit: 100 });
      } catch (err) {
        if (this.closed || gen !== this.loadGen) return;
        this.errorEl.textContent = `Could not load runs: ${errorText(err)}`;
        this.errorEl.hidden = false;
        return;
      }
      if (this.closed || gen !== this.loadGen) return; // a newer load answers instead
      this.errorEl.hidden = true;
      this.render((body && body.runs) || []);
    }

    render(runs) {
      const seen = new Set();
      const now = Date.now() / 1000;
      runs.forEach((row, index) => {
        seen.add(row.run_id);
        let entry = this.rows.get(row.run_id);
        if (!entry) {
          entry = { tr: h('tr', { 'data-run-id': row.run_id }), row };
          this.rows.set(row.run_id, entry);
        }
        entry.row = row;
        this.fillRow(entry.tr, this.currentRow(entry), now);
        if (this.tbody.children[index] !== entry.tr) this.tbody.insertBefore(entry.tr, this.tbody.children[index] || null);
      });
      for (const [id, entry] of this.rows) {
        if (!seen.has(id)) {
          entry.tr.remove();
          this.rows.delete(id);
        }
      }
      this.countEl.textContent = `${runs.length} run${runs.length === 1 ? '' : 's'}`;
      this.emptyEl.hidden = runs.length > 0;
    }

    fillRow(tr, row, now) {
      const start = parseTime(row.start_time);
      const href = '#/runs/' + encodeURIComponent(row.run_id);
      const reward = row.final_reward === null || row.final_reward === undefined ? '—' : formatValue(parseValue(row.final_reward));
      tr.dataset.status = row.status;
      tr.replaceChildren(
        h('td', null, h('a', { href, class: 'run-link' }, row.run_id)),
        h('td', null, row.kind || '—'),
        h('td', null, statusBadge(row.status)),
        h('td', { title: row.start_time || '' }, formatClock(start, { date: true })),
        h('td', { class: 'duration' }, formatDuration(runDuration(row, now))),
        h('td', { class: 'num' }, formatCount(row.total_steps)),
        h('td', { class: 'num' }, formatCount(row.total_episodes)),
        h('td', { class: 'num' }, reward),
      );
    }

    tick() {
      const now = Date.now() / 1000;
      for (const entry of this.rows.values()) {
        const { tr } = entry;
        const row = this.currentRow(entry);
        if (row.status !== 'running' && row.status !== 'paused') continue;
        const cell = tr.querySelector('.duration');
        if (cell) cell.textContent = formatDuration(runDuration(row, now));
      }
    }
  }

  // ----------------------------------------------------------------- run page

  const EVENTS_PAGE = 200;
  const EVENTS_MAX = 10000; // kept in memory
  const EVENTS_RENDERED = 500; // rows in the DOM
  const CHART_MIN_WIDTH = 260; // keep in sync with .charts grid in style.css
  const CHART_GAP = 12;

  class RunPage {
    constructor(root, runId) {
      this.root = root;
      this.runId = runId;
      this.closed = false;
      this.summary = null;
      this.store = new Map(); // metric name → live series
      this.charts = new Map(); // metric name → Chart
      this.zoom = null; // {mode, x0, x1, series: Map | null, loading}
      this.zoomGen = 0;
      this.xMode = storage.get('runwatch.xAxis', 'time') === 'step' ? 'step' : 'time';
      this.filterText = storage.get('runwatch.metricFilter', '');
      this.metricFilter = makeMetricFilter(this.filterText);
      this.events = []; // EventRows, newest first
      this.eventKeys = new Set();
      this.nextCursor = null;
      this.eventFilter = { kind: new Set(), level: new Set(), type: new Set() };
      this.expandedEvents = new Set();
      this.alerts = new Map();
      // GET /api/alerts: null until asked, false when this server has none
      // (404), so the panel is built from the alert events alone.
      this.alertsApi = null;
      this.state = {};
      this.stateOpen = new Map();
      this.configOpen = new Map();
      this.counters = {};
      this.loading = false;
      this.loadGen = 0;
      this.pending = [];
      this.refreshSummary = throttle(() => this.loadSummary(), 1000);
      this.resyncThrottled = throttle(() => this.loadAll(), 3000);
      this.renderEventsSoon = throttle(() => schedule('events', () => this.renderEvents()), 250);
      this.renderStateSoon = throttle(() => schedule('state', () => this.renderState()), 250);
    }

    // ------------------------------------------------------------ structure

    mount() {
      const r = this.runId;
      this.titleEl = h('h1', { id: 'run-title' }, r);
      this.badgeEl = statusBadge(null, { id: 'status-badge' });
      this.kindEl = h('span', { class: 'tag' });
      this.headerError = h('div', { class: 'error', hidden: true });
      const metaItem = (label, id) => h('div', { class: 'meta-item' }, h('dt', null, label), h('dd', { id }, '—'));
      this.configEl = h('div', { class: 'config-tree' });
      this.configDetails = h('details', { id: 'run-config', class: 'config' }, h('summary', null, 'Config'), this.configEl);
      const exportButton = h('button', { type: 'button', class: 'btn', onclick: () => this.downloadExport() }, 'Export');

      this.alertsList = h('ul', { class: 'alert-list' });
      this.alertsEl = h('section', { id: 'alerts', class: 'card alerts' },
        h('div', { class: 'card-head' }, h('h2', null, 'Alerts'), h('span', { class: 'muted alerts-count' })),
        this.alertsList);

      this.filterInput = h('input', {
        id: 'metric-filter', type: 'search', placeholder: 'Filter metrics: train/*, loss …',
        value: this.filterText, spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Filter metrics',
      });
      this.filterInput.addEventListener('input', debounce(() => this.setFilter(this.filterInput.value), 120));
      this.chartCountEl = h('span', { class: 'muted' });
      this.xButtons = ['time', 'step'].map((mode) => h('button', {
        type: 'button', class: 'seg-btn', 'data-x': mode, onclick: () => this.setXMode(mode),
      }, mode === 'time' ? 'Time' : 'Step'));
      this.zoomInfo = h('span', { id: 'zoom-info', class: 'zoom-info', hidden: true });
      this.chartsGrid = h('div', { id: 'charts', class: 'charts' });
      this.chartsEmpty = h('div', { class: 'empty' }, 'No metrics yet.');

      this.eventFiltersEl = h('div', { id: 'event-filters', class: 'chips' });
      this.eventList = h('ol', { id: 'event-list', class: 'event-list' });
      this.eventsCountEl = h('span', { class: 'muted' });
      this.olderButton = h('button', { type: 'button', id: 'events-older', class: 'btn', onclick: () => this.loadOlder() }, 'Older');

      this.stateEl = h('div', { id: 'state-tree', class: 'state-tree' });
      this.systemGrid = h('div', { class: 'gauges' });
      this.pipelineBody = h('div', { class: 'pipeline-body' }, h('div', { class: 'muted' }, 'loading…'));
      this.pipelineHealth = h('span', { class: 'badge' }, '…');

      this.root.append(
        h('section', { class: 'card run-header' },
          h('div', { class: 'title-row' },
            h('a', { href: '#/', class: 'back', title: 'All runs' }, '←'),
            this.titleEl, this.badgeEl, this.kindEl, h('span', { class: 'spacer' }), exportButton),
          this.headerError,
          h('dl', { id: 'run-meta', class: 'meta' },
            metaItem('Started', 'run-start'), metaItem('Duration', 'run-duration'),
            metaItem('Steps', 'run-steps'), metaItem('Episodes', 'run-episodes'),
            metaItem('Final reward', 'run-reward'), metaItem('Last heartbeat', 'run-heartbeat')),
          this.configDetails),
        this.alertsEl,
        h('div', { class: 'run-body' },
          h('div', { class: 'run-main' },
            h('section', { class: 'card charts-card' },
              h('div', { class: 'toolbar' },
                h('h2', null, 'Metrics'), this.filterInput, this.chartCountEl, h('span', { class: 'spacer' }),
                this.zoomInfo,
                h('div', { class: 'seg', id: 'x-axis', role: 'group', 'aria-label': 'x axis' }, this.xButtons)),
              this.chartsGrid, this.chartsEmpty),
            h('section', { id: 'events', class: 'card events' },
              h('div', { class: 'card-head' }, h('h2', null, 'Events'), this.eventsCountEl),
              this.eventFiltersEl, this.eventList,
              h('div', { class: 'events-foot' }, this.olderButton))),
          h('aside', { class: 'run-side' },
            h('section', { id: 'system-panel', class: 'card' },
              h('div', { class: 'card-head' }, h('h2', null, 'System')), this.systemGrid),
            h('section', { class: 'card' },
              h('div', { class: 'card-head' }, h('h2', null, 'State')), this.stateEl),
            h('section', { id: 'pipeline-panel', class: 'card' },
              h('div', { class: 'card-head' }, h('h2', null, 'Pipeline'), this.pipelineHealth), this.pipelineBody))),
      );
      this.el = (id) => this.root.querySelector('#' + id);
      this.updateXButtons();
      this.renderAlerts();
      this.renderEventFilters();
      this.renderSystem();

      this.resizeObserver = new ResizeObserver((entries) => {
        for (const entry of entries) {
          const chart = entry.target.__chart;
          if (!chart) continue;
          chart.cssWidth = entry.contentRect.width;
          chart.invalidate();
        }
        schedule('system', () => this.renderSystem());
      });
      this.darkQuery = matchMedia('(prefers-color-scheme: dark)');
      this.onSchemeChange = () => {
        theme.cache = null;
        this.invalidateCharts();
        schedule('system', () => this.renderSystem());
      };
      this.darkQuery.addEventListener('change', this.onSchemeChange);

      // Subscribe first, then fetch history when the server confirms the
      // filter: anything emitted in between arrives live and is buffered, so
      // there is no gap between history and the live stream.
      this.loading = true;
      this.socket = new LiveSocket({ runs: [this.runId], kinds: RUN_PAGE_KINDS }, {
        onSubscribed: () => {
          this.loadAll();
          // Events sent just before the subscription may not be committed yet,
          // so the history misses them and they do not come live either:
          // read it again once the store has them.
          clearTimeout(this.settleTimer);
          this.settleTimer = setTimeout(() => this.loadAll(), STORE_SETTLE_MS);
        },
        onEvents: (events) => this.onEvents(events),
        onLagged: (dropped) => this.onLagged(dropped),
      }).start();
      // Without a live connection (refused token, a proxy without websockets)
      // the page must still show history: load it anyway after a short wait.
      this.fallbackTimer = setTimeout(() => {
        if (this.loadGen === 0) this.loadAll();
      }, 1500);
      this.pollPipeline();
      this.tickTimer = setInterval(() => this.tick(), 1000);
    }

    unmount() {
      this.closed = true;
      this.socket?.close();
      clearTimeout(this.pipelineTimer);
      clearTimeout(this.fallbackTimer);
      clearTimeout(this.settleTimer);
      clearTimeout(this.missingTimer);
      clearInterval(this.tickTimer);
      this.resizeObserver?.disconnect();
      this.darkQuery?.removeEventListener('change', this.onSchemeChange);
      this.refreshSummary.cancel();
      this.resyncThrottled.cancel();
      this.renderEventsSoon.cancel();
      this.renderStateSoon.cancel();
    }

    // ---------------------------------------------------------------- history

    /** The canvas width (CSS px) charts have, measured or estimated from the grid. */
    chartWidth() {
      for (const chart of this.charts.values()) if (chart.cssWidth) return Math.round(chart.cssWidth);
      const gridWidth = this.chartsGrid.clientWidth || 800;
      const columns = Math.max(1, Math.floor((gridWidth + CHART_GAP) / (CHART_MIN_WIDTH + CHART_GAP)));
      const column = (gridWidth - CHART_GAP * (columns - 1)) / columns;
      return Math.max(100, Math.round(column - 18)); // minus the chart card's padding and border
    }

    /** (Re)loads everything; live events that arrive meanwhile are buffered and replayed. */
    async loadAll() {
      const gen = ++this.loadGen;
      this.loading = true;
      const maxPoints = 2 * this.chartWidth();
      const [summary, metrics, events, state, alerts] = await Promise.allSettled([
        apiGet(runPath(this.runId)),
        apiGet(runPath(this.runId, '/metrics'), { max_points: maxPoints }),
        apiGet(runPath(this.runId, '/events'), { limit: EVENTS_PAGE }),
        apiGet(runPath(this.runId, '/state')),
        this.alertsApi === false ? Promise.resolve(null) : apiGet('api/alerts', { run_id: this.runId }),
      ]);
      if (this.closed || gen !== this.loadGen) return;
      let alertItems = null; // the server's active alerts, when it has the endpoint
      if (alerts.status === 'fulfilled' && alerts.value && Array.isArray(alerts.value.alerts)) {
        this.alertsApi = true;
        alertItems = alerts.value.alerts.filter((a) => a && (a.run_id === undefined || a.run_id === this.runId));
      } else if (alerts.status === 'rejected' && alerts.reason instanceof ApiError && alerts.reason.status === 404) {
        this.alertsApi = false; // not built on this server: alert events only, from now on
      }

      clearTimeout(this.missingTimer);
      if (summary.status === 'fulfilled') {
        this.missingRetries = 0;
        this.applySummary(summary.value);
      } else {
        this.showHeaderError(summary.reason);
        if (summary.reason instanceof ApiError && summary.reason.status === 404) {
          // "Waiting for it to start": the run may be in the store's next
          // commit, its start event already gone by; look again, backing off.
          this.missingRetries = (this.missingRetries || 0) + 1;
          const delay = Math.min(15000, 1000 * 2 ** Math.min(4, this.missingRetries - 1));
          this.missingTimer = setTimeout(() => this.loadAll(), delay);
        }
      }

      const lastTimes = new Map();
      if (metrics.status === 'fulfilled') {
        const series = (metrics.value && metrics.value.series) || {};
        const store = new Map();
        for (const [name, wire] of Object.entries(series)) {
          const s = seriesFromWire(wire);
          store.set(name, s);
          lastTimes.set(name, s.t.length ? s.t[s.t.length - 1] : -Infinity);
        }
        // Live points newer than the history are not committed yet: keep them.
        for (const [name, old] of this.store) {
          const from = upperBound(old.t, lastTimes.get(name) ?? -Infinity);
          if (from >= old.t.length) continue;
          if (!store.has(name)) store.set(name, createSeries());
          const s = store.get(name);
          for (let i = from; i < old.t.length; i++) appendPoint(s, old.t[i], old.s[i], old.v[i]);
        }
        this.store = store;
        for (const name of store.keys()) this.ensureChart(name);
        for (const chart of this.charts.values()) chart.updateCount();
      } else if (!(metrics.reason instanceof ApiError && metrics.reason.status === 404)) {
        showBanner(`Could not load metrics: ${errorText(metrics.reason)}`, 'error'); // a 404 is shown in the header
      }

      if (events.status === 'fulfilled') {
        const rows = ((events.value && events.value.events) || []).map(prepareEventRow);
        // Live rows newer than the newest stored one are not committed yet: keep them.
        const keys = new Set(rows.map((row) => row._key));
        const newest = rows.reduce((max, row) => Math.max(max, row._ts), -Infinity);
        for (const row of this.events) {
          if (row._ts > newest && !keys.has(row._key)) {
            rows.push(row);
            keys.add(row._key);
          }
        }
        rows.sort(compareEventsNewestFirst);
        this.events = rows;
        this.eventKeys = new Set(rows.map((row) => row._key));
        this.nextCursor = (events.value && events.value.next_cursor) || null;
        if (alertItems === null) {
          this.alerts = new Map();
          for (let i = rows.length - 1; i >= 0; i--) if (rows[i].kind === 'alert') applyAlert(this.alerts, alertFromRow(rows[i]));
        } else {
          // The snapshot, then the live transitions the store had not committed when it was read.
          this.alerts = this.alertsFromApi(alertItems);
          for (let i = rows.length - 1; i >= 0; i--) {
            if (rows[i].kind === 'alert' && rows[i]._ts > newest) applyAlertIfNewer(this.alerts, alertFromRow(rows[i]));
          }
        }
        this.eventsError = null;
      } else {
        this.eventsError = errorText(events.reason);
        if (alertItems !== null) this.alerts = this.alertsFromApi(alertItems);
      }

      if (state.status === 'fulfilled') {
        this.state = (state.value && state.value.state) || {};
        this.stateError = null;
      } else {
        this.stateError = errorText(state.reason);
      }

      this.loading = false;
      const pending = this.pending;
      this.pending = [];
      // Replaying state patches that the fetched state already holds is
      // harmless: re-applying a deep-merge patch sequence in order gives the
      // same result. Metric points and events are de-duplicated instead.
      this.applyEvents(pending, { lastTimes, eventKeys: new Set(this.eventKeys) });
      this.invalidateCharts();
      this.updateChartVisibility();
      this.renderEventFilters();
      this.renderEventsSoon();
      this.renderStateSoon();
      this.renderAlerts();
      schedule('system', () => this.renderSystem());
    }

    async loadSummary() {
      try {
        const summary = await apiGet(runPath(this.runId));
        if (!this.closed) this.applySummary(summary);
      } catch (err) {
        if (!this.closed) this.showHeaderError(err);
      }
    }

    showHeaderError(err) {
      const text = err instanceof ApiError && err.status === 404 ? `Unknown run “${this.runId}” (waiting for it to start)` : `Could not load the run: ${errorText(err)}`;
      this.headerError.textContent = text;
      this.headerError.hidden = false;
    }

    applySummary(summary) {
      if (!summary) return;
      this.headerError.hidden = true;
      const firstTime = this.summary === null;
      this.summary = summary;
      setStatusBadge(this.badgeEl, summary.status);
      this.kindEl.textContent = summary.kind || '';
      this.kindEl.hidden = !summary.kind;
      this.el('run-start').textContent = formatClock(parseTime(summary.start_time), { date: true });
      this.el('run-start').title = summary.start_time || '';
      // A re-fetched summary can be older than the last live heartbeat; the
      // counters only grow (the monitor restores them when a run resumes).
      for (const key of ['total_steps', 'total_episodes']) {
        const value = summary[key];
        if (value !== null && value !== undefined && !(this.counters[key] > value)) this.counters[key] = value;
      }
      const heartbeat = parseTime(summary.last_heartbeat);
      if (!(this.lastHeartbeat > heartbeat)) this.lastHeartbeat = heartbeat;
      const reward = summary.final_reward;
      this.el('run-reward').textContent = reward === null || reward === undefined ? '—' : formatValue(parseValue(reward));
      const config = summary.config;
      const hasConfig = config && typeof config === 'object' && Object.keys(config).length > 0;
      this.configEl.replaceChildren(hasConfig ? jsonTree(config, { open: this.configOpen, depth: 1 }) : h('div', { class: 'muted' }, 'No config recorded.'));
      if (firstTime) this.configDetails.open = false;
      document.title = `${this.runId} · runwatch`;
      this.renderCounters();
      this.tick();
    }

    renderCounters() {
      this.el('run-steps').textContent = formatCount(this.counters.total_steps);
      this.el('run-episodes').textContent = formatCount(this.counters.total_episodes);
    }

    tick() {
      const now = Date.now() / 1000;
      if (this.summary) this.el('run-duration').textContent = formatDuration(runDuration(this.summary, now));
      const hb = this.el('run-heartbeat');
      hb.textContent = Number.isFinite(this.lastHeartbeat) ? `${formatDuration(Math.max(0, now - this.lastHeartbeat))} ago` : '—';
      hb.title = Number.isFinite(this.lastHeartbeat) ? formatClock(this.lastHeartbeat, { date: true }) : '';
    }

    async downloadExport() {
      // A plain link cannot carry the Authorization header, so fetch and save the blob.
      try {
        const response = await fetch(apiUrl(runPath(this.runId, '/export')), { headers: authHeaders() });
        if (!response.ok) throw new ApiError(response.status, `${response.status} ${response.statusText}`);
        const blob = await response.blob();
        const url = URL.createObjectURL(blob);
        const a = h('a', { href: url, download: `${this.runId}.zip` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (err) {
        showBanner(`Export failed: ${errorText(err)}`, 'error');
      }
    }

    // ------------------------------------------------------------------ live

    onEvents(events) {
      if (this.loading) {
        this.pending.push(...events);
        if (this.pending.length > 200000) this.pending.splice(0, this.pending.length - 200000);
        return;
      }
      this.applyEvents(events, null);
    }

    onLagged(dropped) {
      const what = dropped ? `${dropped} live events were dropped` : 'the live stream fell behind';
      showBanner(`Lagging: ${what}; history reloaded.`, 'warning');
      this.resyncThrottled();
    }

    /** Applies live wire events; `dedup` skips what a just-fetched history already holds. */
    applyEvents(events, dedup) {
      const touched = new Set();
      let newRows = false;
      let summaryChanged = false;
      for (const event of events) {
        if (!event || event.run_id !== this.runId) continue;
        switch (event.kind) {
          case 'metric':
            this.applyMetric(event, dedup, touched);
            break;
          case 'heartbeat':
            this.lastHeartbeat = Number(event.timestamp);
            if (event.counters) Object.assign(this.counters, event.counters);
            summaryChanged = true;
            break;
          case 'state':
            this.state = mergeState(this.state, event.patch || {});
            this.renderStateSoon();
            break;
          case 'lifecycle': {
            const status = STATUS_AFTER[event.transition];
            if (status && this.summary) this.summary.status = status;
            if (status) setStatusBadge(this.badgeEl, status);
            this.refreshSummary();
            newRows = this.addEventRow(event, dedup) || newRows;
            break;
          }
          case 'log':
          case 'exception':
          case 'alert':
            newRows = this.addEventRow(event, dedup) || newRows;
            break;
          default:
            break;
        }
      }
      if (summaryChanged) {
        this.renderCounters();
        this.tick();
        // A heartbeat for a run the server has marked hung means it recovered.
        if (this.summary && (this.summary.status === 'hung' || this.summary.status === 'crashed')) this.refreshSummary();
      }
      if (newRows) {
        this.trimEvents();
        this.renderEventsSoon();
      }
      let system = false;
      for (const name of touched) {
        this.ensureChart(name);
        const series = this.store.get(name);
        const limit = 4 * this.chartWidth();
        if (series.t.length > limit) this.store.set(name, decimateMinMax(series, limit / 4));
        const chart = this.charts.get(name);
        // The count is set here, not in the frame, so it is current even when
        // the tab is in the background and frames do not run.
        chart.updateCount();
        if (!this.zoom) chart.invalidate();
        if (name.startsWith(SYSTEM_PREFIX)) system = true;
      }
      if (system) schedule('system', () => this.renderSystem());
    }

    applyMetric(event, dedup, touched) {
      const t = parseTime(event.timestamp);
      if (!Number.isFinite(t)) return;
      const step = event.step === undefined || event.step === null ? null : Number(event.step);
      for (const [name, raw] of Object.entries(event.values || {})) {
        if (dedup && t <= (dedup.lastTimes.get(name) ?? -Infinity)) continue;
        let series = this.store.get(name);
        if (!series) {
          series = createSeries();
          this.store.set(name, series);
        }
        appendPoint(series, t, step, parseValue(raw));
        touched.add(name);
      }
    }

    addEventRow(event, dedup) {
      const row = wireToEventRow(event);
      if (!row) return false;
      prepareEventRow(row);
      if (dedup && dedup.eventKeys.has(row._key)) return false;
      if (this.events.length && row._ts < this.events[0]._ts) {
        // Out of order (another producer's clock): insert in place.
        let i = 0;
        while (i < this.events.length && compareEventsNewestFirst(this.events[i], row) <= 0) i++;
        this.events.splice(i, 0, row);
      } else {
        this.events.unshift(row);
      }
      this.eventKeys.add(row._key);
      if (row.kind === 'alert' && applyAlertIfNewer(this.alerts, alertFromRow(row))) {
        schedule('alerts', () => this.renderAlerts());
      }
      return true;
    }

    trimEvents() {
      if (this.events.length <= EVENTS_MAX) return;
      for (const row of this.events.splice(EVENTS_MAX)) this.eventKeys.delete(row._key);
      // The dropped tail sits between what is kept and the server cursor, so
      // "older" would skip it; restart paging from the oldest kept event.
      this.nextCursor = null;
      this.olderCutoff = this.events[this.events.length - 1]._ts;
    }

    // ---------------------------------------------------------------- charts

    /** The series a chart shows: zoomed data when zoomed and loaded, else live. */
    seriesFor(name) {
      if (this.zoom && this.zoom.series) return this.zoom.series.get(name) || createSeries();
      return this.store.get(name) || createSeries();
    }

    ensureChart(name) {
      let chart = this.charts.get(name);
      if (chart) return chart;
      chart = new Chart(this, name);
      chart.canvas.__chart = chart;
      this.charts.set(name, chart);
      chart.el.hidden = !this.metricFilter(name);
      // Keep the grid sorted by name.
      let before = null;
      for (const el of this.chartsGrid.children) {
        if (el.dataset.metric.localeCompare(name, undefined, { numeric: true }) > 0) {
          before = el;
          break;
        }
      }
      this.chartsGrid.insertBefore(chart.el, before);
      this.resizeObserver.observe(chart.canvas);
      this.updateChartCount();
      return chart;
    }

    invalidateCharts() {
      for (const chart of this.charts.values()) chart.invalidate();
    }

    setFilter(text) {
      this.filterText = text;
      this.metricFilter = makeMetricFilter(text);
      storage.set('runwatch.metricFilter', text);
      this.updateChartVisibility();
    }

    updateChartVisibility() {
      for (const [name, chart] of this.charts) {
        const show = this.metricFilter(name);
        if (chart.el.hidden === show) {
          chart.el.hidden = !show;
          if (show) chart.invalidate();
        }
      }
      this.updateChartCount();
    }

    updateChartCount() {
      const total = this.charts.size;
      let shown = 0;
      for (const chart of this.charts.values()) if (!chart.el.hidden) shown++;
      this.chartCountEl.textContent = total ? `${shown} of ${total}` : '';
      this.chartsEmpty.hidden = shown > 0;
      this.chartsEmpty.textContent = total ? 'No metric matches the filter.' : 'No metrics yet.';
    }

    setXMode(mode) {
      if (mode === this.xMode) return;
      this.xMode = mode;
      storage.set('runwatch.xAxis', mode);
      this.updateXButtons();
      this.resetZoom(); // a zoom range is in the old axis' units
      this.invalidateCharts();
    }

    updateXButtons() {
      for (const button of this.xButtons) button.setAttribute('aria-pressed', String(button.dataset.x === this.xMode));
    }

    /** Shows [a, b] (in the x axis' units) on every chart, fetched at full resolution. */
    async zoomTo(a, b, mode, sourceName) {
      let since = a;
      let until = b;
      if (mode === 'step') {
        // The API selects by time: find the times the chosen steps were logged at.
        const series = this.seriesFor(sourceName);
        since = Infinity;
        until = -Infinity;
        for (let i = 0; i < series.t.length; i++) {
          const s = series.s[i];
          if (s === null || s < a || s > b) continue;
          since = Math.min(since, series.t[i]);
          until = Math.max(until, series.t[i]);
        }
        if (!Number.isFinite(since)) return;
      }
      const gen = ++this.zoomGen;
      this.zoom = { mode, x0: a, x1: b, series: null, loading: true };
      this.renderZoomInfo();
      this.invalidateCharts();
      try {
        const body = await apiGet(runPath(this.runId, '/metrics'), {
          since: since.toFixed(6), until: until.toFixed(6), max_points: 2 * this.chartWidth(),
        });
        if (this.closed || gen !== this.zoomGen) return;
        const series = new Map();
        for (const [name, wire] of Object.entries((body && body.series) || {})) series.set(name, seriesFromWire(wire));
        this.zoom.series = series;
        this.zoom.loading = false;
      } catch (err) {
        if (this.closed || gen !== this.zoomGen) return;
        showBanner(`Zoom failed: ${errorText(err)}`, 'error');
        this.resetZoom();
        return;
      }
      for (const chart of this.charts.values()) chart.updateCount();
      this.renderZoomInfo();
      this.invalidateCharts();
    }

    resetZoom() {
      this.zoomGen++;
      if (!this.zoom) return;
      this.zoom = null;
      for (const chart of this.charts.values()) chart.updateCount();
      this.renderZoomInfo();
      this.invalidateCharts();
    }

    renderZoomInfo() {
      const z = this.zoom;
      this.zoomInfo.hidden = !z;
      if (!z) return;
      const fmt = (x) => (z.mode === 'time' ? formatClock(x) : formatValue(Math.round(x)));
      this.zoomInfo.replaceChildren(
        `${z.loading ? 'Loading' : 'Zoomed'} ${fmt(z.x0)} – ${fmt(z.x1)}`,
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => this.resetZoom(), title: 'Or double-click a chart' }, 'Back to live'));
    }

    // ---------------------------------------------------------------- system

    renderSystem() {
      if (this.closed) return;
      const names = Array.from(this.store.keys()).filter((n) => n.startsWith(SYSTEM_PREFIX)).sort();
      if (names.length === 0) {
        if (!this.systemGrid.querySelector('.empty')) {
          this.systemGrid.replaceChildren(h('div', { class: 'empty' }, 'No system/* metrics yet.'));
        }
        return;
      }
      this.systemGrid.querySelector('.empty')?.remove();
      this.gauges = this.gauges || new Map();
      for (const name of names) {
        let gauge = this.gauges.get(name);
        if (!gauge) {
          gauge = {
            value: h('span', { class: 'gauge-value' }),
            fill: h('div', { class: 'gauge-fill' }),
            canvas: h('canvas', { class: 'spark' }),
          };
          gauge.bar = h('div', { class: 'gauge-bar' }, gauge.fill);
          gauge.el = h('div', { class: 'gauge', 'data-metric': name },
            h('div', { class: 'gauge-head' }, h('span', { class: 'gauge-name', title: name }, name.slice(SYSTEM_PREFIX.length)), gauge.value),
            gauge.bar, gauge.canvas);
          this.gauges.set(name, gauge);
          const after = Array.from(this.gauges.keys()).sort().indexOf(name);
          this.systemGrid.insertBefore(gauge.el, this.systemGrid.children[after] || null);
        }
        const series = this.store.get(name);
        const last = series.v.length ? series.v[series.v.length - 1] : NaN;
        const percentLike = /percent|usage|util|_pct$/i.test(name) && Number.isFinite(last) && last >= 0 && last <= 100.5;
        gauge.value.textContent = formatValue(last) + (percentLike ? '%' : '');
        gauge.bar.hidden = !percentLike;
        if (percentLike) {
          gauge.fill.style.width = `${Math.min(100, last)}%`;
          gauge.fill.dataset.level = last >= 90 ? 'high' : last >= 70 ? 'mid' : 'low';
        }
        drawSparkline(gauge.canvas, series, gauge.canvas.clientWidth, gauge.canvas.clientHeight || 28);
      }
    }

    // ---------------------------------------------------------------- events

    renderEventFilters() {
      const counts = new Map();
      for (const row of this.events) counts.set(row.event_type, (counts.get(row.event_type) || 0) + 1);
      const types = Array.from(counts.entries()).sort((a, b) => b[1] - a[1]).slice(0, 12).map(([type]) => type);
      for (const type of this.eventFilter.type) if (!types.includes(type)) types.push(type);
      const group = (name, values, label) => h('div', { class: 'chip-group', 'data-group': name },
        h('span', { class: 'chip-label' }, label),
        values.map((value) => h('button', {
          type: 'button', class: `chip chip-${name}-${value}`, 'data-group': name, 'data-value': value,
          'aria-pressed': String(this.eventFilter[name].has(value)),
          onclick: () => this.toggleEventFilter(name, value),
        }, value)));
      const groups = [group('kind', EVENT_KINDS, 'Kind'), group('level', LEVELS, 'Level')];
      if (types.length) groups.push(group('type', types, 'Type')); // replaceChildren(null) would print "null"
      this.eventFiltersEl.replaceChildren(...groups);
      this.filterTypesShown = types.join('\u0000');
    }

    toggleEventFilter(group, value) {
      const set = this.eventFilter[group];
      if (set.has(value)) set.delete(value);
      else set.add(value);
      this.renderEventFilters();
      this.renderEvents();
    }

    eventMatches(row) {
      const f = this.eventFilter;
      return (f.kind.size === 0 || f.kind.has(row.kind)) && (f.level.size === 0 || f.level.has(row.level))
        && (f.type.size === 0 || f.type.has(row.event_type));
    }

    renderEvents() {
      if (this.closed) return;
      const rows = [];
      let matched = 0;
      for (const row of this.events) {
        if (!this.eventMatches(row)) continue;
        matched++;
        if (rows.length < EVENTS_RENDERED) rows.push(this.eventItem(row));
      }
      if (rows.length === 0) {
        rows.push(h('li', { class: 'empty' }, this.eventsError ? `Could not load events: ${this.eventsError}` : this.events.length ? 'No event matches the filters.' : 'No events yet.'));
      }
      this.eventList.replaceChildren(...rows);
      this.eventsCountEl.textContent = `${matched === this.events.length ? '' : `${matched} of `}${this.events.length}${matched > EVENTS_RENDERED ? ` (newest ${EVENTS_RENDERED} shown)` : ''}`;
      this.olderButton.disabled = !this.nextCursor && !this.olderCutoff;
      this.olderButton.textContent = this.nextCursor || this.olderCutoff ? 'Older' : 'No older events';
      // New event types appear as chips; rebuild the chip bar only when they change.
      const types = new Map();
      for (const row of this.events) types.set(row.event_type, (types.get(row.event_type) || 0) + 1);
      const top = Array.from(types.entries()).sort((a, b) => b[1] - a[1]).slice(0, 12).map(([t]) => t);
      for (const type of this.eventFilter.type) if (!top.includes(type)) top.push(type);
      if (top.join('\u0000') !== this.filterTypesShown) this.renderEventFilters();
    }

    eventItem(row) {
      const key = row.id !== null && row.id !== undefined ? 'id:' + row.id : row._key;
      const expanded = this.expandedEvents.has(key);
      const li = h('li', { class: `event kind-${row.kind} level-${row.level}`, 'data-kind': row.kind, 'data-level': row.level, 'data-type': row.event_type },
        h('button', {
          type: 'button', class: 'event-line', 'aria-expanded': String(expanded),
          onclick: () => {
            if (this.expandedEvents.has(key)) this.expandedEvents.delete(key);
            else this.expandedEvents.add(key);
            this.renderEvents();
          },
        },
        h('time', { class: 'event-time', title: formatClock(row._ts, { date: true, millis: true }) }, formatClock(row._ts)),
        h('span', { class: `lvl lvl-${row.level}` }, row.level),
        h('span', { class: 'event-kind' }, row.kind),
        h('span', { class: 'event-type' }, row.event_type),
        h('span', { class: 'event-summary' }, summarizeEvent(row))));
      if (expanded) {
        const detail = h('div', { class: 'event-detail' });
        const data = row.event_data || {};
        if (row.kind === 'exception' && data.traceback) {
          const { traceback, ...rest } = data;
          detail.append(jsonTree(rest, { depth: 2 }), h('pre', { class: 'traceback' }, traceback));
        } else {
          detail.append(jsonTree(data, { depth: 2 }));
        }
        li.append(detail);
      }
      return li;
    }

    async loadOlder() {
      if (this.olderLoading) return;
      this.olderLoading = true;
      this.olderButton.disabled = true;
      try {
        const params = { limit: EVENTS_PAGE };
        if (this.nextCursor) params.cursor = this.nextCursor;
        const body = await apiGet(runPath(this.runId, '/events'), params);
        if (this.closed) return;
        let rows = ((body && body.events) || []).map(prepareEventRow);
        if (!this.nextCursor && this.olderCutoff) {
          // After trimming, page from the start and skip what is still held.
          rows = rows.filter((row) => row._ts < this.olderCutoff);
          this.olderCutoff = null;
        }
        const ids = new Set(this.events.map((row) => row.id).filter((id) => id !== null && id !== undefined));
        for (const row of rows) {
          if ((row.id !== null && row.id !== undefined && ids.has(row.id)) || this.eventKeys.has(row._key)) continue;
          this.events.push(row);
          this.eventKeys.add(row._key);
        }
        this.events.sort(compareEventsNewestFirst);
        this.nextCursor = (body && body.next_cursor) || null;
      } catch (err) {
        showBanner(`Could not load older events: ${errorText(err)}`, 'error');
      } finally {
        this.olderLoading = false;
        if (!this.closed) this.renderEvents();
      }
    }

    // ---------------------------------------------------------- state, alerts

    renderState() {
      if (this.closed) return;
      if (this.stateError) {
        this.stateEl.replaceChildren(h('div', { class: 'error' }, `Could not load state: ${this.stateError}`));
        return;
      }
      this.stateEl.replaceChildren(jsonTree(this.state, { open: this.stateOpen, depth: 1, empty: 'No state yet.' }));
    }

    alertsFromApi(items) {
      const map = new Map();
      for (const item of items) {
        if (!ACTIVE_ALERT_STATES.has(item.state)) continue;
        const alert = alertFromApi(item);
        map.set(alertKey(alert), alert);
      }
      return map;
    }

    renderAlerts() {
      const alerts = Array.from(this.alerts.values()).sort((a, b) => (a.state === b.state ? b.ts - a.ts : a.state === 'firing' ? -1 : 1));
      const firing = alerts.filter((a) => a.state === 'firing').length;
      this.alertsEl.dataset.firing = String(firing);
      this.alertsEl.querySelector('.alerts-count').textContent = alerts.length ? `${firing} firing${alerts.length > firing ? `, ${alerts.length - firing} pending` : ''}` : '';
      // An alert that fired and resolved between two looks (a NaN burst) stays visible as resolved.
      const resolved = this.recentlyResolvedAlerts(5);
      const items = alerts.length ? [] : [h('li', { class: 'muted' }, 'No firing alerts.')];
      this.alertsList.replaceChildren(...items, ...[...alerts, ...resolved].map((a) => {
        const labels = Object.entries(a.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ');
        const note = a.annotations && (a.annotations.summary || a.annotations.description);
        const since = Number.isFinite(parseTime(a.active_since)) ? parseTime(a.active_since) : a.ts;
        return h('li', { class: `alert alert-${a.state} sev-${a.severity}`, 'data-rule': a.rule, 'data-state': a.state },
          h('span', { class: `lvl lvl-${LEVELS.includes(a.severity) ? a.severity : 'warning'}` }, a.severity || 'warning'),
          h('strong', { class: 'alert-rule' }, a.rule),
          h('span', { class: 'alert-state' }, a.state),
          labels ? h('span', { class: 'muted' }, labels) : null,
          a.value !== null && a.value !== undefined ? h('span', null, `value ${formatValue(parseValue(a.value))}`) : null,
          note ? h('span', { class: 'alert-note' }, note) : null,
          h('span', { class: 'muted alert-since' }, a.state === 'resolved' ? `at ${formatClock(a.ts)}` : `since ${formatClock(since)}`));
      }));
    }

    /** The latest alerts of this run whose last transition is "resolved" (newest first, at most limit). */
    recentlyResolvedAlerts(limit) {
      const seen = new Set(this.alerts.keys());
      const out = [];
      for (const row of this.events) { // newest first
        if (row.kind !== 'alert') continue;
        const alert = alertFromRow(row);
        const key = alertKey(alert);
        if (seen.has(key)) continue;
        seen.add(key);
        if (alert.state === 'resolved') out.push(alert);
        if (out.length >= limit) break;
      }
      return out;
    }

    // -------------------------------------------------------------- pipeline

    async pollPipeline() {
      if (this.closed) return;
      if (!document.hidden) {
        try {
          const body = await apiGet('api/pipeline');
          if (!this.closed) this.renderPipeline(body);
        } catch (err) {
          if (!this.closed) {
            this.pipelineHealth.className = 'badge health-unknown';
            this.pipelineHealth.textContent = 'unavailable';
            this.pipelineBody.replaceChildren(h('div', { class: 'error' }, errorText(err)));
          }
        }
      }
      if (!this.closed) this.pipelineTimer = setTimeout(() => this.pollPipeline(), 2000);
    }

    renderPipeline(body) {
      const health = (body && body.health) || 'unknown';
      this.pipelineHealth.className = `badge health-${health}`;
      this.pipelineHealth.textContent = body && body.running === false ? 'stopped' : health;
      const components = Object.entries((body && body.components) || {});
      if (components.length === 0) {
        this.pipelineBody.replaceChildren(h('div', { class: 'empty' }, 'No components.'));
        return;
      }
      this.pipelineBody.replaceChildren(...components.map(([id, c]) => {
        const buffer = c.buffer || c.intake || null; // a source's queue is its intake
        const buffered = buffer ? Number(buffer.buffered_events) || 0 : null;
        const max = buffer ? Number(buffer.max_events) || 0 : null;
        const fill = buffer && max ? Math.min(100, (buffered / max) * 100) : 0;
        const drops = Object.entries(c.dropped_events || {}).filter(([, n]) => Number(n) > 0);
        const dropTotal = drops.reduce((sum, [, n]) => sum + Number(n), 0);
        const errors = Number(c.errors) || 0;
        // No per-component health in the protocol: derive one from what it reports.
        const state = errors > 0 ? 'bad' : dropTotal > 0 || fill >= 90 ? 'warn' : 'ok';
        const stats = [
          `${formatCount(c.events_per_second)} ev/s`,
          // Sources report what they passed on as sent_events (as the server's rate does).
          `${formatCount(Number(c.processed_events) || Number(c.sent_events) || 0)} processed`,
          `${errors} error${errors === 1 ? '' : 's'}`,
        ];
        if (c.last_flush_seconds !== undefined && c.last_flush_seconds !== null) {
          stats.push(`flush ${formatValue(Number(c.last_flush_seconds) * 1000)} ms`);
        }
        return h('div', { class: 'component', 'data-component': id, 'data-health': state },
          h('div', { class: 'component-head' },
            h('span', { class: `dot dot-${state}`, title: state }),
            h('strong', null, id),
            h('span', { class: 'tag' }, [c.role, c.type].filter(Boolean).join(' · '))),
          buffer ? h('div', { class: 'buffer' },
            h('div', { class: 'gauge-bar' }, h('div', { class: 'gauge-fill', 'data-level': fill >= 90 ? 'high' : fill >= 70 ? 'mid' : 'low', style: `width:${fill}%` })),
            h('span', { class: 'muted buffer-text' }, `${formatCount(buffered)} / ${formatCount(max)} buffered`)) : null,
          h('div', { class: 'component-stats muted' }, stats.join(' · ')),
          drops.length ? h('div', { class: 'drops' }, 'dropped: ' + drops.map(([reason, n]) => `${reason} ${formatCount(n)}`).join(', ')) : null);
      }));
    }
  }

  function debounce(fn, ms) {
    let timer = 0;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  // ------------------------------------------------------------ sessions list

  const SESSIONS_PAGE = 50;
  const SESSIONS_HEAD_MAX = 1000; // the largest page GET /api/sessions serves
  const SESSION_LIST_KINDS = ['lifecycle', 'heartbeat', 'log'];
  const SESSION_PAGE_KINDS = ['metric', 'log', 'lifecycle', 'state', 'heartbeat'];
  // A status learnt from a live event stands over fetched rows that do not
  // show it yet for this long. The store commits in batches, and a liveness
  // verdict does not advance the row's updated_at, so "is the fetched row
  // newer than the event" cannot be told; a fetched row with the same status
  // ends the hold at once.
  const LIVE_STATUS_HOLD_MS = 5000;
  const SESSION_COLUMNS = ['Session', 'Status', 'Product', 'Version', 'Host', 'Created', 'Last heartbeat'];

  function sessionStatusClass(status) {
    return 'status-' + (SESSION_STATUSES.includes(status) ? status : 'unknown');
  }

  function sessionBadge(status, attrs = {}) {
    return h('span', { ...attrs, class: `badge ${sessionStatusClass(status)}`, 'data-status': status || 'unknown' },
      status || 'unknown');
  }

  function setSessionBadge(el, status) {
    el.className = `badge ${sessionStatusClass(status)}`;
    el.dataset.status = status || 'unknown';
    el.textContent = status || 'unknown';
  }

  const sessionPath = (id) => `api/sessions/${encodeURIComponent(id)}`;
  const sessionHref = (id) => '#/sessions/' + encodeURIComponent(id);

  /** "12s ago" for a past time (epoch seconds), or "—". */
  function agoText(ts, now) {
    return Number.isFinite(ts) ? `${formatDuration(Math.max(0, now - ts))} ago` : '—';
  }

  /** The query part of the hash (#/sessions?status=hung&product=x). */
  function hashQuery() {
    const i = location.hash.indexOf('?');
    return new URLSearchParams(i >= 0 ? location.hash.slice(i + 1) : '');
  }

  /** Inserts into a list kept newest first (by _ts); arrivals are usually the newest. */
  function insertNewestFirst(list, item) {
    if (list.length === 0 || item._ts >= list[0]._ts) {
      list.unshift(item);
      return;
    }
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]._ts > item._ts) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, item);
  }

  /**
   * #/sessions: GET /api/sessions with status and product filters, paged by
   * next_cursor. The first pages (up to SESSIONS_HEAD_MAX rows) are re-read
   * live, at most once a second, when /ws lifecycle, heartbeat or liveness
   * verdict events concern them; a status an event announces is shown at once.
   */
  class SessionsPage extends LiveListPage {
    constructor(root) {
      super(root);
      const query = hashQuery();
      const status = query.get('status');
      this.status = SESSION_STATUSES.includes(status) ? status : '';
      this.product = (query.get('product') || '').trim();
      this.headLimit = SESSIONS_PAGE; // rows of the head, re-read by every refresh
      this.head = [];
      this.tail = []; // pages past SESSIONS_HEAD_MAX, read once by cursor
      this.nextCursor = null;
      this.rows = new Map(); // session id → {tr, row, live, heartbeat}
      this.loadGen = 0;
      this.loaded = false;
    }

    mount() {
      this.countEl = h('span', { class: 'muted', id: 'sessions-count' });
      this.errorEl = h('div', { class: 'error', hidden: true });
      this.chipsEl = h('div', { id: 'session-filters', class: 'chip-group', role: 'group', 'aria-label': 'Status' });
      this.productInput = h('input', {
        id: 'session-product', type: 'search', placeholder: 'Product (exact name)', value: this.product,
        spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Filter by product',
      });
      this.productInput.addEventListener('input', debounce(() => this.setFilter(this.status, this.productInput.value.trim()), 250));
      this.tbody = h('tbody');
      this.emptyEl = h('div', { class: 'empty', hidden: true });
      this.moreButton = h('button', { type: 'button', id: 'sessions-more', class: 'btn', hidden: true, onclick: () => this.loadMore() }, 'Load more');
      this.root.append(h('section', { id: 'sessions', class: 'card' },
        h('div', { class: 'card-head' }, h('h1', null, 'Sessions'), this.countEl),
        h('div', { class: 'toolbar' }, this.chipsEl, this.productInput),
        this.errorEl,
        h('div', { class: 'table-wrap' },
          h('table', { id: 'sessions-table', class: 'table' },
            h('thead', null, h('tr', null, SESSION_COLUMNS.map((c) => h('th', null, c)))),
            this.tbody)),
        this.emptyEl,
        h('div', { class: 'events-foot' }, this.moreButton)));
      this.renderChips();
      this.load();
      this.startLive(SESSION_LIST_KINDS);
    }

    renderChips() {
      const chip = (value, label) => h('button', {
        type: 'button', class: 'chip', 'data-status': value, 'aria-pressed': String(this.status === value),
        onclick: () => this.setFilter(value, this.product),
      }, label);
      this.chipsEl.replaceChildren(h('span', { class: 'chip-label' }, 'Status'), chip('', 'all'),
        ...SESSION_STATUSES.map((status) => chip(status, status)));
    }

    setFilter(status, product) {
      if (status === this.status && product === this.product) return;
      this.status = status;
      this.product = product;
      const query = new URLSearchParams();
      if (status) query.set('status', status);
      if (product) query.set('product', product);
      const text = query.toString();
      // replaceState: the filters are shareable in the URL without a hashchange (a re-route).
      history.replaceState(null, '', location.pathname + location.search + '#/sessions' + (text ? '?' + text : ''));
      this.renderChips();
      this.headLimit = SESSIONS_PAGE;
      this.tail = [];
      this.nextCursor = null;
      this.refresh.cancel();
      this.load();
    }

    params(extra) {
      return { status: this.status, product: this.product, ...extra };
    }

    async load() {
      const gen = ++this.loadGen;
      let body;
      try {
        body = await apiGet('api/sessions', this.params({ limit: this.headLimit }));
      } catch (err) {
        if (this.closed || gen !== this.loadGen) return;
        this.errorEl.textContent = `Could not load sessions: ${errorText(err)}`;
        this.errorEl.hidden = false;
        return;
      }
      if (this.closed || gen !== this.loadGen) return; // a newer load answers instead
      this.errorEl.hidden = true;
      this.loaded = true;
      this.head = (body && body.sessions) || [];
      const ids = new Set(this.head.map((row) => row.id));
      this.tail = this.tail.filter((row) => !ids.has(row.id));
      if (this.tail.length === 0) this.nextCursor = (body && body.next_cursor) || null;
      this.render();
    }

    /** The next page, by cursor: it joins the head (re-read live) while the head has room. */
    async loadMore() {
      if (!this.nextCursor || this.moreLoading) return;
      const gen = ++this.loadGen;
      this.moreLoading = true;
      this.moreButton.disabled = true;
      try {
        const body = await apiGet('api/sessions', this.params({ limit: SESSIONS_PAGE, cursor: this.nextCursor }));
        if (this.closed || gen !== this.loadGen) return; // the filters changed meanwhile
        const known = new Set(this.head.concat(this.tail).map((row) => row.id));
        const rows = ((body && body.sessions) || []).filter((row) => !known.has(row.id));
        if (this.tail.length === 0 && this.headLimit + SESSIONS_PAGE <= SESSIONS_HEAD_MAX) {
          this.head = this.head.concat(rows);
          this.headLimit += SESSIONS_PAGE;
        } else {
          this.tail = this.tail.concat(rows);
        }
        this.nextCursor = (body && body.next_cursor) || null;
        this.render();
      } catch (err) {
        if (!this.closed) showBanner(`Could not load more sessions: ${errorText(err)}`, 'error');
      } finally {
        this.moreLoading = false;
        this.moreButton.disabled = false;
      }
    }

    render() {
      const rows = this.head.concat(this.tail);
      const seen = new Set();
      const now = Date.now() / 1000;
      rows.forEach((row, index) => {
        seen.add(row.id);
        let entry = this.rows.get(row.id);
        if (!entry) {
          entry = { tr: h('tr', { 'data-session-id': row.id }), row, live: null, heartbeat: NaN };
          this.rows.set(row.id, entry);
        }
        entry.row = row;
        this.fillRow(entry.tr, this.currentRow(entry), now);
        if (this.tbody.children[index] !== entry.tr) this.tbody.insertBefore(entry.tr, this.tbody.children[index] || null);
      });
      for (const [id, entry] of this.rows) {
        if (!seen.has(id)) {
          entry.tr.remove();
          this.rows.delete(id);
        }
      }
      this.countEl.textContent = `${rows.length}${this.nextCursor ? '+' : ''} session${rows.length === 1 ? '' : 's'}`;
      this.emptyEl.hidden = rows.length > 0;
      this.emptyEl.textContent = this.status || this.product
        ? 'No session matches the filters.'
        : 'No sessions yet. Create one with POST /api/sessions or runwatch.SessionMonitor.';
      this.moreButton.hidden = !this.nextCursor;
    }

    /** The fetched row, with a live status the store had not shown yet and the newest live heartbeat. */
    currentRow(entry) {
      let row = entry.row;
      const live = entry.live;
      if (live) {
        if (row.status === live.status || Date.now() - live.at > LIVE_STATUS_HOLD_MS) entry.live = null;
        else row = { ...row, status: live.status };
      }
      if (entry.heartbeat > parseTime(row.last_heartbeat)) row = { ...row, last_heartbeat: entry.heartbeat };
      const shown = sessionStatusAt(row, row.status, parseTime(row.last_heartbeat), Date.now() / 1000);
      if (shown !== row.status) row = { ...row, status: shown };
      return row;
    }

    fillRow(tr, row, now) {
      const created = parseTime(row.created_at);
      const heartbeat = parseTime(row.last_heartbeat);
      tr.dataset.status = row.status;
      tr.replaceChildren(
        h('td', null, h('a', { href: sessionHref(row.id), class: 'run-link' }, row.id)),
        h('td', null, sessionBadge(row.status)),
        h('td', { class: 'session-product' }, row.product ?? '—'),
        h('td', null, row.version ?? '—'),
        h('td', null, row.hostname ?? '—'),
        h('td', { title: row.created_at || '' }, formatClock(created, { date: true })),
        h('td', { class: 'heartbeat', title: Number.isFinite(heartbeat) ? formatClock(heartbeat, { date: true }) : '' },
          agoText(heartbeat, now)),
      );
    }

    onEvents(events) {
      const touched = new Set();
      let refresh = false;
      let settle = false;
      for (const event of events) {
        if (!event || typeof event !== 'object') continue;
        if (event.kind === 'lifecycle' && event.transition === 'started' && event.run_kind === 'session') refresh = true;
        const entry = this.rows.get(event.run_id);
        if (!entry) {
          // Not shown: with a status filter, it may belong in the list now.
          if (this.status && sessionStatusAfter(event, null)) refresh = true;
          continue;
        }
        if (event.kind === 'heartbeat') {
          const t = parseTime(event.timestamp);
          if (!(entry.heartbeat >= t)) entry.heartbeat = t;
          const status = this.currentRow(entry).status;
          if (status === 'hung' || status === 'crashed') refresh = true; // its recovery is on its way
          touched.add(entry);
          continue;
        }
        const status = sessionStatusAfter(event, this.currentRow(entry).status);
        if (!status) continue;
        entry.live = { status, at: Date.now() };
        touched.add(entry);
        refresh = true;
        settle = true;
      }
      const now = Date.now() / 1000;
      for (const entry of touched) this.fillRow(entry.tr, this.currentRow(entry), now);
      if (refresh && this.loaded) this.refresh();
      if (settle) {
        // The refresh may read the store before it commits the event: read again once it has.
        clearTimeout(this.settleTimer);
        this.settleTimer = setTimeout(() => this.refresh(), STORE_SETTLE_MS);
      }
    }

    tick() {
      const now = Date.now() / 1000;
      for (const entry of this.rows.values()) {
        const row = this.currentRow(entry);
        const badge = entry.tr.querySelector('.badge');
        if (badge && badge.dataset.status !== row.status) {
          this.fillRow(entry.tr, row, now); // a live status expired
          continue;
        }
        const cell = entry.tr.querySelector('.heartbeat');
        if (cell) cell.textContent = agoText(parseTime(row.last_heartbeat), now);
      }
    }
  }

  // ------------------------------------------------------------- session page

  const SESSION_EVENTS_PAGE = 100;
  const SESSION_METRICS_PAGE = 1000;
  const SESSION_EVENTS_MAX = 10000; // kept in memory
  const SESSION_METRICS_MAX = 20000;
  const SESSION_ROWS_RENDERED = 300; // events and metric values in the DOM
  const STATE_HISTORY_RENDERED = 200;

  /**
   * Epoch seconds as whole microseconds, for comparing times across sources:
   * REST answers carry ISO strings (rounded to microseconds, half to even) and
   * /ws carries floats, so one instant can differ by a microsecond.
   */
  const usec = (t) => Math.round(t * 1e6);
  /** Whether `t` (seconds) is after a stored time `storedUsec` by more than that rounding. */
  const laterThan = (t, storedUsec) => usec(t) > storedUsec + 1;

  function prepareMetricEntry(entry) {
    const ts = parseTime(entry.timestamp);
    return { timestamp: entry.timestamp, name: entry.name, value: parseValue(entry.value), tags: entry.tags || [], _ts: ts };
  }

  /**
   * #/sessions/<id>: the session's header, state (tree and history of
   * patches), events and metrics from GET /api/sessions/{id}, kept live by a
   * /ws subscription to this session. As on the run page, the page subscribes
   * first and reads once the server confirms, buffering what arrives meanwhile.
   */
  class SessionPage {
    constructor(root, id) {
      this.root = root;
      this.id = id;
      this.closed = false;
      this.session = null;
      this.status = null;
      this.liveStatus = null; // {status, at}: from an event, until a fetch shows it
      this.lastHeartbeat = NaN;
      this.events = []; // newest first
      this.eventKeys = new Set();
      this.eventsCursor = null;
      this.eventsTrimmed = false;
      this.expandedEvents = new Set();
      this.metrics = []; // values newest first
      this.metricsCursor = null;
      this.metricsTrimmed = false;
      this.store = new Map(); // metric name → series (what Chart reads)
      this.charts = new Map();
      this.xMode = 'time';
      this.zoom = null;
      this.state = {};
      this.stateHistory = []; // oldest first: {timestamp, _ts, patch} (the stored page, then live patches)
      this.stateOpen = new Map();
      this.metadataOpen = new Map();
      this.expandedHistory = new Set();
      this.loading = false;
      this.loadGen = 0;
      this.pending = [];
      this.refreshHeader = throttle(() => this.loadHeader(), 1000);
      this.resyncThrottled = throttle(() => this.load(), 3000);
      this.renderEventsSoon = throttle(() => schedule('session-events', () => this.renderEvents()), 250);
      this.renderStateSoon = throttle(() => schedule('session-state', () => this.renderState()), 250);
      this.renderMetricsSoon = throttle(() => schedule('session-metrics', () => this.renderMetricTable()), 250);
    }

    mount() {
      const metaItem = (label, id) => h('div', { class: 'meta-item' }, h('dt', null, label), h('dd', { id }, '—'));
      this.titleEl = h('h1', { id: 'session-title' }, this.id);
      this.badgeEl = sessionBadge(null, { id: 'session-status' });
      this.productEl = h('span', { class: 'tag', id: 'session-product-tag', title: 'product', hidden: true });
      this.versionEl = h('span', { class: 'tag', id: 'session-version', title: 'version', hidden: true });
      this.hostEl = h('span', { class: 'tag', id: 'session-host', title: 'hostname', hidden: true });
      this.headerError = h('div', { class: 'error', hidden: true });
      this.metadataEl = h('div', { class: 'config-tree' });
      this.metadataDetails = h('details', { id: 'session-metadata', class: 'config' }, h('summary', null, 'Metadata'), this.metadataEl);

      this.chartsGrid = h('div', { id: 'session-charts', class: 'charts' });
      this.chartsEmpty = h('div', { class: 'empty' }, 'No metrics yet.');
      this.zoomInfo = h('span', { class: 'zoom-info', hidden: true });
      this.metricsCountEl = h('span', { class: 'muted' });
      this.metricsBody = h('tbody');
      this.metricsOlder = h('button', { type: 'button', class: 'btn', id: 'session-metrics-older', onclick: () => this.loadOlderMetrics() }, 'Older');

      this.eventList = h('ol', { class: 'event-list', id: 'session-event-list' });
      this.eventsCountEl = h('span', { class: 'muted' });
      this.eventsOlder = h('button', { type: 'button', class: 'btn', id: 'session-events-older', onclick: () => this.loadOlderEvents() }, 'Older');

      this.stateEl = h('div', { id: 'session-state-tree', class: 'state-tree' });
      this.historyCountEl = h('span', { class: 'muted' });
      this.historyList = h('ol', { id: 'session-state-history', class: 'history-list' });

      this.root.append(
        h('section', { class: 'card run-header' },
          h('div', { class: 'title-row' },
            h('a', { href: '#/sessions', class: 'back', title: 'All sessions' }, '←'),
            this.titleEl, this.badgeEl, this.productEl, this.versionEl, this.hostEl),
          this.headerError,
          h('dl', { id: 'session-meta', class: 'meta' },
            metaItem('Created', 'session-created'), metaItem('Ended', 'session-ended'),
            metaItem('Duration', 'session-duration'), metaItem('Last heartbeat', 'session-heartbeat'),
            metaItem('Heartbeat timeout', 'session-timeout'), metaItem('Updated', 'session-updated')),
          this.metadataDetails),
        h('div', { class: 'run-body' },
          h('div', { class: 'run-main' },
            h('section', { id: 'session-metrics', class: 'card charts-card' },
              h('div', { class: 'toolbar' },
                h('h2', null, 'Metrics'), this.metricsCountEl, h('span', { class: 'spacer' }), this.zoomInfo),
              this.chartsGrid, this.chartsEmpty,
              h('details', { class: 'config metric-values', open: true },
                h('summary', null, 'Values'),
                h('div', { class: 'table-wrap metric-table-wrap' },
                  h('table', { id: 'session-metrics-table', class: 'table' },
                    h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Name'),
                      h('th', { class: 'num' }, 'Value'), h('th', null, 'Tags'))),
                    this.metricsBody)),
                h('div', { class: 'events-foot' }, this.metricsOlder))),
            h('section', { id: 'session-events', class: 'card events' },
              h('div', { class: 'card-head' }, h('h2', null, 'Events'), this.eventsCountEl),
              this.eventList,
              h('div', { class: 'events-foot' }, this.eventsOlder))),
          h('aside', { class: 'run-side' },
            h('section', { id: 'session-state', class: 'card' },
              h('div', { class: 'card-head' }, h('h2', null, 'State')), this.stateEl,
              h('div', { class: 'card-head history-head' }, h('h2', null, 'State history'), this.historyCountEl),
              this.historyList))),
      );
      this.el = (id) => this.root.querySelector('#' + id);
      this.renderEvents();
      this.renderState();
      this.renderMetricTable();

      this.resizeObserver = new ResizeObserver((entries) => {
        for (const entry of entries) {
          const chart = entry.target.__chart;
          if (!chart) continue;
          chart.cssWidth = entry.contentRect.width;
          chart.invalidate();
        }
      });
      this.darkQuery = matchMedia('(prefers-color-scheme: dark)');
      this.onSchemeChange = () => {
        theme.cache = null;
        this.invalidateCharts();
      };
      this.darkQuery.addEventListener('change', this.onSchemeChange);

      this.loading = true;
      this.socket = new LiveSocket({ runs: [this.id], kinds: SESSION_PAGE_KINDS }, {
        onSubscribed: () => {
          this.load();
          // What was sent just before the subscription may not be committed yet.
          clearTimeout(this.settleTimer);
          this.settleTimer = setTimeout(() => this.load(), STORE_SETTLE_MS);
        },
        onEvents: (events) => this.onEvents(events),
        onLagged: (dropped) => {
          showBanner(`Lagging: ${dropped ? `${dropped} live events were dropped` : 'the live stream fell behind'}; reloaded.`, 'warning');
          this.resyncThrottled();
        },
      }).start();
      // Without a live connection the page still shows what is stored.
      this.fallbackTimer = setTimeout(() => {
        if (this.loadGen === 0) this.load();
      }, 1500);
      this.tickTimer = setInterval(() => this.tick(), 1000);
    }

    unmount() {
      this.closed = true;
      this.socket?.close();
      clearTimeout(this.fallbackTimer);
      clearTimeout(this.settleTimer);
      clearTimeout(this.missingTimer);
      clearTimeout(this.headerSettleTimer);
      clearInterval(this.tickTimer);
      this.resizeObserver?.disconnect();
      this.darkQuery?.removeEventListener('change', this.onSchemeChange);
      this.refreshHeader.cancel();
      this.resyncThrottled.cancel();
      this.renderEventsSoon.cancel();
      this.renderStateSoon.cancel();
      this.renderMetricsSoon.cancel();
    }

    // ---------------------------------------------------------------- reads

    /** (Re)reads the session; live events that arrive meanwhile are buffered and replayed. */
    async load() {
      const gen = ++this.loadGen;
      this.loading = true;
      let body;
      try {
        body = await apiGet(sessionPath(this.id), { events_limit: SESSION_EVENTS_PAGE, metrics_limit: SESSION_METRICS_PAGE });
      } catch (err) {
        if (this.closed || gen !== this.loadGen) return;
        this.showHeaderError(err);
        clearTimeout(this.missingTimer);
        if (err instanceof ApiError && err.status === 404) {
          // Created a moment ago, perhaps: look again, backing off.
          this.missingRetries = (this.missingRetries || 0) + 1;
          const delay = Math.min(15000, 1000 * 2 ** Math.min(4, this.missingRetries - 1));
          this.missingTimer = setTimeout(() => this.load(), delay);
        }
        this.finishLoad(null);
        return;
      }
      if (this.closed || gen !== this.loadGen) return;
      this.missingRetries = 0;
      clearTimeout(this.missingTimer);
      this.applySession(body);

      // Events: the first page, plus live ones newer than it (not committed yet).
      const rows = ((body && body.events) || []).map(prepareSessionEvent);
      const keys = new Set(rows.map((row) => row._key));
      const newest = rows.reduce((max, row) => Math.max(max, row._ts), -Infinity);
      for (const row of this.events) {
        if (row._ts > newest && !keys.has(row._key)) {
          rows.push(row);
          keys.add(row._key);
        }
      }
      rows.sort((a, b) => b._ts - a._ts);
      this.events = rows;
      this.eventKeys = keys;
      this.eventsCursor = (body && body.events_next_cursor) || null;
      this.eventsTrimmed = false;

      // Metrics: likewise, per name.
      const entries = ((body && body.metrics) || []).map(prepareMetricEntry);
      const lastTimes = new Map(); // name → newest stored time, in microseconds
      for (const e of entries) if (!(lastTimes.get(e.name) >= usec(e._ts))) lastTimes.set(e.name, usec(e._ts));
      for (const e of this.metrics) if (laterThan(e._ts, lastTimes.get(e.name) ?? -Infinity)) entries.push(e);
      entries.sort((a, b) => b._ts - a._ts);
      this.metrics = entries;
      this.metricsCursor = (body && body.metrics_next_cursor) || null;
      this.metricsTrimmed = false;
      this.rebuildSeries();

      // State: the stored state (merged by the store) includes the newest stored
      // patch, the last of the history page; live patches after it are applied again on top.
      const history = ((body && body.state_history) || []).map((e) => ({
        timestamp: e.timestamp, _ts: parseTime(e.timestamp), patch: isPlainObject(e.patch) ? e.patch : {},
      }));
      const lastHistory = history.length ? usec(history[history.length - 1]._ts) : -Infinity;
      let state = (body && isPlainObject(body.state)) ? body.state : {};
      for (const e of this.stateHistory) {
        if (!laterThan(e._ts, lastHistory)) continue;
        state = mergeState(state, e.patch);
        history.push({ timestamp: e.timestamp, _ts: e._ts, patch: e.patch });
      }
      this.state = state;
      this.stateHistory = history;
      this.stateHistoryPaged = Boolean(body && body.state_history_next_cursor); // older patches not loaded
      this.finishLoad({ lastTimes, eventKeys: new Set(this.eventKeys), lastHistory });
    }

    finishLoad(dedup) {
      this.loading = false;
      const pending = this.pending;
      this.pending = [];
      this.applyEvents(pending, dedup);
      this.renderEventsSoon();
      this.renderStateSoon();
      this.renderMetricsSoon();
      this.updateChartCount();
      this.invalidateCharts();
    }

    /** Only the header (after a status change): the smallest pages. */
    async loadHeader() {
      try {
        const body = await apiGet(sessionPath(this.id), { events_limit: 1, metrics_limit: 1 });
        if (!this.closed) this.applySession(body);
      } catch (err) {
        if (!this.closed) this.showHeaderError(err);
      }
    }

    showHeaderError(err) {
      this.headerError.textContent = err instanceof ApiError && err.status === 404
        ? `Unknown session “${this.id}” (waiting for it to be created)`
        : `Could not load the session: ${errorText(err)}`;
      this.headerError.hidden = false;
    }

    applySession(s) {
      if (!s) return;
      this.headerError.hidden = true;
      const firstTime = this.session === null;
      this.session = s;
      const live = this.liveStatus;
      if (live && s.status !== live.status && Date.now() - live.at <= LIVE_STATUS_HOLD_MS) {
        this.status = live.status; // the store has not shown the live event's status yet
      } else {
        this.liveStatus = null;
        this.status = s.status;
      }
      const heartbeatAt = parseTime(s.last_heartbeat);
      if (!(this.lastHeartbeat > heartbeatAt)) this.lastHeartbeat = heartbeatAt;
      setSessionBadge(this.badgeEl, this.shownStatus(Date.now() / 1000));
      const tag = (el, value) => {
        el.textContent = value ?? '';
        el.hidden = value === null || value === undefined || value === '';
      };
      tag(this.productEl, s.product);
      tag(this.versionEl, s.version);
      tag(this.hostEl, s.hostname);
      const setTime = (id, iso) => {
        const el = this.el(id);
        el.textContent = iso ? formatClock(parseTime(iso), { date: true }) : '—';
        el.title = iso || '';
      };
      setTime('session-created', s.created_at);
      setTime('session-ended', s.ended_at);
      setTime('session-updated', s.updated_at);
      const timeout = s.heartbeat_timeout_seconds;
      this.el('session-timeout').textContent = timeout === null || timeout === undefined ? 'default' : `${formatValue(Number(timeout))} s`;
      const metadata = s.metadata;
      const hasMetadata = isPlainObject(metadata) && Object.keys(metadata).length > 0;
      this.metadataEl.replaceChildren(hasMetadata ? jsonTree(metadata, { open: this.metadataOpen, depth: 1 }) : h('div', { class: 'muted' }, 'No metadata.'));
      if (firstTime) this.metadataDetails.open = false;
      document.title = `${s.product ? s.product + ' · ' : ''}${this.id} · runwatch`;
      this.tick();
    }

    /** The status shown at `now`: the stored (or live) one, suspended by silence for datacat's sessions. */
    shownStatus(now) {
      return sessionStatusAt(this.session, this.status, this.lastHeartbeat, now);
    }

    setLiveStatus(status) {
      this.status = status;
      this.liveStatus = { status, at: Date.now() };
      setSessionBadge(this.badgeEl, this.shownStatus(Date.now() / 1000));
      this.refreshHeader();
      // That read may come before the store commits the change (ended_at...): read again once it has.
      clearTimeout(this.headerSettleTimer);
      this.headerSettleTimer = setTimeout(() => this.refreshHeader(), STORE_SETTLE_MS);
    }

    tick() {
      if (this.closed) return;
      const now = Date.now() / 1000;
      const s = this.session;
      if (s) {
        const start = parseTime(s.created_at);
        const end = this.status === 'ended' ? parseTime(s.ended_at) : NaN;
        const until = Number.isFinite(end) ? end : this.status === 'ended' ? parseTime(s.updated_at) : now;
        this.el('session-duration').textContent = formatDuration(until - start);
      }
      const shown = this.shownStatus(now);
      if (this.badgeEl.dataset.status !== shown) setSessionBadge(this.badgeEl, shown);
      const hb = this.el('session-heartbeat');
      hb.textContent = agoText(this.lastHeartbeat, now);
      hb.title = Number.isFinite(this.lastHeartbeat) ? formatClock(this.lastHeartbeat, { date: true }) : '';
    }

    async loadOlderEvents() {
      if (!this.eventsCursor || this.eventsOlderLoading) return;
      this.eventsOlderLoading = true;
      this.eventsOlder.disabled = true;
      try {
        const body = await apiGet(sessionPath(this.id), { events_limit: SESSION_EVENTS_PAGE, events_cursor: this.eventsCursor, metrics_limit: 1 });
        if (this.closed) return;
        for (const row of ((body && body.events) || []).map(prepareSessionEvent)) {
          if (this.eventKeys.has(row._key)) continue;
          this.events.push(row);
          this.eventKeys.add(row._key);
        }
        this.events.sort((a, b) => b._ts - a._ts);
        this.eventsCursor = (body && body.events_next_cursor) || null;
      } catch (err) {
        showBanner(`Could not load older events: ${errorText(err)}`, 'error');
      } finally {
        this.eventsOlderLoading = false;
        if (!this.closed) this.renderEvents();
      }
    }

    async loadOlderMetrics() {
      if (!this.metricsCursor || this.metricsOlderLoading) return;
      this.metricsOlderLoading = true;
      this.metricsOlder.disabled = true;
      try {
        const body = await apiGet(sessionPath(this.id), { events_limit: 1, metrics_limit: SESSION_METRICS_PAGE, metrics_cursor: this.metricsCursor });
        if (this.closed) return;
        const older = ((body && body.metrics) || []).map(prepareMetricEntry);
        this.metrics = this.metrics.concat(older);
        this.metrics.sort((a, b) => b._ts - a._ts);
        this.metricsCursor = (body && body.metrics_next_cursor) || null;
        this.rebuildSeries();
        this.invalidateCharts();
      } catch (err) {
        showBanner(`Could not load older values: ${errorText(err)}`, 'error');
      } finally {
        this.metricsOlderLoading = false;
        if (!this.closed) this.renderMetricTable();
      }
    }

    // ----------------------------------------------------------------- live

    onEvents(events) {
      if (this.loading) {
        this.pending.push(...events);
        if (this.pending.length > 200000) this.pending.splice(0, this.pending.length - 200000);
        return;
      }
      this.applyEvents(events, null);
    }

    /** Applies live wire events; `dedup` skips what a just-read session already holds. */
    applyEvents(events, dedup) {
      const touched = new Set();
      let eventsChanged = false;
      let stateChanged = false;
      for (const event of events) {
        if (!event || event.run_id !== this.id) continue;
        const t = parseTime(event.timestamp);
        switch (event.kind) {
          case 'metric': {
            if (!Number.isFinite(t)) break;
            const tags = sessionTags(event.tags);
            for (const [name, raw] of Object.entries(event.values || {})) {
              if (dedup && !laterThan(t, dedup.lastTimes.get(name) ?? -Infinity)) continue;
              const entry = { timestamp: t, name, value: parseValue(raw), tags, _ts: t };
              insertNewestFirst(this.metrics, entry);
              this.appendPoint(name, entry);
              touched.add(name);
            }
            break;
          }
          case 'state': {
            if (dedup && !laterThan(t, dedup.lastHistory)) break; // in the stored state already
            const patch = isPlainObject(event.patch) ? event.patch : {};
            this.state = mergeState(this.state, patch);
            this.stateHistory.push({ timestamp: t, _ts: t, patch });
            stateChanged = true;
            break;
          }
          case 'heartbeat':
            if (!(this.lastHeartbeat >= t)) this.lastHeartbeat = t;
            this.tick();
            if (this.status === 'hung' || this.status === 'crashed') this.refreshHeader();
            break;
          case 'lifecycle': {
            const status = sessionStatusAfter(event, this.status);
            if (status) this.setLiveStatus(status);
            else this.refreshHeader();
            break;
          }
          case 'log': {
            const row = prepareSessionEvent(sessionEventFromWire(event));
            if (!(dedup && dedup.eventKeys.has(row._key)) && !this.eventKeys.has(row._key)) {
              insertNewestFirst(this.events, row);
              this.eventKeys.add(row._key);
              eventsChanged = true;
            }
            const status = sessionStatusAfter(event, this.status);
            if (status && status !== this.status) this.setLiveStatus(status);
            break;
          }
          default:
            break;
        }
      }
      if (eventsChanged) {
        if (this.events.length > SESSION_EVENTS_MAX) {
          for (const row of this.events.splice(SESSION_EVENTS_MAX)) this.eventKeys.delete(row._key);
          this.eventsCursor = null; // the dropped tail lies between what is kept and the cursor
          this.eventsTrimmed = true;
        }
        this.renderEventsSoon();
      }
      if (stateChanged) this.renderStateSoon();
      if (touched.size) {
        if (this.metrics.length > SESSION_METRICS_MAX) {
          this.metrics.splice(SESSION_METRICS_MAX);
          this.metricsCursor = null;
          this.metricsTrimmed = true;
        }
        for (const name of touched) {
          this.ensureChart(name);
          const series = this.store.get(name);
          const limit = 4 * this.chartWidth();
          if (series.t.length > limit) this.store.set(name, decimateMinMax(series, limit / 4));
          const chart = this.charts.get(name);
          chart.updateCount();
          if (!this.zoom) chart.invalidate();
        }
        this.renderMetricsSoon();
      }
    }

    // --------------------------------------------------------------- charts

    appendPoint(name, entry) {
      let series = this.store.get(name);
      if (!series) {
        series = createSeries();
        this.store.set(name, series);
      }
      appendPoint(series, entry._ts, null, entry.value);
    }

    rebuildSeries() {
      this.store = new Map();
      for (let i = this.metrics.length - 1; i >= 0; i--) this.appendPoint(this.metrics[i].name, this.metrics[i]);
      const limit = 4 * this.chartWidth();
      for (const [name, series] of this.store) {
        if (series.t.length > limit) this.store.set(name, decimateMinMax(series, limit / 4));
        this.ensureChart(name).updateCount();
      }
      for (const [name, chart] of this.charts) if (!this.store.has(name)) chart.updateCount();
    }

    /** What Chart reads: this page zooms client-side, so always the held series. */
    seriesFor(name) {
      return this.store.get(name) || createSeries();
    }

    chartWidth() {
      for (const chart of this.charts.values()) if (chart.cssWidth) return Math.round(chart.cssWidth);
      const gridWidth = this.chartsGrid.clientWidth || 800;
      const columns = Math.max(1, Math.floor((gridWidth + CHART_GAP) / (CHART_MIN_WIDTH + CHART_GAP)));
      return Math.max(100, Math.round((gridWidth - CHART_GAP * (columns - 1)) / columns - 18));
    }

    ensureChart(name) {
      let chart = this.charts.get(name);
      if (chart) return chart;
      chart = new Chart(this, name);
      chart.canvas.__chart = chart;
      this.charts.set(name, chart);
      let before = null;
      for (const el of this.chartsGrid.children) {
        if (el.dataset.metric.localeCompare(name, undefined, { numeric: true }) > 0) {
          before = el;
          break;
        }
      }
      this.chartsGrid.insertBefore(chart.el, before);
      this.resizeObserver.observe(chart.canvas);
      this.updateChartCount();
      return chart;
    }

    updateChartCount() {
      this.chartsEmpty.hidden = this.charts.size > 0;
    }

    invalidateCharts() {
      for (const chart of this.charts.values()) chart.invalidate();
    }

    zoomTo(a, b, mode) {
      this.zoom = { mode, x0: a, x1: b, series: null, loading: false };
      this.renderZoomInfo();
      this.invalidateCharts();
    }

    resetZoom() {
      if (!this.zoom) return;
      this.zoom = null;
      this.renderZoomInfo();
      this.invalidateCharts();
    }

    renderZoomInfo() {
      const z = this.zoom;
      this.zoomInfo.hidden = !z;
      if (!z) return;
      this.zoomInfo.replaceChildren(`Zoomed ${formatClock(z.x0)} – ${formatClock(z.x1)}`,
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => this.resetZoom(), title: 'Or double-click a chart' }, 'Back to live'));
    }

    renderMetricTable() {
      if (this.closed) return;
      const shown = this.metrics.slice(0, SESSION_ROWS_RENDERED);
      this.metricsBody.replaceChildren(...(shown.length ? shown.map((e) => h('tr', { 'data-metric': e.name },
        h('td', { class: 'event-time', title: formatClock(e._ts, { date: true, millis: true }) }, formatClock(e._ts, { millis: true })),
        h('td', { class: 'metric-name' }, e.name),
        h('td', { class: 'num' }, formatValue(e.value)),
        h('td', null, (e.tags || []).map((tag) => h('span', { class: 'tag' }, tag)))))
        : [h('tr', null, h('td', { class: 'empty', colspan: '4' }, 'No metric values yet.'))]));
      const total = this.metrics.length;
      this.metricsCountEl.textContent = total
        ? `${this.charts.size} metric${this.charts.size === 1 ? '' : 's'} · ${total} value${total === 1 ? '' : 's'}${total > SESSION_ROWS_RENDERED ? ` (newest ${SESSION_ROWS_RENDERED} listed)` : ''}`
        : '';
      this.metricsOlder.disabled = !this.metricsCursor;
      this.metricsOlder.textContent = this.metricsCursor ? 'Older' : this.metricsTrimmed ? 'Older values: reload the page' : 'No older values';
    }

    // --------------------------------------------------------------- events

    renderEvents() {
      if (this.closed) return;
      const rows = this.events.slice(0, SESSION_ROWS_RENDERED).map((row) => this.eventItem(row));
      if (rows.length === 0) rows.push(h('li', { class: 'empty' }, 'No events yet.'));
      this.eventList.replaceChildren(...rows);
      const total = this.events.length;
      this.eventsCountEl.textContent = total ? `${total}${total > SESSION_ROWS_RENDERED ? ` (newest ${SESSION_ROWS_RENDERED} shown)` : ''}` : '';
      this.eventsOlder.disabled = !this.eventsCursor;
      this.eventsOlder.textContent = this.eventsCursor ? 'Older' : this.eventsTrimmed ? 'Older events: reload the page' : 'No older events';
    }

    eventItem(row) {
      const expanded = this.expandedEvents.has(row._key);
      const text = JSON.stringify(row.data);
      const summary = text === '{}' ? '' : text.length > 240 ? text.slice(0, 239) + '…' : text;
      const li = h('li', { class: `event kind-log level-${row.level}`, 'data-name': row.name, 'data-level': row.level },
        h('button', {
          type: 'button', class: 'event-line', 'aria-expanded': String(expanded),
          onclick: () => {
            if (this.expandedEvents.has(row._key)) this.expandedEvents.delete(row._key);
            else this.expandedEvents.add(row._key);
            this.renderEvents();
          },
        },
        h('time', { class: 'event-time', title: formatClock(row._ts, { date: true, millis: true }) }, formatClock(row._ts)),
        h('span', { class: `lvl lvl-${LEVELS.includes(row.level) ? row.level : 'info'}` }, row.level),
        h('span', { class: 'event-type' }, row.name),
        h('span', { class: 'event-summary' }, summary)));
      if (expanded) li.append(h('div', { class: 'event-detail' }, jsonTree(row.data, { depth: 2 })));
      return li;
    }

    // ---------------------------------------------------------------- state

    renderState() {
      if (this.closed) return;
      this.stateEl.replaceChildren(jsonTree(this.state, { open: this.stateOpen, depth: 1, empty: 'No state yet.' }));
      const history = this.stateHistory;
      const patches = `${history.length} patch${history.length === 1 ? '' : 'es'}`;
      this.historyCountEl.textContent = history.length ? (this.stateHistoryPaged ? `latest ${patches}` : patches) : '';
      const items = [];
      for (let i = history.length - 1; i >= 0 && items.length < STATE_HISTORY_RENDERED; i--) {
        const entry = history[i];
        if (!entry._changes) entry._changes = patchChanges(entry.patch, 8);
        const key = `${entry._ts}|${i}`;
        const expanded = this.expandedHistory.has(key);
        const changes = entry._changes.map((c) => (c.more
          ? h('span', { class: 'muted' }, `+${c.more} more`)
          : h('span', { class: `change change-${c.op === '-' ? 'del' : 'mod'}`, title: c.op === '-' ? 'removed' : 'set' }, `${c.op}${c.path}`)));
        const li = h('li', { class: 'history-item', 'data-index': String(i) },
          h('button', {
            type: 'button', class: 'event-line', 'aria-expanded': String(expanded),
            onclick: () => {
              if (this.expandedHistory.has(key)) this.expandedHistory.delete(key);
              else this.expandedHistory.add(key);
              this.renderState();
            },
          },
          h('time', { class: 'event-time', title: formatClock(entry._ts, { date: true, millis: true }) }, formatClock(entry._ts)),
          h('span', { class: 'history-changes' }, changes.length ? changes : h('span', { class: 'muted' }, 'no change'))));
        if (expanded) li.append(h('div', { class: 'event-detail' }, jsonTree(entry.patch, { depth: 2, empty: '(empty patch)' })));
        items.push(li);
      }
      if (items.length === 0) items.push(h('li', { class: 'empty' }, 'No state patches yet.'));
      this.historyList.replaceChildren(...items);
    }
  }

  // ------------------------------------------------------ other views, router

  class NotFoundPage {
    constructor(root, path) {
      this.root = root;
      this.path = path;
    }

    mount() {
      this.root.append(h('section', { class: 'card' }, h('h1', null, 'Not found'),
        h('p', null, `Nothing lives at #${this.path}. `, h('a', { href: '#/' }, 'Back to runs'))));
    }

    unmount() {}
  }

  function safeDecode(text) {
    try {
      return decodeURIComponent(text);
    } catch (_err) {
      return text;
    }
  }

  // Each route: a pattern on the hash path, the nav entry it highlights, and a view factory.
  const ROUTES = [
    { pattern: /^\/?$/, nav: 'runs', view: (root) => new RunsPage(root) },
    { pattern: /^\/runs\/(.+?)\/?$/, nav: 'runs', view: (root, m) => new RunPage(root, safeDecode(m[1])) },
    { pattern: /^\/sessions\/?$/, nav: 'sessions', view: (root) => new SessionsPage(root) },
    { pattern: /^\/sessions\/(.+?)\/?$/, nav: 'sessions', view: (root, m) => new SessionPage(root, safeDecode(m[1])) },
  ];

  let currentView = null;

  function route() {
    const path = location.hash.replace(/^#/, '').split('?')[0] || '/';
    const root = document.getElementById('app');
    if (currentView) currentView.unmount();
    root.replaceChildren();
    document.title = 'runwatch';
    let nav = null;
    currentView = null;
    for (const r of ROUTES) {
      const m = r.pattern.exec(path);
      if (m) {
        currentView = r.view(root, m);
        nav = r.nav;
        break;
      }
    }
    if (!currentView) currentView = new NotFoundPage(root, path);
    for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === nav);
    root.dataset.view = currentView.constructor.name;
    currentView.mount();
  }

  function start() {
    initAuth();
    window.addEventListener('hashchange', route);
    route();
  }

  root.runwatch = { core, route };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})(typeof globalThis !== 'undefined' ? globalThis : this);
