// The model store: every model with `owned` and its install state, kept live by the studio's event stream.
//
// All install UI derives from here. `GET /api/models` gives a quick first paint (and the payments mode);
// then `/api/events`, whose first message (`state`) is the whole truth on every (re)connect: the catalog
// and ownership from the purchase function, each install state from the install function's own record,
// which is written together with the event that announces it. Everything after the `state` is an event
// applied in order, so nothing needs looking up again: no timers, no polling. A reload, a second tab or a
// dropped connection (EventSource reconnects, and the server sends `state` again) never shows stale progress.
//
//   const store = new ModelStore();
//   store.addEventListener("change", (e) => e.detail);   // {kind: "reset"} or {kind, model, event}
//   store.addEventListener("connection", ...);           // store.connection: "connecting" | "live" | "retrying"
//   store.addEventListener("purchase", ...);             // purchase.* events of this visitor
//   store.connect(); await store.load();

import { getModels } from "./api.js";

const PROGRESS_FIELDS = ["phase", "completed_bytes", "total_bytes", "percent", "bytes_per_s", "eta_s"];
const EVENT_TYPES = [
  "purchase.completed", "purchase.failed", "purchase.revoked", "purchase.suspended", "purchase.restored",
  "install.requested", "install.started", "install.progressed", "install.completed", "install.failed",
  "install.removed",
];
const MAX_BACKOFF_MS = 15000;

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

  /** The operator changed the catalog: take prices, descriptions and models from GET /api/models, keeping
   * what the stream knows better (ownership, install state). */
  async refreshCatalog() {
    const data = await getModels();
    this.payments = data.payments;
    const known = this.models;
    const changed = data.models
      .filter((m) => {
        const mine = known.get(m.id);
        return !mine || ["price_cents", "currency", "featured", "description", "name"].some((k) => mine[k] !== m[k]);
      })
      .map((m) => m.id);
    this.models = new Map(
      data.models.map((m) => {
        const mine = known.get(m.id);
        return [m.id, mine ? { ...m, owned: mine.owned, install: mine.install } : { ...m, install: m.install || { state: "not_installed" } }];
      }),
    );
    this._emit("change", { kind: "catalog", models: changed });
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
    });
    source.addEventListener("resync", () => this.connect()); // the server dropped us: start again from the state
    source.addEventListener("catalog", () => this.refreshCatalog().catch(() => {})); // a price, a model added...
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

  /** An install the API accepted (202): show it queued until the stream says more. The stream may
   * have said more already (a quick install finishes before the 202 arrives): then it is left alone. */
  markQueued(id, installId) {
    const model = this.models.get(id);
    if (model && !isBusy(model.install) && model.install.install_id !== installId) {
      model.install = { state: "queued", install_id: installId };
      this._emit("change", { kind: "state", model: id });
    }
  }

  _replace(list) {
    this.models = new Map(list.map((m) => [m.id, { ...m, install: m.install || { state: "not_installed" } }]));
    this.ready = true;
    this._emit("change", { kind: "reset" });
  }

  _apply(type, data, event) {
    if (type.startsWith("purchase.")) {
      if (type === "purchase.completed") this._setOwned(data.model, true);
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
