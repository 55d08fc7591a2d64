/*
 * Pure core of the alerts page: alert transitions (GET /api/alerts/history)
 * grouped into instances with their history, current state and filters.
 * No DOM, no clock, no I/O (classic script on runwatch.core, or a Node module).
 */
(function (root) {
  'use strict';
  const { parseTime } = typeof module === 'object' && module.exports ? require('./format.js') : root.runwatch.core;

  const ALERT_STATES = ['firing', 'pending', 'resolved', 'inactive'];
  const SEVERITIES = ['page', 'critical', 'error', 'warning', 'info'];

  /** The key of an alert instance: its run, rule and sorted labels. */
  function instanceKey(transition) {
    const labels = transition.labels || {};
    const text = Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join(',');
    return `${transition.run_id}\u0000${transition.rule}\u0000${text}`;
  }

  /**
   * Alert instances from transitions in any order: [{key, run_id, rule,
   * labels, severity, state, since, updated, annotations, value, history}],
   * `history` oldest first ({state, ts, value}), `state` the latest one's;
   * `since` is when the current state began (active_since for pending and
   * firing), `firedAt` when it last fired. Sorted firing, pending, then by
   * the latest change, newest first.
   */
  function alertInstances(transitions) {
    const byKey = new Map();
    for (const t of transitions || []) {
      if (!t || typeof t !== 'object' || !t.rule) continue;
      const ts = parseTime(t.updated_at);
      const key = instanceKey(t);
      let inst = byKey.get(key);
      if (!inst) {
        inst = { key, run_id: t.run_id, rule: t.rule, labels: t.labels || {}, history: [] };
        byKey.set(key, inst);
      }
      inst.history.push({ state: t.state, ts, value: t.value ?? null, severity: t.severity, annotations: t.annotations || {}, active_since: t.active_since, id: t.id });
    }
    const out = [];
    for (const inst of byKey.values()) {
      inst.history.sort((a, b) => a.ts - b.ts || (a.id ?? 0) - (b.id ?? 0));
      const last = inst.history[inst.history.length - 1];
      inst.state = last.state;
      inst.severity = last.severity || 'warning';
      // A resolution often carries no annotations: keep the latest ones given.
      inst.annotations = {};
      for (const h of inst.history) if (h.annotations && Object.keys(h.annotations).length) inst.annotations = h.annotations;
      inst.value = last.value;
      inst.updated = last.ts;
      const activeSince = parseTime(last.active_since);
      inst.since = (last.state === 'firing' || last.state === 'pending') && Number.isFinite(activeSince) ? activeSince : last.ts;
      let fired = NaN;
      for (const h of inst.history) if (h.state === 'firing') fired = h.ts;
      inst.firedAt = fired;
      out.push(inst);
    }
    const rank = (s) => (s === 'firing' ? 0 : s === 'pending' ? 1 : 2);
    out.sort((a, b) => rank(a.state) - rank(b.state) || b.updated - a.updated);
    return out;
  }

  /** Instances matching the filters {run, rule, severity, state} (empty or missing = any; run and rule are substrings). */
  function filterInstances(instances, filters) {
    const f = filters || {};
    const run = (f.run || '').toLowerCase();
    const rule = (f.rule || '').toLowerCase();
    return instances.filter((inst) => (!run || String(inst.run_id).toLowerCase().includes(run))
      && (!rule || String(inst.rule).toLowerCase().includes(rule))
      && (!f.severity || inst.severity === f.severity)
      && (!f.state || inst.state === f.state));
  }

  /** Counts per state: {firing, pending, resolved, inactive}. */
  function stateCounts(instances) {
    const counts = { firing: 0, pending: 0, resolved: 0, inactive: 0 };
    for (const inst of instances) if (inst.state in counts) counts[inst.state]++;
    return counts;
  }

  /**
   * The time window to open a run at for an alert (epoch seconds): from a
   * little before it went pending or fired until a little after it resolved
   * (or now, for an active one: open-ended, until null).
   */
  function alertWindow(inst, marginSeconds = 30) {
    let start = Infinity;
    let end = -Infinity;
    for (const h of inst.history) {
      if (!Number.isFinite(h.ts)) continue;
      start = Math.min(start, h.ts);
      end = Math.max(end, h.ts);
    }
    if (!Number.isFinite(start)) return null;
    const active = inst.state === 'firing' || inst.state === 'pending';
    return { since: start - marginSeconds, until: active ? null : end + marginSeconds };
  }

  const api = { ALERT_STATES, SEVERITIES, instanceKey, alertInstances, filterInstances, stateCounts, alertWindow };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else Object.assign(((root.runwatch = root.runwatch || {}).core = root.runwatch.core || {}), api);
})(typeof globalThis !== 'undefined' ? globalThis : this);
