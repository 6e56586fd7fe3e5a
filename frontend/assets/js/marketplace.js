// The marketplace: model cards with search and filters, buying (test mode, free, or Stripe Checkout and
// back), and live install progress. Every install view is derived from the model store (the event stream),
// so a reload or a second tab shows the same progress. A progress event touches only its own card's bar.

import { ApiError, getPurchase, install, purchase } from "./api.js";
import { ModelStore } from "./model-store.js";
import { billions, bytes, count, eta, speed } from "./format.js";
import { CAPABILITIES, can, canChat, capabilityList, chattable, priceLabel, SIZES, sizeClass, specList } from "./models.js";
import { announce, h, modelAnchor } from "./ui.js";

const $ = (id) => document.getElementById(id);
const grid = $("models");
const form = $("filters");
const controls = { q: $("q"), price: $("price"), size: $("size"), family: $("family"), capability: $("capability"),
  sort: $("sort"), mine: $("mine") };
const announcer = $("announcer");

const store = new ModelStore();
const cards = new Map(); // model id -> card parts
const pending = new Set(); // model ids with a purchase or install request on its way
const starting = new Map(); // model id -> when it was bought: its install is about to start
const STARTING_MS = 20000;

const PHASES = {
  manifest: "Preparing the download",
  downloading: "Downloading",
  verifying: "Verifying the download",
  writing: "Finishing the install",
};

// -- cards ----------------------------------------------------------------------------------------------

function createCard(model) {
  const anchor = modelAnchor(model.id);
  const titleId = `${anchor}-name`;
  const parts = {
    badges: h("ul", { class: "badges", "aria-label": "Status" }),
    status: h("div", { class: "install-status" }),
    actions: h("div", { class: "card-actions" }),
    message: h("p", { class: "card-message", role: "status" }),
    view: "",
    bar: null,
    figures: null,
    phase: null,
  };
  parts.article = h(
    "article",
    { class: "card model", id: anchor, "aria-labelledby": titleId, tabindex: "-1", dataset: { model: model.id } },
    h("div", { class: "model-head" },
      h("div", {}, h("h2", { id: titleId }, model.name), h("p", { class: "model-id" }, model.id)),
      h("p", { class: `price${model.free ? " free" : ""}` }, priceLabel(model))),
    parts.badges,
    h("p", { class: "model-desc" }, model.description),
    capabilityList(model),
    canChat(model) ? null : h("p", { class: "install-note no-chat" },
      "An embedding model: it turns text into vectors for search, through the API. It can't be opened in the chat."),
    specList(model),
    h("div", { class: "model-foot" }, parts.status, parts.actions, parts.message),
  );
  parts.item = h("li", {}, parts.article);
  return parts;
}

/** What a card shows, as one string: the card is rebuilt only when this changes. */
function viewOf(model) {
  const state = model.install ? model.install.state : "not_installed";
  const recent = starting.has(model.id) && Date.now() - starting.get(model.id) < STARTING_MS;
  return [model.owned ? "owned" : "not-owned", state, pending.has(model.id) ? "pending" : "",
    recent && state === "not_installed" ? "starting" : "", store.payments || "",
    state === "failed" ? `${model.install.reason}|${model.install.will_retry}` : "",
    state === "not_installed" ? model.install.reason || "" : ""].join("|");
}

function updateCard(id) {
  const parts = cards.get(id);
  const model = store.get(id);
  if (!parts || !model) return;
  const view = viewOf(model);
  if (view === parts.view) {
    updateProgress(parts, model);
    return;
  }
  parts.view = view;
  const hadFocus = parts.actions.contains(document.activeElement);
  parts.article.dataset.install = model.install.state;
  parts.article.dataset.owned = String(Boolean(model.owned));
  renderBadges(parts, model);
  renderStatus(parts, model);
  renderActions(parts, model);
  if (hadFocus && !parts.actions.contains(document.activeElement)) {
    // the focused button was replaced (Buy -> Chat...): keep keyboard users in this card
    const next = parts.actions.querySelector("button:not([disabled]), a[href]");
    if (next) next.focus();
    else parts.article.focus();
  }
}

function renderBadges(parts, model) {
  const state = model.install.state;
  const badges = [];
  if (model.featured) badges.push(h("li", { class: "badge featured" }, "Featured"));
  if (model.owned) badges.push(h("li", { class: "badge owned" }, "Owned"));
  if (state === "installed" && (model.owned || model.free)) badges.push(h("li", { class: "badge installed" }, "Installed"));
  if (model.owned && ["queued", "pulling", "verifying"].includes(state)) {
    badges.push(h("li", { class: "badge installing" }, "Installing"));
  }
  if (model.owned && state === "failed") badges.push(h("li", { class: "badge failed" }, "Install failed"));
  parts.badges.replaceChildren(...badges);
  parts.badges.hidden = badges.length === 0;
}

function progressBar(model, indeterminate) {
  const bar = h("progress", { max: "100", "aria-label": `Installing ${model.name}` });
  if (!indeterminate) bar.value = 0;
  return bar;
}

function renderStatus(parts, model) {
  const install = model.install;
  parts.bar = parts.figures = parts.phase = null;
  const children = [];
  if (model.owned) {
    switch (install.state) {
      case "not_installed":
        if (starting.has(model.id) && Date.now() - starting.get(model.id) < STARTING_MS) {
          children.push(line("Starting the install…", ""), progressBar(model, true));
        } else if (install.reason) {
          children.push(h("p", { class: "install-note" }, `Not installed on the server: ${install.reason}.`));
        } else {
          children.push(h("p", { class: "install-note" }, "In your library, not installed on the server yet."));
        }
        break;
      case "queued":
        children.push(line("Queued: waiting for the server", ""), progressBar(model, true));
        break;
      case "pulling":
      case "verifying": {
        const phase = h("span", { class: "install-phase" });
        const figures = h("span", { class: "install-figures" });
        children.push(h("div", { class: "install-line" }, phase, figures));
        parts.bar = progressBar(model, false);
        children.push(parts.bar);
        Object.assign(parts, { phase, figures });
        break;
      }
      case "installed":
        children.push(h("p", { class: "install-note" }, "Installed on this server and ready to chat."));
        break;
      case "failed":
        children.push(h("p", { class: "install-error" }, `The install failed: ${install.reason || "unknown reason"}.`));
        if (install.will_retry) {
          const wait = install.retry_in_s ? ` in about ${Math.max(1, Math.round(install.retry_in_s))} s` : " shortly";
          children.push(h("p", { class: "install-note" }, `The server will try again${wait}, or retry now.`));
        }
        break;
      default:
        break;
    }
  } else if (install.state === "installed" && model.free) {
    children.push(h("p", { class: "install-note" }, "Installed on this server: free to chat with."));
  }
  parts.status.replaceChildren(...children);
  updateProgress(parts, model);
}

function line(phase, figures) {
  return h("div", { class: "install-line" }, h("span", { class: "install-phase" }, phase), h("span", { class: "install-figures" }, figures));
}

/** The live part of a card: only the bar and its figures change per progress event. */
function updateProgress(parts, model) {
  if (!parts.bar) return;
  const p = model.install;
  const verifying = p.state === "verifying";
  const percent = verifying ? 100 : Math.max(0, Math.min(100, Number(p.percent) || 0));
  parts.bar.value = percent;
  parts.bar.setAttribute("aria-valuetext", `${Math.floor(percent)} percent`);
  parts.phase.textContent = verifying ? PHASES.verifying : PHASES[p.phase] || "Downloading";
  const figures = [`${Math.floor(percent)}%`];
  if (!verifying && p.total_bytes) figures.push(`${bytes(p.completed_bytes || 0)} of ${bytes(p.total_bytes)}`);
  if (!verifying && p.bytes_per_s) figures.push(speed(p.bytes_per_s));
  if (!verifying && p.eta_s !== null && p.eta_s !== undefined) figures.push(eta(p.eta_s));
  parts.figures.textContent = figures.filter(Boolean).join(" · ");
}

function renderActions(parts, model) {
  const id = model.id;
  const busy = pending.has(id);
  const name = h("span", { class: "sr-only" }, ` ${model.name}`);
  const actions = [];
  const chatLink = () => h("a", { class: "button primary", href: `/chat?model=${encodeURIComponent(id)}` }, "Chat", name.cloneNode(true));
  if (!model.owned) {
    const sellable = model.free || store.payments !== "disabled";
    const label = busy ? (model.free ? "Adding…" : "Buying…") : model.free ? "Get it free" : `Buy for ${priceLabel(model)}`;
    const button = h("button", { type: "button", class: "button buy", disabled: busy || !sellable },
      busy ? h("span", { class: "spinner", "aria-hidden": "true" }) : null, label, name);
    button.addEventListener("click", () => buy(id));
    actions.push(button);
    if (chattable(model)) actions.push(chatLink());
  } else {
    const state = model.install.state;
    if (state === "installed" && canChat(model)) actions.push(chatLink());
    const recent = starting.has(id) && Date.now() - starting.get(id) < STARTING_MS;
    if (state === "failed" || (state === "not_installed" && !recent)) {
      const label = busy ? "Asking the server…" : state === "failed" ? "Retry install" : "Install";
      const button = h("button", { type: "button", class: "button primary", disabled: busy },
        busy ? h("span", { class: "spinner", "aria-hidden": "true" }) : null, label, name);
      button.addEventListener("click", () => installAgain(id));
      actions.push(button);
    }
  }
  parts.actions.replaceChildren(...actions);
  parts.actions.hidden = actions.length === 0;
}

function say(id, text, tone = "") {
  const parts = cards.get(id);
  if (!parts) return;
  parts.message.className = `card-message ${tone}`.trim();
  parts.message.textContent = text;
}

// -- buying and installing --------------------------------------------------------------------------------

function showStarting(id) {
  starting.set(id, Date.now());
  setTimeout(() => updateCard(id), STARTING_MS + 50); // no install event by then: offer the Install button
}

async function buy(id) {
  const model = store.get(id);
  if (!model || pending.has(id)) return;
  pending.add(id);
  say(id, "");
  updateCard(id);
  try {
    const answer = await purchase(id);
    if (answer.status === "checkout") {
      const url = answer.checkout_url && new URL(answer.checkout_url, window.location.href);
      if (!url || !/^https?:$/.test(url.protocol)) throw new ApiError(502, "no_checkout", "Checkout could not be opened. Please try again.");
      say(id, "Opening secure checkout…");
      window.location.assign(url.href);
      return; // the page is leaving; keep the button busy
    }
    store.markOwned(id);
    const state = store.get(id).install.state;
    if (state === "installed" || state === "failed") {
      say(id, `${answer.message}.`, "ok"); // the install already ended (and was announced) before this answer
    } else {
      if (state === "not_installed") showStarting(id);
      say(id, `${answer.message}. The server is installing it now.`, "ok");
      announce(announcer, `${answer.message}: ${model.name}. Installing it now.`);
    }
  } catch (err) {
    if (err instanceof ApiError && err.code === "already_owned") store.markOwned(id);
    say(id, err.message, "error");
  }
  pending.delete(id);
  updateCard(id);
}

async function installAgain(id) {
  if (pending.has(id)) return;
  pending.add(id);
  say(id, "");
  updateCard(id);
  try {
    const answer = await install(id);
    store.markQueued(id, answer.install_id);
  } catch (err) {
    say(id, err.message, err instanceof ApiError && err.code === "already_installed" ? "ok" : "error");
  }
  pending.delete(id);
  updateCard(id);
}

// -- search, filters and order ------------------------------------------------------------------------------

function readFilters() {
  const params = new URLSearchParams(window.location.search);
  controls.q.value = params.get("q") || "";
  for (const key of ["price", "size", "capability", "sort"]) controls[key].value = params.get(key) || "";
  controls.mine.checked = params.get("mine") === "1";
}

function writeFilters() {
  const params = new URLSearchParams(window.location.search);
  const values = { q: controls.q.value.trim(), price: controls.price.value, size: controls.size.value,
    family: controls.family.value, capability: controls.capability.value, sort: controls.sort.value, mine: controls.mine.checked ? "1" : "" };
  for (const [key, value] of Object.entries(values)) {
    if (value) params.set(key, value);
    else params.delete(key);
  }
  const query = params.toString();
  history.replaceState(null, "", `${window.location.pathname}${query ? `?${query}` : ""}${window.location.hash}`);
}

// On a phone the filters beyond the search fold under a "Filters" button that says how many are set.
function showFilterCount() {
  const set = ["price", "size", "family", "capability", "sort"].filter((k) => controls[k].value).length + (controls.mine.checked ? 1 : 0);
  $("filters-toggle").textContent = set ? `Filters (${set})` : "Filters";
}

$("filters-toggle").addEventListener("click", () => {
  const open = !form.classList.contains("filters-open");
  form.classList.toggle("filters-open", open);
  $("filters-toggle").setAttribute("aria-expanded", String(open));
});
form.addEventListener("change", showFilterCount);

function fillFamilies() {
  const families = [...new Set(store.list().map((m) => m.family).filter(Boolean))].sort();
  if (controls.family.dataset.families === families.join("\n")) return; // unchanged: leave the control alone
  controls.family.dataset.families = families.join("\n");
  const wanted = controls.family.value || new URLSearchParams(window.location.search).get("family") || "";
  controls.family.replaceChildren(h("option", { value: "" }, "All families"), ...families.map((f) => h("option", { value: f }, f)));
  controls.family.value = families.includes(wanted) ? wanted : "";
}

function matches(model, words) {
  const f = controls;
  if (f.price.value === "free" && !model.free) return false;
  if (f.price.value === "paid" && model.free) return false;
  if (f.size.value && sizeClass(model) !== f.size.value) return false;
  if (f.family.value && model.family !== f.family.value) return false;
  if (f.capability.value && !can(model, f.capability.value)) return false;
  if (f.mine.checked && !model.owned) return false;
  const caps = (model.capabilities || []).map((c) => CAPABILITIES[c] || c).join(" ");
  const haystack = `${model.name} ${model.id} ${model.family} ${model.description} ${model.license} ${model.parameter_size} ${caps} ${model.quantization || ""}`.toLowerCase();
  return words.every((w) => haystack.includes(w));
}

const ORDERS = {
  "": (a, b) => Number(Boolean(b.featured)) - Number(Boolean(a.featured)),
  price: (a, b) => (a.price_cents || 0) - (b.price_cents || 0),
  size: (a, b) => (billions(a.parameter_size) || 0) - (billions(b.parameter_size) || 0),
  name: (a, b) => a.name.localeCompare(b.name),
};

function applyFilters({ reorder = false } = {}) {
  const words = controls.q.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const models = store.list();
  if (reorder) {
    const order = ORDERS[controls.sort.value] || ORDERS[""];
    const sorted = models.map((m, i) => [m, i]).sort(([a, i], [b, j]) => order(a, b) || i - j).map(([m]) => m);
    const items = sorted.map((model) => cards.get(model.id).item);
    // moving a node drops the keyboard focus inside it: only move when the order really changes
    if (items.some((item, n) => grid.children[n] !== item)) grid.append(...items);
  }
  let shown = 0;
  for (const model of models) {
    const visible = matches(model, words);
    cards.get(model.id).item.hidden = !visible;
    if (visible) shown += 1;
  }
  $("result-count").textContent = shown === models.length
    ? count(models.length, "model")
    : `Showing ${shown} of ${count(models.length, "model")}`;
  $("no-results").hidden = shown > 0 || models.length === 0;
}

// -- store -> page ------------------------------------------------------------------------------------

let firstRender = true;

function renderAll() {
  $("catalog-error").hidden = true;
  grid.removeAttribute("aria-busy");
  const ids = new Set(store.models.keys());
  for (const [id, parts] of cards) {
    if (!ids.has(id)) {
      parts.item.remove();
      cards.delete(id);
    }
  }
  if (grid.querySelector(".skeleton")) grid.replaceChildren();
  for (const model of store.list()) {
    if (!cards.has(model.id)) cards.set(model.id, createCard(model));
    updateCard(model.id);
  }
  fillFamilies();
  renderPaymentsNote();
  applyFilters({ reorder: true });
  if (firstRender) {
    firstRender = false;
    revealTarget();
  }
}

function revealTarget() {
  const target = window.location.hash && document.getElementById(decodeURIComponent(window.location.hash.slice(1)));
  if (target && target.classList.contains("model")) {
    target.classList.add("highlight");
    target.scrollIntoView({ block: "center" });
  }
}

function renderPaymentsNote() {
  const note = $("payments-note");
  if (store.payments === "test") {
    note.className = "notice warn";
    note.replaceChildren(h("div", { class: "notice-body" }, h("p", { class: "notice-title" }, "Test mode"),
      h("p", {}, "Purchases are simulated: no card is asked for and nothing is charged.")));
    note.hidden = false;
  } else if (store.payments === "disabled") {
    note.className = "notice info";
    note.replaceChildren(h("div", { class: "notice-body" }, h("p", { class: "notice-title" }, "Only free models for now"),
      h("p", {}, "This studio does not take payments yet, so paid models can't be bought.")));
    note.hidden = false;
  } else {
    note.hidden = true;
  }
}

const previous = new Map(); // model id -> install state, to announce transitions

/** Tell of an install that ended since the page last knew its state (by an event, or in a new `state`). */
function noticeTransition(model) {
  const before = previous.get(model.id);
  previous.set(model.id, model.install.state);
  if (model.install.state !== "not_installed") starting.delete(model.id);
  if (before === undefined || before === model.install.state) return;
  if (["installed", "failed"].includes(model.install.state)) say(model.id, "");
  if (!model.owned) return;
  if (model.install.state === "installed") announce(announcer, `${model.name} is installed. You can chat with it now.`);
  if (model.install.state === "failed") announce(announcer, `${model.name} failed to install: ${model.install.reason}`);
}

store.addEventListener("change", (e) => {
  const { kind, model: id } = e.detail;
  if (kind === "catalog") {
    for (const changed of e.detail.models) {
      cards.get(changed)?.item.remove(); // drawn again with the new price, description...
      cards.delete(changed);
    }
    renderAll();
    return;
  }
  if (kind === "reset") {
    for (const m of store.list()) noticeTransition(m);
    renderAll();
    return;
  }
  const model = store.get(id);
  if (!model) return;
  noticeTransition(model);
  updateCard(id);
  if (kind === "owned") applyFilters();
});

store.addEventListener("purchase", (e) => {
  const { type, data } = e.detail;
  if (type === "purchase.completed" && store.get(data.model) && store.get(data.model).install.state === "not_installed") {
    showStarting(data.model);
    updateCard(data.model);
  }
  if (followed && data.purchase_id === followed.id) followed.check();
});

// Whether the model server answers: no event says Ollama went away (the studio only notices when it is
// asked), so the page asks /health (public: each component's status) on load, on every (re)connection,
// after a failed install and every 30 s while it is in view, and says so beside "Live updates".
let serverDown = false;

function showLive() {
  const live = $("live");
  const state = store.connection;
  live.className = `live-dot ${state === "live" && serverDown ? "retrying" : state}`;
  live.textContent = state !== "live"
    ? "Live updates are off: reconnecting…"
    : serverDown ? "Live updates on · the model server is down" : "Live updates on";
  $("server-note").hidden = !serverDown;
}

async function checkServer() {
  try {
    const response = await fetch("/health", { cache: "no-store", credentials: "same-origin" });
    const report = await response.json();
    serverDown = report?.components?.ollama?.status === "fail";
  } catch {
    serverDown = false; // the studio itself is unreachable: the live-updates line already says so
  }
  showLive();
}

store.addEventListener("connection", () => {
  showLive();
  if (store.connection === "live") checkServer();
});
store.addEventListener("change", (e) => {
  const model = e.detail.model && store.get(e.detail.model);
  if (model && model.install.state === "failed") checkServer();
});
setInterval(() => {
  if (document.visibilityState === "visible") checkServer();
}, 30000);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") checkServer();
});

// -- back from Stripe Checkout ----------------------------------------------------------------------------

let followed = null;

function banner(tone, title, text, ...extra) {
  const el = $("purchase-banner");
  el.className = `notice ${tone}`;
  const dismiss = h("button", { type: "button", class: "button small ghost", "aria-label": "Dismiss" }, "Dismiss");
  dismiss.addEventListener("click", () => {
    el.hidden = true;
  });
  const spinner = h("span", { class: "spinner", "aria-hidden": "true" });
  const body = h("div", { class: "notice-body" }, h("p", { class: "notice-title" }, title), h("p", {}, text, ...extra));
  el.replaceChildren(...(tone === "info" ? [spinner, body] : [body, dismiss]));
  el.hidden = false;
}

function forgetReturnParams() {
  const params = new URLSearchParams(window.location.search);
  for (const key of ["purchase", "session_id", "cancelled"]) params.delete(key);
  const query = params.toString();
  history.replaceState(null, "", `${window.location.pathname}${query ? `?${query}` : ""}${window.location.hash}`);
}

function nameOf(modelId) {
  const model = store.get(modelId);
  return model ? model.name : modelId;
}

function followPurchase(id, cancelled) {
  if (cancelled) {
    banner("warn", "Checkout cancelled", "You were not charged. The model is still here whenever you want it.");
    forgetReturnParams();
    return;
  }
  banner("info", "Confirming your payment…", "Stripe is confirming the payment. This page updates by itself.");
  announce(announcer, "Confirming your payment.");
  const started = Date.now();
  let timer = null;
  let busy = false;
  const finish = () => {
    clearTimeout(timer);
    followed = null;
    forgetReturnParams();
  };
  const check = async () => {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    try {
      const p = await getPurchase(id);
      if (p.status === "paid") {
        const link = h("a", { href: `#${modelAnchor(p.model)}` }, "See its progress");
        banner("ok", "Payment received", `${nameOf(p.model)} is yours. The server is installing it now. `, link);
        announce(announcer, `Payment received. ${nameOf(p.model)} is installing.`);
        store.markOwned(p.model);
        if (store.get(p.model) && store.get(p.model).install.state === "not_installed") showStarting(p.model);
        updateCard(p.model);
        finish();
        return;
      }
      if (p.status === "failed") {
        banner("error", "The payment did not go through", `${p.failure_reason || "Stripe declined it"}. You were not charged.`);
        finish();
        return;
      }
      if (p.status === "refunded") {
        banner("warn", "This purchase was refunded", `${nameOf(p.model)} is no longer in your library.`);
        finish();
        return;
      }
      if (Date.now() - started > 60000) {
        banner("info", "Still waiting for Stripe…", "Payments are sometimes confirmed a little later. You can leave this page: the model installs once the payment is confirmed.");
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        banner("error", "Purchase not found", err.message);
        finish();
        return;
      }
      banner("info", "Confirming your payment…", `Still checking (${err.message}).`);
    } finally {
      busy = false;
    }
    if (followed && Date.now() - started < 10 * 60000) timer = setTimeout(check, Date.now() - started < 30000 ? 1500 : 5000);
  };
  followed = { id, check };
  check();
}

// -- start ----------------------------------------------------------------------------------------------

function start() {
  for (const [key, size] of Object.entries(SIZES)) controls.size.append(h("option", { value: key }, size.label));
  for (const [key, label] of Object.entries(CAPABILITIES)) controls.capability.append(h("option", { value: key }, label));
  readFilters();
  form.addEventListener("submit", (e) => e.preventDefault());
  controls.q.addEventListener("input", () => {
    applyFilters();
    writeFilters();
  });
  for (const key of ["price", "size", "family", "capability", "mine"]) {
    controls[key].addEventListener("change", () => {
      applyFilters();
      writeFilters();
    });
  }
  controls.sort.addEventListener("change", () => {
    applyFilters({ reorder: true });
    writeFilters();
  });
  $("clear-filters").addEventListener("click", () => {
    form.reset();
    applyFilters({ reorder: true });
    writeFilters();
    controls.q.focus();
  });

  const params = new URLSearchParams(window.location.search);
  const returning = params.get("purchase");
  showFilterCount();

  store.connect();
  store.load().catch((err) => {
    if (store.ready) return; // the event stream already delivered the catalog
    const box = $("catalog-error");
    const retry = h("button", { type: "button", class: "button small" }, "Try again");
    retry.addEventListener("click", () => window.location.reload());
    box.replaceChildren(h("div", { class: "notice-body" }, h("p", { class: "notice-title" }, "Couldn't load the models"),
      h("p", {}, err.message)), retry);
    box.hidden = false;
    grid.removeAttribute("aria-busy");
    grid.replaceChildren();
    $("result-count").textContent = "";
  }).finally(() => {
    if (returning) followPurchase(returning, params.get("cancelled") === "1");
  });
}

start();
