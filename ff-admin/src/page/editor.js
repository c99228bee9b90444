// The flag page's targeting editor: rules, split, ramp and guard as form fields; the
// server checks every edit (its own validation, through the preview route) and says
// what would change and what given users would get. Saving fills the JSON form.
(function () {
  var root = document.getElementById('targeting-editor');
  if (!root) { return; }
  var data = JSON.parse(root.getAttribute('data-state'));
  var t = data.targeting || {};
  var OPS = ['in', 'not_in', 'eq', 'neq', 'starts_with', 'ends_with', 'contains', 'matches', 'lt', 'lte',
    'gt', 'gte', 'before', 'after', 'semver_eq', 'semver_lt', 'semver_gt', 'exists', 'in_segment'];
  var NUMERIC = ['lt', 'lte', 'gt', 'gte'];
  var uid = 0;

  function el(tag, props, kids) {
    var e = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === 'text') { e.textContent = props[k]; } else if (k.slice(0, 2) === 'on') {
        e.addEventListener(k.slice(2), props[k]);
      } else { e.setAttribute(k, props[k]); }
    });
    (kids || []).forEach(function (c) { if (c) { e.appendChild(c); } });
    return e;
  }
  function labelled(text, input) {
    var id = 'ed-' + (uid += 1);
    input.id = id;
    return el('span', { 'class': 'field' }, [el('label', { 'for': id, text: text }), input]);
  }
  function button(text, onclick, name) {
    return el('button', { type: 'button', text: text, 'aria-label': name || text, onclick: onclick });
  }
  function select(options, value) {
    var s = el('select');
    options.forEach(function (o) {
      var opt = el('option', { value: o, text: o });
      if (o === value) { opt.selected = true; }
      s.appendChild(opt);
    });
    return s;
  }
  // A value of the flag's type, as an input; read back with `readValue`. An input left
  // as it was gives back what was loaded, exactly (1.0 stays 1.0): opening and saving
  // changes nothing.
  function valueInput(v) {
    var input;
    if (data.type === 'bool') {
      input = select(['true', 'false'], String(v === undefined ? true : v));
    } else {
      var text = v === undefined ? '' : (typeof v === 'string' && data.type !== 'json' ? v : JSON.stringify(v));
      input = el('input', { value: text, size: 14 });
      if (data.type === 'int' || data.type === 'float') { input.type = 'number'; input.step = 'any'; }
    }
    var initial = input.value;
    input.read = function () {
      var s = input.value;
      if (v !== undefined && s === initial) { return v; }
      if (data.type === 'bool') { return s === 'true'; }
      if (data.type === 'int' || data.type === 'float') { return s === '' ? s : Number(s); }
      if (data.type === 'json') { try { return JSON.parse(s); } catch (e) { return s; } }
      return s;
    };
    return input;
  }
  function readValue(input) { return input.read(); }
  // Splits are edited in percent; stored in basis points.
  function variationsEditor(split) {
    var box = el('div', { 'class': 'variations' });
    var rows = el('div');
    var sum = el('span', { 'class': 'muted', role: 'status', 'aria-live': 'polite' });
    var adder;
    function total() {
      var n = 0;
      rows.querySelectorAll('input.weight').forEach(function (w) { n += Number(w.value) || 0; });
      sum.textContent = 'total ' + Math.round(n * 100) / 100 + ' %' + (Math.abs(n - 100) > 0.001 ? ' (must be 100 %)' : '');
    }
    function add(v) {
      var value = valueInput(v ? v.value : undefined);
      var weight = el('input', { type: 'number', min: '0', max: '100', step: '0.01', size: 6, 'class': 'weight',
        value: v ? String(v.weight / 100) : '0' });
      var initial = weight.value;
      // The same share as a slider, kept in step with the number.
      var slider = el('input', { type: 'range', min: '0', max: '100', step: '0.5', value: weight.value,
        'aria-label': 'share in percent, as a slider' });
      slider.addEventListener('input', function () { weight.value = slider.value; });
      weight.addEventListener('input', function () { slider.value = weight.value; });
      var row = el('div', { 'class': 'row variation' }, [labelled('serve', value), labelled('to %', weight), slider]);
      row.read = function () {
        var w = v && weight.value === initial ? v.weight : Math.round((Number(weight.value) || 0) * 100);
        return { value: readValue(value), weight: w };
      };
      row.appendChild(button('Remove', function () { row.remove(); total(); adder.focus(); changed(); }, 'remove this variation'));
      rows.appendChild(row);
      total();
    }
    (split ? split.variations : []).forEach(add);
    box.appendChild(rows);
    adder = button('Add variation', function () { add(); changed(); });
    box.appendChild(el('div', {}, [adder, sum]));
    box.addEventListener('input', total);
    box.read = function () {
      var vs = [];
      rows.querySelectorAll('.variation').forEach(function (r) { vs.push(r.read()); });
      return vs.length ? { variations: vs } : null;
    };
    return box;
  }
  function clauseRow(c) {
    var attr = el('input', { value: c.attribute || 'user_id', list: 'ed-attributes', size: 12 });
    var op = select(OPS, c.op || 'in');
    // Plain words as a comma-separated list; anything else (commas, numbers, spaces at
    // the ends, empty text) as a JSON list, so it reads back as it was.
    var plain = (c.values || []).every(function (v) {
      return typeof v === 'string' && v !== '' && v.indexOf(',') < 0 && v.trim() === v;
    });
    var values = el('input', { value: plain ? (c.values || []).join(', ') : JSON.stringify(c.values), size: 28,
      placeholder: plain ? 'values, comma separated' : 'values as a JSON list' });
    var initial = values.value;
    // Segment keys are offered where a segment is meant.
    function suggest() {
      if (op.value === 'in_segment' && data.segments && data.segments.length) {
        values.setAttribute('list', 'ed-segments');
      } else { values.removeAttribute('list'); }
    }
    suggest();
    op.addEventListener('change', suggest);
    var negate = el('input', { type: 'checkbox' });
    negate.checked = !!c.negate;
    var row = el('div', { 'class': 'row clause' }, [labelled('attribute', attr), labelled('op', op),
      labelled('values', values), labelled('not', negate)]);
    row.appendChild(button('Remove', function () {
      var rule = row.closest('.rule');
      row.remove();
      var next = rule && rule.querySelector('button');
      if (next) { next.focus(); }
      changed();
    }, 'remove this condition'));
    row.read = function () {
      var numeric = NUMERIC.indexOf(op.value) >= 0;
      var vs;
      if (c.values && values.value === initial) {
        vs = c.values;
      } else if (!plain || values.value.trim().charAt(0) === '[') {
        try { vs = JSON.parse(values.value); } catch (e) { vs = [values.value]; }
      } else {
        vs = values.value.split(',').map(function (s) { return s.trim(); }).filter(function (s) { return s !== ''; })
          .map(function (s) { return numeric && !isNaN(Number(s)) ? Number(s) : s; });
      }
      var out = { attribute: attr.value.trim(), op: op.value, values: vs };
      if (negate.checked) { out.negate = true; }
      return out;
    };
    return row;
  }
  function ruleBox(r) {
    var box = el('div', { 'class': 'rule' });
    var clauses = el('div');
    (r.clauses && r.clauses.length ? r.clauses : [{}]).forEach(function (c) { clauses.appendChild(clauseRow(c)); });
    // A rule serves a value, or splits its users among values (in percent).
    var value = valueInput(r.value);
    value.classList.add('serve');
    var split = variationsEditor(r.split);
    var mode = select(['a value', 'a split'], r.split ? 'a split' : 'a value');
    mode.classList.add('mode');
    var valueField = labelled('value', value);
    function showMode() {
      var splitting = mode.value === 'a split';
      valueField.hidden = splitting;
      split.hidden = !splitting;
    }
    mode.addEventListener('change', showMode);
    box.appendChild(el('strong', { text: 'If all of:' }));
    box.appendChild(clauses);
    box.appendChild(button('Add condition', function () { clauses.appendChild(clauseRow({})); changed(); }));
    box.appendChild(el('div', { 'class': 'row' }, [labelled('then serve', mode), valueField,
      button('Remove rule', function () { box.remove(); addRule.focus(); changed(); })]));
    box.appendChild(split);
    showMode();
    box.read = function () {
      var out = { clauses: [] };
      clauses.querySelectorAll('.clause').forEach(function (c) { out.clauses.push(c.read()); });
      if (mode.value === 'a split') { out.split = split.read() || { variations: [] }; } else { out.value = readValue(value); }
      if (r.description) { out.description = r.description; }
      return out;
    };
    return box;
  }
  // datetime-local is the operator's time zone; the store keeps UTC.
  function localTime(iso) {
    var d = new Date(iso);
    if (isNaN(d)) { return ''; }
    var p = function (n) { return (n < 10 ? '0' : '') + n; };
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' +
      p(d.getMinutes()) + ':' + p(d.getSeconds());
  }
  function stepBox(s) {
    var at = el('input', { type: 'datetime-local', step: '1', value: s.at ? localTime(s.at) : '' });
    var initialAt = at.value;
    var split = variationsEditor(s.split);
    var box = el('div', { 'class': 'rule step' }, [labelled('from (your time)', at), split]);
    box.appendChild(button('Remove step', function () { box.remove(); addStep.focus(); changed(); }));
    box.read = function () {
      var when = s.at && at.value === initialAt ? s.at : (at.value ? new Date(at.value).toISOString().replace('.000Z', 'Z') : '');
      var out = { at: when };
      var sp = split.read();
      if (sp) { out.split = sp; }
      if (s.value !== undefined) { out.value = s.value; }
      if (s.enabled !== undefined) { out.enabled = s.enabled; }
      return out;
    };
    return box;
  }

  var rules = el('div');
  var addRule = button('Add rule', function () { rules.appendChild(ruleBox({})); changed(); });
  (t.rules || []).forEach(function (r) { rules.appendChild(ruleBox(r)); });
  var split = variationsEditor(t.split);
  split.classList.add('everyone');
  var steps = el('div');
  var addStep = button('Add step', function () { steps.appendChild(stepBox({})); changed(); });
  (t.schedule || []).forEach(function (s) { steps.appendChild(stepBox(s)); });
  var g = t.guard || {};
  var guarded = el('input', { type: 'checkbox' });
  guarded.checked = !!t.guard;
  var maxErrors = el('input', { type: 'number', step: 'any', size: 5, value: g.max_error_increase === undefined ? '1' : String(g.max_error_increase) });
  var maxLatency = el('input', { type: 'number', step: 'any', size: 5, value: g.max_latency_increase === undefined ? '' : String(g.max_latency_increase) });
  var minRequests = el('input', { type: 'number', size: 7, value: String(g.min_requests || 200) });
  var action = select(['rollback', 'pause'], g.action || 'rollback');
  function guardFields() {
    [maxErrors, maxLatency, minRequests, action].forEach(function (f) { f.disabled = !guarded.checked; });
  }
  guarded.addEventListener('change', guardFields);
  guardFields();
  var users = el('textarea', { rows: 3, cols: 50, spellcheck: 'false',
    placeholder: 'one user a line: USER_ID attribute=value ...' });
  var reason = el('input', { placeholder: 'reason', size: 30 });
  var verdict = el('p', { role: 'status', 'aria-live': 'polite' });
  var changes = el('ul', { 'class': 'changes' });
  var tried = el('table');

  function collect() {
    var out = {};
    var rs = [];
    rules.querySelectorAll('.rule').forEach(function (r) { rs.push(r.read()); });
    if (rs.length) { out.rules = rs; }
    var sp = split.read();
    if (sp) { out.split = sp; }
    if (t.bucket_by !== undefined) { out.bucket_by = t.bucket_by; }
    if (t.salt !== undefined) { out.salt = t.salt; }
    var ss = [];
    steps.querySelectorAll('.step').forEach(function (s) { ss.push(s.read()); });
    if (ss.length) { out.schedule = ss; }
    if (guarded.checked) {
      out.guard = { max_error_increase: Number(maxErrors.value), min_requests: Number(minRequests.value), action: action.value };
      if (maxLatency.value !== '') { out.guard.max_latency_increase = Number(maxLatency.value); }
      if (g.alpha !== undefined) { out.guard.alpha = g.alpha; }
    }
    return out;
  }
  // `30` and `true` as a number and a boolean (as an app would send them); `"30"` as text.
  function attribute(s) {
    if (/^(-?\d+(\.\d+)?|true|false)$/.test(s) || /^".*"$/.test(s)) { try { return JSON.parse(s); } catch (e) { return s; } }
    return s;
  }
  function tryUsers() {
    return users.value.split('\n').map(function (l) { return l.trim(); }).filter(Boolean).map(function (l) {
      var parts = l.split(/\s+/);
      var u = { attributes: {} };
      parts.forEach(function (p, i) {
        var eq = p.indexOf('=');
        if (eq > 0) { u.attributes[p.slice(0, eq)] = attribute(p.slice(eq + 1)); } else if (i === 0) { u.user_id = p; }
      });
      return u;
    });
  }
  function show(p) {
    verdict.className = p.problem ? 'error' : 'on';
    verdict.textContent = p.problem ? 'The store would refuse this: ' + p.problem
      : (p.changes.length ? 'The store would accept this.' : 'No change.');
    changes.textContent = '';
    p.changes.forEach(function (c) { changes.appendChild(el('li', {}, [el('code', { text: c })])); });
    tried.textContent = '';
    if (p.users.length) {
      tried.appendChild(el('tr', {}, [el('th', { text: 'User' }), el('th', { text: 'Now' }), el('th', { text: 'With this edit' })]));
    }
    var why = function (r) {
      return typeof r === 'string' ? r : Object.keys(r).map(function (k) { return k + ' ' + r[k]; }).join(', ');
    };
    var fmt = function (s) { return s ? JSON.stringify(s.value) + ' (' + why(s.reason) + ')' : '–'; };
    p.users.forEach(function (u) {
      var who = (u.user.user_id || 'anonymous') + ' ' + Object.keys(u.user.attributes || {}).map(function (k) {
        return k + '=' + u.user.attributes[k];
      }).join(' ');
      tried.appendChild(el('tr', { 'class': 'tried' }, [el('td', { text: who }), el('td', { text: fmt(u.now) }),
        el('td', { text: fmt(u.edited) })]));
    });
    save.disabled = !!p.problem || !p.changes.length;
  }
  // Save waits for the server's verdict on the edit as it is now: a newer edit makes an
  // older answer moot.
  var timer = null;
  var asked = 0;
  function changed(e) {
    if (e && e.target === reason) { return; }
    save.disabled = true;
    clearTimeout(timer);
    timer = setTimeout(function () {
      var n = (asked += 1);
      fetch(data.preview, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ csrf: data.csrf, version: data.version, targeting: collect(), users: tryUsers() }) })
        .then(function (r) {
          if (r.redirected) { throw new Error('the session has ended: log in again'); }
          if (!r.ok) { throw new Error('the check failed (' + r.status + '): reload the page'); }
          return r.json();
        })
        .then(function (p) { if (n === asked) { show(p); } })
        .catch(function (err) {
          if (n !== asked) { return; }
          save.disabled = true;
          verdict.className = 'error';
          verdict.textContent = err.message;
        });
    }, 250);
  }
  var save = button('Save targeting', function () {
    var form = document.getElementById('targeting-form');
    document.getElementById('targeting-json').value = JSON.stringify(collect(), null, 2);
    form.querySelector('input[name=reason]').value = reason.value;
    form.submit();
  });
  save.disabled = true;

  var lists = el('div', {}, [
    el('datalist', { id: 'ed-attributes' }, ['user_id'].concat(data.attributes || []).map(function (a) { return el('option', { value: a }); })),
    el('datalist', { id: 'ed-segments' }, (data.segments || []).map(function (s) { return el('option', { value: s }); })),
  ]);
  root.appendChild(lists);
  root.appendChild(el('h3', { text: 'Rules (first match wins)' }));
  root.appendChild(rules);
  root.appendChild(addRule);
  root.appendChild(el('h3', { text: 'Everyone else: percentage rollout' }));
  root.appendChild(split);
  root.appendChild(el('h3', { text: 'Ramp' }));
  root.appendChild(steps);
  root.appendChild(addStep);
  root.appendChild(el('h3', { text: 'Guard' }));
  root.appendChild(el('div', { 'class': 'row' }, [labelled('guard the rollout', guarded),
    labelled('errors +points', maxErrors), labelled('latency +%', maxLatency),
    labelled('requests a side', minRequests), labelled('on a regression', action)]));
  root.appendChild(el('h3', { text: 'Try it' }));
  root.appendChild(labelled('users', users));
  root.appendChild(verdict);
  root.appendChild(changes);
  root.appendChild(tried);
  root.appendChild(el('div', { 'class': 'row' }, [labelled('reason', reason), save]));
  root.addEventListener('input', changed);
  root.addEventListener('change', changed);
  changed();
}());
