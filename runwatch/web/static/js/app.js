/*
 * The dashboard's entry point: the hash router over the views, started once
 * the page has loaded. Every other file registers on the runwatch namespace
 * (core: pure functions; ui: shell and widgets; views: pages).
 */
(function (root) {
  'use strict';
  const { core, ui, views } = root.runwatch;
  const { h, initAuth } = ui;

  class NotFoundPage {
    constructor(root, path) {
      this.root = root;
      this.path = path;
    }

    mount() {
      this.root.append(h('section', { class: 'card' }, h('h1', null, 'Not found'),
        h('p', null, `Nothing lives at #${this.path}. `, h('a', { href: '#/' }, 'Back to runs'))));
    }

    unmount() {}
  }

  // Each route: a pattern on the hash path, the nav entry it highlights, and a view factory.
  const ROUTES = [
    { pattern: /^\/?$/, nav: 'runs', view: (el) => new views.RunsPage(el) },
    { pattern: /^\/runs\/(.+?)\/?$/, nav: 'runs', view: (el, m) => new views.RunPage(el, core.safeDecode(m[1])) },
    { pattern: /^\/compare\/?$/, nav: 'compare', view: (el) => new views.ComparePage(el) },
    { pattern: /^\/alerts\/?$/, nav: 'alerts', view: (el) => new views.AlertsPage(el) },
    { pattern: /^\/sessions\/?$/, nav: 'sessions', view: (el) => new views.SessionsPage(el) },
    { pattern: /^\/sessions\/(.+?)\/?$/, nav: 'sessions', view: (el, m) => new views.SessionPage(el, core.safeDecode(m[1])) },
  ];

  let currentView = null;

  function route() {
    const path = core.parseHash(location.hash).path;
    const main = document.getElementById('app');
    if (currentView) currentView.unmount();
    main.replaceChildren();
    document.title = 'runwatch';
    let nav = null;
    currentView = null;
    for (const r of ROUTES) {
      const m = r.pattern.exec(path);
      if (m) {
        currentView = r.view(main, m);
        nav = r.nav;
        break;
      }
    }
    if (!currentView) currentView = new NotFoundPage(main, path);
    for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === nav);
    main.dataset.view = currentView.constructor.name;
    currentView.mount();
  }

  function start() {
    initAuth();
    window.addEventListener('hashchange', route);
    route();
  }

  root.runwatch.route = route;
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})(typeof globalThis !== 'undefined' ? globalThis : this);
