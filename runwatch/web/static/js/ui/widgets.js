/*
 * Small widgets several views share: a run's tags and note with their
 * editor (saved through PATCH /api/runs/{id}), an alert badge, and an event
 * as a log line (level colour, expandable data, preformatted traceback).
 * Registers on runwatch.ui.
 */
(function (root) {
  'use strict';
  const core = root.runwatch.core;
  const ui = root.runwatch.ui;
  const { h, jsonTree, apiSend, runPath, errorText } = ui;
  const { formatClock, logLine, LEVELS } = core;

  function tagChips(tags) {
    return (tags || []).map((tag) => h('span', { class: 'tag run-tag', 'data-tag': tag }, tag));
  }

  /** "a, b ,c" → ["a", "b", "c"]. */
  function parseTagsInput(text) {
    return String(text || '').split(',').map((t) => t.trim()).filter(Boolean);
  }

  /**
   * A run's tags and note, shown with an Edit button that turns them into a
   * form. onSaved({tags, note}) runs after the server stored them.
   */
  class AnnotationEditor {
    constructor(runId, { tags = [], note = '', onSaved = null, compact = false } = {}) {
      this.runId = runId;
      this.tags = tags;
      this.note = note;
      this.onSaved = onSaved;
      this.compact = compact;
      this.editing = false;
      this.el = h('div', { class: 'annotations' + (compact ? ' compact' : ''), 'data-run-id': runId });
      this.render();
    }

    set(tags, note) {
      if (this.editing) return; // a fetched value must not overwrite what is being typed
      this.tags = tags || [];
      this.note = note || '';
      this.render();
    }

    render() {
      if (this.editing) return this.renderForm();
      const empty = !this.tags.length && !this.note;
      const edit = h('button', {
        type: 'button', class: 'btn btn-small edit-annotations', title: 'Tags and a note for this run', onclick: () => this.startEdit(),
      }, empty ? '+ Tags, note' : 'Edit');
      const note = this.note ? [h('span', { class: 'run-note', title: this.note }, this.note)] : [];
      this.el.replaceChildren(h('span', { class: 'tags' }, tagChips(this.tags)), ...note, edit);
      return null;
    }

    startEdit() {
      this.editing = true;
      this.renderForm();
      this.tagsInput.focus();
    }

    renderForm() {
      this.tagsInput = h('input', {
        type: 'text', class: 'tags-input', value: this.tags.join(', '), placeholder: 'tags, comma-separated',
        'aria-label': 'Tags', spellcheck: 'false',
      });
      this.noteInput = h('textarea', { class: 'note-input', rows: this.compact ? '2' : '3', placeholder: 'A note about this run', 'aria-label': 'Note' });
      this.noteInput.value = this.note;
      this.errorEl = h('span', { class: 'error', hidden: true });
      const save = h('button', { type: 'button', class: 'btn btn-primary save-annotations', onclick: () => this.save() }, 'Save');
      const cancel = h('button', { type: 'button', class: 'btn', onclick: () => { this.editing = false; this.render(); } }, 'Cancel');
      this.noteInput.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) this.save();
      });
      this.tagsInput.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') this.save();
      });
      this.el.replaceChildren(h('div', { class: 'annotation-form' }, this.tagsInput, this.noteInput, h('div', { class: 'form-row' }, save, cancel, this.errorEl)));
    }

    async save() {
      const body = { tags: parseTagsInput(this.tagsInput.value), note: this.noteInput.value };
      try {
        const answer = await apiSend('PATCH', runPath(this.runId), body);
        this.editing = false;
        this.tags = answer.tags;
        this.note = answer.note;
        this.render();
        if (this.onSaved) this.onSaved({ tags: answer.tags, note: answer.note });
      } catch (err) {
        this.errorEl.textContent = `Not saved: ${errorText(err)}`;
        this.errorEl.hidden = false;
      }
    }
  }

  /** A badge counting a run's firing and pending alerts (null when none). */
  function alertBadge(counts, href) {
    const firing = (counts && counts.firing) || 0;
    const pending = (counts && counts.pending) || 0;
    if (!firing && !pending) return null;
    const text = firing ? `${firing} firing` : `${pending} pending`;
    const title = `${firing} firing, ${pending} pending alert${firing + pending === 1 ? '' : 's'}`;
    return h('a', { class: `alert-badge ${firing ? 'alert-badge-firing' : 'alert-badge-pending'}`, href, title, 'data-firing': String(firing), 'data-pending': String(pending) }, '⚠ ' + text);
  }

  /**
   * An EventRow as a log line: time, level (coloured), kind, type, message;
   * a click expands its data as a tree and its traceback as preformatted text.
   */
  function logLineItem(row, expanded, onToggle) {
    const line = logLine(row);
    const level = LEVELS.includes(row.level) ? row.level : 'info';
    const expandable = Boolean(line.data || line.traceback);
    const li = h('li', {
      class: `event log-line kind-${row.kind} level-${level}`, 'data-kind': row.kind, 'data-level': row.level, 'data-type': row.event_type,
    },
    h('button', {
      type: 'button', class: 'event-line', 'aria-expanded': expandable ? String(expanded) : null, disabled: !expandable,
      onclick: expandable ? onToggle : null,
    },
    h('time', { class: 'event-time', title: formatClock(row._ts, { date: true, millis: true }) }, formatClock(row._ts, { millis: true })),
    h('span', { class: `lvl lvl-${level}` }, row.level),
    h('span', { class: 'event-kind' }, row.kind),
    h('span', { class: 'event-type' }, row.event_type),
    line.source ? h('span', { class: 'event-source' }, line.source) : null,
    h('span', { class: 'event-summary' }, line.message),
    line.traceback ? h('span', { class: 'has-traceback', title: 'has a traceback' }, 'traceback') : null));
    if (expanded && expandable) {
      const detail = h('div', { class: 'event-detail' });
      if (line.data) detail.append(jsonTree(line.data, { depth: 2 }));
      if (line.traceback) detail.append(h('pre', { class: 'traceback' }, line.traceback));
      li.append(detail);
    }
    return li;
  }

  Object.assign(ui, { tagChips, parseTagsInput, AnnotationEditor, alertBadge, logLineItem });
})(typeof globalThis !== 'undefined' ? globalThis : this);
