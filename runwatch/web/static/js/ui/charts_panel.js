/*
 * The charts card shared by the run page and the compare view: a toolbar
 * (metric filter, x axis, smoothing, log scale, zoom read-out), metrics in
 * collapsible groups by prefix, one chart per metric or several metrics
 * merged into one, and charts enlarged to full width.
 * Registers ChartsPanel on runwatch.ui.
 */
(function (root) {
  'use strict';
  const core = root.runwatch.core;
  const ui = root.runwatch.ui;
  const { h, debounce, MetricChart } = ui;
  const { makeMetricFilter, groupByPrefix, chartSpecs, formatClock, formatStep, formatRelative } = core;

  const X_LABELS = { step: 'Step', relative: 'Relative', time: 'Wall time' };

  class ChartsPanel {
    /**
     * options: {
     *   state: {filter, x, smoothing, logY, wide: [], merged: [], collapsed: []},
     *   traces(spec) → traces for a chart spec {key, metrics},
     *   onChange(state) after the user changed a setting (to keep it in the URL),
     *   onZoom(x0, x1), onReset(), ids: {filter, x, grid} element ids
     * }
     */
    constructor(options) {
      this.options = options;
      const s = options.state;
      this.state = {
        filter: s.filter || '', x: s.x || 'step', smoothing: s.smoothing || 0, logY: Boolean(s.logY),
        wide: new Set(s.wide || []), merged: (s.merged || []).map((g) => g.slice()), collapsed: new Set(s.collapsed || []),
      };
      this.metricFilter = makeMetricFilter(this.state.filter);
      this.names = [];
      this.charts = new Map(); // spec key → {chart, spec}
      this.chartOf = new Map(); // metric → spec key
      this.groups = new Map(); // prefix → {details, grid, countEl}
      this.zoom = null; // {x0, x1, loading}
      this.build();
    }

    build() {
      const s = this.state;
      const ids = this.options.ids || {};
      this.filterInput = h('input', {
        id: ids.filter || null, class: 'metric-filter', type: 'search', placeholder: 'Filter metrics: train/*, loss …',
        value: s.filter, spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Filter metrics',
      });
      this.filterInput.addEventListener('input', debounce(() => this.setFilter(this.filterInput.value), 120));
      this.countEl = h('span', { class: 'muted chart-count' });
      this.xButtons = Object.keys(X_LABELS).map((mode) => h('button', {
        type: 'button', class: 'seg-btn', 'data-x': mode, onclick: () => this.setX(mode),
      }, X_LABELS[mode]));
      this.smoothInput = h('input', {
        type: 'range', class: 'smooth-input', min: '0', max: '0.99', step: '0.01', value: String(s.smoothing),
        'aria-label': 'Smoothing',
      });
      this.smoothValue = h('span', { class: 'smooth-value' });
      this.smoothInput.addEventListener('input', () => this.setSmoothing(Number(this.smoothInput.value)));
      this.logInput = h('input', { type: 'checkbox', class: 'log-input' });
      this.logInput.checked = s.logY;
      this.logInput.addEventListener('change', () => this.setLogY(this.logInput.checked));
      this.zoomInfo = h('span', { class: 'zoom-info', hidden: true });
      this.empty = h('div', { class: 'empty' }, 'No metrics yet.');
      this.groupsEl = h('div', { class: 'chart-groups', id: ids.grid || null });
      this.toolbar = h('div', { class: 'toolbar chart-toolbar' },
        this.filterInput, this.countEl, h('span', { class: 'spacer' }), this.zoomInfo,
        h('label', { class: 'control', title: 'Exponential moving average; the raw series stays faint behind' },
          'Smoothing', this.smoothInput, this.smoothValue),
        h('label', { class: 'control', title: 'Logarithmic y axis (values at or below 0 are not drawn)' }, this.logInput, 'Log y'),
        h('div', { class: 'seg x-axis', id: ids.x || null, role: 'group', 'aria-label': 'x axis' }, this.xButtons));
      this.el = h('div', { class: 'charts-panel' }, this.toolbar, this.groupsEl, this.empty);
      this.updateControls();
    }

    updateControls() {
      for (const b of this.xButtons) b.setAttribute('aria-pressed', String(b.dataset.x === this.state.x));
      this.smoothValue.textContent = this.state.smoothing > 0 ? this.state.smoothing.toFixed(2) : 'off';
    }

    /** What the charts are drawn with. */
    view() {
      const z = this.zoom;
      return { x: this.state.x, smoothing: this.state.smoothing, logY: this.state.logY, xRange: z && !z.loading ? [z.x0, z.x1] : null };
    }

    changed() {
      if (this.options.onChange) this.options.onChange(this.snapshot());
    }

    snapshot() {
      const s = this.state;
      return {
        filter: s.filter, x: s.x, smoothing: s.smoothing, logY: s.logY, wide: Array.from(s.wide),
        merged: s.merged.filter((g) => g.length > 1), collapsed: Array.from(s.collapsed),
      };
    }

    setFilter(text) {
      this.state.filter = text;
      this.metricFilter = makeMetricFilter(text);
      this.layout();
      this.changed();
    }

    setX(mode) {
      if (mode === this.state.x) return;
      this.state.x = mode;
      this.zoom = null; // a zoom range is in the old axis' units
      this.renderZoom();
      this.updateControls();
      if (this.options.onReset) this.options.onReset({ quiet: true });
      this.redrawAll();
      this.changed();
    }

    setSmoothing(weight) {
      this.state.smoothing = Math.min(0.99, Math.max(0, weight || 0));
      this.updateControls();
      this.redrawAll();
      this.changed();
    }

    setLogY(on) {
      this.state.logY = on;
      this.redrawAll();
      this.changed();
    }

    /** Metric names present (a new name gets its chart, in its group). */
    setNames(names) {
      const sorted = Array.from(new Set(names)).sort();
      if (sorted.join('\u0000') === this.names.join('\u0000')) return false;
      this.names = sorted;
      this.layout();
      return true;
    }

    /** (Re)builds groups and charts for the shown names, keeping existing charts. */
    layout() {
      const shown = this.names.filter((name) => this.metricFilter(name));
      const specs = chartSpecs(shown, this.state.merged);
      const wantedKeys = new Set(specs.map((spec) => spec.key));
      for (const [key, entry] of this.charts) {
        if (!wantedKeys.has(key)) {
          entry.chart.destroy();
          entry.chart.el.remove();
          this.charts.delete(key);
        }
      }
      this.chartOf.clear();
      const byGroup = new Map();
      for (const spec of specs) {
        for (const m of spec.metrics) this.chartOf.set(m, spec.key);
        const prefix = groupByPrefix([spec.key])[0].prefix;
        if (!byGroup.has(prefix)) byGroup.set(prefix, []);
        byGroup.get(prefix).push(spec);
      }
      const order = groupByPrefix(specs.map((spec) => spec.key)).map((g) => g.prefix);
      for (const [prefix, group] of this.groups) {
        if (!byGroup.has(prefix)) {
          group.details.remove();
          this.groups.delete(prefix);
        }
      }
      let previous = null;
      for (const prefix of order) {
        const group = this.group(prefix);
        if (group.details.previousSibling !== previous || group.details.parentNode !== this.groupsEl) {
          this.groupsEl.insertBefore(group.details, previous ? previous.nextSibling : this.groupsEl.firstChild);
        }
        previous = group.details;
        const list = byGroup.get(prefix);
        group.countEl.textContent = String(list.length);
        let before = null;
        for (let i = list.length - 1; i >= 0; i--) {
          const spec = list[i];
          let entry = this.charts.get(spec.key);
          if (!entry || entry.spec.metrics.join('\u0000') !== spec.metrics.join('\u0000')) {
            if (entry) {
              entry.chart.destroy();
              entry.chart.el.remove();
            }
            entry = { chart: this.makeChart(spec), spec };
            this.charts.set(spec.key, entry);
          }
          entry.spec = spec;
          if (entry.chart.el.parentNode !== group.grid || entry.chart.el.nextSibling !== before) group.grid.insertBefore(entry.chart.el, before);
          before = entry.chart.el;
          entry.chart.setWide(this.state.wide.has(spec.key));
        }
      }
      this.countEl.textContent = this.names.length ? `${shown.length} of ${this.names.length}` : '';
      this.empty.hidden = shown.length > 0;
      this.empty.textContent = this.names.length ? 'No metric matches the filter.' : 'No metrics yet.';
      this.redrawAll();
    }

    group(prefix) {
      let group = this.groups.get(prefix);
      if (group) return group;
      const countEl = h('span', { class: 'muted group-count' });
      const grid = h('div', { class: 'charts' });
      const details = h('details', { class: 'chart-group', 'data-prefix': prefix },
        h('summary', null, h('span', { class: 'group-name' }, prefix ? prefix + '/' : 'Charts'), countEl), grid);
      details.open = !this.state.collapsed.has(prefix);
      details.addEventListener('toggle', () => {
        if (details.open) this.state.collapsed.delete(prefix);
        else this.state.collapsed.add(prefix);
        if (details.open) for (const entry of this.charts.values()) if (entry.chart.el.parentNode === grid) entry.chart.invalidate();
        this.changed();
      });
      group = { details, grid, countEl };
      this.groups.set(prefix, group);
      return group;
    }

    makeChart(spec) {
      const chart = new MetricChart({
        key: spec.key,
        title: spec.metrics.join(' · '),
        onZoom: (x0, x1) => this.options.onZoom && this.options.onZoom(x0, x1),
        onReset: () => this.resetZoom(),
        onToggleWide: () => this.toggleWide(spec.key),
      });
      this.addMergeTools(chart, spec);
      return chart;
    }

    addMergeTools(chart, spec) {
      const select = h('select', { class: 'chart-merge', title: 'Draw another metric in this chart', 'aria-label': 'Add a metric to this chart' },
        h('option', { value: '' }, '+'));
      select.addEventListener('focus', () => {
        const options = this.names.filter((n) => !spec.metrics.includes(n)).map((n) => h('option', { value: n }, n));
        select.replaceChildren(h('option', { value: '' }, '+'), ...options);
      });
      select.addEventListener('change', () => {
        if (select.value) this.merge(spec.key, select.value);
      });
      const tools = [select];
      if (spec.metrics.length > 1) {
        tools.push(h('button', { type: 'button', class: 'chart-btn', title: 'One chart per metric again', onclick: () => this.split(spec.key) }, '×'));
      }
      chart.tools.replaceChildren(...tools);
    }

    merge(key, metric) {
      const merged = this.state.merged.map((g) => g.filter((m) => m !== metric)).filter((g) => g.length);
      const existing = merged.find((g) => g[0] === key || g.includes(key));
      if (existing) existing.push(metric);
      else merged.push([key, metric]);
      this.state.merged = merged.filter((g) => g.length > 1);
      this.layout();
      this.changed();
    }

    split(key) {
      this.state.merged = this.state.merged.filter((g) => g[0] !== key);
      this.layout();
      this.changed();
    }

    toggleWide(key) {
      if (this.state.wide.has(key)) this.state.wide.delete(key);
      else this.state.wide.add(key);
      const entry = this.charts.get(key);
      if (entry) entry.chart.setWide(this.state.wide.has(key));
      this.changed();
    }

    /** New data for these metrics (null: all): their charts get fresh traces; `live` paces the redraws. */
    touch(metrics, live = false) {
      const view = this.view();
      const keys = metrics ? new Set(Array.from(metrics, (m) => this.chartOf.get(m)).filter(Boolean)) : null;
      for (const [key, entry] of this.charts) {
        if (keys && !keys.has(key)) continue;
        const traces = this.options.traces(entry.spec);
        entry.chart.setTraces(traces, view, live);
        let points = 0;
        for (const t of traces) points += t.series.t.length;
        entry.chart.setPointCount(points, traces.length);
        if (this.options.last) entry.chart.setLast(this.options.last(entry.spec));
      }
    }

    redrawAll() {
      this.touch(null);
    }

    /** Shows the zoom state: {x0, x1, loading} or null. */
    setZoom(zoom) {
      this.zoom = zoom;
      this.renderZoom();
      this.redrawAll();
    }

    resetZoom() {
      if (!this.zoom) return;
      this.zoom = null;
      this.renderZoom();
      if (this.options.onReset) this.options.onReset({ quiet: false });
      this.redrawAll();
    }

    renderZoom() {
      const z = this.zoom;
      this.zoomInfo.hidden = !z;
      if (!z) return;
      const x = this.state.x;
      const fmt = (v) => (x === 'time' ? formatClock(v) : x === 'step' ? formatStep(Math.round(v)) : formatRelative(v));
      this.zoomInfo.replaceChildren(`${z.loading ? 'Loading' : 'Zoomed'} ${fmt(z.x0)} – ${fmt(z.x1)}`,
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => this.resetZoom(), title: 'Or double-click a chart' }, 'Back to live'));
    }

    /** The width (CSS px) a chart of the grid has, measured or estimated. */
    chartWidth() {
      for (const entry of this.charts.values()) if (entry.chart.width && !entry.chart.wide) return entry.chart.width;
      const gridWidth = this.groupsEl.clientWidth || 800;
      const columns = Math.max(1, Math.floor((gridWidth + 12) / (300 + 12)));
      return Math.max(100, Math.round((gridWidth - 12 * (columns - 1)) / columns - 18));
    }

    destroy() {
      for (const entry of this.charts.values()) entry.chart.destroy();
      this.charts.clear();
    }
  }

  Object.assign(ui, { ChartsPanel, X_LABELS });
})(typeof globalThis !== 'undefined' ? globalThis : this);
