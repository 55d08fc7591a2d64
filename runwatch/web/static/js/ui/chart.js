/*
 * One chart of one or more metrics of one or more runs, drawn by uPlot
 * (vendored in static/vendor/uplot): lines, the raw series faint behind an
 * EMA-smoothed one, a min/max band where the server downsampled, NaN and ±Inf
 * markers, log-scale y, a read-out of every trace at the hovered x,
 * drag-to-zoom, double-click to reset, and an enlarge toggle.
 * Registers MetricChart and the palette on runwatch.ui.
 */
(function (root) {
  'use strict';
  const core = root.runwatch.core;
  const ui = root.runwatch.ui;
  const { h, schedule, theme } = ui;
  const { chartData, nearestIndex, formatValue, formatClock, formatRelative, formatStep } = core;

  const CHART_HEIGHT = 170; // CSS pixels of the plot, axes included
  const WIDE_HEIGHT = 340;
  // Ten colours that stay apart in light and dark mode (Tableau 10).
  const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
  const DASHES = [[], [6, 3], [2, 3], [10, 3, 2, 3]];
  const LIVE_REDRAW_MS = 250;
  // Live redraws of all charts on screen together stay within this many a
  // second: twelve charts of ten live runs each redraw twice a second, four
  // charts four times. New points never wait longer than MAX_LIVE_REDRAW_MS.
  const LIVE_DRAWS_PER_SECOND = 24;
  const MAX_LIVE_REDRAW_MS = 2000;
  const THIN_LINES_FROM = 3; // more traces than this: 1 px lines (see draw())

  function colorFor(index) {
    return PALETTE[index % PALETTE.length];
  }

  function dashFor(index) {
    return DASHES[index % DASHES.length];
  }

  /** A #rrggbb colour with an alpha (0 to 1). */
  function withAlpha(color, alpha) {
    const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
    if (!m) return color;
    return `rgba(${parseInt(m[1], 16)}, ${parseInt(m[2], 16)}, ${parseInt(m[3], 16)}, ${alpha})`;
  }

  // One observer for every chart's size, one for whether it is on screen.
  const sizeObserver = typeof ResizeObserver !== 'undefined' ? new ResizeObserver((entries) => {
    for (const entry of entries) {
      const chart = entry.target.__chart;
      if (chart) chart.resize(entry.contentRect.width);
    }
  }) : null;
  const onScreenCharts = new Set();
  const screenObserver = typeof IntersectionObserver !== 'undefined' ? new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const chart = entry.target.__chart;
      if (!chart) continue;
      chart.onScreen = entry.isIntersecting;
      if (chart.onScreen) onScreenCharts.add(chart);
      else onScreenCharts.delete(chart);
      if (chart.onScreen && chart.dirty) chart.invalidate();
    }
  }, { rootMargin: '200px' }) : null;

  /** How long a chart waits between live redraws: the shared budget split among the charts on screen. */
  function liveRedrawMs() {
    return Math.min(MAX_LIVE_REDRAW_MS, Math.max(LIVE_REDRAW_MS, (1000 * onScreenCharts.size) / LIVE_DRAWS_PER_SECOND));
  }

  function xLabel(mode) {
    return mode === 'step' ? 'step' : mode === 'relative' ? 'time since start' : 'time';
  }

  function formatX(mode, x) {
    if (mode === 'step') return `step ${formatStep(x)}`;
    if (mode === 'relative') return `+${formatRelative(x)}`;
    return formatClock(x);
  }

  class MetricChart {
    /**
     * options: {key, title, onZoom(x0, x1), onReset(), onToggleWide()}.
     * Call setTraces() with what to draw; it draws on the next frame, when
     * the chart is visible and on screen.
     */
    constructor(options) {
      this.key = options.key;
      this.options = options;
      this.traces = [];
      this.view = { x: 'time', smoothing: 0, logY: false, xRange: null };
      this.width = 0;
      this.wide = false;
      this.onScreen = true;
      this.dirty = true;
      this.u = null;
      this.signature = '';
      this.data = null;
      this.lastDrawAt = -Infinity;
      this.liveTimer = 0;
      this.nameEl = h('span', { class: 'chart-name', title: options.title }, options.title);
      this.lastEl = h('span', { class: 'chart-last' });
      this.wideButton = h('button', {
        type: 'button', class: 'chart-btn chart-wide-btn', title: 'Enlarge to full width', 'aria-pressed': 'false',
        onclick: () => options.onToggleWide && options.onToggleWide(),
      }, '⤢');
      this.tools = h('span', { class: 'chart-tools' });
      this.plot = h('div', { class: 'chart-plot' });
      this.tip = h('div', { class: 'chart-tip', hidden: true });
      this.body = h('div', { class: 'chart-body' }, this.plot, this.tip);
      this.el = h('div', { class: 'chart', 'data-metric': options.key, 'data-points': '0', 'data-traces': '0' },
        h('div', { class: 'chart-head' }, this.nameEl, this.lastEl, h('span', { class: 'spacer' }), this.tools, this.wideButton),
        this.body);
      this.el.__chart = this;
      this.body.__chart = this;
      this.body.addEventListener('dblclick', () => options.onReset && options.onReset());
      this.body.addEventListener('pointerleave', () => { this.tip.hidden = true; });
      if (sizeObserver) sizeObserver.observe(this.body);
      if (screenObserver) screenObserver.observe(this.el);
    }

    /**
     * Whether it can be seen: in the page and on screen. The intersection
     * observer says so for hidden charts and closed groups too, without
     * forcing a layout (as measuring would, once per chart per frame).
     */
    get visible() {
      return this.el.isConnected && this.onScreen;
    }

    setTitle(title) {
      this.nameEl.textContent = title;
      this.nameEl.title = title;
    }

    /** The newest value, shown in the header when the chart is next drawn (undefined: none). */
    setLast(value) {
      this.last = value;
    }

    renderLast() {
      const value = this.last;
      this.lastEl.textContent = value === undefined ? '' : formatValue(value);
      this.lastEl.classList.toggle('nonfinite', value !== undefined && !Number.isFinite(value));
    }

    setPointCount(points, traces) {
      this.el.dataset.points = String(points);
      if (traces !== undefined) this.el.dataset.traces = String(traces);
    }

    setWide(wide) {
      this.wide = wide;
      this.el.classList.toggle('chart-wide', wide);
      this.wideButton.setAttribute('aria-pressed', String(wide));
      this.wideButton.title = wide ? 'Back to the grid' : 'Enlarge to full width';
      this.invalidate();
    }

    /**
     * traces: [{id, label, color, dash, series, startTs}]; view: {x, smoothing,
     * logY, xRange: [x0, x1] or null}.
     */
    setTraces(traces, view, live = false) {
      this.traces = traces;
      if (view) this.view = view;
      this.invalidate(live);
    }

    /**
     * Draws on the next frame. `live` (new points of a live run) draws at
     * most every liveRedrawMs(): a chart of ten live runs would otherwise
     * redraw for every websocket message, taking the frames the page needs.
     */
    invalidate(live = false) {
      this.dirty = true;
      if (!(this.onScreen && this.width > 0)) return;
      if (live && this.liveTimer) return; // a live redraw is already due
      clearTimeout(this.liveTimer);
      this.liveTimer = 0;
      const wait = live ? this.lastDrawAt + liveRedrawMs() - performance.now() : 0;
      if (wait > 0) {
        this.liveTimer = setTimeout(() => {
          this.liveTimer = 0;
          schedule(this, () => this.draw(), true);
        }, wait);
      } else {
        schedule(this, () => this.draw(), true);
      }
    }

    resize(width) {
      const w = Math.floor(width);
      if (w === this.width) return;
      this.width = w;
      this.invalidate();
    }

    destroy() {
      clearTimeout(this.liveTimer);
      onScreenCharts.delete(this);
      if (sizeObserver) sizeObserver.unobserve(this.body);
      if (screenObserver) screenObserver.unobserve(this.el);
      if (this.u) this.u.destroy();
      this.u = null;
    }

    height() {
      return this.wide ? WIDE_HEIGHT : CHART_HEIGHT;
    }

    draw() {
      if (!this.width || !this.visible) return;
      this.dirty = false;
      this.lastDrawAt = performance.now();
      const view = this.view;
      const traces = this.traces;
      const data = chartData(traces, view);
      this.data = data;
      const smoothing = view.smoothing > 0;
      // Lines wider than one pixel are filled shapes to a canvas rasterizing
      // on the CPU (a browser without GPU raster): four to eight times the
      // cost of a 1 px line. A chart of many traces draws them all at 1 px.
      const thin = traces.length > THIN_LINES_FROM;
      const columns = [data.x];
      const series = [{}];
      const bands = [];
      traces.forEach((trace, k) => {
        const col = data.columns[k];
        const base = { label: trace.label, stroke: trace.color, dash: trace.dash || [], spanGaps: false };
        if (col.lo) {
          const hiIndex = columns.length;
          columns.push(col.hi, col.lo);
          series.push({ ...base, label: trace.label + ' max', stroke: 'transparent', width: 0, points: { show: false } });
          series.push({ ...base, label: trace.label + ' min', stroke: 'transparent', width: 0, points: { show: false } });
          bands.push({ series: [hiIndex, hiIndex + 1], fill: withAlpha(trace.color, 0.16) });
        }
        columns.push(col.raw);
        series.push({ ...base, stroke: smoothing ? withAlpha(trace.color, 0.28) : trace.color, width: smoothing || thin ? 1 : 1.5 });
        if (smoothing) {
          columns.push(col.smooth);
          series.push({ ...base, label: trace.label + ' (smoothed)', width: thin ? 1 : 1.75, points: { show: false } });
        }
      });
      const height = this.height();
      const signature = JSON.stringify([view.x, view.logY, height, series.map((s) => [s.label, s.stroke, s.width, s.dash])]);
      if (!this.u || signature !== this.signature) {
        if (this.u) this.u.destroy();
        this.u = new root.uPlot(this.plotOptions(series, bands, height), columns, this.plot);
        this.signature = signature;
      } else {
        if (this.u.width !== this.width) this.u.setSize({ width: this.width, height });
        this.u.setData(columns, !view.xRange);
      }
      if (view.xRange) this.u.setScale('x', { min: view.xRange[0], max: view.xRange[1] });
      this.renderLast();
      this.lastDraw = { points: data.points, traces: traces.length, markers: data.markers.length, smoothing, logY: view.logY, x: view.x };
    }

    plotOptions(series, bands, height) {
      const colors = theme.get();
      const mode = this.view.x;
      const axis = {
        stroke: colors.text, font: colors.font, labelFont: colors.font,
        grid: { stroke: colors.grid, width: 1 }, ticks: { stroke: colors.grid, width: 1, size: 4 },
      };
      // uPlot's default x axis is 50 px tall: room for the two lines of a time
      // axis' labels (time, then date); one line of steps or durations needs 30.
      const xAxis = { ...axis, space: 70, size: mode === 'time' ? 50 : 30 };
      if (mode === 'step') xAxis.values = (u, values) => values.map(formatStep);
      else if (mode === 'relative') xAxis.values = (u, values) => values.map(formatRelative);
      return {
        width: this.width,
        height,
        legend: { show: false },
        cursor: { drag: { x: true, y: false, setScale: false }, points: { size: 6 } },
        select: { show: true },
        scales: {
          x: { time: mode === 'time' },
          y: this.view.logY ? { distr: 3, log: 10 } : { auto: true },
        },
        axes: [xAxis, { ...axis, size: 56, values: (u, values) => values.map(formatValue) }],
        series,
        bands,
        hooks: {
          setSelect: [(u) => this.onSelect(u)],
          setCursor: [(u) => this.onCursor(u)],
          draw: [(u) => this.drawMarkers(u)],
        },
      };
    }

    onSelect(u) {
      const sel = u.select;
      if (sel.width >= 5 && this.options.onZoom) {
        const a = u.posToVal(sel.left, 'x');
        const b = u.posToVal(sel.left + sel.width, 'x');
        this.options.onZoom(Math.min(a, b), Math.max(a, b));
      }
      u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    }

    drawMarkers(u) {
      const data = this.data;
      if (!data || !data.markers.length) return;
      const ctx = u.ctx;
      const { left, top, width, height } = u.bbox;
      const dpr = u.pxRatio || 1;
      const size = 4 * dpr;
      ctx.save();
      ctx.fillStyle = theme.get().nan;
      ctx.beginPath();
      for (const m of data.markers) {
        const px = u.valToPos(m.x, 'x', true);
        if (!(px >= left - 1 && px <= left + width + 1)) continue;
        const py = m.kind === 'pinf' ? top : top + height;
        const dir = m.kind === 'pinf' ? 1 : -1;
        ctx.moveTo(px - size, py);
        ctx.lineTo(px + size, py);
        ctx.lineTo(px, py + dir * size * 1.4);
        ctx.closePath();
      }
      ctx.fill();
      ctx.restore();
    }

    /** The read-out: every trace's value at its point nearest the hovered x. */
    onCursor(u) {
      const left = u.cursor.left;
      const data = this.data;
      if (!data || left === undefined || left < 0 || !this.traces.length) {
        this.tip.hidden = true;
        return;
      }
      const target = u.posToVal(left, 'x');
      const rows = [];
      let where = null;
      this.traces.forEach((trace, k) => {
        const xs = data.xs[k];
        const i = nearestIndex(xs, target);
        if (i < 0) return;
        const s = trace.series;
        if (where === null) {
          const parts = [formatX(this.view.x, xs[i])];
          if (this.view.x !== 'step' && s.s[i] !== null && s.s[i] !== undefined) parts.push(`step ${formatStep(s.s[i])}`);
          if (this.view.x !== 'time') parts.push(formatClock(s.t[i]));
          where = parts.join(' · ');
        }
        const value = s.v[i];
        let text = formatValue(value);
        if (this.view.smoothing > 0 && data.smoothed && data.smoothed[k]) text = `${formatValue(data.smoothed[k][i])} (raw ${text})`;
        rows.push(h('div', { class: 'tip-row' + (Number.isFinite(value) ? '' : ' nonfinite') },
          h('span', { class: 'tip-swatch', style: `background:${trace.color}` }), h('span', { class: 'tip-label' }, trace.label), h('span', { class: 'tip-value' }, text)));
      });
      if (!rows.length) {
        this.tip.hidden = true;
        return;
      }
      this.tip.replaceChildren(h('div', { class: 'tip-where' }, where), ...rows);
      this.tip.hidden = false;
      const x = u.over.offsetLeft + left;
      const wanted = x > this.width / 2 ? x - this.tip.offsetWidth - 12 : x + 12;
      this.tip.style.left = `${Math.max(0, wanted)}px`;
    }
  }

  /** A small line with no axes, for the system panel (uPlot with everything but the line turned off). */
  class Sparkline {
    constructor(host) {
      this.host = host;
      this.u = null;
      this.width = 0;
    }

    draw(series, width, height) {
      if (!(width > 0)) return;
      const data = chartData([{ series }], { x: 'time' });
      const columns = [data.x, data.columns[0].raw];
      if (!this.u || this.width !== width) {
        if (this.u) this.u.destroy();
        this.width = width;
        this.u = new root.uPlot({
          width, height, legend: { show: false }, cursor: { show: false }, select: { show: false },
          axes: [{ show: false }, { show: false }], scales: { x: { time: false } },
          series: [{}, { stroke: theme.get().line, width: 1.25, points: { show: false } }],
        }, columns, this.host);
      } else {
        this.u.setData(columns);
      }
    }

    destroy() {
      if (this.u) this.u.destroy();
      this.u = null;
    }
  }

  Object.assign(ui, { MetricChart, Sparkline, PALETTE, colorFor, dashFor, withAlpha, xLabel, formatX, CHART_HEIGHT });
})(typeof globalThis !== 'undefined' ? globalThis : this);
