// Conversations, kept in this browser (localStorage), newest first; other tabs see changes too.

const KEY = "studio.conversations.v1";
const MAX_CONVERSATIONS = 100;

function newId() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

function valid(c) {
  return c && typeof c.id === "string" && Array.isArray(c.messages);
}

/** "  Explain   quantum computing to me like I'm five, please " -> "Explain quantum computing to me like I'm five…" */
export function titleFrom(text, max = 48) {
  const flat = String(text).replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1).trimEnd()}…` : flat || "New chat";
}

export class Conversations extends EventTarget {
  constructor() {
    super();
    this.persistent = true;
    this.items = this._read();
    window.addEventListener("storage", (e) => {
      if (e.key === KEY) {
        this.items = this._read();
        this.dispatchEvent(new Event("change"));
      }
    });
  }

  _read() {
    try {
      const data = JSON.parse(window.localStorage.getItem(KEY) || "null");
      return data && Array.isArray(data.conversations) ? data.conversations.filter(valid) : [];
    } catch {
      this.persistent = false;
      return [];
    }
  }

  _write() {
    this.items.sort((a, b) => b.updated - a.updated);
    this.items.length = Math.min(this.items.length, MAX_CONVERSATIONS);
    for (;;) {
      try {
        window.localStorage.setItem(KEY, JSON.stringify({ version: 1, conversations: this.items }));
        return;
      } catch {
        if (this._dropOldestImages()) continue; // full: images go first (the oldest), then whole conversations
        if (this.items.length <= 1) {
          this.persistent = false; // storage full or blocked: this tab still remembers
          return;
        }
        this.items.length = Math.ceil(this.items.length / 2); // full: let the oldest go
      }
    }
  }

  /** Forget the images of the oldest message that has some (the text stays); false if none is left. */
  _dropOldestImages() {
    let oldest = null;
    for (const c of this.items) {
      for (const m of c.messages) {
        if (m.images && m.images.length && (!oldest || (m.at || 0) < (oldest.at || 0))) oldest = m;
      }
    }
    if (!oldest) return false;
    oldest.images_dropped = oldest.images.length;
    delete oldest.images;
    return true;
  }

  /** Add a conversation read from a file (a new id, so it never replaces one). */
  add(conversation) {
    const now = Date.now();
    const added = { ...conversation, id: newId(), updated: now, created: conversation.created || now };
    this.items.push(added);
    this._write();
    return added;
  }

  list() {
    return [...this.items].sort((a, b) => b.updated - a.updated);
  }

  get(id) {
    return this.items.find((c) => c.id === id) || null;
  }

  /** A new, unsaved conversation: it is stored with its first message. */
  create(model) {
    const now = Date.now();
    return { id: newId(), title: "New chat", model, created: now, updated: now, messages: [], settings: {} };
  }

  save(conversation) {
    conversation.updated = Date.now();
    if (!this.items.includes(conversation)) {
      const stale = this.items.findIndex((c) => c.id === conversation.id);
      if (stale >= 0) this.items.splice(stale, 1);
      this.items.push(conversation);
    }
    this._write();
  }

  remove(id) {
    const index = this.items.findIndex((c) => c.id === id);
    if (index < 0) return null;
    const [removed] = this.items.splice(index, 1);
    this._write();
    return removed;
  }

  restore(conversation) {
    if (!this.get(conversation.id)) this.items.push(conversation);
    this._write();
  }
}
