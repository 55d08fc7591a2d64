/*
 * Sessions (docs/sessions.md): status from live events, tags, event rows.
 * Pure core: no DOM, no clock, no I/O (classic script registering on
 * runwatch.core, or a Node module for the unit tests).
 */
(function (root) {
  'use strict';
  const { parseTime, STATUS_AFTER, isPlainObject } = typeof module === 'object' && module.exports
    ? Object.assign({}, require('./format.js'), require('./events.js'), require('./state.js'))
    : root.runwatch.core;

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

  const api = { SESSION_STATUSES, sessionStatusAfter, sessionStatusAt, sessionTags, sessionEventFromWire, prepareSessionEvent };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else Object.assign(((root.runwatch = root.runwatch || {}).core = root.runwatch.core || {}), api);
})(typeof globalThis !== 'undefined' ? globalThis : this);
