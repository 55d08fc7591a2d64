/*
 * #/runs/<id>: one run, live. Header (status, counters, config, tags and
 * note), alerts (active ones and their history), charts of every metric on
 * the run's global step (or time), events as log lines, state, system and
 * pipeline panels. #/runs/<id>?since=&until= opens it zoomed to a time range
 * (the alerts page links there). Registers RunPage on runwatch.views.
 */
(function (root) {
  'use strict';
  const core = root.runwatch.core;
  const ui = root.runwatch.ui;
  const views = ((root.runwatch.views = root.runwatch.views || {}));
  const {
    h, schedule, throttle, storage, statusBadge, setStatusBadge, jsonTree, theme, apiGet, apiUrl, authHeaders,
    runPath, showBanner, errorText, ApiError, LiveSocket, ChartsPanel, Sparkline, AnnotationEditor, logLineItem,
    colorFor, ImagesPanel, HistogramsPanel,
  } = ui;
  const {
    parseTime, parseValue, formatValue, formatCount, formatDuration, formatClock, mergeState, wireToEventRow,
    prepareEventRow, compareEventsNewestFirst, alertFromRow, alertFromApi, alertKey, applyAlert, applyAlertIfNewer,
    createSeries, seriesFromWire, appendPoint, decimateMinMax, usec, laterThan, firstLaterThan, stepCounter, liveStep, runDuration,
    alertInstances, STATUS_AFTER, RUN_PAGE_KINDS, STORE_SETTLE_MS, SYSTEM_PREFIX, ACTIVE_ALERT_STATES, EVENT_KINDS,
    LEVELS, parseHash, readText, compareHash,
  } = core;

  const EVENTS_PAGE = 200;
  const NO_KEYS = new Set();
  const EVENTS_MAX = 10000; // kept in memory
  const EVENTS_RENDERED = 500; // rows in the DOM
  const ALERT_HISTORY_SHOWN = 50;

  class RunPage {
    constructor(root, runId) {
      this.root = root;
      this.runId = runId;
      this.closed = false;
      this.summary = null;
      this.store = new Map(); // metric name → live series
      this.counter = { last: -1, lastTime: -Infinity }; // the run's global step, live
      this.zoomGen = 0;
      this.zoomSeries = null; // metric name → series at full resolution while zoomed
      this.events = []; // EventRows, newest first
      this.eventKeys = new Set();
      this.nextCursor = null;
      this.eventFilter = { kind: new Set(), level: new Set(), type: new Set() };
      this.expandedEvents = new Set();
      this.alerts = new Map();
      this.alertHistory = []; // transitions from GET /api/alerts/history, newest first
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
      // metric → the newest time (µs) the last history read held: a live point at or
      // before it is in that history already (the store may commit before /ws delivers).
      this.historyLast = new Map();
      this.touched = new Set();
      const query = parseHash(location.hash).params;
      const since = Number(readText(query, 'since'));
      const until = Number(readText(query, 'until'));
      this.openAt = Number.isFinite(since) && readText(query, 'since') !== '' ? { since, until: Number.isFinite(until) && readText(query, 'until') !== '' ? until : null } : null;
      this.refreshSummary = throttle(() => this.loadSummary(), 1000);
      this.resyncThrottled = throttle(() => this.loadAll(), 3000);
      this.renderEventsSoon = throttle(() => schedule('events', () => this.renderEvents()), 250);
      this.renderStateSoon = throttle(() => schedule('state', () => this.renderState()), 250);
      this.refreshAlertHistory = throttle(() => this.loadAlertHistory(), 1000);
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
      this.annotations = new AnnotationEditor(r, {});
      this.annotations.el.id = 'run-annotations';
      const exportButton = h('button', { type: 'button', class: 'btn', onclick: () => this.downloadExport() }, 'Export');
      const compareLink = h('a', { class: 'btn', href: compareHash({ runs: [r] }), title: 'Open in the compare view to add other runs' }, 'Compare…');

      this.alertsList = h('ul', { class: 'alert-list' });
      this.alertHistoryList = h('ol', { id: 'alert-history', class: 'alert-history' });
      this.alertsEl = h('section', { id: 'alerts', class: 'card alerts' },
        h('div', { class: 'card-head' }, h('h2', null, 'Alerts'), h('span', { class: 'muted alerts-count' }),
          h('span', { class: 'spacer' }), h('a', { href: '#/alerts?run=' + encodeURIComponent(r) }, 'All alerts of this run')),
        this.alertsList,
        h('details', { class: 'config alert-history-details' }, h('summary', null, 'History'), this.alertHistoryList));

      const stateStored = storage.get('runwatch.runCharts', '');
      let saved = {};
      try {
        saved = stateStored ? JSON.parse(stateStored) : {};
      } catch (_err) {
        saved = {};
      }
      this.panel = new ChartsPanel({
        state: { filter: storage.get('runwatch.metricFilter', ''), x: saved.x || 'step', smoothing: saved.smoothing || 0, logY: false, collapsed: saved.collapsed || [] },
        ids: { filter: 'metric-filter', x: 'x-axis', grid: 'charts' },
        traces: (spec) => this.tracesFor(spec),
        last: (spec) => {
          const live = this.store.get(spec.metrics[0]);
          return live && live.v.length ? live.v[live.v.length - 1] : undefined;
        },
        onChange: (state) => {
          // The time axis a link to a moment opens with is not the person's choice: it is not kept.
          if (state.x !== 'time') this.timeAxisFromLink = false;
          const x = this.timeAxisFromLink ? saved.x || 'step' : state.x;
          storage.set('runwatch.metricFilter', state.filter);
          storage.set('runwatch.runCharts', JSON.stringify({ x, smoothing: state.smoothing, collapsed: state.collapsed }));
        },
        onZoom: (x0, x1) => this.zoomTo(x0, x1),
        onReset: () => this.resetZoom(),
      });

      this.images = new ImagesPanel(r);
      this.histograms = new HistogramsPanel(r);

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
            this.titleEl, this.badgeEl, this.kindEl, h('span', { class: 'spacer' }), compareLink, exportButton),
          this.headerError,
          this.annotations.el,
          h('dl', { id: 'run-meta', class: 'meta' },
            metaItem('Started', 'run-start'), metaItem('Duration', 'run-duration'), metaItem('Step', 'run-step'),
            metaItem('Steps', 'run-steps'), metaItem('Episodes', 'run-episodes'),
            metaItem('Final reward', 'run-reward'), metaItem('Last heartbeat', 'run-heartbeat')),
          this.configDetails),
        this.alertsEl,
        h('div', { class: 'run-body' },
          h('div', { class: 'run-main' },
            h('section', { class: 'card charts-card' },
              h('div', { class: 'card-head' }, h('h2', null, 'Metrics')),
              this.panel.el),
            this.histograms.el,
            h('section', { id: 'events', class: 'card events' },
              h('div', { class: 'card-head' }, h('h2', null, 'Events'), this.eventsCountEl),
              this.eventFiltersEl, this.eventList,
              h('div', { class: 'events-foot' }, this.olderButton))),
          h('aside', { class: 'run-side' },
            this.images.el,
            h('section', { id: 'system-panel', class: 'card' },
              h('div', { class: 'card-head' }, h('h2', null, 'System')), this.systemGrid),
            h('section', { class: 'card' },
              h('div', { class: 'card-head' }, h('h2', null, 'State')), this.stateEl),
            h('section', { id: 'pipeline-panel', class: 'card' },
              h('div', { class: 'card-head' }, h('h2', null, 'Pipeline'), this.pipelineHealth), this.pipelineBody))),
      );
      this.el = (id) => this.root.querySelector('#' + id);
      for (const id of ['run-steps', 'run-episodes', 'run-reward']) this.el(id).parentNode.hidden = true; // until the run has them
      if (this.openAt) {
        this.timeAxisFromLink = this.panel.state.x !== 'time';
        this.panel.state.x = 'time';
        this.panel.updateControls();
      }
      this.renderAlerts();
      this.renderEventFilters();
      this.renderSystem();

      this.systemObserver = new ResizeObserver(() => schedule('system', () => this.renderSystem()));
      this.systemObserver.observe(this.systemGrid);
      this.darkQuery = matchMedia('(prefers-color-scheme: dark)');
      this.onSchemeChange = () => {
        theme.cache = null;
        for (const entry of this.panel.charts.values()) entry.chart.signature = '';
        this.panel.redrawAll();
        schedule('system', () => this.renderSystem());
      };
      this.darkQuery.addEventListener('change', this.onSchemeChange);

      // Subscribe first, then fetch history when the server confirms the
      // filter: anything emitted in between arrives live and is buffered, so
      // there is no gap between history and the live stream.
      this.loading = true;
      this.socket = new LiveSocket({ runs: [this.runId], kinds: [...RUN_PAGE_KINDS, 'image', 'histogram'] }, {
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
      this.systemObserver?.disconnect();
      this.darkQuery?.removeEventListener('change', this.onSchemeChange);
      this.refreshSummary.cancel();
      this.resyncThrottled.cancel();
      this.renderEventsSoon.cancel();
      this.renderStateSoon.cancel();
      this.refreshAlertHistory.cancel();
      this.panel?.destroy();
      this.images?.destroy();
      this.histograms?.destroy();
      for (const gauge of (this.gauges || new Map()).values()) gauge.spark.destroy();
    }

    // ---------------------------------------------------------------- history

    /** GET /api/compare for this run: every metric, with global steps, bucketed to the charts' width. */
    fetchMetrics(extra) {
      return apiGet('api/compare', { runs: this.runId, metrics: '*', max_points: 2 * this.panel.chartWidth(), ...extra });
    }

    /** (Re)loads everything; live events that arrive meanwhile are buffered and replayed. */
    async loadAll() {
      const gen = ++this.loadGen;
      this.loading = true;
      this.images.load(); // images and histograms read and render on their own
      this.histograms.load();
      const [summary, metrics, events, state, alerts, history] = await Promise.allSettled([
        apiGet(runPath(this.runId)),
        this.fetchMetrics(),
        apiGet(runPath(this.runId, '/events'), { limit: EVENTS_PAGE }),
        apiGet(runPath(this.runId, '/state')),
        this.alertsApi === false ? Promise.resolve(null) : apiGet('api/alerts', { run_id: this.runId }),
        apiGet('api/alerts/history', { run_id: this.runId, limit: 500 }),
      ]);
      if (this.closed || gen !== this.loadGen) return;
      let alertItems = null; // the server's active alerts, when it has the endpoint
      if (alerts.status === 'fulfilled' && alerts.value && Array.isArray(alerts.value.alerts)) {
        this.alertsApi = true;
        alertItems = alerts.value.alerts.filter((a) => a && (a.run_id === undefined || a.run_id === this.runId));
      } else if (alerts.status === 'rejected' && alerts.reason instanceof ApiError && alerts.reason.status === 404) {
        this.alertsApi = false; // not built on this server: alert events only, from now on
      }
      if (history.status === 'fulfilled' && history.value && Array.isArray(history.value.alerts)) {
        this.alertHistory = history.value.alerts;
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
        const store = new Map();
        for (const wire of (metrics.value && metrics.value.series) || []) {
          const s = seriesFromWire(wire);
          store.set(wire.metric, s);
          lastTimes.set(wire.metric, s.t.length ? usec(s.t[s.t.length - 1]) : -Infinity); // as microseconds
        }
        this.counter = stepCounter(store.values());
        // Live points newer than the history are not committed yet: keep them.
        for (const [name, old] of this.store) {
          const from = firstLaterThan(old.t, lastTimes.get(name) ?? -Infinity);
          if (from >= old.t.length) continue;
          if (!store.has(name)) store.set(name, createSeries());
          const s = store.get(name);
          for (let i = from; i < old.t.length; i++) {
            appendPoint(s, old.t[i], old.s[i], old.v[i]);
            if (old.s[i] !== null && old.s[i] > this.counter.last) this.counter.last = old.s[i];
            if (old.t[i] > this.counter.lastTime) this.counter.lastTime = old.t[i];
          }
        }
        this.store = store;
        this.historyLast = lastTimes;
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
      this.panel.setNames(Array.from(this.store.keys()));
      this.panel.redrawAll();
      this.renderEventFilters();
      this.renderEventsSoon();
      this.renderStateSoon();
      this.renderAlerts();
      schedule('system', () => this.renderSystem());
      if (this.openAt && !this.openedAt) {
        this.openedAt = true;
        const until = this.openAt.until ?? Date.now() / 1000;
        this.zoomTo(this.openAt.since, until);
      }
    }

    async loadSummary() {
      try {
        const summary = await apiGet(runPath(this.runId));
        if (!this.closed) this.applySummary(summary);
      } catch (err) {
        if (!this.closed) this.showHeaderError(err);
      }
    }

    async loadAlertHistory() {
      try {
        const body = await apiGet('api/alerts/history', { run_id: this.runId, limit: 500 });
        if (this.closed) return;
        this.alertHistory = (body && body.alerts) || [];
        this.renderAlerts();
      } catch (_err) {
        // The panel keeps what it had; the next load tries again.
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
      this.startTs = parseTime(summary.start_time);
      setStatusBadge(this.badgeEl, summary.status);
      this.kindEl.textContent = summary.kind || '';
      this.kindEl.hidden = !summary.kind;
      this.annotations.set(summary.tags, summary.note);
      this.el('run-start').textContent = formatClock(this.startTs, { date: true });
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
      this.el('run-reward').parentNode.hidden = reward === null || reward === undefined;
      const config = summary.config;
      const hasConfig = config && typeof config === 'object' && Object.keys(config).length > 0;
      this.configEl.replaceChildren(hasConfig ? jsonTree(config, { open: this.configOpen, depth: 1 }) : h('div', { class: 'muted' }, 'No config recorded.'));
      if (firstTime) this.configDetails.open = false;
      document.title = `${this.runId} · runwatch`;
      this.renderCounters();
      this.tick();
      if (this.panel.state.x === 'relative') this.panel.redrawAll();
    }

    /** update_step's steps and the episodes, shown only for a run that has them (an RL run). */
    renderCounters() {
      for (const [id, key] of [['run-steps', 'total_steps'], ['run-episodes', 'total_episodes']]) {
        this.el(id).textContent = formatCount(this.counters[key]);
        this.el(id).parentNode.hidden = !(this.counters[key] > 0);
      }
    }

    tick() {
      const now = Date.now() / 1000;
      // The global step, as far as the charts have it (history, then live calls).
      this.el('run-step').textContent = this.counter.last >= 0 ? formatCount(this.counter.last) : '—';
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
      // Event rows' keys are coarse (a millisecond and a size): only the replay after a load uses them.
      this.applyEvents(events, { lastTimes: this.historyLast, eventKeys: NO_KEYS });
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
          case 'alert':
            newRows = this.addEventRow(event, dedup) || newRows;
            this.refreshAlertHistory();
            break;
          case 'log':
          case 'exception':
            newRows = this.addEventRow(event, dedup) || newRows;
            break;
          case 'image':
            this.images.onEvent(event);
            break;
          case 'histogram':
            this.histograms.onEvent(event);
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
      if (!touched.size) return;
      const limit = 4 * this.panel.chartWidth();
      let system = false;
      for (const name of touched) {
        const series = this.store.get(name);
        if (series.t.length > limit) this.store.set(name, decimateMinMax(series, limit / 4));
        if (name.startsWith(SYSTEM_PREFIX)) system = true;
      }
      const newName = this.panel.setNames(Array.from(this.store.keys()));
      if (!this.zoomSeries && !newName) this.panel.touch(touched, true);
      else if (this.zoomSeries) this.panel.touch([]); // counts only
      if (system) schedule('system', () => this.renderSystem());
    }

    applyMetric(event, dedup, touched) {
      const t = parseTime(event.timestamp);
      if (!Number.isFinite(t)) return;
      const step = liveStep(this.counter, event.step);
      for (const [name, raw] of Object.entries(event.values || {})) {
        if (dedup && !laterThan(t, dedup.lastTimes.get(name) ?? -Infinity)) continue;
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

    /** The traces of a chart: one per metric of it (colours by metric when several). */
    tracesFor(spec) {
      const several = spec.metrics.length > 1;
      return spec.metrics.map((metric, i) => {
        const series = (this.zoomSeries && this.zoomSeries.get(metric)) || (this.zoomSeries ? createSeries() : this.store.get(metric)) || createSeries();
        return { id: metric, label: metric, color: several ? colorFor(i) : colorFor(0), series, startTs: this.startTs };
      });
    }

    /** Shows [x0, x1] (in the x axis' units) on every chart, fetched at full resolution. */
    async zoomTo(x0, x1) {
      const gen = ++this.zoomGen;
      const x = this.panel.state.x;
      this.panel.setZoom({ x0, x1, loading: true });
      try {
        const body = await this.fetchMetrics({ x, x_min: x0, x_max: x1 });
        if (this.closed || gen !== this.zoomGen) return;
        const series = new Map();
        for (const wire of (body && body.series) || []) series.set(wire.metric, seriesFromWire(wire));
        this.zoomSeries = series;
        this.panel.setZoom({ x0, x1, loading: false });
      } catch (err) {
        if (this.closed || gen !== this.zoomGen) return;
        showBanner(`Zoom failed: ${errorText(err)}`, 'error');
        this.panel.setZoom(null);
        this.zoomSeries = null;
      }
    }

    resetZoom() {
      this.zoomGen++;
      this.zoomSeries = null;
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
            host: h('div', { class: 'spark' }),
          };
          gauge.spark = new Sparkline(gauge.host);
          gauge.bar = h('div', { class: 'gauge-bar' }, gauge.fill);
          gauge.el = h('div', { class: 'gauge', 'data-metric': name },
            h('div', { class: 'gauge-head' }, h('span', { class: 'gauge-name', title: name }, name.slice(SYSTEM_PREFIX.length)), gauge.value),
            gauge.bar, gauge.host);
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
        gauge.spark.draw(series, gauge.host.clientWidth, 28);
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
      this.eventFiltersEl.replaceChildren(
        group('kind', EVENT_KINDS, 'Kind'), group('level', LEVELS, 'Level'), ...(types.length ? [group('type', types, 'Type')] : []));
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
      return logLineItem(row, this.expandedEvents.has(key), () => {
        if (this.expandedEvents.has(key)) this.expandedEvents.delete(key);
        else this.expandedEvents.add(key);
        this.renderEvents();
      });
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
      this.renderAlertHistory();
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

    /** Every transition of this run's alerts, newest first: resolved ones stay visible here. */
    renderAlertHistory() {
      const transitions = this.alertHistory.slice(0, ALERT_HISTORY_SHOWN);
      const instances = alertInstances(this.alertHistory);
      const details = this.alertHistoryList.parentElement;
      details.querySelector('summary').textContent = instances.length
        ? `History: ${instances.length} alert${instances.length === 1 ? '' : 's'}, ${this.alertHistory.length} transition${this.alertHistory.length === 1 ? '' : 's'}`
        : 'History';
      if (!transitions.length) {
        this.alertHistoryList.replaceChildren(h('li', { class: 'muted' }, 'No alert has fired for this run.'));
        return;
      }
      this.alertHistoryList.replaceChildren(...transitions.map((t) => {
        const ts = parseTime(t.updated_at);
        return h('li', { class: `alert-transition state-${t.state}`, 'data-alert-rule': t.rule, 'data-alert-state': t.state },
          h('time', { class: 'event-time' }, formatClock(ts, { millis: true })),
          h('span', { class: `alert-state-badge state-${t.state}` }, t.state),
          h('strong', null, t.rule),
          t.value !== null && t.value !== undefined ? h('span', { class: 'muted' }, `value ${formatValue(parseValue(t.value))}`) : null,
          h('button', {
            type: 'button', class: 'btn btn-small', title: 'Show the charts around this moment',
            onclick: () => {
              this.panel.setX('time');
              this.zoomTo(ts - 30, ts + 30);
            },
          }, 'Show'));
      }));
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

  views.RunPage = RunPage;
})(typeof globalThis !== 'undefined' ? globalThis : this);
