// The operator dashboard (GET /admin/dashboard on the shop). It asks for the admin key, keeps it
// in sessionStorage (this tab only, gone when the tab closes) and sends it as a Bearer header
// on every call; it never puts it in a URL, and it talks to no other origin (the page's CSP
// says so too). Every figure comes from the admin API of API.md:
//   GET /admin/products            the sales and their settings (every LIST_EVERY samples)
//   GET /admin/sales/{id}/stats    the live figures of the shown sales (every sample)
//   GET /admin/dlq                 the dead letters (every LIST_EVERY samples)
//   GET /admin/role                which key this is: with the viewer key (read only) the
//                                  controls that change a sale are not shown at all
// The charts' figures are sampled here, every SAMPLE_MS, into a ring of the last WINDOW_S per
// sale; dashboard_charts.js draws them, the rates as deltas of the counters (tokens issued,
// orders of every status) between samples.
(() => {
  "use strict";
  const KEY_STORE = "fs_admin_key";
  const SAMPLE_MS = 1000;
  const WINDOW_S = 600;
  const LIST_EVERY = 5;
  // At most this many sales are sampled at once (the filtered, best-ranked rows), so that a
  // shop with hundreds of sales is not asked hundreds of stats a second by one tab.
  const MAX_ROWS = 20;
  // GET /admin/dlq lists at most this many (shop/dlq.py's LIST_LIMIT): a full page means more.
  const DLQ_LISTED = 500;
  const STATE_RANK = { open: 0, paused: 1, prequeue: 2, scheduled: 3, sold_out: 4, closed: 5 };
  const NUM = new Intl.NumberFormat("en-US");
  const RATE = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const clock = FS_CHARTS.clock;
  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.detail ? `${body.error}: ${body.detail}` : `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  const state = {
    key: null,
    role: null,         // "admin" or "viewer" (GET /admin/role)
    sales: [],          // the last GET /admin/products
    stats: new Map(),   // id -> the last stats
    rings: new Map(),   // id -> {t, waiting, admitted, orders}
    selected: null,     // id of the sale in the detail panel
    charts: new FS_CHARTS.Charts(), // dashboard_charts.js
    timer: null,
    busy: false,
    tick: 0,
  };

  function storedKey() {
    try { return sessionStorage.getItem(KEY_STORE); } catch (_) { return null; }
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${state.key}` };
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (_) { /* an empty or non-JSON body */ }
    if (response.status === 401) {
      signOut("The shop refused this key (401 unauthorized). Enter the admin key again.");
      throw new AuthError("unauthorized");
    }
    if (response.status === 403 && data && data.error === "forbidden") {
      // Only a viewer key meets this (its controls are hidden): the page learns it was wrong.
      applyRole("viewer");
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // --- the key -------------------------------------------------------------------------------

  function showLogin(message) {
    $("board").hidden = true;
    $("session").hidden = true;
    $("login").hidden = false;
    $("key-message").textContent = message || "";
    const input = $("key-input");
    input.value = "";
    input.focus();
  }

  // The viewer key reads everything the admin key does and changes nothing: the controls that
  // would change a sale are hidden, so the page never offers what the shop refuses (403).
  function applyRole(role) {
    state.role = role;
    const viewer = role === "viewer";
    for (const el of document.querySelectorAll("[data-writes]")) el.hidden = viewer;
    $("role").hidden = !viewer;
    document.body.dataset.role = role || "";
  }

  function signOut(message) {
    stopSampling();
    state.key = null;
    applyRole(null);
    try { sessionStorage.removeItem(KEY_STORE); } catch (_) { /* storage blocked */ }
    showLogin(message);
  }

  async function signIn(key) {
    state.key = key;
    try {
      const [sales, who] = await Promise.all([
        api("GET", "/admin/products"),
        api("GET", "/admin/role"),
      ]);
      state.sales = sales;
      applyRole(who.role);
    } catch (err) {
      if (!(err instanceof AuthError)) {
        state.key = null;
        showLogin(`The shop did not answer (${err.message}). Try again.`);
      }
      return;
    }
    try { sessionStorage.setItem(KEY_STORE, key); } catch (_) { /* this tab only, then */ }
    $("login").hidden = true;
    $("board").hidden = false;
    $("session").hidden = false;
    renderTable();
    startSampling();
  }

  // --- sampling -------------------------------------------------------------------------------

  function startSampling() {
    stopSampling();
    state.tick = 0;
    sample();
    state.timer = setInterval(sample, SAMPLE_MS);
  }

  function stopSampling() {
    if (state.timer !== null) clearInterval(state.timer);
    state.timer = null;
  }

  function ring(id) {
    let r = state.rings.get(id);
    if (!r) {
      r = { t: [], waiting: [], admitted: [], orders: [] };
      state.rings.set(id, r);
    }
    return r;
  }

  function record(id, stats, t) {
    const r = ring(id);
    const o = stats.orders;
    r.t.push(t);
    r.waiting.push(stats.waiting);
    r.admitted.push(stats.admitted);
    r.orders.push(o.pending + o.placed + o.paid + o.cancelled);
    while (r.t.length && r.t[0] < t - WINDOW_S) {
      for (const k of ["t", "waiting", "admitted", "orders"]) r[k].shift();
    }
  }

  async function sample() {
    if (state.busy || state.key === null) return; // a slow shop: skip, never pile up
    state.busy = true;
    try {
      if (state.tick % LIST_EVERY === 0) {
        const [sales, dlq] = await Promise.all([
          api("GET", "/admin/products"),
          api("GET", "/admin/dlq"),
        ]);
        state.sales = sales;
        renderDlq(dlq.length);
      }
      state.tick += 1;
      const ids = watched();
      const t = Date.now() / 1000;
      const replies = await Promise.all(ids.map((id) =>
        api("GET", `/admin/sales/${id}/stats`).catch((err) => {
          if (err instanceof AuthError) throw err;
          return null; // gone or failing: the row says so, the others carry on
        })));
      ids.forEach((id, i) => {
        if (replies[i]) {
          state.stats.set(id, replies[i]);
          record(id, replies[i], t);
        } else {
          state.stats.delete(id);
        }
      });
      renderTable();
      renderDetail();
      $("status").textContent =
        `Updated ${clock(t)} · sampling every ${SAMPLE_MS / 1000} s`;
    } catch (err) {
      if (!(err instanceof AuthError)) {
        $("status").textContent = `The shop is not answering (${err.message}); retrying.`;
      }
    } finally {
      state.busy = false;
    }
  }

  // The sales shown (and sampled): those matching the filter, live ones first.
  function shownSales() {
    const needle = $("filter").value.trim().toLowerCase();
    const matching = state.sales.filter((s) => !needle
      || s.id.includes(needle) || s.name.toLowerCase().includes(needle));
    matching.sort((a, b) => (STATE_RANK[a.state] ?? 9) - (STATE_RANK[b.state] ?? 9)
      || (a.id < b.id ? -1 : 1));
    return { rows: matching.slice(0, MAX_ROWS), total: matching.length };
  }

  function watched() {
    const ids = shownSales().rows.map((s) => s.id);
    if (state.selected && !ids.includes(state.selected)) ids.push(state.selected);
    return ids;
  }

  function sale(id) {
    return state.sales.find((s) => s.id === id) || null;
  }

  // --- rendering ------------------------------------------------------------------------------

  function renderDlq(count) {
    const el = $("dlq");
    const more = count >= DLQ_LISTED ? " or more" : "";
    el.textContent = `Dead letters: ${NUM.format(count)}${more}`;
    el.dataset.value = String(count);
    el.classList.toggle("bad", count > 0);
  }

  function cell(row, field, value, text) {
    const td = document.createElement("td");
    td.dataset.field = field;
    if (value !== undefined && value !== null) td.dataset.value = String(value);
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function renderTable() {
    const { rows, total } = shownSales();
    $("sales-count").textContent = total > rows.length
      ? `${rows.length} of ${total} shown: narrow the filter to see the others`
      : `${total} sale${total === 1 ? "" : "s"}`;
    const body = document.querySelector("#sales tbody");
    const fresh = document.createDocumentFragment();
    for (const s of rows) {
      const st = state.stats.get(s.id);
      const tr = document.createElement("tr");
      tr.dataset.productId = s.id;
      if (s.id === state.selected) tr.classList.add("selected");
      const name = cell(tr, "sale", null, "");
      const strong = document.createElement("strong");
      strong.textContent = s.id;
      name.append(strong, document.createElement("br"), s.name);
      cell(tr, "state", s.state, s.state).className = `state state-${s.state}`;
      const n = (v) => (st ? NUM.format(v) : "—");
      cell(tr, "waiting", st && st.waiting, n(st && st.waiting));
      cell(tr, "admit_rate_per_s", st && st.admit_rate_per_s,
        st ? RATE.format(st.admit_rate_per_s) : "—");
      cell(tr, "active", st && st.active, n(st && st.active));
      cell(tr, "tokens_issued", st && st.tokens_issued, n(st && st.tokens_issued));
      for (const k of ["pending", "placed", "paid", "cancelled"]) {
        cell(tr, `orders.${k}`, st && st.orders[k], n(st && st.orders[k]));
      }
      const left = st ? st.stock_left : s.stock_left;
      const all = st ? st.stock_total : s.stock_total;
      cell(tr, "stock_left", left, `${NUM.format(left)} / ${NUM.format(all)}`);
      const td = document.createElement("td");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "secondary";
      open.textContent = s.id === state.selected ? "Shown" : "Show";
      open.setAttribute("aria-label", `Show ${s.id}`);
      open.addEventListener("click", () => select(s.id));
      td.appendChild(open);
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    body.replaceChildren(fresh);
  }

  function select(id) {
    state.selected = id;
    state.charts.clear();
    fillEditForm();
    $("edit-message").textContent = "";
    $("pause-message").textContent = "";
    renderTable();
    renderDetail();
    if (!state.stats.has(id)) sample();
  }

  function fillEditForm() {
    const s = sale(state.selected);
    if (!s) return;
    $("edit-batch_size").value = s.batch_size;
    $("edit-interval_s").value = s.interval_s;
    $("edit-max_active").value = s.max_active;
  }

  function renderDetail() {
    const s = state.selected && sale(state.selected);
    $("detail").hidden = !s;
    if (!s) return;
    $("detail-h").textContent = `${s.name} (${s.id})`;
    const st = $("detail-state");
    st.textContent = s.state;
    st.className = `state state-${s.state}`;
    $("detail-config").textContent = `· ${s.queue_mode} · starts ${s.sale_start} · batch_size `
      + `${s.batch_size} every ${s.interval_s} s · max_active ${s.max_active || "no cap"}`;
    const pause = $("pause");
    pause.textContent = s.state === "paused" ? "Resume admissions" : "Pause admissions";
    pause.dataset.action = s.state === "paused" ? "resume" : "pause";
    pause.disabled = s.state === "closed" || s.state === "sold_out";
    const r = state.rings.get(state.selected);
    if (r) state.charts.draw(r);
  }

  // --- controls -------------------------------------------------------------------------------

  // A number where the text is one; otherwise the text itself, so that the shop's own check
  // answers (422 with its detail) instead of this page guessing the rules.
  function value(text) {
    const trimmed = text.trim();
    return /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
  }

  function say(id, text, ok) {
    const el = $(id);
    el.textContent = text;
    el.className = ok ? "ok" : "error";
  }

  $("pause").addEventListener("click", async () => {
    const id = state.selected;
    const action = $("pause").dataset.action;
    $("pause").disabled = true;
    try {
      const info = await api("POST", `/admin/sales/${id}/${action}`);
      const s = sale(id);
      if (s) s.state = info.state;
      say("pause-message", action === "pause" ? "Paused: nobody more is admitted."
        : "Resumed: admissions go on.", true);
    } catch (err) {
      if (!(err instanceof AuthError)) say("pause-message", err.message, false);
    } finally {
      $("pause").disabled = false;
      renderTable();
      renderDetail();
    }
  });

  $("edit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = state.selected;
    const body = {};
    for (const field of ["batch_size", "interval_s", "max_active"]) {
      body[field] = value($(`edit-${field}`).value);
    }
    try {
      const updated = await api("PATCH", `/admin/products/${id}`, body);
      const i = state.sales.findIndex((s) => s.id === id);
      if (i >= 0) state.sales[i] = updated;
      fillEditForm();
      say("edit-message", `Saved: batch_size ${updated.batch_size}, interval_s `
        + `${updated.interval_s}, max_active ${updated.max_active}.`, true);
      renderTable();
      renderDetail();
    } catch (err) {
      if (!(err instanceof AuthError)) say("edit-message", err.message, false);
    }
  });

  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const input of event.target.querySelectorAll("[data-field]")) {
      const field = input.dataset.field;
      const text = input.value.trim();
      if (text === "") continue; // an empty optional field: the API's default
      const numeric = !["id", "name", "currency", "sale_start", "sale_end", "queue_mode"]
        .includes(field);
      body[field] = numeric ? value(text) : text;
    }
    try {
      const created = await api("POST", "/admin/products", body);
      say("create-message", `Created ${created.id} (${created.state}).`, true);
      state.sales.push(created);
      $("filter").value = created.id;
      select(created.id);
      event.target.querySelector("[data-field=id]").value = "";
    } catch (err) {
      if (!(err instanceof AuthError)) say("create-message", err.message, false);
    }
  });

  $("filter").addEventListener("input", () => renderTable());

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (key) signIn(key);
  });

  $("forget").addEventListener("click", () => signOut("The key is forgotten in this tab."));

  // A start a minute from now, as the API wants it, so the form is one edit from valid.
  document.querySelector("[data-field=sale_start]").value =
    new Date(Date.now() + 60_000).toISOString().replace(/\.\d{3}Z$/, "Z");

  const remembered = storedKey();
  if (remembered) signIn(remembered);
  else showLogin("");
})();
