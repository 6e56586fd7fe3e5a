// The operator console: an overview (cards and charts kept live by the event stream), purchases (search,
// refund through Stripe, or rehearsed in test mode, with a confirmation step), the catalog, dead letters,
// the live events and installs. Every call carries the operator's credentials as a cookie: an operator
// account's session, or the console's own operator pass (POST /api/operator/session with the token the
// operator typed; the token itself is kept nowhere), which also opens /api/docs in this browser.
import "./header.js";
import { ApiError, OFFLINE_MESSAGE, errorFrom } from "./api.js";
import { barChart, barList, daysBetween } from "./charts.js";
import { bytes, price } from "./format.js";

const $ = (id) => document.getElementById(id);

async function call(path, { method = "GET", body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "offline", OFFLINE_MESSAGE);
  }
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? {} : response.json();
}

/** On a phone a wide table is drawn as one card per row: each cell carries its column's name to show. */
function labelCells(table) {
  const heads = [...table.tHead.rows[0].cells].map((th) => th.textContent);
  for (const tr of table.tBodies[0].rows) [...tr.cells].forEach((td, i) => { td.dataset.label = heads[i] || ""; });
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function button(label, aria, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "button";
  b.textContent = label;
  b.setAttribute("aria-label", aria);
  b.addEventListener("click", onClick);
  return b;
}

function say(message, kind = "") {
  const notice = $("notice");
  notice.className = `notice ${kind}`.trim();
  notice.textContent = message;
  notice.hidden = false;
}

function deny(message) {
  $("console").hidden = true;
  $("denied").textContent = message;
  $("denied").hidden = false;
  $("signin").hidden = false;
}

/** Replace an action cell's content with a confirm/cancel pair; `act` runs only on confirm. */
function confirmStep(td, question, confirmLabel, act, restore) {
  td.replaceChildren();
  const text = document.createElement("span");
  text.textContent = `${question} `;
  td.append(
    text,
    button(confirmLabel, confirmLabel, async () => {
      td.replaceChildren(document.createTextNode("Working…"));
      try {
        await act();
      } catch (err) {
        say(err.message, "error");
        restore();
      }
    }),
    button("Cancel", "Cancel", restore),
  );
  td.querySelector("button").focus();
}

async function loadPurchases() {
  const params = new URLSearchParams({ all: "1", q: $("q").value.trim(), status: $("status").value });
  const { purchases } = await call(`/api/purchases?${params}`);
  const rows = purchases.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.purchase = p.id;
    const status = p.suspended ? `${p.status} (disputed)` : p.status;
    tr.append(
      cell(p.id),
      cell(p.model),
      buyerCell(p),
      cell(p.flag ? `${status}: ${p.flag}` : status),
      amountCell(p),
      cell(p.created_at.replace("T", " ").slice(0, 19)),
    );
    const action = document.createElement("td");
    const offer = () => {
      action.replaceChildren(button("Timeline", `Timeline of ${p.id}`, () => showTimeline(p.id)));
      if (!["stripe", "test"].includes(p.kind) || p.status !== "paid") return;
      const test = p.kind === "test";
      const amount = price(p.amount_cents, p.currency);
      action.append(
        button(test ? "Refund (test)" : "Refund", `Refund ${p.id}`, () =>
          confirmStep(
            action,
            test
              ? `Rehearse a refund of ${amount} for ${p.model}? Test mode: no money moves.`
              : `Give ${amount} back for ${p.model}?`,
            "Confirm refund",
            async () => {
              await call(`/api/purchases/${encodeURIComponent(p.id)}/refund`, { method: "POST", body: { confirm: true } });
              say(
                test
                  ? `Test refund of ${amount} for ${p.model} rehearsed: no money moved; access ends as with a real refund.`
                  : `Refund of ${amount} for ${p.model} sent to Stripe; access ends when Stripe confirms it.`,
              );
              await loadPurchases();
            },
            offer,
          ),
        ),
      );
    };
    offer();
    tr.append(action);
    return tr;
  });
  $("purchases").tBodies[0].replaceChildren(...rows);
  labelCells($("purchases"));
}

function buyerCell(p) {
  const td = document.createElement("td");
  if (p.email) {
    td.textContent = p.email;
    const id = document.createElement("span");
    id.className = "hint block";
    id.textContent = p.user_id;
    td.append(id);
  } else {
    td.textContent = p.user_id.startsWith("v_") ? `Visitor ${p.user_id}` : p.user_id;
  }
  return td;
}

function amountCell(p) {
  const td = cell(price(p.amount_cents, p.currency));
  if (p.kind === "test") td.append(" ", badge("test", "test"));
  return td;
}

function badge(text, kind) {
  const b = document.createElement("span");
  b.className = `badge ${kind}`;
  b.textContent = text;
  return b;
}

function stat(id, value, note = "", tone = "") {
  const card = $(id);
  card.querySelector(".stat-value").textContent = value;
  card.querySelector(".stat-note").textContent = note;
  card.dataset.tone = tone;
}

const amount = (cents, currency) =>
  (cents / 100).toLocaleString("en-US", { style: "currency", currency: currency.toUpperCase() });
const money = (cents) => Object.entries(cents).map(([cur, c]) => amount(c, cur)).join(" + ") || amount(0, "usd");
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const SALES_LABELS = { today: "Today", "7d": "7 days", "30d": "30 days" };

async function loadSales() {
  const { sales, days, payments, ollama_disk: disk } = await call("/api/overview");
  $("test-mode").hidden = payments !== "test";
  $("sales").tBodies[0].replaceChildren(
    ...Object.entries(sales).map(([period, s]) => {
      const tr = document.createElement("tr");
      tr.dataset.period = period;
      const test = s.test || { purchases: 0, amount_cents: {}, refunded: 0 };
      tr.append(
        cell(SALES_LABELS[period] || period),
        cell(String(s.purchases)),
        cell(money(s.amount_cents)),
        cell(String(s.refunded)),
        cell(test.purchases || test.refunded ? `${test.purchases} (${money(test.amount_cents)}), ${test.refunded} refunded` : "0"),
      );
      return tr;
    }),
  );
  const span = daysBetween(days.from, days.to);
  const per = (kind, field) => span.map((d) => days.rows.filter((r) => r.day === d && r.kind === kind).reduce((a, r) => a + r[field], 0));
  const series = [
    { name: "Sales", values: per("stripe", "sales"), className: "series-0" },
    { name: "Refunds", values: per("stripe", "refunds"), className: "series-3" },
  ];
  const testSales = per("test", "sales");
  const testRefunds = per("test", "refunds");
  if (payments === "test" || testSales.some(Boolean) || testRefunds.some(Boolean)) {
    series.push(
      { name: "Test sales", values: testSales, className: "series-1" },
      { name: "Test refunds", values: testRefunds, className: "series-2" },
    );
  }
  barChart($("sales-chart"), { days: span, series, title: "Sales and refunds per day" });
  // Revenue: what was sold minus what went back, over the 30 days; test money apart.
  const net = (kind) => {
    const out = {};
    for (const r of days.rows.filter((x) => x.kind === kind)) out[r.currency] = (out[r.currency] || 0) + r.sales_cents - r.refunded_cents;
    return out;
  };
  const count = (kind, field) => days.rows.filter((r) => r.kind === kind).reduce((a, r) => a + r[field], 0);
  const testNet = net("test");
  stat("stat-revenue", money(net("stripe")), Object.keys(testNet).length ? `test: ${money(testNet)}` : "after refunds");
  const bought = count("stripe", "sales");
  const back = count("stripe", "refunds");
  const testBought = count("test", "sales");
  const testBack = count("test", "refunds");
  stat(
    "stat-sales",
    `${bought} / ${back}`,
    `${plural(bought, "purchase")}, ${plural(back, "refund")}${testBought || testBack ? `; test: ${testBought} / ${testBack}` : ""}`,
  );
  const today = sales.today;
  stat("stat-today", String(today.purchases), `${money(today.amount_cents)}${today.test?.purchases ? `; test: ${today.test.purchases}` : ""}`);
  $("ollama-disk").textContent = disk
    ? `Ollama's disk: ${bytes(disk.free_bytes)} free of ${bytes(disk.total_bytes)}.`
    : "Ollama's disk is not measured: set STUDIO_OLLAMA_MODELS_DIR to Ollama's models directory.";
}

async function loadUsage() {
  const { usage } = await call("/api/account/usage?days=30&all=1");
  const now = new Date();
  const to = now.toISOString().slice(0, 10);
  const from = new Date(now.getTime() - 29 * 86400000).toISOString().slice(0, 10);
  const span = daysBetween(from, to);
  const models = [...new Set(usage.map((u) => u.model))].sort();
  const seriesOf = (field) =>
    models.map((m, i) => ({
      name: m,
      className: `series-${i % 6}`,
      values: span.map((d) => usage.filter((u) => u.day === d && u.model === m).reduce((a, u) => a + u[field], 0)),
    }));
  const answers = seriesOf("answers");
  barChart($("answers-chart"), { days: span, series: answers, stacked: true, title: "Chat answers per model per day" });
  const tokens = models.map((m, i) => ({
    name: m,
    className: `series-${i % 6}`,
    values: span.map((d) =>
      usage.filter((u) => u.day === d && u.model === m).reduce((a, u) => a + u.prompt_tokens + u.completion_tokens, 0)),
  }));
  barChart($("tokens-chart"), { days: span, series: tokens, stacked: true, title: "Tokens per model per day" });
  const total = answers.reduce((a, s) => a + s.values.reduce((x, y) => x + y, 0), 0);
  const tokenTotal = tokens.reduce((a, s) => a + s.values.reduce((x, y) => x + y, 0), 0);
  stat("stat-answers", String(total), `${tokenTotal.toLocaleString("en-US")} tokens, ${plural(models.length, "model")}`);
}

async function loadHealth() {
  const response = await fetch("/health", { cache: "no-store", credentials: "same-origin" }).catch(() => null);
  const health = response ? await response.json().catch(() => null) : null;
  if (!health || !health.components) {
    $("health-status").textContent = "No health report.";
    stat("stat-health", "Unknown", "no report", "warn");
    return;
  }
  const failing = health.failing || [];
  const warning = Object.entries(health.components).filter(([, c]) => c.status === "warn").map(([n]) => n);
  $("health-status").textContent = failing.length
    ? `Failing: ${failing.join(", ")}.`
    : warning.length ? `Working, with warnings: ${warning.join(", ")}.` : "Everything is fine.";
  stat(
    "stat-health",
    failing.length ? "Failing" : warning.length ? "Warnings" : "Fine",
    failing.length ? failing.join(", ") : warning.length ? warning.join(", ") : `checked ${health.checked_at.slice(11, 19)} UTC`,
    failing.length ? "bad" : warning.length ? "warn" : "good",
  );
  $("health-components").replaceChildren(
    ...Object.entries(health.components).map(([name, c]) => {
      const li = document.createElement("li");
      li.dataset.component = name;
      li.dataset.status = c.status;
      const head = document.createElement("span");
      head.className = "health-name";
      head.textContent = `${name}: ${c.status}`;
      li.append(head);
      if (c.message) {
        const why = document.createElement("span");
        why.className = "health-reason";
        why.textContent = c.message;
        li.append(why);
      }
      return li;
    }),
  );
  const nodes = Object.entries(health.components.ollama?.nodes || {}).map(([url, n]) => ({
    label: url,
    value: n.in_flight || 0,
    note: n.status === "up" ? `up, ${plural((n.loaded || []).length, "model")} loaded` : `down: ${n.error || "no answer"}`,
  }));
  barList($("nodes-chart"), nodes, { title: "Answers in flight per Ollama node" });
  const inFlight = nodes.reduce((a, n) => a + n.value, 0);
  stat("stat-inflight", String(inFlight), plural(nodes.length, "Ollama node"));
  const consumers = Object.entries(health.components.consumers?.consumers || {});
  $("consumers").tBodies[0].replaceChildren(
    ...consumers.map(([name, lag]) => {
      const tr = document.createElement("tr");
      tr.dataset.consumer = name;
      tr.append(cell(name), cell(String((lag.pending || 0) + (lag.ack_pending || 0))), cell(`${Math.round(lag.oldest_pending_s || 0)} s`));
      return tr;
    }),
  );
  const worst = consumers.reduce((m, [, lag]) => Math.max(m, lag.oldest_pending_s || 0), 0);
  const waiting = consumers.reduce((m, [, lag]) => m + (lag.pending || 0) + (lag.ack_pending || 0), 0);
  const behind = health.components.consumers?.behind || [];
  stat("stat-lag", `${Math.round(worst)} s`, `${plural(waiting, "event")} waiting over ${plural(consumers.length, "consumer")}`,
    behind.length ? "warn" : "good");
}

async function loadActiveInstalls() {
  const { models } = await call("/api/models");
  const active = models.filter((m) => ["queued", "pulling", "verifying"].includes(m.install?.state));
  $("active-installs").replaceChildren(
    ...active.map((m) => {
      const li = document.createElement("li");
      li.dataset.model = m.id;
      const pct = m.install.percent;
      li.textContent = `${m.id}: ${m.install.state}${pct !== undefined ? ` ${Math.round(pct)} %` : ""}`;
      return li;
    }),
  );
  if (!active.length) $("active-installs").replaceChildren(Object.assign(document.createElement("li"), { textContent: "Nothing." }));
  stat("stat-installs", String(active.length), active.map((m) => m.id).join(", ") || "nothing installing");
}

/** An install's progress, in place: a reload per progress event would be one request a second per pull. */
function showProgress(data) {
  const li = [...$("active-installs").children].find((x) => x.dataset.model === data.model);
  if (li && typeof data.percent === "number") li.textContent = `${data.model}: pulling ${Math.round(data.percent)} %`;
}

async function loadOverview() {
  const parts = await Promise.allSettled([loadSales(), loadUsage(), loadHealth(), loadActiveInstalls()]);
  const failed = parts.find((p) => p.status === "rejected");
  if (failed) throw failed.reason;
}

// What each kind of event changes on the overview; reloaded at most every `wait` ms (a burst is one reload).
const LIVE_PARTS = [
  { test: (t) => t.startsWith("purchase.") || t.startsWith("payment.") || t === "operator.refund_requested", load: loadSales, wait: 300 },
  { test: (t) => t.startsWith("chat."), load: loadUsage, wait: 500 },
  { test: (t) => t.startsWith("install.") && t !== "install.progressed", load: loadActiveInstalls, wait: 300 },
  { test: () => true, load: loadHealth, wait: 3000 },
];
const timers = new Map();

function liveUpdate(event) {
  for (const part of LIVE_PARTS) {
    if (!part.test(event.type) || timers.has(part)) continue;
    timers.set(
      part,
      setTimeout(() => {
        timers.delete(part);
        part.load().catch((err) => say(`Overview: ${err.message}`, "error"));
      }, part.wait),
    );
  }
}

$("refresh-overview").addEventListener("click", () => loadOverview().catch((err) => say(err.message, "error")));
$("sign-out-console").addEventListener("click", async () => {
  await fetch("/api/operator/session", { method: "DELETE", credentials: "same-origin" }).catch(() => null);
  window.location.assign("/admin");
});

function describe(event) {
  const d = event.data || {};
  const bits = ["model", "status", "reason", "operator", "percent"].filter((k) => d[k] !== undefined && d[k] !== null);
  return `${event.time.replace("T", " ").slice(0, 23)}  ${event.type}  ${bits.map((k) => `${k}=${d[k]}`).join(" ")}`;
}

async function showTimeline(purchaseId) {
  try {
    const { events } = await call(`/api/monitor/timeline?purchase_id=${encodeURIComponent(purchaseId)}`);
    $("timeline-title").textContent = `Timeline of ${purchaseId}`;
    $("timeline-events").replaceChildren(
      ...events.map((e) => {
        const li = document.createElement("li");
        li.textContent = describe(e);
        li.dataset.type = e.type;
        return li;
      }),
    );
    $("timeline").hidden = false;
  } catch (err) {
    say(err.message, "error");
  }
}

// The event feed: one stream of every event (fetch() read as SSE, with the operator's cookie), which keeps
// the overview live and fills the Events list; the Events filters only choose what the list shows.
const seen = [];
let tailFilter = { type: "", correlationId: "" };

const wanted = (event) =>
  event.type.startsWith(tailFilter.type) && (!tailFilter.correlationId || event.correlationid === tailFilter.correlationId);

function tailItem(event) {
  const li = document.createElement("li");
  li.textContent = describe(event);
  li.dataset.type = event.type;
  return li;
}

function showTail() {
  $("tail").replaceChildren(...seen.filter(wanted).slice(-200).reverse().map(tailItem));
  const { type, correlationId } = tailFilter;
  $("tail-state").textContent = `Following ${type || "every event"}${correlationId ? ` of ${correlationId}` : ""}.`;
}

async function feed() {
  let live = false;
  try {
    const response = await fetch("/api/monitor/stream", {
      headers: { Accept: "text/event-stream" },
      cache: "no-store",
      credentials: "same-origin",
    });
    if (!response.ok) throw await errorFrom(response);
    live = true;
    $("overview-live").textContent = "Live: updates as events happen";
    $("overview-live").className = "live-dot live";
    showTail();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").find((line) => line.startsWith("data: "));
        if (!data) continue;
        const event = JSON.parse(data.slice(6));
        if (!event.type || !event.time) continue;
        seen.push(event);
        if (seen.length > 1000) seen.shift();
        if (wanted(event)) {
          $("tail").prepend(tailItem(event));
          while ($("tail").children.length > 200) $("tail").lastChild.remove();
        }
        liveUpdate(event);
        if (event.type === "install.progressed") showProgress(event.data || {});
        if (event.type.startsWith("install.") && event.type !== "install.progressed") loadInstalls().catch(() => {});
      }
    }
  } catch (err) {
    $("tail-state").textContent = `Not following: ${err.message}`;
  }
  $("overview-live").textContent = live
    ? "The event stream ended; reconnecting…"
    : "Live updates are off: the event stream cannot be reached; reconnecting…";
  $("overview-live").className = "live-dot retrying";
  setTimeout(() => {
    loadOverview().catch(() => {});
    feed();
  }, 3000);
}

$("tail-filters").addEventListener("submit", (e) => {
  e.preventDefault();
  tailFilter = { type: $("tail-type").value.trim(), correlationId: $("tail-correlation").value.trim() };
  showTail();
});

async function loadInstalls() {
  const { models } = await call("/api/models");
  const rows = models.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.model = m.id;
    const state = m.install?.state || "not_installed";
    const nodes = Object.entries(m.install?.nodes || {}).map(([node, st]) => `${node}: ${st}`).join(" · ");
    tr.append(cell(m.id), cell(state), cell(nodes), cell(m.install?.reason || ""));
    const action = document.createElement("td");
    const offer = () => {
      action.replaceChildren();
      if (state === "failed" || state === "not_installed") {
        const label = state === "failed" ? "Retry" : "Install now";
        action.append(
          button(label, `${label} ${m.id}`, async () => {
            try {
              await call("/api/models/install", { method: "POST", body: { model: m.id } });
              say(`${m.id}: install requested.`);
              await loadInstalls();
            } catch (err) {
              say(err.message, "error");
            }
          }),
        );
      } else if (state === "installed") {
        action.append(
          button("Remove", `Remove ${m.id}`, () =>
            confirmStep(action, `Remove ${m.id} from Ollama?`, "Confirm removal", async () => {
              await call(`/api/models/${encodeURIComponent(m.id)}`, { method: "DELETE" });
              say(`${m.id} removed from Ollama; owners can install it again.`);
              await loadInstalls();
            }, offer),
          ),
        );
      }
    };
    offer();
    tr.append(action);
    return tr;
  });
  $("installs").tBodies[0].replaceChildren(...rows);
  labelCells($("installs"));
  if (!document.getElementById("refresh-installs")) {
    const refresh = button("Refresh", "Refresh installs", () => loadInstalls().catch((err) => say(err.message, "error")));
    refresh.id = "refresh-installs";
    $("installs").before(refresh);
  }
}

const toCents = (text) => Math.round(Number.parseFloat(text) * 100);

function input(type, value, label) {
  const el = document.createElement("input");
  el.type = type;
  if (type === "checkbox") el.checked = Boolean(value);
  else el.value = value;
  el.setAttribute("aria-label", label);
  return el;
}

async function loadCatalog() {
  const { models } = await call("/api/models");
  const rows = models.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.model = m.id;
    const priceField = input("number", (m.price_cents / 100).toFixed(2), `Price of ${m.id} (${m.currency.toUpperCase()})`);
    priceField.step = "0.01";
    priceField.min = "0";
    const featured = input("checkbox", m.featured, `${m.id} is featured`);
    const description = input("text", m.description, `Description of ${m.id}`);
    const priceCell = document.createElement("td");
    priceCell.append(priceField);
    const featuredCell = document.createElement("td");
    featuredCell.append(featured);
    const descriptionCell = document.createElement("td");
    descriptionCell.append(description);
    const action = document.createElement("td");
    const offer = () => {
      action.replaceChildren(
        button("Save", `Save ${m.id}`, async () => {
          try {
            const body = { price_cents: toCents(priceField.value), featured: featured.checked, description: description.value };
            const saved = await call(`/api/catalog/${encodeURIComponent(m.id)}`, { method: "PATCH", body });
            say(`${m.id} saved: ${price(saved.price_cents, saved.currency)}${saved.featured ? ", featured" : ""}.`);
          } catch (err) {
            say(err.message, "error");
          }
        }),
        button("Remove", `Remove ${m.id} from the catalog`, () =>
          confirmStep(action, `Stop selling ${m.id}?`, "Confirm removal from the catalog", async () => {
            await call(`/api/catalog/${encodeURIComponent(m.id)}`, { method: "DELETE" });
            say(`${m.id} is no longer for sale.`);
            await loadCatalog();
          }, offer),
        ),
      );
    };
    offer();
    tr.append(cell(m.id), priceCell, featuredCell, descriptionCell, action);
    return tr;
  });
  $("catalog").tBodies[0].replaceChildren(...rows);
  labelCells($("catalog"));
}

$("add-model").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const body = {
    id: form.get("id").trim(),
    name: form.get("name").trim(),
    family: form.get("family").trim(),
    parameter_size: form.get("parameter_size").trim(),
    download_bytes: Number.parseInt(form.get("download_bytes"), 10),
    ram_bytes: Number.parseInt(form.get("ram_bytes"), 10),
    license: form.get("license").trim(),
    price_cents: toCents(form.get("price")),
    currency: "usd",
    description: form.get("description").trim(),
  };
  try {
    const added = await call("/api/catalog", { method: "POST", body });
    say(`${added.id} added to the catalog.`);
    e.target.reset();
    await loadCatalog();
  } catch (err) {
    say(err.message, "error");
  }
});

async function loadDeadLetters() {
  const { dead_letters: letters } = await call("/api/monitor/dead-letters");
  const rows = letters.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.event = d.event_id;
    tr.append(
      cell(d.time.replace("T", " ").slice(0, 19)),
      cell(`${d.event_type} ${d.event_id}`),
      cell(d.consumer),
      cell(d.error),
    );
    const action = document.createElement("td");
    if (d.redriven_at) {
      action.textContent = "Redriven";
    } else {
      action.append(
        button("Redrive", `Redrive ${d.event_id}`, async () => {
          try {
            await call(`/api/monitor/dead-letters/${encodeURIComponent(d.event_id)}/redrive`, { method: "POST" });
            say(`${d.event_type} ${d.event_id} is back in the stream.`);
            await loadDeadLetters();
          } catch (err) {
            say(err.message, "error");
          }
        }),
      );
    }
    tr.append(action);
    return tr;
  });
  $("dead-letters").tBodies[0].replaceChildren(...rows);
  labelCells($("dead-letters"));
}

$("refresh-dead").addEventListener("click", () => loadDeadLetters().catch((err) => say(err.message, "error")));
$("redrive-all").addEventListener("click", async () => {
  try {
    const { redriven } = await call("/api/monitor/dead-letters/redrive", { method: "POST" });
    say(`${redriven.length} dead letter${redriven.length === 1 ? "" : "s"} back in the stream.`);
    await loadDeadLetters();
  } catch (err) {
    say(err.message, "error");
  }
});

async function open() {
  const who = await call("/api/operator").catch(() => ({ operator: false }));
  if (!who.operator) {
    deny("Operators only: sign in with the operator token.");
    return;
  }
  try {
    await loadPurchases();
  } catch (err) {
    deny(err.status === 401 || err.status === 403 ? "Operators only: sign in with the operator token." : err.message);
    return;
  }
  $("denied").hidden = true;
  $("signin").hidden = true;
  $("console").hidden = false;
  feed();
  await loadOverview().catch((err) => say(`Overview: ${err.message}`, "error"));
  await loadInstalls().catch((err) => say(err.message, "error"));
  await loadCatalog().catch((err) => say(err.message, "error"));
  await loadDeadLetters().catch((err) => say(`Dead letters: ${err.message}`, "error"));
}

$("signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  try {
    await call("/api/operator/session", { method: "POST", token });
  } catch (err) {
    deny(err.status === 401 ? "That token is not the operator's." : err.message);
    return;
  }
  open();
});

$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  loadPurchases().catch((err) => say(err.message, "error"));
});

open();
