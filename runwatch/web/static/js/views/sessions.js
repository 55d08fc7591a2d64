/*
 * #/sessions (the sessions list) and #/sessions/<id> (one session, live):
 * application sessions (docs/sessions.md), apart from training runs.
 * Registers SessionsPage and SessionPage on runwatch.views.
 */
(function (root) {
  'use strict';
  const core = root.runwatch.core;
  const ui = root.runwatch.ui;
  const views = ((root.runwatch.views = root.runwatch.views || {}));
  const { LiveListPage } = views;
  const {
    h, schedule, throttle, debounce, jsonTree, theme, apiGet, showBanner, errorText, ApiError, LiveSocket,
    MetricChart, colorFor,
  } = ui;
  const {
    parseTime, parseValue, formatValue, formatDuration, formatClock, isPlainObject, mergeState, patchChanges,
    sessionStatusAfter, sessionStatusAt, sessionTags, sessionEventFromWire, prepareSessionEvent, SESSION_STATUSES, STORE_SETTLE_MS,
    LEVELS, createSeries, appendPoint, decimateMinMax, usec, laterThan,
  } = core;
  const CHART_MIN_WIDTH = 300; // keep in sync with .charts grid in style.css
  const CHART_GAP = 12;

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

      this.darkQuery = matchMedia('(prefers-color-scheme: dark)');
      this.onSchemeChange = () => {
        theme.cache = null;
        for (const chart of this.charts.values()) chart.signature = '';
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
      this.darkQuery?.removeEventListener('change', this.onSchemeChange);
      for (const chart of this.charts.values()) chart.destroy();
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
          this.drawChart(name);
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
        this.ensureChart(name);
      }
    }

    /** What Chart reads: this page zooms client-side, so always the held series. */
    seriesFor(name) {
      return this.store.get(name) || createSeries();
    }

    chartWidth() {
      for (const chart of this.charts.values()) if (chart.width) return Math.round(chart.width);
      const gridWidth = this.chartsGrid.clientWidth || 800;
      const columns = Math.max(1, Math.floor((gridWidth + CHART_GAP) / (CHART_MIN_WIDTH + CHART_GAP)));
      return Math.max(100, Math.round((gridWidth - CHART_GAP * (columns - 1)) / columns - 18));
    }

    ensureChart(name) {
      let chart = this.charts.get(name);
      if (chart) return chart;
      chart = new MetricChart({
        key: name, title: name, onZoom: (a, b) => this.zoomTo(a, b, 'time'), onReset: () => this.resetZoom(),
        onToggleWide: () => chart.setWide(!chart.wide),
      });
      chart.tools.remove();
      this.charts.set(name, chart);
      let before = null;
      for (const el of this.chartsGrid.children) {
        if (el.dataset.metric.localeCompare(name, undefined, { numeric: true }) > 0) {
          before = el;
          break;
        }
      }
      this.chartsGrid.insertBefore(chart.el, before);
      this.updateChartCount();
      return chart;
    }

    /** Hands a chart its series (the held one; this page zooms client-side). */
    drawChart(name) {
      const chart = this.charts.get(name);
      if (!chart) return;
      const series = this.seriesFor(name);
      const z = this.zoom;
      chart.setTraces([{ id: name, label: name, color: colorFor(0), series }], { x: 'time', smoothing: 0, logY: false, xRange: z ? [z.x0, z.x1] : null });
      chart.setPointCount(series.t.length, 1);
      chart.setLast(series.v.length ? series.v[series.v.length - 1] : undefined);
    }

    updateChartCount() {
      this.chartsEmpty.hidden = this.charts.size > 0;
    }

    invalidateCharts() {
      for (const name of this.charts.keys()) this.drawChart(name);
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
  Object.assign(views, { SessionsPage, SessionPage });
})(typeof globalThis !== 'undefined' ? globalThis : this);
