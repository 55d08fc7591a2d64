/*
 * Rendering helpers: the frame scheduler, the element builder, badges, the
 * collapsible JSON tree, theme colours, preferences, throttle and debounce.
 * Registers on runwatch.ui.
 */
(function (root) {
  'use strict';
  const { isPlainObject, statusClass } = root.runwatch.core;
  const ui = ((root.runwatch = root.runwatch || {}).ui = root.runwatch.ui || {});

  function throttle(fn, ms) {
    let last = 0;
    let timer = 0;
    const wrapped = () => {
      const wait = last + ms - Date.now();
      if (wait <= 0) {
        clearTimeout(timer);
        timer = 0;
        last = Date.now();
        fn();
      } else if (!timer) {
        timer = setTimeout(() => { timer = 0; wrapped(); }, wait);
      }
    };
    wrapped.cancel = () => { clearTimeout(timer); timer = 0; };
    return wrapped;
  }


  // Every redraw goes through one requestAnimationFrame: events only mark
  // things dirty, so a burst of batches costs one draw per frame.
  const frame = { jobs: new Map(), requested: false };

  // A frame runs jobs until this many milliseconds have passed, and at most
  // HEAVY_PER_FRAME heavy ones (chart draws: uPlot paints in a microtask after
  // the job returns, and the browser rasterizes the canvas when the frame is
  // committed, so their cost is not seen by the clock); the rest wait for
  // the next frame. Many charts redrawing at once (a compare view of live
  // runs) then spread over frames instead of dropping them: one chart of ten
  // runs is about 4 ms of script and 1-2 ms of raster on a CPU-only browser.
  const FRAME_BUDGET_MS = 8;
  const HEAVY_PER_FRAME = 1;

  /** Runs fn in the next animation frame (once per key; a later fn for the same key replaces it). */
  function schedule(key, fn, heavy = false) {
    frame.jobs.set(key, { fn, heavy });
    if (!frame.requested) {
      frame.requested = true;
      requestAnimationFrame(runFrame);
    }
  }

  function runFrame() {
    frame.requested = false;
    const started = performance.now();
    let heavyRun = 0;
    for (const [key, job] of Array.from(frame.jobs.entries())) {
      if (frame.jobs.get(key) !== job) continue; // replaced meanwhile: the newer one runs later
      if (job.heavy && heavyRun >= HEAVY_PER_FRAME) continue;
      frame.jobs.delete(key);
      if (job.heavy) heavyRun++;
      try {
        job.fn();
      } catch (err) {
        console.error('runwatch: render failed', err);
      }
      if (frame.jobs.size && performance.now() - started > FRAME_BUDGET_MS) break;
    }
    if (frame.jobs.size && !frame.requested) {
      frame.requested = true;
      requestAnimationFrame(runFrame);
    }
  }

  /** Builds an element: h('div', {class: 'x', onclick: fn}, child, 'text', [more]). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else if (value === true) el.setAttribute(key, '');
      else el.setAttribute(key, String(value));
    }
    appendChildren(el, children);
    return el;
  }

  function appendChildren(el, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) appendChildren(el, child);
      else el.append(child instanceof Node ? child : String(child));
    }
  }

  function statusBadge(status, attrs = {}) {
    return h('span', { ...attrs, class: `badge ${statusClass(status)}` }, status || 'unknown');
  }

  function setStatusBadge(el, status) {
    el.className = `badge ${statusClass(status)}`;
    el.textContent = status || 'unknown';
  }

  /**
   * A collapsible JSON tree. `open` (a Map of path → boolean) remembers what
   * the user expanded across re-renders; nodes deeper than `depth` start
   * closed, and closed nodes build their children only when opened.
   */
  function jsonTree(value, { open = new Map(), depth = 1, empty = '(empty)' } = {}) {
    const tree = h('div', { class: 'tree' });
    if (isPlainObject(value) || Array.isArray(value)) {
      const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
      if (entries.length === 0) tree.append(h('div', { class: 'muted' }, empty));
      appendTreeEntries(tree, entries, '', 0, { open, depth });
    } else {
      tree.append(treeLeaf(null, value));
    }
    return tree;
  }

  const TREE_CHILD_LIMIT = 500;

  function appendTreeEntries(parent, entries, path, level, opts) {
    for (const [key, value] of entries.slice(0, TREE_CHILD_LIMIT)) {
      parent.append(treeNode(key, value, path + '\u0000' + key, level, opts));
    }
    if (entries.length > TREE_CHILD_LIMIT) {
      parent.append(h('div', { class: 'tree-more muted' }, `… ${entries.length - TREE_CHILD_LIMIT} more`));
    }
  }

  function treeNode(key, value, path, level, opts) {
    const isArray = Array.isArray(value);
    if (!isArray && !isPlainObject(value)) return treeLeaf(key, value);
    const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
    if (entries.length === 0) return treeLeaf(key, value);
    const details = h('details', { class: 'tree-node' });
    const remembered = opts.open.get(path);
    details.open = remembered !== undefined ? remembered : level < opts.depth;
    const children = h('div', { class: 'tree-children' });
    let built = false;
    const build = () => {
      if (built) return;
      built = true;
      appendTreeEntries(children, entries, path, level + 1, opts);
    };
    if (details.open) build();
    details.addEventListener('toggle', () => {
      opts.open.set(path, details.open);
      if (details.open) build();
    });
    details.append(
      h('summary', null, h('span', { class: 'tree-key' }, String(key)),
        h('span', { class: 'tree-meta' }, isArray ? ` [${entries.length}]` : ` {${entries.length}}`)),
      children,
    );
    return details;
  }

  function treeLeaf(key, value) {
    let text;
    let type = value === null ? 'null' : typeof value;
    if (Array.isArray(value)) {
      text = '[]';
      type = 'empty';
    } else if (isPlainObject(value)) {
      text = '{}';
      type = 'empty';
    } else if (type === 'string') {
      text = JSON.stringify(value);
    } else {
      text = String(value);
    }
    const long = text.length > 300;
    return h('div', { class: 'tree-leaf' },
      key !== null ? [h('span', { class: 'tree-key' }, String(key)), h('span', { class: 'tree-colon' }, ': ')] : null,
      h('span', { class: `tree-val tv-${type}`, title: long ? text : null }, long ? text.slice(0, 299) + '…' : text));
  }

  /** Canvas colours come from CSS custom properties, so dark/light mode is the stylesheet's business. */
  const theme = {
    cache: null,
    get() {
      if (!this.cache) {
        const css = getComputedStyle(document.documentElement);
        const read = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
        this.cache = {
          line: read('--chart-line', '#2563eb'),
          grid: read('--chart-grid', '#e5e7eb'),
          axis: read('--chart-axis', '#9ca3af'),
          text: read('--chart-text', '#6b7280'),
          nan: read('--chart-nan', '#dc2626'),
          hover: read('--chart-hover', '#111827'),
          select: read('--chart-select', 'rgba(37,99,235,0.15)'),
          font: '11px ' + read('--font-sans', 'system-ui, sans-serif'),
        };
      }
      return this.cache;
    },
  };

  const storage = {
    get(key, fallback) {
      try {
        return localStorage.getItem(key) ?? fallback;
      } catch (_err) {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(key, value);
      } catch (_err) {
        // Preferences are a convenience; ignore disabled storage.
      }
    },
  };

  function debounce(fn, ms) {
    let timer = 0;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  Object.assign(ui, {
    throttle, debounce, schedule, h, appendChildren, statusBadge, setStatusBadge, jsonTree, theme, storage,
  });
})(typeof globalThis !== 'undefined' ? globalThis : this);
