/*
 * #/ (the runs table) and what the live lists share. The runs table shows
 * training runs (sessions have their own page): status with an alert badge,
 * tags and note (editable), config and metric columns a user picks,
 * sortable, filtered by the search box; checked runs open in the compare
 * view. Filter, sort and columns live in the URL.
 * Registers LiveListPage and RunsPage on runwatch.views.
 */
(function (root) {
  'use strict';
  const core = root.runwatch.core;
  const ui = root.runwatch.ui;
  const views = ((root.runwatch.views = root.runwatch.views || {}));
  const {
    h, throttle, debounce, apiGet, errorText, LiveSocket, statusBadge, AnnotationEditor, alertBadge, tagChips,
  } = ui;
  const {
    parseTime, formatValue, formatCount, formatDuration, formatClock, STATUS_AFTER, STORE_SETTLE_MS, parseHash,
    runsTableStateFromParams, runsTableHash, compareHash, parseColumn, visibleColumns, columnValue, sortRuns,
    parseRunQuery, matchRun, configKeys, metricsOfColumns, METRIC_STATS,
  } = core;

  /**
   * What the runs and sessions lists share: a throttled re-load, a /ws
   * subscription that re-loads on every (re)connection and lag, a slow re-read
   * for verdicts no event announces (hung and crashed are decided when events
   * stop arriving, or by another process), and a 1 s clock for relative times.
   * Subclasses define load(), onEvents(events) and tick().
   */
  class LiveListPage {
    constructor(root) {
      this.root = root;
      this.closed = false;
      this.refresh = throttle(() => this.load(), 1000);
    }

    startLive(kinds) {
      this.socket = new LiveSocket({ kinds }, {
        onSubscribed: () => this.refresh(),
        onEvents: (events) => this.onEvents(events),
        onLagged: () => this.refresh(),
      }).start();
      this.slowTimer = setInterval(() => this.refresh(), 15000);
      this.tickTimer = setInterval(() => this.tick(), 1000);
    }

    unmount() {
      this.closed = true;
      this.socket?.close();
      this.refresh.cancel();
      clearInterval(this.slowTimer);
      clearInterval(this.tickTimer);
      clearTimeout(this.settleTimer);
    }
  }

  const RUNS_LIMIT = 500;
  const RUNS_LIST_KINDS = ['lifecycle', 'heartbeat', 'alert'];

  class RunsPage extends LiveListPage {
    constructor(root) {
      super(root);
      this.table = runsTableStateFromParams(parseHash(location.hash).params);
      this.query = parseRunQuery(this.table.q);
      this.rows = new Map(); // run_id → {tr, row, live, editor}
      this.runs = []; // fetched rows, newest first
      this.metricNames = [];
      this.selected = new Set();
      this.columnsKey = '';
    }

    mount() {
      this.countEl = h('span', { class: 'muted', id: 'runs-count' });
      this.errorEl = h('div', { class: 'error', hidden: true });
      this.filterInput = h('input', {
        id: 'runs-filter', type: 'search', value: this.table.q, spellcheck: 'false', autocomplete: 'off',
        placeholder: 'Filter: text, status:running, tag:best, lr=0.01, batch_size>32', 'aria-label': 'Filter runs',
      });
      this.filterInput.addEventListener('input', debounce(() => this.setFilter(this.filterInput.value), 150));
      this.compareButton = h('button', { type: 'button', id: 'compare-selected', class: 'btn btn-primary', disabled: true, onclick: () => this.openCompare() }, 'Compare');
      this.columnsMenu = h('div', { class: 'columns-menu' });
      this.columnsDetails = h('details', { class: 'columns-picker', id: 'columns-picker' }, h('summary', { class: 'btn' }, 'Columns'), this.columnsMenu);
      this.columnsDetails.addEventListener('toggle', () => this.renderColumnsMenu());
      this.thead = h('thead');
      this.tbody = h('tbody');
      this.emptyEl = h('div', { class: 'empty', hidden: true }, 'No runs yet. Start one from Python with WebMonitor(MonitorConfig(...)).start_training(), or run: runwatch demo');
      this.root.append(h('section', { class: 'card' },
        h('div', { class: 'card-head' }, h('h1', null, 'Runs'), this.countEl),
        h('div', { class: 'toolbar' }, this.filterInput, this.columnsDetails, h('span', { class: 'spacer' }), this.compareButton),
        this.errorEl,
        h('div', { class: 'table-wrap' }, h('table', { id: 'runs-table', class: 'table' }, this.thead, this.tbody)),
        this.emptyEl));
      this.load();
      this.startLive(RUNS_LIST_KINDS);
    }

    saveTable() {
      history.replaceState(null, '', location.pathname + location.search + runsTableHash(this.table));
    }

    setFilter(text) {
      this.table.q = text;
      this.query = parseRunQuery(text);
      this.saveTable();
      this.renderTable();
    }

    setSort(id) {
      if (this.table.sort === id) this.table.dir = this.table.dir === 'asc' ? 'desc' : 'asc';
      else {
        this.table.sort = id;
        this.table.dir = parseColumn(id) && parseColumn(id).numeric ? 'desc' : 'asc';
      }
      this.saveTable();
      this.renderTable();
    }

    toggleColumn(id, on) {
      const cols = this.table.cols.filter((c) => c !== id);
      if (on) cols.push(id);
      const metricsBefore = metricsOfColumns(this.table.cols).join(',');
      this.table.cols = cols;
      this.saveTable();
      if (metricsOfColumns(cols).join(',') !== metricsBefore) this.load();
      else this.renderTable();
    }

    renderColumnsMenu() {
      if (!this.columnsDetails.open) return;
      const chosen = new Set(this.table.cols);
      const box = (id, label) => {
        const input = h('input', { type: 'checkbox', 'data-column': id });
        input.checked = chosen.has(id);
        input.addEventListener('change', () => this.toggleColumn(id, input.checked));
        return h('label', { class: 'column-option' }, input, label);
      };
      const keys = configKeys(this.runs);
      // h() flattens lists of children; replaceChildren() would print them.
      this.columnsMenu.replaceChildren(h('div', { class: 'columns-list' },
        h('div', { class: 'menu-title' }, 'Config'),
        keys.length ? keys.map((key) => box('config:' + key, key)) : h('div', { class: 'muted' }, 'No config recorded.'),
        h('div', { class: 'menu-title' }, 'Metrics'),
        this.metricNames.length
          ? this.metricNames.map((name) => h('div', { class: 'metric-option' }, h('span', { class: 'metric-option-name' }, name),
            METRIC_STATS.map((stat) => box(`metric:${name}:${stat}`, stat))))
          : h('div', { class: 'muted' }, 'No metrics yet.')));
    }

    openCompare() {
      const runs = this.runs.map((r) => r.run_id).filter((id) => this.selected.has(id));
      if (runs.length) location.hash = compareHash({ runs });
    }

    updateSelection() {
      const n = this.selected.size;
      this.compareButton.disabled = n === 0;
      this.compareButton.textContent = n ? `Compare ${n} run${n === 1 ? '' : 's'}` : 'Compare';
    }

    /**
     * A lifecycle event changes its row's status at once. The refresh it
     * triggers can be answered before the store has committed the event, and
     * no later event announces the change again, so the live status stands
     * until a fetched row is at least as new as the event, and one more
     * refresh follows once the store has it (end time, final reward).
     */
    onEvents(events) {
      let lifecycle = false;
      for (const event of events) {
        if (!event || event.kind !== 'lifecycle') continue;
        lifecycle = true;
        const status = STATUS_AFTER[event.transition];
        const entry = this.rows.get(event.run_id);
        if (!status || !entry) continue;
        entry.live = { status, t: parseTime(event.timestamp), final_reward: event.final_reward };
      }
      if (lifecycle) this.renderTable();
      this.refresh();
      if (lifecycle) {
        clearTimeout(this.settleTimer);
        this.settleTimer = setTimeout(() => this.refresh(), STORE_SETTLE_MS);
      }
    }

    /** The fetched row, with the status of a newer live lifecycle event the store had not committed. */
    currentRow(entry) {
      const live = entry.live;
      if (!live) return entry.row;
      if (!(parseTime(entry.row.updated_at) < live.t - 0.001)) {
        entry.live = null; // the fetched row has it
        return entry.row;
      }
      const row = { ...entry.row, status: live.status };
      if (live.final_reward !== null && live.final_reward !== undefined) row.final_reward = live.final_reward;
      if ((live.status === 'completed' || live.status === 'failed') && !row.end_time) row.end_time = live.t;
      return row;
    }

    async load() {
      const gen = (this.loadGen = (this.loadGen || 0) + 1);
      let body;
      try {
        body = await apiGet('api/runs', {
          limit: RUNS_LIMIT, exclude_kind: 'session', details: 'true', metrics: metricsOfColumns(this.table.cols).join(','),
        });
      } catch (err) {
        if (this.closed || gen !== this.loadGen) return;
        this.errorEl.textContent = `Could not load runs: ${errorText(err)}`;
        this.errorEl.hidden = false;
        return;
      }
      if (this.closed || gen !== this.loadGen) return; // a newer load answers instead
      this.errorEl.hidden = true;
      this.runs = (body && body.runs) || [];
      this.metricNames = (body && body.metric_names) || [];
      const seen = new Set();
      for (const row of this.runs) {
        seen.add(row.run_id);
        const entry = this.rows.get(row.run_id);
        if (entry) entry.row = row;
        else this.rows.set(row.run_id, { tr: h('tr', { 'data-run-id': row.run_id }), row, live: null, editor: null });
      }
      for (const [id, entry] of this.rows) {
        if (!seen.has(id)) {
          entry.tr.remove();
          entry.editorRow?.remove();
          this.rows.delete(id);
          this.selected.delete(id);
        }
      }
      this.renderTable();
      this.renderColumnsMenu();
    }

    renderTable() {
      const now = Date.now() / 1000;
      const current = this.runs.map((row) => this.currentRow(this.rows.get(row.run_id)));
      this.columns = visibleColumns(current, this.table.cols);
      const key = this.columns.map((c) => c.id).join('\u0000') + '|' + this.table.sort + this.table.dir;
      if (key !== this.columnsKey) {
        this.columnsKey = key;
        this.renderHead();
      }
      const shown = sortRuns(current.filter((row) => matchRun(row, this.query)), this.table.sort, this.table.dir, now);
      const wanted = [];
      for (const row of shown) {
        const entry = this.rows.get(row.run_id);
        this.fillRow(entry, row, now);
        wanted.push(entry.tr);
        if (entry.editorRow) wanted.push(entry.editorRow);
      }
      for (const entry of this.rows.values()) {
        if (!wanted.includes(entry.tr)) {
          entry.tr.remove();
          entry.editorRow?.remove();
        }
      }
      wanted.forEach((tr, index) => {
        if (this.tbody.children[index] !== tr) this.tbody.insertBefore(tr, this.tbody.children[index] || null);
      });
      const total = this.runs.length;
      this.countEl.textContent = shown.length === total ? `${total} run${total === 1 ? '' : 's'}` : `${shown.length} of ${total} runs`;
      this.emptyEl.hidden = shown.length > 0;
      this.emptyEl.textContent = total ? 'No run matches the filter.' : 'No runs yet. Start one from Python with WebMonitor(MonitorConfig(...)).start_training(), or run: runwatch demo';
      this.updateSelection();
    }

    renderHead() {
      const all = h('input', { type: 'checkbox', 'aria-label': 'Select every run shown', class: 'select-all' });
      all.addEventListener('change', () => {
        for (const tr of this.tbody.querySelectorAll('tr[data-run-id]')) {
          if (all.checked) this.selected.add(tr.dataset.runId);
          else this.selected.delete(tr.dataset.runId);
          const box = tr.querySelector('input.select-run');
          if (box) box.checked = all.checked;
        }
        this.updateSelection();
      });
      this.thead.replaceChildren(h('tr', null, h('th', { class: 'select' }, all), this.columns.map((col) => {
        const sorted = this.table.sort === col.id;
        return h('th', {
          class: (col.numeric ? 'num ' : '') + 'sortable', 'data-column': col.id,
          'aria-sort': sorted ? (this.table.dir === 'asc' ? 'ascending' : 'descending') : 'none',
        }, h('button', { type: 'button', class: 'sort-btn', onclick: () => this.setSort(col.id) }, col.label, sorted ? (this.table.dir === 'asc' ? ' ▲' : ' ▼') : ''));
      })));
    }

    fillRow(entry, row, now) {
      const tr = entry.tr;
      tr.dataset.status = row.status;
      const box = h('input', { type: 'checkbox', class: 'select-run', 'aria-label': `Select ${row.run_id}` });
      box.checked = this.selected.has(row.run_id);
      box.addEventListener('change', () => {
        if (box.checked) this.selected.add(row.run_id);
        else this.selected.delete(row.run_id);
        this.updateSelection();
      });
      const cells = [h('td', { class: 'select' }, box)];
      for (const col of this.columns) cells.push(this.cell(entry, row, col, now));
      tr.replaceChildren(...cells);
    }

    cell(entry, row, col, now) {
      const href = '#/runs/' + encodeURIComponent(row.run_id);
      switch (col.id) {
        case 'run':
          return h('td', { class: 'run-cell' },
            h('a', { href, class: 'run-link' }, row.run_id),
            row.note ? h('div', { class: 'run-note muted', title: row.note }, row.note) : null);
        case 'status':
          return h('td', null, statusBadge(row.status), ' ', alertBadge(row.alerts, '#/alerts?run=' + encodeURIComponent(row.run_id)));
        case 'tags':
          return h('td', { class: 'tags-cell' }, tagChips(row.tags),
            h('button', { type: 'button', class: 'btn btn-small edit-run', title: 'Edit tags and note', onclick: () => this.toggleEditor(entry) }, '✎'));
        case 'start':
          return h('td', { title: row.start_time || '' }, formatClock(parseTime(row.start_time), { date: true }));
        case 'duration':
          return h('td', { class: 'duration num' }, formatDuration(columnValue(row, col, now)));
        case 'step':
        case 'steps': {
          const value = columnValue(row, col, now);
          return h('td', { class: 'num' }, value === null ? '—' : formatCount(value));
        }
        default: {
          const value = columnValue(row, col, now);
          if (value === null || value === undefined) return h('td', { class: col.numeric ? 'num' : null }, '—');
          const text = typeof value === 'number' ? formatValue(value) : typeof value === 'string' ? value : JSON.stringify(value);
          return h('td', { class: col.numeric || typeof value === 'number' ? 'num' : null, title: text }, text);
        }
      }
    }

    toggleEditor(entry) {
      if (entry.editorRow) {
        entry.editorRow.remove();
        entry.editorRow = null;
        return;
      }
      const editor = new AnnotationEditor(entry.row.run_id, {
        tags: entry.row.tags, note: entry.row.note, compact: true,
        onSaved: ({ tags, note }) => {
          entry.row = { ...entry.row, tags, note };
          const i = this.runs.findIndex((r) => r.run_id === entry.row.run_id);
          if (i >= 0) this.runs[i] = entry.row;
          entry.editorRow?.remove();
          entry.editorRow = null;
          this.renderTable();
        },
      });
      editor.startEdit();
      entry.editorRow = h('tr', { class: 'editor-row', 'data-editor-for': entry.row.run_id },
        h('td', { colspan: String(this.columns.length + 1) }, editor.el));
      entry.tr.after(entry.editorRow);
      editor.tagsInput.focus();
    }

    tick() {
      const now = Date.now() / 1000;
      for (const entry of this.rows.values()) {
        const row = this.currentRow(entry);
        if (row.status !== 'running' && row.status !== 'paused') continue;
        const cell = entry.tr.querySelector('.duration');
        if (cell) cell.textContent = formatDuration(columnValue(row, parseColumn('duration'), now));
      }
    }
  }

  Object.assign(views, { LiveListPage, RunsPage });
})(typeof globalThis !== 'undefined' ? globalThis : this);
