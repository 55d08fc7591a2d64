/*
 * Run and session state: deep merge of patches, and what a patch changes.
 * Pure core: no DOM, no clock, no I/O (classic script registering on
 * runwatch.core, or a Node module for the unit tests).
 */
(function (root) {
  'use strict';

  function isPlainObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  }

  function setOwn(target, key, value) {
    // defineProperty so that a key named "__proto__" stays data, not a prototype.
    Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
  }

  /**
   * Deep-merge a state patch into a state, as runwatch.events.merge_state does:
   * nested objects merge key by key, lists and scalars replace, null deletes.
   * Returns a new object; neither argument is modified.
   */
  function mergeState(base, patch) {
    const out = {};
    if (isPlainObject(base)) for (const key of Object.keys(base)) setOwn(out, key, base[key]);
    if (!isPlainObject(patch)) return out;
    for (const key of Object.keys(patch)) {
      const value = patch[key];
      if (value === null) delete out[key];
      else if (isPlainObject(value)) setOwn(out, key, mergeState(isPlainObject(out[key]) ? out[key] : {}, value));
      else setOwn(out, key, value);
    }
    return out;
  }

  /**

  /**
   * What a state patch does, as [{path, op}] in its order: op "~" (a value
   * set: lists and scalars replace) or "-" (null: removed); objects merge, so
   * their keys are listed one by one. At most `limit` entries (then one {more: n}).
   */
  function patchChanges(patch, limit = 50) {
    const out = [];
    let more = 0;
    const walk = (part, path) => {
      for (const [key, value] of Object.entries(part)) {
        const at = path ? `${path}.${key}` : key;
        if (isPlainObject(value) && Object.keys(value).length) walk(value, at);
        else if (out.length < limit) out.push({ path: at, op: value === null ? '-' : '~' });
        else more++;
      }
    };
    walk(isPlainObject(patch) ? patch : {}, '');
    if (more) out.push({ more });
    return out;
  }

  const api = { isPlainObject, setOwn, mergeState, patchChanges };
  if (typeof module === 'object' && module.exports) module.exports = api;
  else Object.assign(((root.runwatch = root.runwatch || {}).core = root.runwatch.core || {}), api);
})(typeof globalThis !== 'undefined' ? globalThis : this);
