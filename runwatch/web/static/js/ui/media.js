/*
 * Images and histograms (docs/media.md): an image tile that follows a name's
 * latest image live or scrubs back through its steps; the run page's images
 * and histograms panels (a distribution over steps, and the histogram at a
 * chosen step); the compare view's images, one name side by side across runs.
 * Image bytes are fetched by digest (immutable, so the browser caches them).
 * Registers on runwatch.ui.
 */
(function (root) {
  'use strict';
  const core = root.runwatch.core;
  const ui = root.runwatch.ui;
  const { h, schedule, theme, apiGet, apiUrl, auth, runPath, errorText, ApiError } = ui;
  const {
    histogramFromWire, binEdges, binnedCount, distributionBands, bandsExtent, indexAtOrBefore, insertByStep,
    thinEvenly, imageLabel, stepRange, formatValue, formatCount, parseTime, MAX_HISTOGRAMS,
  } = core;

  // An image is announced live as soon as it is encoded, and the server serves
  // its bytes from then on (the websocket hub keeps the latest ones until the
  // store has them). Should the hub have let it go before the store's commit,
  // a 404 right after the announcement is retried a few times.
  const RETRY_MS = 60;
  const RETRIES = 40;
  const PLOT_HEIGHT = 150; // CSS pixels of a histogram canvas

  function mediaUrl(digest, attempt) {
    const params = {};
    // An <img> cannot send the Authorization header: the token goes in the query, as for /ws.
    if (auth.token) params.token = auth.token;
    if (attempt) params.retry = attempt; // a new URL, so the failed answer is not reused
    return apiUrl('api/media/' + encodeURIComponent(digest), params).href;
  }

  /** Whether image metadata ``a`` comes after ``b`` (higher step; then later). */
  function isNewer(a, b) {
    if (!b) return true;
    const sa = a.step ?? -Infinity;
    const sb = b.step ?? -Infinity;
    return sa > sb || (sa === sb && !(parseTime(a.timestamp) < parseTime(b.timestamp)));
  }

  /**
   * One image name of one run: the latest image while live, or the image at
   * or before a chosen step. ``slider: false`` leaves the step to a caller
   * (the compare view's shared slider).
   */
  class ImageTile {
    constructor(runId, name, { label = name, color = null, slider = true } = {}) {
      this.runId = runId;
      this.name = name;
      this.following = true;
      this.latest = null; // the newest image known, REST or live form
      this.shown = null; // the image on screen
      this.loader = null; // the Image being loaded off screen (one at a time)
      this.next = null; // the image to load once the loader is done (the newest asked for)
      this.first = Infinity;
      this.last = -Infinity;
      this.wanted = null;
      this.fetching = false;
      this.closed = false;
      this.img = h('img', { class: 'image-frame', alt: `${name} of ${runId}` });
      this.metaEl = h('figcaption', { class: 'image-meta muted' }, 'no image yet');
      this.liveButton = h('button', {
        type: 'button', class: 'btn btn-small image-live', 'aria-pressed': 'true', title: 'Follow the latest image',
        onclick: () => this.follow(),
      }, 'Live');
      this.slider = slider ? h('input', {
        type: 'range', class: 'image-slider', min: '0', max: '0', step: '1', value: '0', 'aria-label': `Step of ${name}`,
      }) : null;
      this.slider?.addEventListener('input', () => this.scrub(Number(this.slider.value)));
      const head = h('div', { class: 'image-head' },
        color ? h('span', { class: 'legend-swatch', style: `background:${color}` }) : null,
        h('span', { class: 'image-name', title: label }, label));
      this.el = h('figure', { class: 'image-tile', 'data-image-name': name, 'data-run-id': runId, 'data-live': 'true' },
        head, h('div', { class: 'image-box' }, this.img),
        h('div', { class: 'image-controls' }, this.slider, slider ? this.liveButton : null), this.metaEl);
    }

    /** Widens the step range the slider covers (never narrows it: live images may be ahead of a read). */
    widen(first, last) {
      if (Number.isFinite(first) && first < this.first) this.first = first;
      if (Number.isFinite(last) && last > this.last) this.last = last;
      if (!this.slider) return;
      const has = this.first <= this.last;
      this.slider.hidden = !has;
      if (!has) return;
      this.slider.min = String(this.first);
      this.slider.max = String(this.last);
      if (this.following) this.slider.value = String(this.last);
    }

    /** A new image of this name (REST or live form): the slider grows; shown while following. */
    onImage(meta) {
      if (!meta || !meta.digest) return;
      this.widen(meta.step ?? NaN, meta.step ?? NaN);
      if (!isNewer(meta, this.latest)) return;
      this.latest = meta;
      if (this.following) this.show(meta);
    }

    setFollowing(on) {
      this.following = on;
      this.el.dataset.live = String(on);
      this.liveButton.setAttribute('aria-pressed', String(on));
    }

    /** Back to the latest image, following new ones. */
    follow() {
      this.setFollowing(true);
      this.wanted = null;
      if (this.slider && this.last >= this.first) this.slider.value = String(this.last);
      if (this.latest) this.show(this.latest);
    }

    /** The slider moved: the image at or before ``step`` (the end of the range follows again). */
    scrub(step) {
      if (step >= this.last) {
        this.follow();
        return;
      }
      this.showStep(step);
    }

    /** Shows the image at or before ``step`` and stops following. */
    showStep(step) {
      this.setFollowing(false);
      if (this.slider) this.slider.value = String(step);
      this.wanted = step;
      if (!this.fetching) this.fetchWanted();
    }

    /** One request at a time; while it runs, only the last step asked for is kept. */
    async fetchWanted() {
      this.fetching = true;
      try {
        while (this.wanted !== null && !this.closed) {
          const step = this.wanted;
          this.wanted = null;
          let meta = null;
          try {
            meta = await apiGet(runPath(this.runId, '/images/at'), { name: this.name, step });
          } catch (err) {
            if (!(err instanceof ApiError && err.status === 404)) this.metaEl.textContent = `Could not load: ${errorText(err)}`;
          }
          if (this.closed || this.following || this.wanted !== null) continue;
          if (meta) this.show(meta);
          else {
            this.el.dataset.step = String(step);
            this.metaEl.textContent = `no image at or before step ${step}`;
          }
        }
      } finally {
        this.fetching = false;
      }
    }

    /**
     * Puts ``meta``'s image on screen once its bytes have loaded off screen,
     * so the frame shown never goes blank; while one loads, only the newest
     * image asked for waits (a 60 Hz stream shows as many frames as load).
     */
    show(meta) {
      if (this.shown && this.shown.digest === meta.digest && !this.loader) {
        this.shown = meta; // the same content (a repeated screen): nothing to load
        this.displayed();
        return;
      }
      this.next = meta;
      if (!this.loader) this.loadNext();
    }

    loadNext() {
      const meta = this.next;
      this.next = null;
      if (!meta || this.closed) return;
      const img = new Image();
      let attempts = 0;
      this.loader = img;
      img.onload = () => {
        if (this.loader !== img) return;
        this.loader = null;
        img.className = 'image-frame';
        img.alt = this.img.alt;
        this.img.replaceWith(img);
        this.img = img;
        this.shown = meta;
        this.displayed();
        this.loadNext();
      };
      img.onerror = () => {
        if (this.loader !== img) return;
        if (this.next || attempts >= RETRIES) {
          // A newer image replaces this one; or it never reached the store
          // (refused over the run's image budget, or removed since).
          this.loader = null;
          if (!this.next) this.markMissing(meta);
          this.loadNext();
          return;
        }
        attempts++;
        setTimeout(() => {
          if (this.loader === img && !this.closed) img.src = mediaUrl(meta.digest, attempts);
        }, RETRY_MS);
      };
      img.src = mediaUrl(meta.digest, 0);
    }

    displayed() {
      const meta = this.shown;
      this.el.dataset.digest = meta.digest;
      this.el.dataset.step = meta.step === null || meta.step === undefined ? '' : String(meta.step);
      this.el.dataset.shownAt = String(Date.now()); // when it reached the screen (the live delay's end)
      delete this.el.dataset.missing;
      this.img.title = `${meta.width}×${meta.height} ${meta.mime || ''}`.trim();
      this.metaEl.textContent = imageLabel(meta);
    }

    markMissing(meta) {
      this.el.dataset.missing = 'true';
      this.metaEl.textContent = `${imageLabel(meta)} (not in the store)`;
    }

    destroy() {
      this.closed = true;
      this.next = null;
      if (this.loader) this.loader.src = '';
      this.loader = null;
    }
  }

  /** The run page's images: one tile per name, each live with its own step slider. */
  class ImagesPanel {
    constructor(runId) {
      this.runId = runId;
      this.tiles = new Map();
      this.grid = h('div', { id: 'image-grid', class: 'image-grid' });
      this.countEl = h('span', { class: 'muted' });
      this.errorEl = h('div', { class: 'error', hidden: true });
      this.el = h('section', { id: 'images', class: 'card images', hidden: true },
        h('div', { class: 'card-head' }, h('h2', null, 'Images'), this.countEl), this.errorEl, this.grid);
    }

    tile(name) {
      let tile = this.tiles.get(name);
      if (!tile) {
        tile = new ImageTile(this.runId, name);
        this.tiles.set(name, tile);
        const after = Array.from(this.tiles.keys()).sort().indexOf(name);
        this.grid.insertBefore(tile.el, this.grid.children[after] || null);
        this.el.hidden = false;
        this.countEl.textContent = `${this.tiles.size} name${this.tiles.size === 1 ? '' : 's'}`;
      }
      return tile;
    }

    /** Reads the run's image names, their step ranges and latest images. */
    async load() {
      let body;
      try {
        body = await apiGet(runPath(this.runId, '/images'));
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) return; // the run is not stored yet
        this.errorEl.textContent = `Could not load images: ${errorText(err)}`;
        this.errorEl.hidden = this.tiles.size === 0;
        return;
      }
      this.errorEl.hidden = true;
      for (const entry of (body && body.names) || []) {
        const tile = this.tile(entry.name);
        tile.widen(entry.first_step, entry.last_step);
        tile.onImage(entry.latest);
      }
    }

    onEvent(event) {
      if (typeof event.name === 'string') this.tile(event.name).onImage(event);
    }

    destroy() {
      for (const tile of this.tiles.values()) tile.destroy();
    }
  }

  /** A canvas sized to its box at the screen's pixel ratio; returns its 2D context and CSS size. */
  function fitCanvas(canvas, height) {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(120, canvas.clientWidth || canvas.parentElement?.clientWidth || 300);
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    return { ctx, width, height };
  }

  const PAD = { left: 52, right: 8, top: 8, bottom: 18 };

  function axisText(ctx, colors, text, x, y, align) {
    ctx.fillStyle = colors.text;
    ctx.font = colors.font;
    ctx.textAlign = align;
    ctx.fillText(text, x, y);
  }

  /** One histogram name: the distribution over steps, and the histogram at the chosen step. */
  class HistogramCard {
    constructor(name) {
      this.name = name;
      this.list = []; // histograms in step order
      this.chosen = null; // the chosen step; null: the latest
      this.distCanvas = h('canvas', { class: 'distribution', 'aria-label': `Distribution of ${name} over steps` });
      this.barCanvas = h('canvas', { class: 'histogram-at', 'aria-label': `Histogram of ${name} at the chosen step` });
      this.distCanvas.addEventListener('click', (event) => this.pickAt(event));
      this.slider = h('input', { type: 'range', class: 'histogram-slider', min: '0', max: '0', step: '1', value: '0', 'aria-label': `Step of ${name}` });
      this.slider.addEventListener('input', () => this.choose(Number(this.slider.value)));
      this.liveButton = h('button', {
        type: 'button', class: 'btn btn-small histogram-live', 'aria-pressed': 'true', title: 'Show the latest histogram',
        onclick: () => this.choose(null),
      }, 'Latest');
      this.infoEl = h('div', { class: 'histogram-info muted' });
      this.el = h('div', { class: 'histogram-card', 'data-histogram-name': name },
        h('div', { class: 'histogram-head' }, h('strong', { class: 'histogram-name' }, name), h('span', { class: 'spacer' }),
          h('span', { class: 'muted histogram-count' })),
        h('div', { class: 'histogram-plots' },
          h('div', { class: 'histogram-plot' }, h('div', { class: 'plot-label muted' }, 'Distribution over steps'), this.distCanvas),
          h('div', { class: 'histogram-plot' }, h('div', { class: 'plot-label muted' }, 'At step'), this.barCanvas)),
        h('div', { class: 'image-controls' }, this.slider, this.liveButton), this.infoEl);
    }

    steps() {
      return this.list.map((hist, i) => hist.step ?? i);
    }

    /** Replaces the list by a read of the store, keeping live histograms it does not have yet. */
    setAll(rows) {
      const list = rows.map(histogramFromWire).filter(Boolean);
      for (const hist of this.list) insertByStep(list, hist);
      this.list = thinEvenly(list, MAX_HISTOGRAMS);
      this.redraw();
    }

    add(hist) {
      if (!insertByStep(this.list, hist)) return;
      if (this.list.length > MAX_HISTOGRAMS * 1.25) this.list = thinEvenly(this.list, MAX_HISTOGRAMS);
      this.redraw();
    }

    choose(step) {
      this.chosen = step !== null && step >= (this.steps().at(-1) ?? -Infinity) ? null : step;
      this.liveButton.setAttribute('aria-pressed', String(this.chosen === null));
      this.redraw();
    }

    pickAt(event) {
      const steps = this.steps();
      if (!steps.length) return;
      const rect = this.distCanvas.getBoundingClientRect();
      const x = event.clientX - rect.left;
      const [s0, s1] = [steps[0], steps.at(-1)];
      const span = rect.width - PAD.left - PAD.right;
      const step = s0 === s1 ? s0 : s0 + ((x - PAD.left) / span) * (s1 - s0);
      this.choose(Math.round(Math.min(s1, Math.max(s0, step))));
    }

    redraw() {
      schedule('histogram:' + this.name, () => this.draw(), true);
    }

    /** The index of the histogram shown at the chosen step (the latest one at or before it). */
    chosenIndex() {
      if (!this.list.length) return -1;
      if (this.chosen === null) return this.list.length - 1;
      return Math.max(0, indexAtOrBefore(this.steps(), this.chosen));
    }

    draw() {
      const steps = this.steps();
      const index = this.chosenIndex();
      const colors = theme.get();
      this.drawDistribution(steps, index, colors);
      this.drawBars(index, colors);
      const hist = this.list[index];
      if (steps.length) {
        this.slider.min = String(steps[0]);
        this.slider.max = String(steps.at(-1));
        this.slider.value = String(this.chosen ?? steps.at(-1));
      }
      this.el.querySelector('.histogram-count').textContent = `${formatCount(this.list.length)} histogram${this.list.length === 1 ? '' : 's'}`;
      this.el.dataset.histograms = String(this.list.length);
      if (!hist) {
        this.infoEl.textContent = 'No histogram yet.';
        return;
      }
      const apart = [['NaN', hist.nanCount], ['+Inf', hist.posinfCount], ['−Inf', hist.neginfCount]]
        .filter(([, n]) => n > 0).map(([what, n]) => `${formatCount(n)} ${what}`);
      const finite = binnedCount(hist); // every finite value is in a bin
      const mean = finite > 0 ? hist.sum / finite : NaN;
      this.infoEl.textContent = [`step ${hist.step ?? '—'}`, `${formatCount(hist.size)} values`,
        `min ${formatValue(hist.min)}`, `mean ${formatValue(mean)}`, `max ${formatValue(hist.max)}`, ...apart].join(' · ');
    }

    drawDistribution(steps, index, colors) {
      const { ctx, width, height } = fitCanvas(this.distCanvas, PLOT_HEIGHT);
      const { bands } = distributionBands(this.list);
      const extent = bandsExtent(bands);
      this.distCanvas.dataset.drawn = String(this.list.length);
      if (!extent || !steps.length) return;
      const [lo, hi] = extent;
      const [s0, s1] = [steps[0], steps.at(-1)];
      const plotW = width - PAD.left - PAD.right;
      const plotH = height - PAD.top - PAD.bottom;
      const half = steps.length === 1 ? 3 : 0; // a lone histogram is a thin column
      const x = (s) => PAD.left + (s0 === s1 ? plotW / 2 : ((s - s0) / (s1 - s0)) * plotW);
      const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * plotH;
      ctx.strokeStyle = colors.grid;
      ctx.strokeRect(PAD.left + 0.5, PAD.top + 0.5, plotW, plotH);
      // Bands between symmetric quantiles, the inner ones drawn over the outer: darkest at the median.
      const n = bands.length;
      for (let k = 0; k < (n - 1) / 2; k++) {
        const lower = bands[k];
        const upper = bands[n - 1 - k];
        ctx.fillStyle = colors.line;
        ctx.globalAlpha = 0.14 + 0.06 * k;
        let start = 0;
        while (start < steps.length) {
          while (start < steps.length && !(Number.isFinite(lower[start]) && Number.isFinite(upper[start]))) start++;
          let end = start;
          while (end < steps.length && Number.isFinite(lower[end]) && Number.isFinite(upper[end])) end++;
          if (end > start) {
            ctx.beginPath();
            for (let i = start; i < end; i++) ctx.lineTo(x(steps[i]) - (i === start ? half : 0), y(upper[i]));
            for (let i = end - 1; i >= start; i--) ctx.lineTo(x(steps[i]) + (i === end - 1 ? half : 0), y(lower[i]));
            ctx.closePath();
            ctx.fill();
          }
          start = end;
        }
      }
      ctx.globalAlpha = 1;
      const median = bands[(n - 1) >> 1];
      ctx.strokeStyle = colors.line;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let drawing = false;
      for (let i = 0; i < steps.length; i++) {
        if (!Number.isFinite(median[i])) {
          drawing = false;
          continue;
        }
        if (drawing) ctx.lineTo(x(steps[i]), y(median[i]));
        else ctx.moveTo(x(steps[i]) - half, y(median[i]));
        drawing = true;
      }
      if (half && drawing) ctx.lineTo(x(steps[0]) + half, y(median[0]));
      ctx.stroke();
      ctx.lineWidth = 1;
      if (index >= 0) {
        ctx.strokeStyle = colors.hover;
        ctx.setLineDash([3, 3]);
        ctx.beginPath();
        ctx.moveTo(Math.round(x(steps[index])) + 0.5, PAD.top);
        ctx.lineTo(Math.round(x(steps[index])) + 0.5, PAD.top + plotH);
        ctx.stroke();
        ctx.setLineDash([]);
      }
      axisText(ctx, colors, formatValue(hi), PAD.left - 4, PAD.top + 9, 'right');
      axisText(ctx, colors, formatValue(lo), PAD.left - 4, PAD.top + plotH, 'right');
      axisText(ctx, colors, `step ${s0}`, PAD.left, height - 4, 'left');
      if (s1 !== s0) axisText(ctx, colors, String(s1), width - PAD.right, height - 4, 'right');
    }

    drawBars(index, colors) {
      const { ctx, width, height } = fitCanvas(this.barCanvas, PLOT_HEIGHT);
      const hist = this.list[index];
      this.barCanvas.dataset.step = hist ? String(hist.step ?? '') : '';
      this.barCanvas.dataset.total = hist ? String(binnedCount(hist)) : '0';
      if (!hist || !hist.counts.length) return;
      const edges = binEdges(hist);
      const top = Math.max(...hist.counts);
      const plotW = width - PAD.left - PAD.right;
      const plotH = height - PAD.top - PAD.bottom;
      ctx.strokeStyle = colors.grid;
      ctx.strokeRect(PAD.left + 0.5, PAD.top + 0.5, plotW, plotH);
      if (top > 0) {
        ctx.fillStyle = colors.line;
        ctx.globalAlpha = 0.7;
        const barW = plotW / hist.counts.length;
        hist.counts.forEach((c, i) => {
          if (!c) return;
          const barH = (c / top) * plotH;
          ctx.fillRect(PAD.left + i * barW, PAD.top + plotH - barH, Math.max(1, barW - (barW > 3 ? 1 : 0)), barH);
        });
        ctx.globalAlpha = 1;
      }
      axisText(ctx, colors, formatCount(top), PAD.left - 4, PAD.top + 9, 'right');
      axisText(ctx, colors, '0', PAD.left - 4, PAD.top + plotH, 'right');
      axisText(ctx, colors, formatValue(edges[0]), PAD.left, height - 4, 'left');
      axisText(ctx, colors, formatValue(edges.at(-1)), width - PAD.right, height - 4, 'right');
    }
  }

  /** The run page's histograms: one card per name. */
  class HistogramsPanel {
    constructor(runId) {
      this.runId = runId;
      this.cards = new Map();
      this.grid = h('div', { id: 'histogram-grid', class: 'histogram-grid' });
      this.errorEl = h('div', { class: 'error', hidden: true });
      this.el = h('section', { id: 'histograms', class: 'card histograms', hidden: true },
        h('div', { class: 'card-head' }, h('h2', null, 'Histograms')), this.errorEl, this.grid);
      this.observer = new ResizeObserver(() => {
        for (const card of this.cards.values()) card.redraw();
      });
      this.observer.observe(this.grid);
    }

    card(name) {
      let card = this.cards.get(name);
      if (!card) {
        card = new HistogramCard(name);
        this.cards.set(name, card);
        const after = Array.from(this.cards.keys()).sort().indexOf(name);
        this.grid.insertBefore(card.el, this.grid.children[after] || null);
        this.el.hidden = false;
      }
      return card;
    }

    /** Reads every histogram name of the run with its histograms. */
    async load() {
      let body;
      try {
        body = await apiGet(runPath(this.runId, '/histograms'));
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) return;
        this.errorEl.textContent = `Could not load histograms: ${errorText(err)}`;
        this.errorEl.hidden = false;
        return;
      }
      this.errorEl.hidden = true;
      const names = ((body && body.names) || []).map((entry) => entry.name);
      const series = await Promise.allSettled(names.map((name) => apiGet(runPath(this.runId, '/histograms/series'), { name, max_count: MAX_HISTOGRAMS })));
      names.forEach((name, i) => {
        if (series[i].status === 'fulfilled') this.card(name).setAll((series[i].value && series[i].value.histograms) || []);
      });
    }

    onEvent(event) {
      const hist = histogramFromWire(event);
      if (hist && hist.name) this.card(hist.name).add(hist);
    }

    destroy() {
      this.observer.disconnect();
    }
  }

  /**
   * The compare view's images: for each name any compared run logged, one
   * tile per run side by side (in the runs' colours), under one step slider.
   */
  class CompareImages {
    constructor(runs, colorOf) {
      this.runs = runs;
      this.colorOf = colorOf;
      this.rows = new Map();
      this.list = h('div', { id: 'compare-image-rows', class: 'compare-image-rows' });
      this.el = h('section', { id: 'compare-images', class: 'card images', hidden: true },
        h('div', { class: 'card-head' }, h('h2', null, 'Images')), this.list);
    }

    row(name) {
      let row = this.rows.get(name);
      if (row) return row;
      const slider = h('input', { type: 'range', class: 'image-slider', min: '0', max: '0', step: '1', value: '0', 'aria-label': `Step of ${name}` });
      const live = h('button', { type: 'button', class: 'btn btn-small image-live', 'aria-pressed': 'true', title: 'Follow the latest images' }, 'Live');
      const stepEl = h('span', { class: 'muted compare-image-step' }, 'live');
      const tiles = new Map(this.runs.map((runId) => [runId, new ImageTile(runId, name, { label: runId, color: this.colorOf(runId), slider: false })]));
      row = { name, slider, live, tiles, first: Infinity, last: -Infinity };
      const follow = () => {
        live.setAttribute('aria-pressed', 'true');
        stepEl.textContent = 'live';
        slider.value = String(row.last);
        for (const tile of tiles.values()) tile.follow();
      };
      live.addEventListener('click', follow);
      slider.addEventListener('input', () => {
        const step = Number(slider.value);
        if (step >= row.last) {
          follow();
          return;
        }
        live.setAttribute('aria-pressed', 'false');
        stepEl.textContent = `step ${step}`;
        for (const tile of tiles.values()) tile.showStep(step);
      });
      row.el = h('div', { class: 'compare-image-row', 'data-image-name': name },
        h('div', { class: 'histogram-head' }, h('strong', null, name), stepEl),
        h('div', { class: 'image-controls' }, slider, live),
        h('div', { class: 'image-row-tiles' }, Array.from(tiles.values()).map((tile) => tile.el)));
      this.rows.set(name, row);
      const after = Array.from(this.rows.keys()).sort().indexOf(name);
      this.list.insertBefore(row.el, this.list.children[after] || null);
      this.el.hidden = false;
      return row;
    }

    widen(row, first, last) {
      if (Number.isFinite(first) && first < row.first) row.first = first;
      if (Number.isFinite(last) && last > row.last) row.last = last;
      if (row.first > row.last) return;
      row.slider.min = String(row.first);
      row.slider.max = String(row.last);
      if (row.live.getAttribute('aria-pressed') === 'true') row.slider.value = String(row.last);
    }

    /** Reads each run's image names; a name of any run gets a row with every run. */
    async load() {
      const answers = await Promise.allSettled(this.runs.map((runId) => apiGet(runPath(runId, '/images'))));
      answers.forEach((answer, i) => {
        if (answer.status !== 'fulfilled') return;
        for (const entry of (answer.value && answer.value.names) || []) {
          const row = this.row(entry.name);
          const range = stepRange([entry]);
          if (range) this.widen(row, range[0], range[1]);
          const tile = row.tiles.get(this.runs[i]);
          tile.widen(entry.first_step, entry.last_step);
          tile.onImage(entry.latest);
        }
      });
    }

    onEvent(event) {
      if (typeof event.name !== 'string' || !this.runs.includes(event.run_id)) return;
      const row = this.row(event.name);
      this.widen(row, event.step ?? NaN, event.step ?? NaN);
      row.tiles.get(event.run_id).onImage(event);
    }

    destroy() {
      for (const row of this.rows.values()) for (const tile of row.tiles.values()) tile.destroy();
    }
  }

  Object.assign(ui, { ImageTile, ImagesPanel, HistogramCard, HistogramsPanel, CompareImages, mediaUrl });
})(typeof globalThis !== 'undefined' ? globalThis : this);
