/*
 * Timeline events and alerts: wire events as stored rows, summaries, log lines, alert state.
 * Pure core: no DOM, no clock, no I/O (classic script registering on
 * runwatch.core, or a Node module for the unit tests).
 */
(function (root) {
  'use strict';
  const { parseTime, parseValue, formatValue } = typeof module === 'object' && module.exports
    ? Object.assign({}, require('./format.js'))
    : root.runwatch.core;

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

  /**
   * How an EventRow reads as one log line: {message, source, data, traceback}.
   * A log record (Python logging through the run's handler, or any log event
   * with a "message") shows its message and logger; other events their
   * summary. `data` is what is left to expand (null when nothing); a traceback
   * (an exception's, or a logged exception's) is kept apart, as text.
   */
  function logLine(row) {
    const d = row.event_data && typeof row.event_data === 'object' ? row.event_data : {};
    let message = null;
    let source = null;
    let traceback = null;
    let rest = d;
    if (row.kind === 'log' && typeof d.message === 'string') {
      message = d.message;
      source = typeof d.logger === 'string' ? d.logger : null;
      const { message: _m, logger: _l, exception, ...others } = d;
      rest = others;
      if (exception && typeof exception === 'object') {
        if (typeof exception.traceback === 'string') traceback = exception.traceback;
        const { traceback: _t, ...about } = exception;
        if (!traceback || Object.keys(about).length) rest = { ...rest, exception: traceback ? about : exception };
        if (exception.type && !message) message = `${exception.type}: ${exception.message || ''}`;
      }
    } else if (row.kind === 'exception') {
      message = `${d.error_type || 'Error'}: ${d.message || ''}`;
      source = d.component || null;
      if (typeof d.traceback === 'string' && d.traceback) traceback = d.traceback;
      const { traceback: _t, message: _m, error_type: _e, ...others } = d;
      rest = others;
    } else {
      message = summarizeEvent(row);
    }
    const data = rest && Object.keys(rest).length ? rest : null;
    return { message: message || '', source, data, traceback };
  }

  const api = { RUN_STATUSES, LEVELS, EVENT_KINDS, STATUS_AFTER, RUN_PAGE_KINDS, RUNS_LIST_KINDS, STORE_SETTLE_MS, SYSTEM_PREFIX, ACTIVE_ALERT_STATES, wireToEventRow, prepareEventRow, compareEventsNewestFirst, alertFromRow, alertKey, applyAlert, alertFromApi, applyAlertIfNewer, runDuration, statusClass, summarizeEvent, logLine };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else Object.assign(((root.runwatch = root.runwatch || {}).core = root.runwatch.core || {}), api);
})(typeof globalThis !== 'undefined' ? globalThis : this);
