// The operator console: purchases (search, refund through Stripe with a confirmation step) and installs
// (retry, install now, remove). Every call carries the operator's credentials: an operator session cookie
// when there is one, else the admin token the operator typed (kept in this tab's sessionStorage only).
import { ApiError, OFFLINE_MESSAGE, errorFrom } from "./api.js";
import { bytes, price } from "./format.js";

const TOKEN_KEY = "studio.operator-token";
const $ = (id) => document.getElementById(id);

async function call(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
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
  return response.json();
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
      cell(p.email ? `${p.email} (${p.user_id})` : p.user_id),
      cell(p.flag ? `${status}: ${p.flag}` : status),
      cell(price(p.amount_cents, p.currency)),
      cell(p.created_at.replace("T", " ").slice(0, 19)),
    );
    const action = document.createElement("td");
    const offer = () => {
      action.replaceChildren(button("Timeline", `Timeline of ${p.id}`, () => showTimeline(p.id)));
      if (p.kind !== "stripe" || p.status !== "paid") return;
      action.append(
        button("Refund", `Refund ${p.id}`, () =>
          confirmStep(
            action,
            `Give ${price(p.amount_cents, p.currency)} back for ${p.model}?`,
            "Confirm refund",
            async () => {
              await call(`/api/purchases/${encodeURIComponent(p.id)}/refund`, { method: "POST", body: { confirm: true } });
              say(`Refund of ${price(p.amount_cents, p.currency)} for ${p.model} sent to Stripe; access ends when Stripe confirms it.`);
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
}

async function loadOverview() {
  const health = await fetch("/health", { cache: "no-store" }).then((r) => r.json()).catch(() => null);
  if (health && health.components) {
    $("health-status").textContent = health.failing?.length ? `Failing: ${health.failing.join(", ")}` : "Everything is fine.";
    $("health-components").replaceChildren(
      ...Object.entries(health.components).map(([name, c]) => {
        const li = document.createElement("li");
        li.textContent = `${name}: ${c.status}${c.message ? ` (${c.message})` : ""}`;
        return li;
      }),
    );
  } else {
    $("health-status").textContent = "No health report.";
  }
  const { sales, ollama_disk: disk } = await call("/api/overview");
  const labels = { today: "Today", "7d": "7 days", "30d": "30 days" };
  $("sales").tBodies[0].replaceChildren(
    ...Object.entries(sales).map(([period, s]) => {
      const tr = document.createElement("tr");
      tr.dataset.period = period;
      const amounts = Object.entries(s.amount_cents).map(([cur, cents]) => price(cents, cur)).join(" + ") || price(0);
      tr.append(cell(labels[period] || period), cell(String(s.purchases)), cell(amounts), cell(String(s.refunded)));
      return tr;
    }),
  );
  $("ollama-disk").textContent = disk
    ? `${bytes(disk.free_bytes)} free of ${bytes(disk.total_bytes)}`
    : "Not measured: set STUDIO_OLLAMA_MODELS_DIR to Ollama's models directory.";
  const { models } = await call("/api/models");
  const active = models.filter((m) => ["queued", "pulling", "verifying"].includes(m.install?.state));
  $("active-installs").replaceChildren(
    ...active.map((m) => {
      const li = document.createElement("li");
      const pct = m.install.percent;
      li.textContent = `${m.id}: ${m.install.state}${pct !== undefined ? ` ${Math.round(pct)} %` : ""}`;
      return li;
    }),
  );
  if (!active.length) $("active-installs").replaceChildren(Object.assign(document.createElement("li"), { textContent: "Nothing." }));
  const stats = await call("/api/monitor/stats").catch(() => ({ chat: {} }));
  $("chat-usage").tBodies[0].replaceChildren(
    ...Object.entries(stats.chat || {}).map(([model, u]) => {
      const tr = document.createElement("tr");
      tr.append(
        ...[model, u.completed, u.failed, u.cancelled, u.prompt_tokens, u.completion_tokens].map((v) => cell(String(v ?? 0))),
      );
      return tr;
    }),
  );
}

$("refresh-overview").addEventListener("click", () => loadOverview().catch((err) => say(err.message, "error")));

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

// The live tail: fetch() with the operator's credentials (EventSource cannot send them), read as SSE.
let tailAbort = null;

async function follow(type, correlationId) {
  if (tailAbort) tailAbort.abort();
  const abort = new AbortController();
  tailAbort = abort;
  $("tail").replaceChildren();
  const params = new URLSearchParams({ type, correlation_id: correlationId });
  const headers = { Accept: "text/event-stream" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch(`/api/monitor/stream?${params}`, { headers, signal: abort.signal, cache: "no-store" });
    if (!response.ok) throw await errorFrom(response);
    $("tail-state").textContent = `Following ${type || "every event"}${correlationId ? ` of ${correlationId}` : ""}.`;
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
        const li = document.createElement("li");
        li.textContent = describe(event);
        li.dataset.type = event.type;
        $("tail").prepend(li);
        while ($("tail").children.length > 200) $("tail").lastChild.remove();
        if (event.type.startsWith("install.") && event.type !== "install.progressed") loadInstalls().catch(() => {});
      }
    }
    $("tail-state").textContent = "The stream ended; press Follow to start again.";
  } catch (err) {
    if (err.name === "AbortError") return;
    $("tail-state").textContent = `Not following: ${err.message}`;
  }
}

$("tail-filters").addEventListener("submit", (e) => {
  e.preventDefault();
  follow($("tail-type").value.trim(), $("tail-correlation").value.trim());
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
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    // An operator session (a signed-in operator account) needs no token; anyone else signs in with it.
    const who = await call("/api/operator").catch(() => ({ operator: false }));
    if (!who.operator) {
      deny("Operators only: sign in with the operator token.");
      return;
    }
  }
  try {
    await loadPurchases();
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      const hadToken = Boolean(sessionStorage.getItem(TOKEN_KEY));
      sessionStorage.removeItem(TOKEN_KEY);
      deny(hadToken ? "That token is not the operator's." : "Operators only: sign in with the operator token.");
      return;
    }
    deny(err.message);
    return;
  }
  $("denied").hidden = true;
  $("signin").hidden = true;
  $("console").hidden = false;
  await loadOverview().catch((err) => say(`Overview: ${err.message}`, "error"));
  await loadInstalls().catch((err) => say(err.message, "error"));
  await loadCatalog().catch((err) => say(err.message, "error"));
  follow("", "");
  await loadDeadLetters().catch((err) => say(`Dead letters: ${err.message}`, "error"));
}

$("signin").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  open();
});

$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  loadPurchases().catch((err) => say(err.message, "error"));
});

open();
