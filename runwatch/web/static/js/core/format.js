/*
 * Pure core: parsing wire values and formatting numbers, times and durations.
 * No DOM, no clock, no I/O. Loaded as a classic script (it registers its
 * functions on runwatch.core) or required by Node (module.exports).
 */
(function (root) {
  'use strict';

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

  /** An axis label for seconds since a run started: "0s", "1m 30s", "2.5s", "1h 05m". */
  function formatRelative(seconds) {
    if (!Number.isFinite(seconds)) return '';
    const sign = seconds < 0 ? '-' : '';
    const a = Math.abs(seconds);
    if (a < 10 && !Number.isInteger(a)) return sign + String(Number(a.toPrecision(2))) + 's';
    return sign + formatDuration(a);
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

  /** A step count for an axis or a read-out: 12, 1.2k, 3.4M. */
  function formatStep(step) {
    if (!Number.isFinite(step)) return '';
    const a = Math.abs(step);
    if (a >= 1e6) return String(Number((step / 1e6).toPrecision(3))) + 'M';
    if (a >= 1e4) return String(Number((step / 1e3).toPrecision(3))) + 'k';
    return String(Math.round(step * 100) / 100);
  }

  const api = { parseTime, parseValue, formatValue, formatCount, formatDuration, formatRelative, formatClock, formatStep };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else Object.assign(((root.runwatch = root.runwatch || {}).core = root.runwatch.core || {}), api);
})(typeof globalThis !== 'undefined' ? globalThis : this);
