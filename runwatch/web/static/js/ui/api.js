/*
 * I/O shell: the bearer token, the REST client, and the live /ws subscription
 * with reconnection (docs/protocol.md). Registers on runwatch.ui.
 */
(function (root) {
  'use strict';
  const ui = ((root.runwatch = root.runwatch || {}).ui = root.runwatch.ui || {});

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


  /** PATCH (or POST) a JSON body; returns the answer's JSON; throws ApiError with the server's message. */
  async function apiSend(method, path, body) {
    let response;
    try {
      response = await fetch(apiUrl(path), {
        method,
        headers: { Accept: 'application/json', 'Content-Type': 'application/json', ...authHeaders() },
        body: JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (_err) {
      throw new ApiError(0, 'server unreachable', null);
    }
    const text = await response.text();
    let answer = null;
    try {
      answer = text ? JSON.parse(text) : null;
    } catch (_err) {
      // reported below by status
    }
    if (!response.ok) {
      const error = answer && answer.error;
      throw new ApiError(response.status, (error && error.message) || `${response.status} ${response.statusText}`, error && error.field);
    }
    return answer;
  }

  function errorText(err) {
    return err instanceof ApiError ? err.message : String(err && err.message ? err.message : err);
  }

  Object.assign(ui, {
    auth, initAuth, baseUrl, ApiError, apiUrl, authHeaders, apiGet, apiSend, runPath, connStatus, showBanner,
    wsUrl, eventsOfColumns, LiveSocket, errorText,
  });
})(typeof globalThis !== 'undefined' ? globalThis : this);
