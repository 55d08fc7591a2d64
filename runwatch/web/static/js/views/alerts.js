/*
 * #/alerts: every alert instance (a rule on a run with a label set), firing,
 * pending or resolved, with its history of transitions, filtered by state,
 * run, rule and severity (kept in the URL), each linking to its run at the
 * moment it fired. Built from GET /api/alerts/history, kept live by /ws.
 * Registers AlertsPage on runwatch.views.
 */
(function (root) {
  'use strict';
  const core = root.runwatch.core;
  const ui = root.runwatch.ui;
  const views = ((root.runwatch.views = root.runwatch.views || {}));
  const { h, throttle, debounce, apiGet, errorText, LiveSocket } = ui;
  const {
    parseTime, parseValue, formatValue, formatClock, alertInstances, filterInstances, stateCounts, alertWindow,
    parseHash, readText, buildHash, SEVERITIES, STORE_SETTLE_MS,
  } = core;

  const HISTORY_LIMIT = 5000;
  const STATE_FILTERS = ['', 'firing', 'pending', 'resolved'];

  class AlertsPage {
    constructor(root) {
      this.root = root;
      this.closed = false;
      const params = parseHash(location.hash).params;
      this.filters = {
        state: STATE_FILTERS.includes(readText(params, 'state')) ? readText(params, 'state') : '',
        run: readText(params, 'run'),
        rule: readText(params, 'rule'),
        severity: SEVERITIES.includes(readText(params, 'severity')) ? readText(params, 'severity') : '',
      };
      this.transitions = []; // newest first, from the store
      this.live = []; // from /ws, until the store has them
      this.expanded = new Set();
      this.refresh = throttle(() => this.load(), 1000);
      this.renderSoon = throttle(() => this.render(), 200);
    }

    mount() {
      const input = (id, value, placeholder, key) => {
        const el = h('input', { id, type: 'search', value, placeholder, spellcheck: 'false', autocomplete: 'off', 'aria-label': placeholder });
        el.addEventListener('input', debounce(() => this.setFilter(key, el.value.trim()), 150));
        return el;
      };
      this.chipsEl = h('div', { id: 'alert-state-filters', class: 'chip-group', role: 'group', 'aria-label': 'State' });
      this.severitySelect = h('select', { id: 'alert-severity', 'aria-label': 'Severity' },
        h('option', { value: '' }, 'any severity'), SEVERITIES.map((s) => h('option', { value: s }, s)));
      this.severitySelect.value = this.filters.severity;
      this.severitySelect.addEventListener('change', () => this.setFilter('severity', this.severitySelect.value));
      this.countEl = h('span', { class: 'muted', id: 'alerts-count' });
      this.errorEl = h('div', { class: 'error', hidden: true });
      this.tbody = h('tbody');
      this.emptyEl = h('div', { class: 'empty', hidden: true });
      this.root.append(h('section', { class: 'card', id: 'alerts-page' },
        h('div', { class: 'card-head' }, h('h1', null, 'Alerts'), this.countEl),
        h('div', { class: 'toolbar' }, this.chipsEl,
          input('alert-run', this.filters.run, 'Run', 'run'), input('alert-rule', this.filters.rule, 'Rule', 'rule'),
          this.severitySelect),
        this.errorEl,
        h('div', { class: 'table-wrap' }, h('table', { id: 'alerts-table', class: 'table' },
          h('thead', null, h('tr', null, ['State', 'Severity', 'Rule', 'Run', 'Labels', 'Value', 'Since', 'Last change', ''].map((c) => h('th', null, c)))),
          this.tbody)),
        this.emptyEl));
      document.title = 'Alerts · runwatch';
      this.renderChips();
      this.socket = new LiveSocket({ kinds: ['alert'] }, {
        onSubscribed: () => {
          this.refresh();
          clearTimeout(this.settleTimer);
          this.settleTimer = setTimeout(() => this.refresh(), STORE_SETTLE_MS);
        },
        onEvents: (events) => this.onEvents(events),
        onLagged: () => this.refresh(),
      }).start();
      this.load();
      this.slowTimer = setInterval(() => this.refresh(), 15000);
    }

    unmount() {
      this.closed = true;
      this.socket?.close();
      this.refresh.cancel();
      this.renderSoon.cancel();
      clearInterval(this.slowTimer);
      clearTimeout(this.settleTimer);
    }

    setFilter(key, value) {
      if (this.filters[key] === value) return;
      this.filters[key] = value;
      const f = this.filters;
      history.replaceState(null, '', location.pathname + location.search + buildHash('/alerts', [
        ['state', f.state], ['run', f.run ? encodeURIComponent(f.run) : ''], ['rule', f.rule ? encodeURIComponent(f.rule) : ''],
        ['severity', f.severity],
      ]));
      this.renderChips();
      this.render();
    }

    renderChips() {
      this.chipsEl.replaceChildren(h('span', { class: 'chip-label' }, 'State'), ...STATE_FILTERS.map((state) => h('button', {
        type: 'button', class: 'chip', 'data-state': state, 'aria-pressed': String(this.filters.state === state),
        onclick: () => this.setFilter('state', state),
      }, state || 'all')));
    }

    async load() {
      const gen = (this.loadGen = (this.loadGen || 0) + 1);
      let body;
      try {
        body = await apiGet('api/alerts/history', { limit: HISTORY_LIMIT });
      } catch (err) {
        if (this.closed || gen !== this.loadGen) return;
        this.errorEl.textContent = `Could not load alerts: ${errorText(err)}`;
        this.errorEl.hidden = false;
        return;
      }
      if (this.closed || gen !== this.loadGen) return;
      this.errorEl.hidden = true;
      this.transitions = (body && body.alerts) || [];
      // Live transitions the store has now are dropped; newer ones stay.
      const newest = this.transitions.reduce((max, t) => Math.max(max, parseTime(t.updated_at)), -Infinity);
      this.live = this.live.filter((t) => parseTime(t.updated_at) > newest);
      this.render();
    }

    onEvents(events) {
      for (const event of events) {
        if (!event || event.kind !== 'alert') continue;
        this.live.push({
          run_id: event.run_id, rule: event.rule, state: event.state, severity: event.severity, value: event.value ?? null,
          labels: event.labels || {}, annotations: event.annotations || {}, active_since: event.active_since,
          updated_at: event.timestamp,
        });
      }
      this.renderSoon();
      this.refresh();
    }

    render() {
      if (this.closed) return;
      const all = alertInstances(this.transitions.concat(this.live));
      const shown = filterInstances(all, this.filters);
      const counts = stateCounts(all);
      this.countEl.textContent = `${counts.firing} firing, ${counts.pending} pending, ${counts.resolved} resolved`;
      const rows = [];
      for (const inst of shown) {
        rows.push(this.row(inst));
        if (this.expanded.has(inst.key)) rows.push(this.historyRow(inst));
      }
      this.tbody.replaceChildren(...rows);
      this.emptyEl.hidden = shown.length > 0;
      this.emptyEl.textContent = all.length ? 'No alert matches the filters.' : 'No alert has fired yet.';
    }

    row(inst) {
      const labels = Object.entries(inst.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ');
      const note = inst.annotations && (inst.annotations.summary || inst.annotations.description);
      const window = alertWindow(inst);
      let href = '#/runs/' + encodeURIComponent(inst.run_id);
      if (window) href += `?since=${window.since.toFixed(3)}` + (window.until !== null ? `&until=${window.until.toFixed(3)}` : '');
      const expanded = this.expanded.has(inst.key);
      return h('tr', { class: `alert-row state-${inst.state}`, 'data-rule': inst.rule, 'data-state': inst.state, 'data-run-id': inst.run_id },
        h('td', null, h('span', { class: `alert-state-badge state-${inst.state}` }, inst.state)),
        h('td', null, h('span', { class: `lvl lvl-${inst.severity}` }, inst.severity)),
        h('td', null, h('strong', null, inst.rule), note ? h('div', { class: 'muted alert-note', title: note }, note) : null),
        h('td', null, h('a', { href, class: 'run-link alert-run-link', title: 'Open the run at the moment this alert fired' }, inst.run_id)),
        h('td', { class: 'muted' }, labels || '—'),
        h('td', { class: 'num' }, inst.value === null || inst.value === undefined ? '—' : formatValue(parseValue(inst.value))),
        h('td', { title: formatClock(inst.since, { date: true, millis: true }) }, formatClock(inst.since, { date: true })),
        h('td', { title: formatClock(inst.updated, { date: true, millis: true }) }, formatClock(inst.updated, { date: true })),
        h('td', null, h('button', {
          type: 'button', class: 'btn btn-small', 'aria-expanded': String(expanded),
          onclick: () => {
            if (this.expanded.has(inst.key)) this.expanded.delete(inst.key);
            else this.expanded.add(inst.key);
            this.render();
          },
        }, `History (${inst.history.length})`)));
    }

    historyRow(inst) {
      return h('tr', { class: 'alert-history-row' }, h('td', { colspan: '9' }, h('ol', { class: 'alert-history' },
        inst.history.slice().reverse().map((t) => h('li', { class: `alert-transition state-${t.state}`, 'data-state': t.state },
          h('time', { class: 'event-time' }, formatClock(t.ts, { date: true, millis: true })),
          h('span', { class: `alert-state-badge state-${t.state}` }, t.state),
          t.value !== null && t.value !== undefined ? h('span', { class: 'muted' }, `value ${formatValue(parseValue(t.value))}`) : null)))));
    }
  }

  views.AlertsPage = AlertsPage;
})(typeof globalThis !== 'undefined' ? globalThis : this);
