// The model store: every model with `owned` and its install state, kept live by the studio's event stream.
//
// All install UI derives from here: `GET /api/models` for a quick first paint, then `/api/events`, whose
// first message (`state`) is the whole truth again on every (re)connect. So a reload, a second tab or a
// dropped connection never shows stale progress.
//
// The `state` is read from the purchase function's record of installs, which follows the events a moment
// behind: an event sent just before this page subscribed can be missing from both. So the store looks
// again (GET /api/models) shortly after each `state`, and whenever an install it waits for has gone quiet.
//
//   const store = new ModelStore();
//   store.addEventListener("change", (e) => e.detail);   // {kind: "reset"} or {kind, model, event}
//   store.addEventListener("connection", ...);           // store.connection: "connecting" | "live" | "retrying"
//   store.addEventListener("purchase", ...);             // purchase.* events of this visitor
//   await store.load(); store.connect();

import { getModels } from "./api.js";

const PROGRESS_FIELDS = ["phase", "completed_bytes", "total_bytes", "percent", "bytes_per_s", "eta_s"];
const EVENT_TYPES = [
  "purchase.completed", "purchase.failed", "purchase.revoked", "purchase.suspended", "purchase.restored",
  "install.requested", "install.started", "install.progressed", "install.completed", "install.failed",
  "install.removed",
];
const MAX_BACKOFF_MS = 15000;
const SETTLE_MS = 1500; // after a `state`, look once more: events sent just before it may be missing from it
const STALE_MS = 6000; // an install the stream has said nothing about for this long is read again
const WATCH_MS = 2000;
const EXPECT_MS = 30000; // how long a model just bought is expected to start installing

export function isBusy(install) {
  return ["queued", "pulling", "verifying"].includes(install && install.state);
}

export class ModelStore extends EventTarget {
  constructor(url = "/api/events") {
    super();
    this.url = url;
    this.models = new Map();
    this.payments = null;
    this.ready = false;
    this.connection = "connecting";
    this._live = false; // the stream's `state` arrived: GET answers no longer replace models
    this._source = null;
    this._backoff = 1000;
    this._retryTimer = null;
    this._heard = new Map(); // model id -> when the stream (or the API) last said something about it
    this._expected = new Map(); // model id -> until when an install of it is expected to start
    this._settleTimer = null;
    this._refreshing = false;
    setInterval(() => this._recheck(false), WATCH_MS);
    window.addEventListener("pagehide", () => this.close());
    window.addEventListener("pageshow", (e) => {
      if (e.persisted) this.connect(); // back from the back/forward cache with a closed stream
    });
  }

  get(id) {
    return this.models.get(id);
  }

  list() {
    return [...this.models.values()];
  }

  /** GET /api/models (the payments mode comes only from here). Throws ApiError. */
  async load() {
    const data = await getModels();
    this.payments = data.payments;
    if (!this._live) this._replace(data.models);
    else this._emit("change", { kind: "reset" });
    return this;
  }

  /** Read every model again from the API (the stream stays as it is). */
  async refresh() {
    if (this._refreshing) return;
    this._refreshing = true;
    try {
      const data = await getModels();
      this.payments = data.payments;
      this._replace(data.models);
    } catch {
      // the next look, or the stream, will do
    } finally {
      this._refreshing = false;
    }
  }

  /** An install of `id` should start soon (it was just bought): look again if the stream stays quiet. */
  expectInstall(id) {
    const now = Date.now();
    this._expected.set(id, now + EXPECT_MS);
    this._heard.set(id, now);
  }

  connect() {
    this.close();
    clearTimeout(this._retryTimer);
    const source = new EventSource(this.url);
    this._source = source;
    source.addEventListener("open", () => {
      this._backoff = 1000;
    });
    source.addEventListener("state", (e) => {
      const data = parse(e.data);
      if (!data || !Array.isArray(data.models)) return;
      this._live = true;
      this._replace(data.models);
      this._setConnection("live");
      clearTimeout(this._settleTimer);
      this._settleTimer = setTimeout(() => this._recheck(true), SETTLE_MS);
    });
    source.addEventListener("resync", () => this.connect()); // the server dropped us: start again from the state
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (e) => {
        const event = parse(e.data);
        if (event && event.data) this._apply(type, event.data, event);
      });
    }
    source.addEventListener("error", () => {
      this._setConnection("retrying");
      if (source.readyState === EventSource.CLOSED) {
        // refused outright (e.g. 503 while NATS restarts): EventSource gives up, so retry ourselves
        this._retryTimer = setTimeout(() => this.connect(), this._backoff);
        this._backoff = Math.min(this._backoff * 2, MAX_BACKOFF_MS);
      }
    });
  }

  close() {
    if (this._source) {
      this._source.close();
      this._source = null;
    }
  }

  /** A purchase the API confirmed (the stream says so too, a moment later). */
  markOwned(id) {
    const model = this.models.get(id);
    if (model && !model.owned) {
      model.owned = true;
      this._emit("change", { kind: "owned", model: id });
    }
  }

  /** An install the API accepted (202): show it queued until the stream says more. */
  markQueued(id, installId) {
    const model = this.models.get(id);
    if (model && !isBusy(model.install)) {
      model.install = { state: "queued", install_id: installId };
      this._emit("change", { kind: "state", model: id });
    }
  }

  _replace(list) {
    this.models = new Map(list.map((m) => [m.id, { ...m, install: m.install || { state: "not_installed" } }]));
    this.ready = true;
    const now = Date.now();
    for (const m of this.models.values()) {
      this._heard.set(m.id, now);
      // owned but never installed: its purchase's install is probably on its way (maybe sent before we looked)
      if (m.owned && m.install.state === "not_installed" && !m.install.reason && !this._expected.has(m.id)) {
        this._expected.set(m.id, now + EXPECT_MS);
      }
    }
    this._emit("change", { kind: "reset" });
  }

  /** Is the page waiting for news of this model's install? */
  _waiting(model, now) {
    if (!model.owned) return false;
    if (isBusy(model.install)) return true;
    return model.install.state === "not_installed" && (this._expected.get(model.id) || 0) > now;
  }

  _recheck(settling) {
    if (this._refreshing || !this.ready || document.visibilityState === "hidden") return;
    const now = Date.now();
    const due = this.list().some((m) => this._waiting(m, now) && (settling || now - (this._heard.get(m.id) || 0) > STALE_MS));
    if (due) this.refresh();
  }

  _apply(type, data, event) {
    if (this.models.has(data.model)) this._heard.set(data.model, Date.now());
    if (type.startsWith("purchase.")) {
      if (type === "purchase.completed") {
        this.expectInstall(data.model);
        this._setOwned(data.model, true);
      }
      if (type === "purchase.revoked" || type === "purchase.suspended") this._setOwned(data.model, false);
      if (type === "purchase.restored") this._setOwned(data.model, true); // a dispute won, a refund that failed
      this._emit("purchase", { type, data, event });
      return;
    }
    const model = this.models.get(data.model);
    if (!model) return;
    const current = model.install || { state: "not_installed" };
    const same = data.install_id && data.install_id === current.install_id;
    let next = null;
    let kind = "state";
    switch (type) {
      case "install.requested":
        if (!(same && current.state !== "not_installed")) next = { state: "queued", install_id: data.install_id };
        break;
      case "install.started":
        // a late copy of the start of an install that already finished changes nothing
        if (!(same && current.state === "installed")) {
          next = { state: "pulling", install_id: data.install_id, phase: "manifest", percent: 0 };
        }
        break;
      case "install.progressed":
        // progress sent before a finish or a failure may arrive after the `state` that includes it
        if (same && (current.state === "installed" || current.state === "failed")) break;
        next = {
          state: data.phase === "verifying" || data.phase === "writing" ? "verifying" : "pulling",
          install_id: data.install_id,
        };
        for (const field of PROGRESS_FIELDS) next[field] = data[field];
        kind = current.state === next.state ? "progress" : "state";
        break;
      case "install.completed":
        next = { state: "installed", install_id: data.install_id };
        break;
      case "install.failed":
        next = {
          state: "failed", install_id: data.install_id, reason: data.reason,
          will_retry: Boolean(data.will_retry), retry_in_s: data.retry_in_s ?? null,
        };
        break;
      case "install.removed":
        next = { state: "not_installed", reason: data.reason };
        break;
      default:
        break;
    }
    if (!next) return;
    model.install = next;
    this._emit("change", { kind, model: model.id, event });
  }

  _setOwned(id, owned) {
    const model = this.models.get(id);
    if (model && model.owned !== owned) {
      model.owned = owned;
      this._emit("change", { kind: "owned", model: id });
    }
  }

  _setConnection(state) {
    if (this.connection !== state) {
      this.connection = state;
      this._emit("connection", { state });
    }
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
