// The chat: pick an owned, installed model; answers stream in (fetch + a stream reader, since EventSource
// can't POST) and can be stopped; conversations live in this browser. Model text is rendered by
// markdown.js, which only ever creates text nodes from it.

import { ApiError, request } from "./api.js";
import { Conversations, titleFrom } from "./conversations.js";
import { ModelStore } from "./model-store.js";
import { ago } from "./format.js";
import { renderInto } from "./markdown.js";
import { chattable } from "./models.js";
import { announce, copyButton, h } from "./ui.js";

const $ = (id) => document.getElementById(id);
const picker = $("model");
const thread = $("thread");
const scroller = $("messages");
const prompt = $("prompt");
const sendButton = $("send");
const stopButton = $("stop");
const status = $("chat-status");
const sidebar = $("sidebar");
const toggle = $("sidebar-toggle");

const MAX_HISTORY = 40; // messages sent with a question (the server takes at most STUDIO_CHAT_MAX_MESSAGES)
const SESSION_KEY = "studio.chat.current";

const store = new ModelStore();
const conversations = new Conversations();
// `/chat?model=<id>` (the marketplace's Chat links) picks the model of a new chat; read once, then dropped from
// the address so that a reload reopens the conversation instead of starting another
const requestedModel = new URLSearchParams(window.location.search).get("model");
if (requestedModel) history.replaceState(null, "", window.location.pathname);
let current = null; // the open conversation (unsaved until its first message)
let generation = null; // the answer being written: {controller, conversation, view, text, ...}

const SUGGESTIONS = [
  "Explain what a language model is in two sentences.",
  "Write a Python function that checks whether a word is a palindrome.",
  "Give me three ideas for a weekend project with a Raspberry Pi.",
];

const ERRORS = {
  not_owned: { title: "You don't own this model", marketplace: "Buy it in the marketplace" },
  unknown_model: { title: "This model isn't in the studio", marketplace: "Pick one in the marketplace" },
  not_installed: { title: "This model isn't installed yet", marketplace: "Install it in the marketplace" },
  rate_limited: { title: "Too many messages at once", retry: true },
  too_many_generations: { title: "Another answer is still being written", retry: true },
  ollama_unavailable: { title: "The model server is unavailable", retry: true },
  ollama_busy: { title: "The model server is busy", retry: true },
  ollama_timeout: { title: "The model took too long to start", retry: true },
  ollama_error: { title: "The model failed to answer", retry: true },
  offline: { title: "Can't reach the studio", retry: true },
  no_session: { title: "Your session has expired", reload: true },
};

// -- models -------------------------------------------------------------------------------------------

function modelName(id) {
  const model = store.get(id);
  return model ? model.name : id;
}

function available() {
  return store.list().filter(chattable);
}

function renderPicker() {
  const models = available();
  const ids = models.map((m) => m.id).join("\n");
  const note = $("model-note");
  const installing = store.list().filter((m) => m.owned && ["queued", "pulling", "verifying"].includes(m.install.state));
  note.textContent = installing.length ? `Installing ${installing.map((m) => m.name).join(", ")}: it appears here when it's ready.` : "";
  if (picker.dataset.ids !== ids) {
    const wanted = picker.value || requestedModel;
    picker.dataset.ids = ids;
    picker.replaceChildren(...models.map((m) => h("option", { value: m.id }, `${m.name}${m.owned ? "" : " (free)"}`)));
    if (!models.length) picker.append(h("option", { value: "" }, "No models to chat with yet"));
    const preferred = [current && current.model, wanted].find((id) => id && models.some((m) => m.id === id));
    if (preferred) picker.value = preferred;
  }
  picker.disabled = !models.length || Boolean(generation);
  updateComposer();
  // the welcome (or the empty state) depends on these; progress events alone change nothing here
  const signature = `${store.ready}|${ids}|${installing.length}`;
  if (signature !== welcomeSignature) {
    welcomeSignature = signature;
    if (current && !current.messages.length) renderThread();
  }
}

let welcomeSignature = "";

function updateComposer() {
  const ready = store.ready && available().length > 0;
  prompt.disabled = !ready;
  sendButton.disabled = !ready || Boolean(generation);
  sendButton.hidden = Boolean(generation);
  stopButton.hidden = !generation;
  prompt.placeholder = ready ? `Message ${modelName(picker.value)}…` : "Add a model in the marketplace to start chatting";
}

// -- the thread -----------------------------------------------------------------------------------------

function nearBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
}

function scrollToEnd() {
  scroller.scrollTop = scroller.scrollHeight;
}

function userMessage(content) {
  return h("article", { class: "message user" }, h("h3", { class: "sr-only" }, "You said"), h("div", { class: "bubble" }, content));
}

function assistantMessage(message, model) {
  const bubble = h("div", { class: "bubble md" });
  const meta = h("footer", { class: "meta" });
  const article = h("article", { class: "message assistant", dataset: { model } },
    h("h3", { class: "who" }, modelName(model)), bubble, meta);
  if (message) {
    renderInto(bubble, message.content);
    fillMeta(meta, message);
  }
  return { article, bubble, meta };
}

function fillMeta(meta, message) {
  const bits = [];
  if (message.stopped) bits.push(h("span", { class: "flag" }, "Stopped"));
  if (message.error) bits.push(h("span", { class: "flag" }, `Cut short: ${message.error}`));
  const s = message.stats;
  if (s && s.completion_tokens) {
    const parts = [`${s.completion_tokens} tokens`];
    if (s.tokens_per_s) parts.push(`${Number(s.tokens_per_s).toFixed(1)} tokens/s`);
    const first = s.time_to_first_token_ms;
    if (first) parts.push(`first words after ${first < 1000 ? `${Math.round(first)} ms` : `${(first / 1000).toFixed(1)} s`}`);
    bits.push(h("span", {}, parts.join(" · ")));
  }
  if (message.content) bits.push(copyButton(() => message.content, "Copy answer"));
  meta.replaceChildren(...bits);
}

function welcome() {
  const models = available();
  if (!store.ready) {
    return h("div", { class: "welcome" }, h("p", {}, h("span", { class: "spinner", "aria-hidden": "true" }), " Loading your models…"));
  }
  if (!models.length) {
    const installing = store.list().some((m) => m.owned && ["queued", "pulling", "verifying"].includes(m.install.state));
    return h("div", { class: "empty-state" },
      h("h2", {}, installing ? "Your model is still installing" : "You don't own any installed models yet"),
      h("p", {}, installing
        ? "It appears here as soon as the server has finished installing it. Its progress is in the marketplace."
        : "Get a model in the marketplace (several are free); once the server has installed it, you can chat with it here."),
      h("a", { class: "button primary", href: "/marketplace" }, installing ? "See the progress" : "Browse the marketplace"));
  }
  const name = modelName(picker.value);
  return h("div", { class: "welcome" },
    h("h2", {}, `Chat with ${name}`),
    h("p", {}, "Answers are written on this server. The conversation is kept in this browser only."),
    h("ul", { class: "suggestions", "aria-label": "Suggestions" }, SUGGESTIONS.map((text) => {
      const button = h("button", { type: "button", class: "button small" }, text);
      button.addEventListener("click", () => {
        prompt.value = text;
        prompt.focus();
      });
      return h("li", {}, button);
    })));
}

function renderThread() {
  const nodes = [];
  if (!current || !current.messages.length) nodes.push(welcome());
  else {
    for (const message of current.messages) {
      if (message.role === "user") nodes.push(userMessage(message.content));
      else if (message.role === "assistant") nodes.push(assistantMessage(message, message.model || current.model).article);
    }
  }
  thread.replaceChildren(...nodes);
  if (generation && generation.conversation === current) thread.append(generation.view.article);
  scrollToEnd();
}

// -- conversations ----------------------------------------------------------------------------------------

function renderList() {
  const items = conversations.list();
  $("no-conversations").hidden = items.length > 0;
  $("conversations").replaceChildren(...items.map((c) => {
    const isCurrent = current && c.id === current.id;
    const open = h("button", { type: "button", class: "conversation-open", "aria-current": isCurrent ? "true" : null },
      h("span", { class: "title" }, c.title), h("span", { class: "when" }, `${modelName(c.model)} · ${ago(c.updated)}`));
    open.addEventListener("click", () => {
      openConversation(c.id);
      closeSidebar();
      prompt.focus();
    });
    const remove = h("button", { type: "button", class: "button small ghost conversation-delete", "aria-label": `Delete conversation: ${c.title}` }, "✕");
    remove.addEventListener("click", () => deleteConversation(c.id));
    return h("li", { class: isCurrent ? "current" : null }, open, remove);
  }));
}

function openConversation(id) {
  stopGeneration();
  current = (id && conversations.get(id)) || conversations.create(picker.value);
  try {
    window.sessionStorage.setItem(SESSION_KEY, current.id);
  } catch {
    // no session storage: a reload starts a new chat
  }
  if (current.model && available().some((m) => m.id === current.model)) picker.value = current.model;
  renderList();
  renderThread();
  updateComposer();
}

function newConversation() {
  openConversation(null);
  closeSidebar();
  prompt.focus();
}

let undoTimer = null;

function deleteConversation(id) {
  if (generation && generation.conversation.id === id) {
    generation.discard = true; // its answer must not bring the conversation back
    stopGeneration();
  }
  const removed = conversations.remove(id);
  if (!removed) return;
  if (current && current.id === id) openConversation(null);
  else renderList();
  const box = $("undo");
  const undo = h("button", { type: "button", class: "button small" }, "Undo");
  undo.addEventListener("click", () => {
    conversations.restore(removed);
    box.hidden = true;
    openConversation(removed.id);
  });
  box.replaceChildren(h("span", {}, `Deleted “${removed.title}”.`), undo);
  box.hidden = false;
  clearTimeout(undoTimer);
  undoTimer = setTimeout(() => {
    box.hidden = true;
  }, 8000);
  $("new-chat").focus();
}

// -- asking and streaming ------------------------------------------------------------------------------------

/** The server-sent events of a fetch() response body: {event, data} objects. */
async function* serverEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const raw of block.split("\n")) {
          const line = raw.replace(/\r$/, "");
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue;
        let parsed = null;
        try {
          parsed = JSON.parse(data.join("\n"));
        } catch {
          continue;
        }
        yield { event, data: parsed };
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function historyOf(conversation) {
  return conversation.messages
    .filter((m) => (m.role === "user" || m.role === "assistant") && m.content.trim())
    .slice(-MAX_HISTORY)
    .map(({ role, content }) => ({ role, content }));
}

function scheduleRender() {
  const g = generation;
  if (!g || g.frame) return;
  g.frame = requestAnimationFrame(() => {
    g.frame = 0;
    paint(g);
  });
}

function paint(g) {
  const pinned = nearBottom();
  if (g.text) renderInto(g.view.bubble, g.text);
  if (pinned) scrollToEnd();
}

function thinking() {
  return h("div", { class: "thinking", role: "img", "aria-label": "Waiting for the first words" }, h("span"), h("span"), h("span"));
}

async function ask(text) {
  const model = picker.value;
  if (generation || !model || !text.trim()) return;
  if (!current) current = conversations.create(model);
  if (!current.messages.length) thread.replaceChildren();
  current.model = model;
  current.messages.push({ role: "user", content: text, at: Date.now() });
  if (current.title === "New chat") current.title = titleFrom(text);
  conversations.save(current);
  renderList();
  thread.append(userMessage(text));
  scrollToEnd();
  await answer(current);
}

async function answer(conversation) {
  const model = conversation.model;
  const view = assistantMessage(null, model);
  view.bubble.classList.add("streaming");
  view.bubble.append(thinking());
  thread.append(view.article);
  scrollToEnd();
  const g = { controller: new AbortController(), conversation, view, model, text: "", frame: 0, stopped: false };
  generation = g;
  picker.disabled = true;
  updateComposer();
  announce(status, `${modelName(model)} is answering…`);
  let stats = null;
  let failure = null;
  try {
    const response = await request("/api/chat", {
      method: "POST",
      body: { model, messages: historyOf(conversation), stream: true },
      signal: g.controller.signal,
      accept: "text/event-stream",
    });
    if (!(response.headers.get("Content-Type") || "").includes("text/event-stream")) {
      const body = await response.json(); // a server that did not stream: the whole answer at once
      g.text = body.response || "";
      stats = body;
    } else {
      for await (const { event, data } of serverEvents(response.body)) {
        if (event === "token" && typeof data.content === "string") {
          g.text += data.content;
          scheduleRender();
        } else if (event === "done") {
          stats = data;
        } else if (event === "error") {
          const e = data.error || {};
          throw new ApiError(502, e.code || "stream_error", e.message || "The model stopped answering.");
        }
      }
      if (!stats) throw new ApiError(0, "cut_off", "The connection closed before the answer was finished.");
    }
  } catch (err) {
    if (err && err.name === "AbortError") g.stopped = true;
    else failure = err instanceof ApiError ? err : new ApiError(0, "offline", "The answer could not be read.");
  }
  finish(g, stats, failure);
}

function finish(g, stats, failure) {
  if (g.frame) cancelAnimationFrame(g.frame);
  generation = null;
  const { view, conversation } = g;
  view.bubble.classList.remove("streaming");
  if (g.text && !g.discard) {
    const message = { role: "assistant", content: g.text, model: g.model, at: Date.now() };
    if (stats) message.stats = stats;
    if (g.stopped) message.stopped = true;
    if (failure) message.error = failure.message;
    conversation.messages.push(message);
    conversations.save(conversation);
    renderInto(view.bubble, g.text);
    fillMeta(view.meta, message);
    renderList();
  } else {
    view.article.remove();
  }
  if (failure && !g.text && conversation === current) showError(failure, conversation);
  else if (failure) announce(status, `The answer was cut short: ${failure.message}`);
  else if (g.stopped) announce(status, "Stopped.");
  else announce(status, "Answer complete.");
  picker.disabled = !available().length;
  updateComposer();
  if (conversation === current && nearBottom()) scrollToEnd();
  // back to the message box, unless the visitor has moved on to something else (or an error wants reading)
  const idle = document.activeElement === document.body || document.activeElement === stopButton;
  if (!prompt.disabled && idle && !thread.querySelector(".message.error")) prompt.focus();
}

function showError(err, conversation) {
  const kind = ERRORS[err.code] || { title: "Couldn't get an answer", retry: err.status === 0 || err.status >= 500 };
  const actions = [];
  let countdown = null;
  if (kind.retry) {
    const retry = h("button", { type: "button", class: "button small" }, "Try again");
    retry.addEventListener("click", () => {
      clearInterval(countdown);
      box.remove();
      if (conversation === current && !generation) answer(conversation);
    });
    if (err.retryAfter && err.status === 429) {
      let left = Math.ceil(err.retryAfter);
      retry.disabled = true;
      retry.textContent = `Try again in ${left} s`;
      countdown = setInterval(() => {
        left -= 1;
        if (left > 0) retry.textContent = `Try again in ${left} s`;
        else {
          clearInterval(countdown);
          retry.disabled = false;
          retry.textContent = "Try again";
        }
      }, 1000);
    }
    actions.push(retry);
  }
  if (kind.marketplace) actions.push(h("a", { class: "button small", href: "/marketplace" }, kind.marketplace));
  if (kind.reload) {
    const reload = h("button", { type: "button", class: "button small" }, "Reload the page");
    reload.addEventListener("click", () => window.location.reload());
    actions.push(reload);
  }
  const box = h("div", { class: "message error notice error", role: "alert", dataset: { code: err.code } },
    h("div", { class: "notice-body stack" },
      h("p", { class: "notice-title" }, kind.title),
      h("p", {}, err.message),
      actions.length ? h("div", { class: "card-actions" }, actions) : null));
  thread.append(box);
  scrollToEnd();
}

function stopGeneration() {
  if (generation) {
    generation.stopped = true;
    generation.controller.abort();
  }
}

// -- sidebar on small screens ----------------------------------------------------------------------------

function closeSidebar() {
  sidebar.classList.remove("open");
  toggle.setAttribute("aria-expanded", "false");
}

toggle.addEventListener("click", () => {
  const open = !sidebar.classList.contains("open");
  sidebar.classList.toggle("open", open);
  toggle.setAttribute("aria-expanded", String(open));
  if (open) $("new-chat").focus();
});

// -- wiring ---------------------------------------------------------------------------------------------------

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = prompt.value;
  if (!text.trim() || generation) return;
  prompt.value = "";
  ask(text);
});

prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});

document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape") return;
  if (generation) {
    e.preventDefault();
    stopGeneration();
  } else if (sidebar.classList.contains("open")) {
    closeSidebar();
    toggle.focus();
  }
});

stopButton.addEventListener("click", () => {
  stopGeneration();
  prompt.focus();
});
$("new-chat").addEventListener("click", newConversation);
picker.addEventListener("change", () => {
  if (current && !current.messages.length) {
    current.model = picker.value;
    renderThread();
  }
  updateComposer();
});

conversations.addEventListener("change", () => {
  // another tab changed the conversations: keep ours if it still exists
  if (current && !generation) {
    const fresh = conversations.get(current.id);
    if (fresh) current = fresh;
    else if (current.messages.length) current = conversations.create(picker.value);
    renderThread();
  }
  renderList();
});

store.addEventListener("change", (e) => {
  renderPicker();
  if (e.detail.kind === "reset") renderList(); // model names for the list
});

function start() {
  let last = null;
  try {
    last = window.sessionStorage.getItem(SESSION_KEY);
  } catch {
    last = null;
  }
  openConversation(!requestedModel && last && conversations.get(last) ? last : null);
  store.connect();
  store.load().catch((err) => {
    if (store.ready) return;
    thread.replaceChildren(h("div", { class: "notice error", role: "alert" },
      h("div", { class: "notice-body" }, h("p", { class: "notice-title" }, "Couldn't load your models"), h("p", {}, err.message))));
    picker.replaceChildren(h("option", { value: "" }, "Models unavailable"));
  });
}

start();
