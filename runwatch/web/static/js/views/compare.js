/*
 * #/compare?runs=a,b,...: several runs overlaid, one colour per run, every
 * chosen metric in its chart (GET /api/compare, one request), kept live by a
 * /ws subscription to those runs. The selection, the chart settings and the
 * runs toggled off live in the URL, so a view can be shared.
 * Registers ComparePage on runwatch.views.
 */
(function (root) {
  'use strict';
  const core = root.runwatch.core;
  const ui = root.runwatch.ui;
  const views = ((root.runwatch.views = root.runwatch.views || {}));
  const { h, schedule, apiGet, showBanner, errorText, LiveSocket, ChartsPanel, CompareImages, colorFor, dashFor, statusBadge, setStatusBadge, theme } = ui;
  const {
    parseTime, parseValue, createSeries, seriesFromWire, appendPoint, decimateMinMax, usec, laterThan, firstLaterThan, stepCounter,
    liveStep, parseHash, compareStateFromParams, compareHash, STATUS_AFTER, STORE_SETTLE_MS,
  } = core;

  const COMPARE_KINDS = ['metric', 'lifecycle', 'image'];
  const PICKER_LIMIT = 500; // runs offered by "Add a run", newest first
  // Runs are read one per request, this many at a time, and drawn as each
  // arrives: the first runs show while the longest history is still read.
  const PARALLEL_READS = 2;
  const PENDING_PER_RUN = 100000; // live events kept per run while its history loads

  class ComparePage {
    constructor(root) {
      this.root = root;
      this.closed = false;
      this.state = compareStateFromParams(parseHash(location.hash).params);
      this.runs = this.state.runs;
      this.hidden = new Set(this.state.hidden);
      this.info = new Map(); // run id → {status, start_ts}
      this.store = new Map(); // run id → Map(metric → series)
      this.counters = new Map(); // run id → global step counter
      this.zoomSeries = null; // like store, at full resolution while zoomed
      this.zoomGen = 0;
      this.loadGen = 0;
      this.loadingRuns = new Set(); // runs whose history is being read
      this.pending = new Map(); // run id → live events that arrived while its history loads
      // run id + NUL + metric → the newest time (µs) its last history read held: a live point
      // at or before it is in that history already (the store may commit before /ws delivers).
      this.historyLast = new Map();
      this.loadErrors = new Map(); // run id → why its history could not be read
      this.touched = new Set();
    }

    mount() {
      this.legendEl = h('div', { id: 'compare-legend', class: 'legend' });
      this.errorEl = h('div', { class: 'error', hidden: true });
      this.addSelect = h('select', { id: 'compare-add', class: 'compare-add', 'aria-label': 'Add a run to the comparison' },
        h('option', { value: '' }, '+ Add a run'));
      this.addSelect.addEventListener('focus', () => this.loadRunChoices());
      this.addSelect.addEventListener('change', () => {
        if (this.addSelect.value) this.addRun(this.addSelect.value);
      });
      this.panel = new ChartsPanel({
        state: {
          filter: this.state.metrics, x: this.state.x, smoothing: this.state.smoothing, logY: this.state.logY,
          wide: this.state.wide, merged: this.state.merged, collapsed: this.state.collapsed,
        },
        ids: { filter: 'compare-filter', x: 'compare-x', grid: 'compare-charts' },
        traces: (spec) => this.tracesFor(spec),
        onChange: (panelState) => this.saveState(panelState),
        onZoom: (x0, x1) => this.zoomTo(x0, x1),
        onReset: () => this.resetZoom(),
      });
      this.root.append(
        h('section', { class: 'card compare-head' },
          h('div', { class: 'title-row' },
            h('a', { href: '#/', class: 'back', title: 'All runs' }, '←'),
            h('h1', null, 'Compare runs'), this.countEl = h('span', { class: 'muted', id: 'compare-count' }, this.countText())),
          this.errorEl, this.legendEl),
        h('section', { class: 'card charts-card', id: 'compare' }, this.panel.el));
      this.images = new CompareImages(this.runs, (runId) => this.colorOf(runId));
      this.root.append(this.images.el);
      document.title = 'Compare · runwatch';
      this.renderLegend();
      this.loadRunChoices();
      if (this.runs.length === 0) {
        this.errorEl.textContent = 'No runs chosen: add runs here, or tick them in the runs list and press Compare.';
        this.errorEl.hidden = false;
        return;
      }
      this.loadingRuns = new Set(this.runs); // live events wait for their run's history
      this.socket = new LiveSocket({ runs: this.runs, kinds: COMPARE_KINDS }, {
        onSubscribed: () => {
          // After a reconnection, what was missed. Calls sent just before the
          // subscription may not be in the store yet (nor in the history read
          // meanwhile): their tail is read again once it has them.
          if (!this.firstSubscription) this.loadTail(this.newestTime() - 1);
          this.firstSubscription = false;
          const subscribedAt = Date.now() / 1000;
          clearTimeout(this.settleTimer);
          this.settleTimer = setTimeout(() => this.loadTail(subscribedAt - 2), STORE_SETTLE_MS);
        },
        onEvents: (events) => this.onEvents(events),
        onLagged: () => {
          showBanner('Lagging: the live stream fell behind; history reloaded.', 'warning');
          this.load();
        },
      }).start();
      // The history is read at once, beside the subscription: live events that
      // arrive first wait in `pending` (loading is set) and join it after.
      this.firstSubscription = true;
      this.load();
    }

    unmount() {
      this.closed = true;
      this.socket?.close();
      clearTimeout(this.settleTimer);
      this.panel?.destroy();
      this.images?.destroy();
    }

    /** Whether some run's history is still being read. */
    get loading() {
      return this.loadingRuns.size > 0;
    }

    countText() {
      const n = this.runs.length;
      const text = `${n} run${n === 1 ? '' : 's'}`;
      return this.loading ? `${text} · ${n - this.loadingRuns.size} of ${n} loaded` : text;
    }

    saveState(panelState) {
      const state = {
        runs: this.runs, metrics: panelState.filter, x: panelState.x, smoothing: panelState.smoothing,
        logY: panelState.logY, hidden: Array.from(this.hidden), wide: panelState.wide, merged: panelState.merged,
        collapsed: panelState.collapsed,
      };
      // replaceState: a setting is not a navigation (no hashchange, no re-route).
      history.replaceState(null, '', location.pathname + location.search + compareHash(state));
    }

    colorOf(runId) {
      return colorFor(Math.max(0, this.runs.indexOf(runId)));
    }

    renderLegend() {
      this.legendEl.replaceChildren(...this.runs.map((runId) => {
        const info = this.info.get(runId) || {};
        const on = !this.hidden.has(runId);
        const badge = statusBadge(info.status || null);
        const item = h('div', { class: 'legend-item' + (on ? '' : ' off'), 'data-run-id': runId },
          h('button', {
            type: 'button', class: 'legend-toggle', 'aria-pressed': String(on), title: on ? 'Hide this run' : 'Show this run',
            onclick: () => this.toggleRun(runId),
          }, h('span', { class: 'legend-swatch', style: `background:${this.colorOf(runId)}` }), runId),
          badge,
          h('a', { href: '#/runs/' + encodeURIComponent(runId), class: 'legend-open', title: 'Open this run' }, '↗'),
          h('button', { type: 'button', class: 'legend-remove', title: 'Remove from the comparison', onclick: () => this.removeRun(runId) }, '×'));
        item.__badge = badge;
        return item;
      }), this.addSelect);
    }

    /** Fills "Add a run" with the training runs not compared yet, newest first. */
    async loadRunChoices() {
      const gen = (this.choicesGen = (this.choicesGen || 0) + 1);
      let body;
      try {
        body = await apiGet('api/runs', { limit: PICKER_LIMIT, exclude_kind: 'session' });
      } catch (_err) {
        return; // the picker keeps what it had; opening it again retries
      }
      if (this.closed || gen !== this.choicesGen) return;
      const shown = new Set(this.runs);
      const options = ((body && body.runs) || []).filter((run) => !shown.has(run.run_id))
        .map((run) => h('option', { value: run.run_id }, `${run.run_id} · ${run.status}`));
      this.addSelect.replaceChildren(h('option', { value: '' }, options.length ? '+ Add a run' : 'No other runs'), ...options);
      this.addSelect.disabled = options.length === 0;
    }

    /** A new selection with one more run: re-routed, re-subscribed, the settings kept. */
    addRun(runId) {
      if (this.runs.includes(runId)) return;
      const state = { ...this.panel.snapshot(), runs: [...this.runs, runId], metrics: this.panel.state.filter, hidden: Array.from(this.hidden) };
      location.hash = compareHash(state);
    }

    toggleRun(runId) {
      if (this.hidden.has(runId)) this.hidden.delete(runId);
      else this.hidden.add(runId);
      this.renderLegend();
      this.panel.redrawAll();
      this.saveState(this.panel.snapshot());
    }

    removeRun(runId) {
      const runs = this.runs.filter((r) => r !== runId);
      const state = { ...this.panel.snapshot(), runs, metrics: this.panel.state.filter, hidden: Array.from(this.hidden).filter((r) => r !== runId) };
      location.hash = compareHash(state); // a new selection: re-routed, re-subscribed
    }

    /**
     * Reads every run's history, one request per run and PARALLEL_READS at
     * a time, and draws each run as it arrives. Live events of a run wait in
     * `pending` until its history is in, then join it.
     */
    async load() {
      const gen = ++this.loadGen;
      this.images.load(); // the images read and render on their own
      const queue = this.runs.slice();
      this.loadingRuns = new Set(queue);
      this.loadErrors.clear();
      this.renderProgress();
      const budget = this.panel.chartWidth();
      const readNext = async () => {
        while (queue.length) {
          const runId = queue.shift();
          let body = null;
          try {
            body = await apiGet('api/compare', { runs: runId, metrics: '*', max_points: budget });
          } catch (err) {
            if (this.closed || gen !== this.loadGen) return;
            this.loadErrors.set(runId, errorText(err));
          }
          if (this.closed || gen !== this.loadGen) return;
          this.finishRun(runId, body);
        }
      };
      await Promise.all(Array.from({ length: Math.min(PARALLEL_READS, queue.length) }, readNext));
    }

    /** A run's history is in (body null: it could not be read): it replaces what was held, live points kept. */
    finishRun(runId, body) {
      this.loadingRuns.delete(runId);
      const lastTimes = new Map();
      if (body) {
        for (const run of body.runs || []) this.info.set(run.run_id, { status: run.status, start_ts: Number(run.start_ts) });
        const metrics = new Map();
        for (const wire of body.series || []) {
          if (wire.run_id !== runId) continue;
          const series = seriesFromWire(wire);
          metrics.set(wire.metric, series);
          lastTimes.set(runId + '\u0000' + wire.metric, series.t.length ? usec(series.t[series.t.length - 1]) : -Infinity);
        }
        const counter = stepCounter(metrics.values());
        // Live points newer than the history (not committed when it was read) stay.
        for (const [name, old] of this.store.get(runId) || []) {
          const from = firstLaterThan(old.t, lastTimes.get(runId + '\u0000' + name) ?? -Infinity);
          if (from >= old.t.length) continue;
          if (!metrics.has(name)) metrics.set(name, createSeries());
          const target = metrics.get(name);
          for (let i = from; i < old.t.length; i++) {
            appendPoint(target, old.t[i], old.s[i], old.v[i]);
            if (old.s[i] !== null && old.s[i] > counter.last) counter.last = old.s[i];
            if (old.t[i] > counter.lastTime) counter.lastTime = old.t[i];
          }
        }
        this.store.set(runId, metrics);
        this.counters.set(runId, counter);
        for (const key of this.historyLast.keys()) if (key.startsWith(runId + '\u0000')) this.historyLast.delete(key);
        for (const [key, last] of lastTimes) this.historyLast.set(key, last);
      }
      const waiting = this.pending.get(runId) || [];
      this.pending.delete(runId);
      this.applyEvents(waiting, body ? lastTimes : null);
      this.renderProgress();
      this.renderLegend();
      this.panel.setNames(this.metricNames());
      this.panel.redrawAll();
    }

    renderProgress() {
      this.countEl.textContent = this.countText();
      const errors = Array.from(this.loadErrors, ([runId, why]) => `${runId}: ${why}`);
      this.errorEl.textContent = errors.length ? `Could not load ${errors.join('; ')}` : '';
      this.errorEl.hidden = errors.length === 0;
    }

    /** The time of the newest point held (-Infinity for none). */
    newestTime() {
      let newest = -Infinity;
      for (const metrics of this.store.values()) {
        for (const series of metrics.values()) if (series.t.length) newest = Math.max(newest, series.t[series.t.length - 1]);
      }
      return newest;
    }

    /**
     * Reads the calls logged since `since` (epoch seconds) and appends those
     * newer than what each series holds: a cheap re-read, as the server skips
     * earlier calls. Falls back to a whole load while nothing is held yet, or
     * when the tail is too long to come whole.
     */
    async loadTail(since) {
      if (this.loading || !Number.isFinite(since)) {
        if (!this.loading) this.load();
        return;
      }
      let body;
      try {
        body = await apiGet('api/compare', { runs: this.runs.join(','), metrics: '*', x: 'time', x_min: since.toFixed(6), max_points: 20000 });
      } catch (_err) {
        return; // the live stream goes on; the next reconnection reads again
      }
      if (this.closed || this.loading) return;
      if ((body.series || []).some((wire) => wire.downsampled)) {
        this.load();
        return;
      }
      const touched = new Set();
      for (const wire of body.series || []) {
        const tail = seriesFromWire(wire);
        if (!this.store.has(wire.run_id)) this.store.set(wire.run_id, new Map());
        const metrics = this.store.get(wire.run_id);
        if (!metrics.has(wire.metric)) metrics.set(wire.metric, createSeries());
        const series = metrics.get(wire.metric);
        const counter = this.counters.get(wire.run_id) || { last: -1, lastTime: -Infinity };
        this.counters.set(wire.run_id, counter);
        const newest = series.t.length ? usec(series.t[series.t.length - 1]) : -Infinity;
        for (let i = 0; i < tail.t.length; i++) {
          if (!laterThan(tail.t[i], newest)) continue; // held already, perhaps from /ws
          appendPoint(series, tail.t[i], tail.s[i], tail.v[i]);
          if (tail.s[i] !== null && tail.s[i] > counter.last) counter.last = tail.s[i];
          if (tail.t[i] > counter.lastTime) counter.lastTime = tail.t[i];
          touched.add(wire.metric);
        }
      }
      if (!touched.size) return;
      this.panel.setNames(this.metricNames());
      if (!this.zoomSeries) this.panel.touch(touched, true);
    }

    metricNames() {
      const names = new Set();
      for (const metrics of this.store.values()) for (const name of metrics.keys()) names.add(name);
      return Array.from(names);
    }

    onEvents(events) {
      if (!this.loading) {
        this.applyEvents(events, this.historyLast);
        return;
      }
      const now = [];
      for (const event of events) {
        // Images do not wait for a run's metric history: they are read apart.
        if (!event || !this.loadingRuns.has(event.run_id) || event.kind === 'image') {
          now.push(event);
          continue;
        }
        let waiting = this.pending.get(event.run_id);
        if (!waiting) this.pending.set(event.run_id, (waiting = []));
        waiting.push(event);
        if (waiting.length > PENDING_PER_RUN) waiting.splice(0, waiting.length - PENDING_PER_RUN);
      }
      if (now.length) this.applyEvents(now, this.historyLast);
    }

    applyEvents(events, lastTimes) {
      const touched = new Set();
      let statusChanged = false;
      for (const event of events) {
        if (!event || !this.runs.includes(event.run_id)) continue;
        if (event.kind === 'image') {
          this.images.onEvent(event);
          continue;
        }
        if (event.kind === 'lifecycle') {
          const status = STATUS_AFTER[event.transition];
          if (status) {
            const info = this.info.get(event.run_id) || {};
            info.status = status;
            this.info.set(event.run_id, info);
            statusChanged = true;
          }
          continue;
        }
        if (event.kind !== 'metric') continue;
        const t = parseTime(event.timestamp);
        if (!Number.isFinite(t)) continue;
        let counter = this.counters.get(event.run_id);
        if (!counter) {
          counter = { last: -1, lastTime: -Infinity };
          this.counters.set(event.run_id, counter);
        }
        const step = liveStep(counter, event.step);
        let metrics = this.store.get(event.run_id);
        if (!metrics) {
          metrics = new Map();
          this.store.set(event.run_id, metrics);
        }
        for (const [name, raw] of Object.entries(event.values || {})) {
          if (lastTimes && !laterThan(t, lastTimes.get(event.run_id + '\u0000' + name) ?? -Infinity)) continue;
          let series = metrics.get(name);
          if (!series) {
            series = createSeries();
            metrics.set(name, series);
          }
          appendPoint(series, t, step, parseValue(raw));
          touched.add(name);
        }
      }
      if (statusChanged) {
        for (const item of this.legendEl.children) {
          const info = this.info.get(item.dataset.runId);
          if (info && item.__badge) setStatusBadge(item.__badge, info.status);
        }
      }
      if (!touched.size) return;
      const limit = 4 * this.panel.chartWidth();
      for (const metrics of this.store.values()) {
        for (const name of touched) {
          const series = metrics.get(name);
          if (series && series.t.length > limit) metrics.set(name, decimateMinMax(series, limit / 4));
        }
      }
      const newName = this.panel.setNames(this.metricNames());
      if (!this.zoomSeries && !newName) this.panel.touch(touched, true);
    }

    /** One trace per shown run and metric of the chart: colour by run, dash by metric. */
    tracesFor(spec) {
      const traces = [];
      const source = this.zoomSeries || this.store;
      for (const runId of this.runs) {
        if (this.hidden.has(runId)) continue;
        const metrics = source.get(runId);
        spec.metrics.forEach((metric, m) => {
          const series = metrics && metrics.get(metric);
          if (!series) return;
          const info = this.info.get(runId) || {};
          traces.push({
            id: runId + '\u0000' + metric,
            label: spec.metrics.length > 1 ? `${runId} · ${metric}` : runId,
            color: this.colorOf(runId),
            dash: dashFor(m),
            series,
            startTs: info.start_ts,
          });
        });
      }
      return traces;
    }

    async zoomTo(x0, x1) {
      const gen = ++this.zoomGen;
      const x = this.panel.state.x;
      this.panel.setZoom({ x0, x1, loading: true });
      try {
        const body = await apiGet('api/compare', {
          runs: this.runs.join(','), metrics: '*', x, x_min: x0, x_max: x1, max_points: this.panel.chartWidth(),
        });
        if (this.closed || gen !== this.zoomGen) return;
        const store = new Map();
        for (const wire of body.series || []) {
          if (!store.has(wire.run_id)) store.set(wire.run_id, new Map());
          store.get(wire.run_id).set(wire.metric, seriesFromWire(wire));
        }
        this.zoomSeries = store;
        this.panel.setZoom({ x0, x1, loading: false });
      } catch (err) {
        if (this.closed || gen !== this.zoomGen) return;
        showBanner(`Zoom failed: ${errorText(err)}`, 'error');
        this.zoomSeries = null;
        this.panel.setZoom(null);
      }
    }

    resetZoom() {
      this.zoomGen++;
      this.zoomSeries = null;
    }
  }

  views.ComparePage = ComparePage;
})(typeof globalThis !== 'undefined' ? globalThis : this);
