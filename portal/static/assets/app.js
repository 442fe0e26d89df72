// The merchant portal: coupon templates, running tasks on a map, the till, and (operators) flash
// sessions. Plain DOM code over the public API; lists refresh by polling every few seconds.
"use strict";

(() => {
  const POLL_MS = 2500;
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const api = (...args) => PortalAuth.api(...args);

  const state = {
    me: null,
    tab: null,
    templates: [], // newest first
    tasks: [],
    selectedTask: null,
    map: null,
    tillKey: null, // the idempotency key of the redemption on screen (one per confirmation screen)
    tillRequest: null,
  };

  // ------------------------------------------------------------------------------ small helpers

  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function money(cents) {
    const sign = cents < 0 ? "-" : "";
    const c = Math.abs(cents);
    return `${sign}${Math.floor(c / 100)}.${String(c % 100).padStart(2, "0")}`;
  }

  // "12", "12.5", "12.50" → cents; null when it is not an amount.
  function parseMoney(text) {
    const m = /^\s*(\d{1,9})(?:[.,](\d{1,2}))?\s*$/.exec(text || "");
    if (!m) return null;
    return Number(m[1]) * 100 + Number((m[2] || "0").padEnd(2, "0"));
  }

  function parseIntField(text) {
    return /^\s*\d{1,9}\s*$/.test(text || "") ? Number(text) : null;
  }

  // The same sentence as coupon.domain.describe_rule (the server's `rule_text`), for the live
  // preview while the form is being filled in; the lists show the server's own text.
  function describeRule(rule) {
    let text;
    if (rule.type === "full_reduction") {
      text = `${money(rule.amount_cents)} off orders from ${money(rule.threshold_cents)}`;
    } else if (rule.type === "discount") {
      text = `${rule.percent_off}% off`;
      if (rule.max_discount_cents !== undefined && rule.max_discount_cents !== null) {
        text += `, up to ${money(rule.max_discount_cents)} off`;
      }
      if (rule.threshold_cents) text += `, on orders from ${money(rule.threshold_cents)}`;
    } else {
      text = `${money(rule.amount_cents)} off`;
    }
    const scope = rule.scope;
    if (scope && scope.kind !== "all") {
      const more = scope.ids.length > 5 ? ` and ${scope.ids.length - 5} more` : "";
      text += ` on ${scope.kind} ${scope.ids.slice(0, 5).join(", ")}${more}`;
    }
    return text;
  }

  function problemText(err) {
    if (err instanceof PortalAuth.ApiError) {
      const fields = err.body && Array.isArray(err.body.errors) ? err.body.errors.map((e) => e.key).join(", ") : "";
      return `${err.message}${fields && !err.message.includes(fields) ? ` (${fields})` : ""}`;
    }
    return err && err.message ? err.message : String(err);
  }

  function say(el, text, ok) {
    el.textContent = text;
    el.classList.toggle("error", ok === false);
    el.classList.toggle("ok", ok === true);
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ------------------------------------------------------------------------------ start-up

  async function start() {
    await PortalAuth.loadConfig();
    $("#sign-in").addEventListener("click", () => {
      PortalAuth.signIn().catch((err) => say($("#sign-in-error"), problemText(err), false));
    });
    $("#sign-out").addEventListener("click", async () => {
      await PortalAuth.signOut();
      window.location.replace("/portal/");
    });
    if (!PortalAuth.signedIn()) {
      $("#signed-out").hidden = false;
      return;
    }
    PortalAuth.schedule();
    try {
      state.me = await api("GET", "/api/v1/auth/me");
    } catch (err) {
      $("#signed-out").hidden = false;
      say($("#sign-in-error"), problemText(err), false);
      return;
    }
    $("#who").textContent = `${state.me.display_name} (${state.me.role})`;
    $("#sign-out").hidden = false;
    document.body.dataset.role = state.me.role;
    if (state.me.role !== "merchant" && state.me.role !== "operator") {
      $("#not-for-runners").hidden = false;
      return;
    }
    $("#tabs").hidden = false;
    for (const b of $$("#tabs button")) {
      b.hidden = !b.dataset.roles.split(" ").includes(state.me.role);
      b.addEventListener("click", () => show(b.dataset.tab));
    }
    setupTemplates();
    if (state.me.role === "merchant") {
      setupTasks();
      setupTill();
    } else {
      setupFlash();
    }
    const wanted = window.location.hash.slice(1);
    const allowed = $$("#tabs button").filter((b) => !b.hidden).map((b) => b.dataset.tab);
    show(allowed.includes(wanted) ? wanted : allowed[0]);
    setInterval(poll, POLL_MS);
  }

  function show(tab) {
    state.tab = tab;
    for (const s of $$(".tab")) s.hidden = s.id !== `tab-${tab}`;
    for (const b of $$("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
    history.replaceState(null, "", `#${tab}`);
    if (tab === "tasks" && state.map) state.map.resize();
    poll();
  }

  let polling = false;
  async function poll() {
    if (polling || document.hidden) return;
    polling = true;
    try {
      if (state.tab === "templates") await refreshTemplates();
      else if (state.tab === "tasks") await refreshTasks();
      else if (state.tab === "flash") await refreshFlash();
    } catch (err) {
      if (err instanceof PortalAuth.ApiError && err.status === 401) window.location.replace("/portal/");
    } finally {
      polling = false;
    }
  }

  // ------------------------------------------------------------------------------ templates

  function ruleFromForm(form) {
    const f = form.elements;
    const type = f.type.value;
    const rule = { type };
    const need = (name, cents, label) => {
      if (cents === null) throw new Error(`${label}: enter an amount like 20.00`);
      rule[name] = cents;
    };
    if (type === "full_reduction") {
      need("amount_cents", parseMoney(f.amount.value), "Amount off");
      need("threshold_cents", parseMoney(f.threshold.value), "Orders from");
    } else if (type === "discount") {
      const pct = parseIntField(f.percent.value);
      if (pct === null) throw new Error("Percent off: enter a whole number");
      rule.percent_off = pct;
      if (f.cap.value.trim()) need("max_discount_cents", parseMoney(f.cap.value), "Up to");
      if (f.threshold.value.trim()) need("threshold_cents", parseMoney(f.threshold.value), "Orders from");
    } else {
      need("amount_cents", parseMoney(f.amount.value), "Amount off");
    }
    const cats = f.categories.value.split(",").map((s) => s.trim()).filter(Boolean);
    if (cats.length) rule.scope = { kind: "category", ids: cats };
    return rule;
  }

  function updateRulePreview() {
    const form = $("#template-form");
    const type = form.elements.type.value;
    for (const label of $$("[data-rule]", form)) label.hidden = !label.dataset.rule.split(" ").includes(type);
    try {
      $("#rule-preview").textContent = describeRule(ruleFromForm(form));
    } catch (err) {
      $("#rule-preview").textContent = err.message;
    }
  }

  function setupTemplates() {
    const form = $("#template-form");
    if (state.me.role === "operator") form.elements.distribution.value = "claim";
    form.addEventListener("input", updateRulePreview);
    form.addEventListener("change", updateRulePreview);
    updateRulePreview();
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const msg = $("#template-message");
      const f = form.elements;
      let body;
      try {
        const rule = ruleFromForm(form);
        const days = parseIntField(f.days.value);
        const total = parseIntField(f.total_count.value);
        const perUser = parseIntField(f.per_user_limit.value);
        if (days === null || total === null || perUser === null) throw new Error("Days, batch size and per-runner limit are whole numbers");
        body = {
          name: f.name.value.trim(),
          description: f.description.value.trim() || null,
          rule,
          validity: { kind: "relative", days },
          total_count: total,
          per_user_limit: perUser,
          distribution: f.distribution.value,
        };
      } catch (err) {
        say(msg, err.message, false);
        return;
      }
      try {
        const t = await api("POST", "/api/v1/coupon/templates", body);
        say(msg, `Created "${t.name}": ${t.rule_text}`, true);
        f.name.value = "";
        await refreshTemplates();
      } catch (err) {
        say(msg, problemText(err), false);
      }
    });
  }

  async function loadTemplates() {
    const page = await api("GET", "/api/v1/coupon/templates?limit=100");
    state.templates = page.items;
    fillTemplateSelects();
    return page.items;
  }

  function fillTemplateSelects() {
    const fill = (select, distribution) => {
      if (!select) return;
      const keep = select.value;
      const items = state.templates.filter((t) => t.distribution === distribution && t.status === "active");
      select.replaceChildren(
        ...items.map((t) => h("option", { value: t.id }, `${t.name} — ${t.rule_text}`)),
      );
      if (items.some((t) => t.id === keep)) select.value = keep;
    };
    fill($("#task-form select[name=reward_template_id]"), "task_reward");
    fill($("#flash-form select[name=template_id]"), "claim");
  }

  async function refreshTemplates() {
    const items = await loadTemplates();
    // Counters are exact (read from PostgreSQL): ask for the ones on screen.
    const stats = await Promise.all(
      items.slice(0, 30).map((t) => api("GET", `/api/v1/coupon/templates/${t.id}/stats`).catch(() => null)),
    );
    const rows = items.map((t, i) => {
      const s = stats[i];
      return h(
        "tr",
        { "data-template-id": t.id },
        h("td", {}, t.name),
        h("td", { class: "rule-text" }, t.rule_text),
        h("td", {}, t.distribution === "claim" ? "claiming" : "running tasks"),
        h("td", { class: "assigned" }, s ? `${s.assigned} / ${s.total}` : "…"),
        h("td", { class: "used" }, s ? s.used : "…"),
        h("td", { class: "remaining" }, s ? s.remaining : "…"),
      );
    });
    $("#template-list tbody").replaceChildren(...rows);
    $("#template-empty").hidden = items.length > 0;
  }

  // ------------------------------------------------------------------------------ tasks

  function setupTasks() {
    const cfg = PortalAuth.loadConfig();
    const form = $("#task-form");
    cfg.then((c) => {
      state.map = new PortalMap.TileMap($("#map"), {
        tileUrl: c.tile_url,
        attribution: c.tile_attribution,
        center: c.map_center,
        zoom: 15,
        onPick: (lat, lon) => {
          form.elements.lat.value = lat.toFixed(6);
          form.elements.lon.value = lon.toFixed(6);
          syncMarker();
        },
      });
      $("#zoom-in").addEventListener("click", () => state.map.zoomBy(1));
      $("#zoom-out").addEventListener("click", () => state.map.zoomBy(-1));
      loadTemplates().catch(() => {});
    });
    const syncMarker = () => {
      const lat = Number(form.elements.lat.value);
      const lon = Number(form.elements.lon.value);
      if (!state.map) return;
      if (form.elements.lat.value && form.elements.lon.value && Number.isFinite(lat) && Number.isFinite(lon)) {
        state.map.setMarker(lat, lon, Number(form.elements.radius_m.value) || 0);
      } else {
        state.map.setMarker(null);
      }
    };
    form.elements.lat.addEventListener("change", syncMarker);
    form.elements.lon.addEventListener("change", syncMarker);
    form.elements.radius_m.addEventListener("input", syncMarker);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const msg = $("#task-message");
      const nums = {
        lat: Number(f.lat.value),
        lon: Number(f.lon.value),
        radius_m: Number(f.radius_m.value),
        min_distance_m: Number(f.min_distance_m.value),
        time_limit_min: Number(f.time_limit_min.value),
        quota: Number(f.quota.value),
      };
      const missing = Object.keys(nums).some((n) => f[n].value.trim() === "" || !Number.isFinite(nums[n]));
      if (missing) {
        say(msg, "Pick the destination on the map and fill in every number.", false);
        return;
      }
      if (!f.reward_template_id.value) {
        say(msg, 'Create a template given out by "running tasks" first.', false);
        return;
      }
      try {
        const task = await api("POST", "/api/v1/run/tasks", {
          title: f.title.value.trim(),
          description: f.description.value.trim(),
          destination: { lat: nums.lat, lon: nums.lon },
          radius_m: nums.radius_m,
          min_distance_m: nums.min_distance_m,
          time_limit_s: Math.round(nums.time_limit_min * 60),
          reward_template_id: f.reward_template_id.value,
          quota: Math.round(nums.quota),
        });
        say(msg, `Created "${task.title}".`, true);
        f.title.value = "";
        state.selectedTask = task.id;
        await refreshTasks();
      } catch (err) {
        say(msg, problemText(err), false);
      }
    });
  }

  async function setTaskStatus(task, status) {
    try {
      await api("PATCH", `/api/v1/run/tasks/${task.id}`, { status });
      await refreshTasks();
    } catch (err) {
      say($("#task-message"), problemText(err), false);
    }
  }

  async function refreshTasks() {
    const page = await api("GET", "/api/v1/run/tasks?limit=50");
    state.tasks = page.items;
    if (state.map && !state.map.centredOnTasks && page.items.length) {
      // Start where the merchant's tasks are rather than at the configured default.
      state.map.centredOnTasks = true;
      state.map.setCenter(page.items[0].destination.lat, page.items[0].destination.lon);
    }
    const rows = page.items.map((t) =>
      h(
        "tr",
        { "data-task-id": t.id, class: t.id === state.selectedTask ? "selected" : null },
        h("td", {}, t.title),
        h("td", { class: "status" }, t.status),
        h("td", { class: "completed" }, `${t.completed_count} / ${t.quota}`),
        h("td", {}, `${t.destination.lat.toFixed(5)}, ${t.destination.lon.toFixed(5)}`),
        h(
          "td",
          { class: "actions" },
          h("button", { type: "button", class: "show-runs", onclick: () => selectTask(t.id) }, "Runs"),
          t.status === "active" ? h("button", { type: "button", onclick: () => setTaskStatus(t, "paused") }, "Pause") : null,
          t.status === "paused" ? h("button", { type: "button", onclick: () => setTaskStatus(t, "active") }, "Resume") : null,
          t.status !== "ended" ? h("button", { type: "button", onclick: () => setTaskStatus(t, "ended") }, "End") : null,
        ),
      ),
    );
    $("#task-list tbody").replaceChildren(...rows);
    $("#task-empty").hidden = page.items.length > 0;
    await refreshRuns();
  }

  function selectTask(id) {
    state.selectedTask = id;
    refreshTasks().catch(() => {});
  }

  async function refreshRuns() {
    const task = state.tasks.find((t) => t.id === state.selectedTask);
    $("#runs-panel").hidden = !task;
    if (!task) return;
    $("#runs-title").textContent = task.title;
    const page = await api("GET", `/api/v1/run/tasks/${task.id}/runs?limit=50`);
    const rows = page.items.map((r) =>
      h(
        "tr",
        { "data-run-id": r.id, class: `run-${r.status}` },
        h("td", {}, r.id),
        h("td", {}, r.runner_id),
        h("td", { class: "status" }, r.rejection_reason ? `${r.status} (${r.rejection_reason.replace(/_/g, " ")})` : r.status),
        h("td", {}, r.distance_m === null ? `${r.point_count} points` : `${Math.round(r.distance_m)} m`),
        h("td", {}, r.duration_s === null ? "" : `${Math.floor(r.duration_s / 60)}:${String(Math.round(r.duration_s % 60)).padStart(2, "0")}`),
        h("td", {}, when(r.accepted_at)),
      ),
    );
    $("#run-list tbody").replaceChildren(...rows);
    $("#runs-empty").hidden = page.items.length > 0;
  }

  // ------------------------------------------------------------------------------ till

  function setupTill() {
    const form = $("#till-form");
    const msg = $("#till-message");
    const panel = $("#till-preview");
    const reset = () => {
      panel.hidden = true;
      state.tillKey = null;
      state.tillRequest = null;
    };
    form.addEventListener("input", reset);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      reset();
      const amount = parseMoney(form.elements.amount.value);
      if (amount === null) {
        say(msg, "Order amount: enter an amount like 120.00", false);
        return;
      }
      const request = { code: form.elements.code.value.trim(), order_amount_cents: amount };
      try {
        const p = await api("POST", "/api/v1/coupon/redemptions/preview", request);
        $("#till-template").textContent = p.template_name;
        $("#till-rule").textContent = p.rule_text;
        $("#till-discount").textContent = money(p.discount_cents);
        $("#till-payable").textContent = money(p.payable_cents);
        // One key per confirmation screen: a double click or a retry after a lost answer
        // redeems once and gets the same answer.
        state.tillKey = newKey();
        state.tillRequest = request;
        panel.hidden = false;
        say(msg, "");
      } catch (err) {
        say(msg, problemText(err), false);
      }
    });
    $("#till-cancel").addEventListener("click", () => {
      reset();
      say(msg, "Cancelled.");
    });
    $("#till-confirm").addEventListener("click", async () => {
      if (!state.tillRequest) return;
      try {
        const r = await api("POST", "/api/v1/coupon/redemptions", { ...state.tillRequest, idempotency_key: state.tillKey });
        reset();
        form.reset();
        say(msg, `Redeemed: ${money(r.discount_cents)} off, customer pays ${money(r.payable_cents)} (transaction ${r.transaction_id}).`, true);
      } catch (err) {
        say(msg, problemText(err), false);
      }
    });
  }

  // ------------------------------------------------------------------------------ flash sessions

  function localInputValue(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }

  function isoZ(date) {
    return date.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  function setupFlash() {
    const form = $("#flash-form");
    form.elements.starts_at.value = localInputValue(new Date(Date.now() + 60_000));
    $("#flash-date").value = new Date().toISOString().slice(0, 10); // the API's days are UTC days
    $("#flash-date").addEventListener("change", () => refreshFlash().catch(() => {}));
    loadTemplates().catch(() => {});
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const msg = $("#flash-message");
      const starts = new Date(f.starts_at.value);
      const minutes = parseIntField(f.minutes.value);
      const stock = parseIntField(f.stock.value);
      if (Number.isNaN(starts.getTime()) || minutes === null || stock === null) {
        say(msg, "Start, minutes and stock are needed.", false);
        return;
      }
      if (!f.template_id.value) {
        say(msg, 'Create a platform template given out by "claiming" first.', false);
        return;
      }
      try {
        const s = await api("POST", "/api/v1/coupon/flash-sessions", {
          template_id: f.template_id.value,
          starts_at: isoZ(starts),
          ends_at: isoZ(new Date(starts.getTime() + minutes * 60_000)),
          stock,
        });
        say(msg, `Created session ${s.id}: ${s.stock} coupons from ${when(s.starts_at)}.`, true);
        $("#flash-date").value = s.starts_at.slice(0, 10);
        await refreshFlash();
      } catch (err) {
        say(msg, problemText(err), false);
      }
    });
  }

  async function refreshFlash() {
    const day = $("#flash-date").value;
    const page = await api("GET", `/api/v1/coupon/flash-sessions${day ? `?date=${day}` : ""}`);
    const names = new Map(state.templates.map((t) => [t.id, t.name]));
    const now = Date.now();
    const rows = page.items.map((s) => {
      const open = Date.parse(s.starts_at) <= now && now < Date.parse(s.ends_at);
      const label = s.remaining === 0 ? "SOLD OUT" : open ? "open" : now < Date.parse(s.starts_at) ? "upcoming" : "closed";
      const sold = s.stock ? Math.round(((s.stock - s.remaining) / s.stock) * 100) : 0;
      return h(
        "tr",
        { "data-session-id": s.id, class: s.remaining === 0 ? "sold-out" : null },
        h("td", {}, s.id),
        h("td", {}, names.get(s.template_id) || s.template_id),
        h("td", {}, `${when(s.starts_at)} – ${when(s.ends_at)}`),
        h("td", {}, s.stock),
        h("td", { class: "remaining" }, h("progress", { max: 100, value: sold }), ` ${s.remaining}`),
        h("td", { class: "state" }, label),
      );
    });
    $("#flash-list tbody").replaceChildren(...rows);
    $("#flash-empty").hidden = page.items.length > 0;
  }

  window.PortalApp = { describeRule, parseMoney, state };
  start().catch((err) => {
    $("#signed-out").hidden = false;
    say($("#sign-in-error"), problemText(err), false);
  });
})();
