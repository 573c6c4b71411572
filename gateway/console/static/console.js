// The support console's script. Every player-written string (sessionId, deviceId, deviceClass,
// contentId) goes into the page as a text node (textContent / createTextNode), never as markup;
// the token lives in this tab's sessionStorage and travels only in the Authorization header.
"use strict";

(function () {
  const TOKEN_KEY = "console.token";
  const REFRESH_MS = 2000;
  const POLICIES_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let account = null; // the userId looked up
  let clockOffset = 0; // server now - local now, for the lease countdown
  let pending = null; // the session the dialog asks about
  // What each list shows now: a refresh re-renders only what changed, so the focus (an agent
  // tabbing to a button) and the text being read stay put.
  const shown = { sessions: null, decisions: null, policy: null };
  const timers = [];

  // -- building DOM from data, as text -------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }
  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }
  const text = (value) => (value === null || value === undefined ? "—" : String(value));
  const time = (ms) => (ms === null || ms === undefined ? "—" : new Date(ms).toLocaleTimeString());
  function duration(ms) {
    if (ms <= 0) return "expired";
    const s = Math.ceil(ms / 1000);
    return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
  }
  function status(node, stale, what) {
    node.classList.toggle("stale", Boolean(stale));
    node.closest("section").classList.toggle("is-stale", Boolean(stale));
    node.textContent = stale
      ? `STALE — not live: ${stale}`
      : `Live: ${what} updated ${new Date().toLocaleTimeString()}`;
  }

  // -- the API ---------------------------------------------------------------------------
  class Refused extends Error {}
  async function api(path, options) {
    const init = Object.assign({ cache: "no-store", credentials: "omit" }, options || {});
    init.headers = Object.assign({ Authorization: `Bearer ${token}` }, init.headers || {});
    const response = await fetch(path, init);
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      signOut(body.detail || `refused (${response.status})`);
      throw new Refused(body.detail || "refused");
    }
    return response;
  }

  // -- sign in / out ---------------------------------------------------------------------
  async function signIn(candidate) {
    token = candidate;
    try {
      const response = await api("/console/api/whoami");
      const body = await response.json();
      sessionStorage.setItem(TOKEN_KEY, token);
      $("principal").textContent = body.principal;
      $("who").hidden = false;
      $("sign-in").hidden = true;
      $("main").hidden = false;
      $("token").value = "";
      startRefreshing();
      $("user-id").focus();
    } catch (err) {
      if (!(err instanceof Refused)) $("sign-in-error").textContent = `cannot reach the console: ${err.message}`;
    }
  }
  function signOut(why) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    while (timers.length) clearInterval(timers.pop());
    $("who").hidden = true;
    $("main").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = why ? `Signed out: ${why}` : "";
    $("token").focus();
  }

  // -- the account -------------------------------------------------------------------------
  async function loadAccount(refresh) {
    if (!account) return;
    const user = account;
    let body;
    try {
      const query = new URLSearchParams({ userId: user });
      if (refresh) query.set("refresh", "1");
      const response = await api(`/console/api/account?${query}`);
      body = await response.json();
      if (!response.ok) throw new Error(body.detail || response.status);
    } catch (err) {
      if (!(err instanceof Refused)) status($("account-status"), `the console did not answer (${err.message})`);
      return;
    }
    if (user !== account) return; // another account was looked up meanwhile
    clockOffset = body.now - Date.now();
    $("account-view").hidden = false;
    const stale = [body.sessionsStale && `sessions: ${body.sessionsStale}`, body.ledgerStale && `decisions: ${body.ledgerStale}`]
      .filter(Boolean)
      .join("; ");
    status($("account-status"), stale, `account ${body.userId}`);
    renderPolicy(body.policy);
    if (body.sessions !== null) renderSessions(body.userId, body.sessions);
    $("sessions").classList.toggle("stale", body.sessions === null);
    renderDecisions(body.recent);
  }

  function renderPolicy(policy) {
    const signature = JSON.stringify(policy);
    if (signature === shown.policy) return;
    shown.policy = signature;
    const dl = $("account-policy");
    clear(dl);
    const classes = Object.entries(policy.deviceClasses || {}).map(([c, n]) => `${c}: ${n}`).join(", ");
    const rows = [
      ["Policy", policy.name],
      ["Plan (from its last decision)", policy.plan],
      ["Limit", policy.maxStreams],
      ["Overflow", policy.overflow],
      ["Class caps", classes || "none"],
    ];
    for (const [term, value] of rows) dl.append(el("dt", {}, term), el("dd", {}, text(value)));
  }

  function renderSessions(user, sessions) {
    const signature = JSON.stringify([user, sessions]);
    if (signature === shown.sessions) return;
    shown.sessions = signature;
    $("session-count").textContent = `(${sessions.length})`;
    const body = $("sessions").tBodies[0];
    clear(body);
    if (!sessions.length) body.append(el("tr", {}, el("td", { colspan: "7" }, "No active session.")));
    for (const s of sessions) {
      const button = el("button", { type: "button", class: "danger" }, "Terminate…");
      button.setAttribute("aria-label", `Terminate session ${s.sessionId}`);
      button.addEventListener("click", () => askTerminate(user, s));
      body.append(
        el(
          "tr",
          { "data-session": s.sessionId },
          el("td", { class: "id" }, s.sessionId),
          el("td", {}, text(s.deviceId)),
          el("td", {}, text(s.deviceClass)),
          el("td", {}, text(s.contentId)),
          el("td", {}, time(s.startedAt)),
          el("td", { class: "countdown", "data-expires": String(s.leaseExpiresAt) }, duration(s.leaseExpiresAt - (Date.now() + clockOffset))),
          el("td", {}, button),
        ),
      );
    }
  }

  function tick() {
    for (const cell of document.querySelectorAll("#sessions .countdown")) {
      cell.textContent = duration(Number(cell.dataset.expires) - (Date.now() + clockOffset));
    }
  }

  function advice(v) {
    if (!v.conflicts) return null;
    const list = el("ul", { class: "conflicts" });
    for (const c of v.conflicts) {
      list.append(
        el("li", {}, `${text(c.deviceId)} (${text(c.deviceClass)}) · session `, el("span", { class: "id" }, c.sessionId),
          ` · ${text(c.contentId)} · since ${time(c.startedAt)} · lease to ${time(c.leaseExpiresAt)}`),
      );
    }
    return el("div", { class: "advice" }, "Held by:", list, `A slot frees at ${time(v.nextFreeAt)} if nobody heartbeats.`);
  }

  function renderDecisions(recent) {
    const signature = JSON.stringify(recent);
    if (signature === shown.decisions) return;
    shown.decisions = signature;
    const list = $("decisions");
    clear(list);
    if (!recent.length) list.append(el("li", {}, "No decision in the ledger yet."));
    for (const v of recent) {
      const limit = v.maxStreams === null ? "" : ` · ${v.activeStreams}/${v.maxStreams} streams`;
      list.append(
        el(
          "li",
          { class: `decision ${v.decision}`, "data-reason": v.reason },
          el("span", { class: "when" }, time(v.decidedAt)),
          " ",
          el("strong", {}, `${v.type} → ${v.decision} (${v.reason})`),
          ` · session `,
          el("span", { class: "id" }, v.sessionId),
          limit,
          v.policy ? ` · ${v.policy}` : "",
          v.issuedBy ? el("span", { class: "issuer" }, ` · issued by ${v.issuedBy}`) : null,
          advice(v),
        ),
      );
    }
  }

  // -- terminate ---------------------------------------------------------------------------
  function askTerminate(user, session) {
    pending = { user, session: session.sessionId };
    $("confirm-user").textContent = user;
    $("confirm-session").textContent = session.sessionId;
    $("confirm-device").textContent = text(session.deviceId);
    $("confirm").returnValue = ""; // Escape keeps the last value: start from none
    $("confirm").showModal();
    $("confirm-cancel").focus();
  }

  async function terminate() {
    if (!pending) return;
    const { user, session } = pending;
    pending = null;
    const key = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
    const result = $("terminate-result");
    result.textContent = "Terminating…";
    try {
      const response = await api("/console/api/terminate", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": key },
        body: JSON.stringify({ userId: user, sessionId: session }),
      });
      const body = await response.json();
      result.textContent = response.ok
        ? `Session ${session}: ${body.reason}${body.issuedBy ? ` (issued by ${body.issuedBy})` : ""}.`
        : `Not terminated: ${body.detail || response.status}`;
    } catch (err) {
      if (!(err instanceof Refused)) result.textContent = `Not terminated: ${err.message}`;
    }
    loadAccount(true);
  }

  // -- the live picture -----------------------------------------------------------------
  async function loadLive() {
    let body;
    try {
      const response = await api("/console/api/live");
      body = await response.json();
    } catch (err) {
      if (!(err instanceof Refused)) status($("live-status"), `the console did not answer (${err.message})`);
      return;
    }
    status($("live-status"), body.stale, "ledger");
    const minutes = body.minutes;
    const last = minutes[minutes.length - 1];
    $("live-active").textContent = String(last.active);
    $("live-denies").textContent = String(last.denies);
    $("live-denies-hour").textContent = String(minutes.reduce((n, m) => n + m.denies, 0));
    const legend = $("live-classes");
    clear(legend);
    legend.append(el("li", { class: "series-all" }, `all: ${last.active}`));
    body.classes.forEach((c, i) => {
      const name = c.others ? "other classes" : c.deviceClass === null ? "no class" : c.deviceClass;
      legend.append(el("li", { class: `series-${i % 12}`, "data-class": name }, `${name}: ${last.byClass[i]}`));
    });
    drawActive(minutes, body.classes.length);
    drawDenies(minutes);
    const rows = $("live-table").tBodies[0];
    clear(rows);
    for (const m of minutes.slice(-10).reverse()) {
      rows.append(el("tr", {}, el("td", {}, new Date(m.at).toLocaleTimeString()), el("td", {}, String(m.active)), el("td", {}, String(m.denies))));
    }
  }

  function drawActive(minutes, classes) {
    const chart = $("chart-active");
    for (const node of [...chart.childNodes]) if (node.nodeName !== "title") chart.removeChild(node);
    const top = Math.max(1, ...minutes.map((m) => m.active));
    const x = (i) => 30 + (i * 565) / Math.max(1, minutes.length - 1);
    const y = (n) => 165 - (n * 150) / top;
    chart.append(svg("line", { x1: 30, y1: 165, x2: 595, y2: 165, class: "axis" }));
    const label = svg("text", { x: 2, y: 20, class: "tick" });
    label.textContent = String(top);
    chart.append(label);
    const series = [["all", minutes.map((m) => m.active)]];
    for (let c = 0; c < classes; c++) series.push([String(c % 12), minutes.map((m) => m.byClass[c])]);
    for (const [name, values] of series) {
      const points = values.map((n, i) => `${x(i).toFixed(1)},${y(n).toFixed(1)}`).join(" ");
      chart.append(svg("polyline", { points, class: `line series-${name}` }));
    }
  }

  function drawDenies(minutes) {
    const chart = $("chart-denies");
    for (const node of [...chart.childNodes]) if (node.nodeName !== "title") chart.removeChild(node);
    const top = Math.max(1, ...minutes.map((m) => m.denies));
    const width = 565 / minutes.length;
    minutes.forEach((m, i) => {
      if (!m.denies) return;
      const h = (m.denies * 85) / top;
      chart.append(svg("rect", { x: (30 + i * width).toFixed(1), y: (90 - h).toFixed(1), width: Math.max(1, width - 1).toFixed(1), height: h.toFixed(1), class: "bar" }));
    });
    chart.append(svg("line", { x1: 30, y1: 90, x2: 595, y2: 90, class: "axis" }));
    const label = svg("text", { x: 2, y: 15, class: "tick" });
    label.textContent = String(top);
    chart.append(label);
  }

  // -- policies ------------------------------------------------------------------------
  async function loadPolicies() {
    let body;
    try {
      body = await (await api("/console/api/policies")).json();
    } catch (err) {
      if (!(err instanceof Refused)) status($("policies-status"), `the console did not answer (${err.message})`);
      return;
    }
    status($("policies-status"), body.stale, "policies");
    const rows = $("policy-table").tBodies[0];
    clear(rows);
    const entries = Object.entries(body.policies);
    if (!entries.length) rows.append(el("tr", {}, el("td", { colspan: "4" }, "No policy record: every account gets the settings.")));
    for (const [key, p] of entries) {
      const classes = Object.entries(p.deviceClasses || {}).map(([c, n]) => `${c}: ${n}`).join(", ");
      rows.append(el("tr", {}, el("td", { class: "id" }, key), el("td", {}, String(p.maxStreams)), el("td", {}, p.overflow), el("td", {}, classes || "none")));
    }
    $("policy-settings").textContent = `Without a record: ${body.settings.maxStreams} streams, ${body.settings.overflow} (MAX_STREAMS, OVERFLOW_POLICY).`;
  }

  function startRefreshing() {
    while (timers.length) clearInterval(timers.pop());
    loadLive();
    loadPolicies();
    timers.push(setInterval(() => loadAccount(true), REFRESH_MS));
    timers.push(setInterval(loadLive, REFRESH_MS));
    timers.push(setInterval(loadPolicies, POLICIES_MS));
    timers.push(setInterval(tick, 1000));
  }

  // -- wiring ----------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      $("sign-in-error").textContent = "";
      signIn($("token").value.trim());
    });
    $("sign-out").addEventListener("click", () => signOut(null));
    $("lookup-form").addEventListener("submit", (event) => {
      event.preventDefault();
      account = $("user-id").value.trim();
      $("terminate-result").textContent = "";
      loadAccount(false);
    });
    $("confirm").addEventListener("close", () => {
      if ($("confirm").returnValue === "terminate") terminate();
      else pending = null;
    });
    if (token) signIn(token);
    else $("token").focus();
  });
})();
