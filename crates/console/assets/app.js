// fleetsql console: plain JavaScript, no build step, no outside requests.
"use strict";

(function () {
  const HISTORY_KEY = "fleetsql.history";
  const HISTORY_MAX = 50;
  // Badge thresholds: amber when data are this old or any machine is
  // missing; red when much older or more than a tenth of machines missing.
  // The server's /v1/console/config may set other ages.
  const AMBER_AGE_MS = 30000;
  const RED_AGE_MS = 120000;
  const RED_MISSING_FRACTION = 0.1;

  const $ = (id) => document.getElementById(id);

  // ---------- session (only when the node has a users file) ----------

  // A logged-in page proves itself on every state-changing request with
  // the session's CSRF token, which the node gives it in a cookie only
  // this origin's scripts read. One wrapper covers every call site.
  function csrfToken() {
    const found = document.cookie.split(";").map((c) => c.trim())
      .find((c) => c.startsWith("fleetsql_csrf="));
    return found ? found.slice("fleetsql_csrf=".length) : "";
  }
  let sessionRequired = false;
  const plainFetch = window.fetch.bind(window);
  window.fetch = async (path, options) => {
    const opts = Object.assign({}, options || {});
    const method = (opts.method || "GET").toUpperCase();
    const token = csrfToken();
    if (token && !["GET", "HEAD", "OPTIONS"].includes(method)) {
      opts.headers = Object.assign({}, opts.headers || {}, { "x-csrf-token": token });
    }
    const response = await plainFetch(path, opts);
    // The session ended (expired, logged out elsewhere, user removed).
    if (response.status === 401 && sessionRequired) location.href = "/login";
    return response;
  };
  plainFetch("/v1/session").then(async (response) => {
    if (response.status === 401) { location.href = "/login"; return; }
    const session = await response.json();
    if (!session.auth) return;
    sessionRequired = true;
    $("session-user").textContent = session.user + " (" + session.role + ")";
    $("session").hidden = !session.login;
    $("logout").addEventListener("click", async () => {
      await window.fetch("/v1/logout", { method: "POST" });
      location.href = "/login";
    });
  }).catch(() => {});
  let config = { features: {}, tick_ms: 5000 };
  let lastResult = null;
  let pqSource = null;
  let pqWatchedId = null;

  // ---------- helpers ----------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children || []) node.append(c);
    return node;
  }

  // Fetches JSON; a failed answer becomes an Error carrying the server's
  // own message and hint.
  async function api(path, options) {
    const response = await fetch(path, options);
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!response.ok) {
      let message = (body && body.error) || text || response.statusText;
      if (body && body.hint) message += "\nhint: " + body.hint;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    // A query's answer is streamed: its 200 leaves with the first rows, and
    // an error after them (the time-out, the memory limit) ends the object
    // with `error`, `hint` and `sqlstate` after the rows sent. It is an
    // error, not a short answer.
    if (body && body.error && body.sqlstate !== undefined && Array.isArray(body.rows)) {
      let message = body.error + " (SQLSTATE " + body.sqlstate + ")";
      message += "\nafter " + body.row_count + (body.row_count === 1 ? " row" : " rows") + " were sent";
      if (body.hint) message += "\nhint: " + body.hint;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function showError(id, error) {
    const box = $(id);
    if (error) {
      box.textContent = typeof error === "string" ? error : error.message;
      box.hidden = false;
    } else {
      box.textContent = "";
      box.hidden = true;
    }
  }

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "?";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 7200000) return Math.round(ms / 60000) + " min";
    if (ms < 172800000) return Math.round(ms / 3600000) + " h";
    return Math.round(ms / 86400000) + " days";
  }

  function isNumeric(type) {
    return /^(U?Int|Float|Decimal)/.test(type || "");
  }

  // A table of `columns` ({name, type}) and `rows` (arrays); headers sort
  // when `sortable`.
  function renderGrid(table, columns, rows, options) {
    options = options || {};
    table.replaceChildren();
    const head = el("tr");
    columns.forEach((c, i) => {
      const th = el("th", { text: c.name, title: c.type || "" });
      if (options.sortable) {
        th.classList.add("sortable");
        th.addEventListener("click", () => sortBy(table, columns, rows, i, options));
      }
      head.append(th);
    });
    table.append(el("thead", {}, [head]));
    const body = el("tbody");
    for (const row of rows) {
      const tr = el("tr");
      if (options.rowClass) {
        const cls = options.rowClass(row);
        if (cls) tr.className = cls;
      }
      row.forEach((value, i) => {
        const td = el("td", { text: value === null ? "NULL" : String(value) });
        if (isNumeric(columns[i].type) || typeof value === "number") td.classList.add("num");
        tr.append(td);
      });
      body.append(tr);
    }
    table.append(body);
  }

  function compareValues(a, b) {
    if (a === b) return 0;
    if (a === null) return -1;
    if (b === null) return 1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  function sortBy(table, columns, rows, index, options) {
    const th = table.querySelectorAll("th")[index];
    const descending = th.classList.contains("asc");
    const sorted = rows.slice().sort((x, y) => compareValues(x[index], y[index]));
    if (descending) sorted.reverse();
    renderGrid(table, columns, sorted, options);
    table.querySelectorAll("th")[index].classList.add(descending ? "desc" : "asc");
  }

  // ---------- generation badge ----------

  function renderBadge(info) {
    const badge = $("gen-badge");
    if (!info || !info.id) {
      badge.textContent = "no generation yet";
      badge.className = "badge red";
      badge.dataset.level = "red";
      return;
    }
    const age = info.data_age_ms !== null && info.data_age_ms !== undefined
      ? Math.max(info.age_ms, info.data_age_ms) : info.age_ms;
    const missing = info.machines_expected - info.machines_seen;
    const missingFraction = info.machines_expected ? missing / info.machines_expected : 1;
    const incomplete = missing > 0 || info.clusters_seen < info.clusters_expected;
    const amberAge = (config.badge && config.badge.amber_age_ms) || AMBER_AGE_MS;
    const redAge = (config.badge && config.badge.red_age_ms) || RED_AGE_MS;
    let level = "ok";
    if (age > amberAge || incomplete) level = "amber";
    if (age > redAge || missingFraction > RED_MISSING_FRACTION || info.machines_seen === 0) level = "red";
    badge.className = "badge " + level;
    badge.dataset.level = level;
    badge.dataset.generation = String(info.id);
    badge.textContent = "generation " + info.id + " · " + formatMs(info.age_ms) + " old · "
      + info.clusters_seen + "/" + info.clusters_expected + " clusters · "
      + info.machines_seen + "/" + info.machines_expected + " machines";
    badge.title = "made " + info.made_at + " by " + info.producer
      + (info.data_age_ms !== null ? "; oldest data " + formatMs(info.data_age_ms) + " old" : "");
  }

  async function refreshHealth() {
    try {
      const health = await api("/health");
      renderBadge(health.generation);
    } catch (_) {
      $("gen-badge").className = "badge red";
      $("gen-badge").textContent = "server unreachable";
    }
  }

  // ---------- SQL editor ----------

  const KEYWORDS = new Set((
    "select from where and or not in is null as group by order having limit offset join inner left " +
    "right full outer cross on using union all distinct case when then else end asc desc like ilike " +
    "between exists with explain show set true false interval cast over partition"
  ).split(" "));
  const FUNCTIONS = new Set(
    "count sum avg min max round abs coalesce now date_trunc to_timestamp lower upper length substr".split(" "));

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function highlight(sql) {
    const token = /(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:[^']|'')*'?)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|([\s\S])/g;
    let html = "";
    let match;
    while ((match = token.exec(sql)) !== null) {
      const [text, comment, string, number, word] = match;
      if (comment) html += '<span class="tok-com">' + escapeHtml(text) + "</span>";
      else if (string) html += '<span class="tok-str">' + escapeHtml(text) + "</span>";
      else if (number) html += '<span class="tok-num">' + text + "</span>";
      else if (word && KEYWORDS.has(word.toLowerCase())) html += '<span class="tok-kw">' + text + "</span>";
      else if (word && FUNCTIONS.has(word.toLowerCase())) html += '<span class="tok-fn">' + text + "</span>";
      else html += escapeHtml(text);
    }
    // A trailing newline needs a character after it to take up a line.
    return html + "\n";
  }

  function syncEditor() {
    const input = $("sql-input");
    const pre = $("sql-highlight");
    pre.innerHTML = highlight(input.value);
    pre.scrollTop = input.scrollTop;
    pre.scrollLeft = input.scrollLeft;
  }

  function setSql(sql) {
    $("sql-input").value = sql;
    syncEditor();
  }

  function loadHistory() {
    try {
      const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
      return Array.isArray(list) ? list.filter((s) => typeof s === "string") : [];
    } catch (_) {
      return [];
    }
  }

  function remember(sql) {
    const list = [sql].concat(loadHistory().filter((s) => s !== sql)).slice(0, HISTORY_MAX);
    try { localStorage.setItem(HISTORY_KEY, JSON.stringify(list)); } catch (_) { /* private mode */ }
    renderHistory();
  }

  function renderHistory() {
    const select = $("history");
    select.replaceChildren(el("option", { value: "", text: "—" }));
    loadHistory().forEach((sql, i) => {
      const label = sql.replace(/\s+/g, " ").slice(0, 80);
      select.append(el("option", { value: String(i), text: label }));
    });
  }

  async function runQuery() {
    const sql = $("sql-input").value.trim();
    if (!sql) return;
    showError("query-error", null);
    $("result-meta").textContent = "running…";
    $("run").disabled = true;
    const started = performance.now();
    try {
      const answer = await api("/v1/query", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ sql }),
      });
      const roundTrip = performance.now() - started;
      lastResult = answer;
      remember(sql);
      renderGrid($("result-table"), answer.columns, answer.rows, { sortable: true });
      $("result-meta").textContent = answer.row_count + (answer.row_count === 1 ? " row" : " rows")
        + " · " + answer.elapsed_ms.toFixed(1) + " ms on the server, "
        + roundTrip.toFixed(0) + " ms in all";
      $("result-meta").dataset.rowCount = String(answer.row_count);
      $("csv").disabled = false;
      renderBadge(answer.generation);
    } catch (error) {
      lastResult = null;
      $("csv").disabled = true;
      $("result-table").replaceChildren();
      $("result-meta").textContent = "";
      showError("query-error", error);
    } finally {
      $("run").disabled = false;
    }
  }

  function csvField(value) {
    if (value === null || value === undefined) return "";
    const text = String(value);
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function downloadCsv() {
    if (!lastResult) return;
    const lines = [lastResult.columns.map((c) => csvField(c.name)).join(",")];
    for (const row of lastResult.rows) lines.push(row.map(csvField).join(","));
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
    const link = el("a", { href: URL.createObjectURL(blob), download: "fleetsql-result.csv" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  // ---------- table browser ----------

  let tablesAnswer = null;

  async function loadTables() {
    showError("tables-error", null);
    $("tables-meta").textContent = "loading…";
    try {
      tablesAnswer = await api("/v1/tables");
      renderBadge(tablesAnswer.generation);
      renderTables();
    } catch (error) {
      $("tables-meta").textContent = "";
      showError("tables-error", error);
    }
  }

  function renderTables() {
    if (!tablesAnswer) return;
    const filter = $("tables-filter").value.trim().toLowerCase();
    const list = $("tables-list");
    list.replaceChildren();
    const shown = tablesAnswer.tables.filter((t) => !filter || t.name.toLowerCase().includes(filter));
    for (const table of shown) {
      const columns = el("ul", {}, table.columns.map((c) =>
        el("li", { class: c.origin ? "origin column" : "column", text: c.name + " " + c.type })));
      const publishers = table.kind === "fleet"
        ? table.publishers_total + " machines publish it: " + table.publishers.join(", ")
          + (table.publishers_total > table.publishers.length ? ", …" : "")
        : (table.kind === "static" ? "static table (added by the TLA)" : "system table");
      const title = el("a", { class: "table-link", text: table.name, onclick: () => browseTable(table) });
      const card = el("div", { class: "card table-entry", "data-table": table.name }, [
        el("h3", {}, [title, el("span", { class: "kind", text: table.kind })]),
        el("div", { class: "meta", text: table.collected
          ? table.rows + " rows · " + table.columns.length + " columns"
          : "not collected yet: refresh in a few seconds" }),
        columns,
        el("div", { class: "publishers", text: publishers }),
      ]);
      list.append(card);
    }
    $("tables-meta").textContent = shown.length + " of " + tablesAnswer.tables.length + " tables";
  }

  function browseTable(table) {
    const names = table.columns.filter((c) => !c.origin).map((c) => c.name);
    const quoted = names.map((n) => /^[a-z_][a-z0-9_]*$/.test(n) ? n : '"' + n.replace(/"/g, '""') + '"');
    const list = quoted.length ? quoted.join(", ") : "*";
    setSql("SELECT " + list + "\nFROM " + table.name + "\nLIMIT 100");
    location.hash = "#query";
    $("sql-input").focus();
  }

  // ---------- fleet ----------

  async function loadFleet() {
    showError("fleet-error", null);
    try {
      const clusters = await api("/v1/query", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ sql: "SELECT * FROM fleet_clusters ORDER BY cluster" }),
      });
      renderBadge(clusters.generation);
      const staleAfter = Math.max(3 * config.tick_ms, AMBER_AGE_MS);
      const ageIndex = clusters.columns.findIndex((c) => c.name === "data_age_ms");
      const completeIndex = clusters.columns.findIndex((c) => c.name === "complete");
      renderGrid($("fleet-clusters"), clusters.columns, clusters.rows, {
        sortable: true,
        rowClass: (row) => {
          if (completeIndex >= 0 && row[completeIndex] === false) return "incomplete";
          if (ageIndex >= 0 && (row[ageIndex] === null || row[ageIndex] > staleAfter)) return "stale";
          return "";
        },
      });
      const incomplete = clusters.rows.filter((r) => completeIndex >= 0 && r[completeIndex] === false).length;
      $("fleet-meta").textContent = clusters.row_count + " clusters, " + incomplete + " incomplete";
      await loadFleetNodes(staleAfter);
    } catch (error) {
      showError("fleet-error", error);
    }
  }

  // fleet_nodes is newer than this console may be; ask whether the node
  // has it before querying, so its absence is a note and not an error.
  async function loadFleetNodes(staleAfter) {
    const probe = await api("/v1/query", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        sql: "SELECT table_name FROM information_schema.tables WHERE table_name = 'fleet_nodes'",
      }),
    });
    if (!probe.rows.length) {
      $("fleet-nodes-status").textContent = "this SQL node has no fleet_nodes table";
      $("fleet-nodes").replaceChildren();
      return;
    }
    const nodes = await api("/v1/query", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ sql: "SELECT * FROM fleet_nodes" }),
    });
    const ageIndex = nodes.columns.findIndex((c) => /age_ms$/.test(c.name));
    renderGrid($("fleet-nodes"), nodes.columns, nodes.rows, {
      sortable: true,
      rowClass: (row) => (ageIndex >= 0 && row[ageIndex] > staleAfter ? "stale" : ""),
    });
    $("fleet-nodes-status").textContent = nodes.row_count + " nodes";
  }

  // ---------- persistent queries ----------

  async function loadPersistent() {
    if (!config.features.persistent_queries) {
      $("pq-meta").textContent = "persistent queries are not served by this node";
      $("pq-register").disabled = true;
      return;
    }
    try {
      const answer = await api("/v1/persistent-queries");
      const table = $("pq-list");
      table.replaceChildren(el("thead", {}, [el("tr", {}, ["id", "statement", "topic", ""].map((h) => el("th", { text: h })))]));
      const body = el("tbody");
      for (const q of answer.queries) {
        body.append(el("tr", { "data-query": q.id }, [
          el("td", { text: q.id }),
          el("td", { text: q.epl }),
          el("td", { text: q.topic }),
          el("td", {}, [
            el("button", { type: "button", class: "pq-watch", text: "Watch", onclick: () => watchQuery(q.id) }),
            " ",
            el("button", { type: "button", class: "pq-delete", text: "Delete", onclick: () => deleteQuery(q.id) }),
          ]),
        ]));
      }
      table.append(body);
      $("pq-meta").textContent = answer.queries.length + " registered";
    } catch (error) {
      showError("pq-error", error);
    }
  }

  async function registerQuery() {
    const epl = $("pq-epl").value.trim();
    if (!epl) return;
    showError("pq-error", null);
    try {
      const registered = await api("/v1/persistent-queries", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ epl }),
      });
      await loadPersistent();
      watchQuery(registered.id);
    } catch (error) {
      showError("pq-error", error);
    }
  }

  function stopWatching() {
    if (pqSource) pqSource.close();
    pqSource = null;
    pqWatchedId = null;
  }

  function watchQuery(id) {
    stopWatching();
    pqWatchedId = id;
    const results = $("pq-results");
    results.replaceChildren();
    let columns = null;
    let body = null;
    $("pq-watching").textContent = "— " + id + ", waiting for results";
    const source = new EventSource("/v1/persistent-queries/" + encodeURIComponent(id) + "/events");
    pqSource = source;
    source.addEventListener("result", (event) => {
      let notification;
      try { notification = JSON.parse(event.data); } catch (_) { return; }
      for (const row of notification.rows || []) {
        if (!columns) {
          columns = ["#", "time"].concat(Object.keys(row));
          results.append(el("thead", {}, [el("tr", {}, columns.map((c) => el("th", { text: c })))]));
          body = el("tbody");
          results.append(body);
        }
        const cells = [notification.seq, new Date(notification.time).toISOString()]
          .concat(columns.slice(2).map((c) => row[c]));
        const tr = el("tr", { class: "pq-result" }, cells.map((v) =>
          el("td", { text: v === null || v === undefined ? "NULL" : (typeof v === "object" ? JSON.stringify(v) : String(v)) })));
        body.prepend(tr);
        while (body.children.length > 200) body.lastChild.remove();
      }
      $("pq-watching").textContent = "— " + id + ", " + notification.seq + " notifications";
    });
    // The server ends the stream when the query is deleted or the reader
    // falls behind; reconnecting would only ask for a topic that is gone.
    source.addEventListener("close", (event) => {
      let reason = "";
      try { reason = JSON.parse(event.data).reason; } catch (_) { reason = event.data; }
      $("pq-watching").textContent = "— " + id + " closed: " + reason;
      if (pqSource === source) stopWatching();
      else source.close();
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) $("pq-watching").textContent = "— " + id + ": stream ended";
    };
  }

  async function deleteQuery(id) {
    if (pqWatchedId === id) stopWatching();
    try {
      await api("/v1/persistent-queries/" + encodeURIComponent(id), { method: "DELETE" });
    } catch (error) {
      showError("pq-error", error);
    }
    await loadPersistent();
  }

  // ---------- reports ----------

  let reports = [];

  async function loadReports() {
    if (!config.features.reports) {
      $("report-meta").textContent = "reports are not configured on this node";
      return;
    }
    showError("report-error", null);
    try {
      const answer = await api("/v1/reports");
      reports = answer.reports;
      const select = $("report-select");
      const previous = select.value;
      select.replaceChildren();
      for (const r of reports) select.append(el("option", { value: r.name, text: r.title || r.name }));
      if (reports.some((r) => r.name === previous)) select.value = previous;
      await drawReport();
    } catch (error) {
      showError("report-error", error);
    }
  }

  function reportQuery() {
    const range = Number($("report-range").value);
    const params = [];
    if (range > 0) params.push("since_ms=" + (Date.now() - range));
    // Before the report's oldest kept run, drawn from Query History.
    if ($("report-history").checked) params.push("history=true");
    return params.length ? "?" + params.join("&") : "";
  }

  async function drawReport() {
    const name = $("report-select").value;
    const chart = $("report-chart");
    if (!name) {
      chart.textContent = "no reports defined";
      return;
    }
    const report = reports.find((r) => r.name === name);
    const base = "/v1/reports/" + encodeURIComponent(name);
    const query = reportQuery();
    $("report-csv").href = base + "/data.csv" + query;
    $("report-csv").setAttribute("download", name + ".csv");
    $("report-description").textContent = report
      ? report.sql.replace(/\s+/g, " ") + " — every " + formatMs(report.every_ms)
        + ", kept " + formatMs(report.retention_ms)
        + (report.last_error ? " — last run failed: " + report.last_error : "")
      : "";
    try {
      const response = await fetch(base + "/chart.svg" + query);
      const text = await response.text();
      if (!response.ok) throw new Error(text);
      // The SVG is drawn by the server from stored numbers and escaped text.
      chart.innerHTML = text;
      const runs = chart.querySelector("svg") ? chart.querySelector("svg").dataset.runs : "0";
      $("report-meta").textContent = runs + " runs shown";
    } catch (error) {
      showError("report-error", error);
    }
  }

  // ---------- alerts (live over the alerts crate's SSE stream) ----------

  let alertsSource = null;
  let historyLoading = false;
  let historyFor = null;
  let activeShown = null;
  const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "");
  const keyText = (key) => Object.entries(key || {}).map(([k, v]) => k + "=" + v).join(" ") || "(one instance)";

  function stopAlerts() {
    if (alertsSource) alertsSource.close();
    alertsSource = null;
  }

  function loadAlerts() {
    const status = $("alerts-status");
    if (!config.features.alerts) {
      status.textContent = "alerts not configured";
      return;
    }
    showError("alerts-error", null);
    stopAlerts();
    historyFor = null;
    activeShown = null;
    const live = $("alerts-live");
    live.textContent = "connecting…";
    live.dataset.connected = "false";
    const source = new EventSource("/alerts/events");
    alertsSource = source;
    source.addEventListener("state", (event) => {
      let state;
      try { state = JSON.parse(event.data); } catch (_) { return; }
      live.textContent = "live";
      live.dataset.connected = "true";
      renderAlerts(state);
      // The stream sends the whole state after every pass; the history
      // changes only when an instance does.
      const changes = JSON.stringify((state.instances || []).map((i) => [i.alert, i.id, i.status, i.cleared_at_ms]));
      if (changes !== historyFor) {
        historyFor = changes;
        loadAlertHistory();
      }
    });
    source.onerror = () => {
      live.dataset.connected = "false";
      live.textContent = source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…";
    };
  }

  function renderAlerts(state) {
    const alerts = state.alerts || [];
    const instances = state.instances || [];
    const active = instances.filter((i) => i.status === "active");
    $("alerts-status").textContent = active.length + " active instances of " + alerts.length + " alerts";

    // Cards are rebuilt only when they would change, so a button is not
    // replaced under the operator's pointer by a pass that changed nothing.
    const shown = JSON.stringify(active);
    if (shown !== activeShown) {
      activeShown = shown;
      renderActive(active);
    }

    renderGrid($("alerts-table"),
      ["alert", "severity", "iterations", "last run", "state"].map((name) => ({ name })),
      alerts.map((a) => [
        a.name, a.severity, a.iteration, when(a.last_run_ms),
        a.nodata ? "no data: " + (a.last_error || "").replace(/^no data: /, "")
          : (a.last_error ? "error: " + a.last_error : "ok"),
      ]),
      { rowClass: (row) => (row[4].startsWith("no data") ? "stale" : (row[4] === "ok" ? "" : "incomplete")) });
  }

  function renderActive(active) {
    const list = $("alerts-active");
    list.replaceChildren();
    for (const i of active) {
      const details = el("ul", { class: "details" }, Object.entries(i.details || {}).map(([k, v]) =>
        el("li", { text: k + ": " + (typeof v === "object" ? JSON.stringify(v) : String(v)) })));
      const ack = i.acked_by
        ? el("span", { class: "acked", text: "acknowledged by " + i.acked_by + " at " + when(i.acked_at_ms) })
        : el("button", { type: "button", class: "ack", text: "Acknowledge", onclick: () => acknowledge(i) });
      const head = el("h3", {}, [
        el("span", { class: "alert-name", text: i.alert }),
        el("span", { class: "kind severity-" + (i.severity || "none"), text: i.severity || "" }),
      ]);
      if (i.stale) head.append(el("span", { class: "stale-mark", text: "stale: no data" }));
      const card = el("div", {
        class: "card alert-instance" + (i.stale ? " stale" : "") + (i.acked_by ? " acked" : ""),
        "data-alert": i.alert,
        "data-id": i.id,
      }, [
        head,
        el("div", { class: "instance-key", text: keyText(i.key) }),
        details,
        el("div", { class: "meta", text: "fired " + when(i.fired_at_ms) }),
        i.procedure ? el("div", { class: "procedure", text: i.procedure }) : "",
        ack,
      ]);
      list.append(card);
    }
    if (!active.length) list.append(el("div", { class: "meta", text: "no active instances" }));
  }

  async function acknowledge(instance) {
    showError("alerts-error", null);
    try {
      await api("/alerts/api/ack", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ alert: instance.alert, key: instance.id, by: "console" }),
      });
    } catch (error) {
      showError("alerts-error", error);
    }
  }

  async function loadAlertHistory() {
    if (historyLoading) return;
    historyLoading = true;
    try {
      const answer = await api("/alerts/api/history?limit=50");
      renderGrid($("alerts-history"),
        ["alert", "severity", "key", "details", "fired at", "cleared at", "acknowledged by"].map((name) => ({ name })),
        answer.cleared.map((c) => [
          c.alert, c.severity, keyText(c.key), JSON.stringify(c.details),
          when(c.fired_at_ms), when(c.cleared_at_ms), c.acked_by || "",
        ]),
        { sortable: true });
    } catch (error) {
      showError("alerts-error", error);
    } finally {
      historyLoading = false;
    }
  }

  // ---------- views ----------

  const loaders = {
    query: () => {},
    tables: loadTables,
    fleet: loadFleet,
    persistent: loadPersistent,
    reports: loadReports,
    alerts: loadAlerts,
  };

  function showView() {
    const name = (location.hash || "#query").slice(1);
    const view = loaders[name] ? name : "query";
    for (const section of document.querySelectorAll("section.view")) {
      section.hidden = section.id !== "view-" + view;
    }
    for (const link of document.querySelectorAll("#nav a")) {
      link.classList.toggle("active", link.dataset.view === view);
    }
    document.body.dataset.view = view;
    if (view !== "alerts") stopAlerts();
    loaders[view]();
  }

  async function start() {
    const input = $("sql-input");
    input.addEventListener("input", syncEditor);
    input.addEventListener("scroll", syncEditor);
    input.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
        event.preventDefault();
        runQuery();
      }
    });
    $("run").addEventListener("click", runQuery);
    $("csv").addEventListener("click", downloadCsv);
    $("history").addEventListener("change", (event) => {
      const list = loadHistory();
      const index = Number(event.target.value);
      if (event.target.value !== "" && list[index]) setSql(list[index]);
    });
    $("tables-refresh").addEventListener("click", loadTables);
    $("tables-filter").addEventListener("input", renderTables);
    $("fleet-refresh").addEventListener("click", loadFleet);
    $("pq-register").addEventListener("click", registerQuery);
    $("report-select").addEventListener("change", drawReport);
    $("report-range").addEventListener("change", drawReport);
    $("report-history").addEventListener("change", drawReport);
    $("report-refresh").addEventListener("click", loadReports);
    window.addEventListener("hashchange", showView);

    renderHistory();
    if (!input.value) setSql(loadHistory()[0] || "SELECT * FROM fleet_clusters");
    try {
      config = await api("/v1/console/config");
    } catch (error) {
      showError("query-error", error);
    }
    document.body.dataset.ready = "true";
    showView();
    refreshHealth();
    setInterval(refreshHealth, 5000);
  }

  start();
})();
