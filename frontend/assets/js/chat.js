// The chat: pick an owned, installed model; answers stream in (fetch + a stream reader, since EventSource
// can't POST) and can be stopped; conversations live in this browser. Model text is rendered by
// markdown.js, which only ever creates text nodes from it. Per conversation: a system prompt, temperature and
// max tokens (Settings); answers can be regenerated, sent messages edited and resent, conversations exported
// (Markdown, JSON), imported and searched. Vision models take images (picker, paste, drop); a thinking model's
// reasoning shows in a collapsed "Thought for N s" block, never in the answer or its copy.

import { ApiError, request } from "./api.js";
import { dataUrl, imageFiles, MAX_IMAGES, readImage } from "./attachments.js";
import { Conversations, titleFrom } from "./conversations.js";
import { ModelStore } from "./model-store.js";
import { ago } from "./format.js";
import { renderInto } from "./markdown.js";
import { can, chattable, contextLabel } from "./models.js";
import { download, fileName, fitToContext, fromJson, toJson, toMarkdown } from "./transcripts.js";
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
const settingsFields = { system: $("system-prompt"), temperature: $("temperature"), max_tokens: $("max-tokens") };
const attachButton = $("attach");
const attachmentList = $("attachments");
const search = $("conversation-search");
let attached = []; // images waiting to be sent with the next message: {data, name}

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
  model_has_no_vision: { title: "This model can't see images" },
  image_too_large: { title: "An image is too large" },
  too_many_images: { title: "Too many images in one message" },
  unsupported_image: { title: "This image type isn't supported" },
  not_a_chat_model: { title: "This model can't chat", marketplace: "Pick another in the marketplace" },
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
  const sees = ready && can(store.get(picker.value), "vision");
  attachButton.hidden = !sees;
  if (!sees && attached.length) setAttached([]);
  const has = Boolean(current && current.messages.length);
  $("export-md").disabled = !has;
  $("export-json").disabled = !has;
}

// -- the thread -----------------------------------------------------------------------------------------

function nearBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
}

function scrollToEnd() {
  scroller.scrollTop = scroller.scrollHeight;
}

function thumbnails(images, label) {
  if (!images || !images.length) return null;
  return h("ul", { class: "thumbnails", "aria-label": label },
    images.map((data, i) => h("li", {}, h("img", { src: dataUrl(data), alt: `Image ${i + 1}` }))));
}

function userMessage(message, index = -1) {
  const article = h("article", { class: "message user" }, h("h3", { class: "sr-only" }, "You said"),
    thumbnails(message.images, "Images sent"),
    message.images_dropped ? h("p", { class: "hint" }, `${message.images_dropped} image(s) no longer kept in this browser`) : null,
    h("div", { class: "bubble" }, message.content));
  if (index >= 0) {
    const edit = h("button", { type: "button", class: "button small ghost" }, "Edit", h("span", { class: "sr-only" }, " this message"));
    edit.addEventListener("click", () => editMessage(article, index));
    article.append(h("footer", { class: "meta" }, edit));
  }
  return article;
}

function thoughtBlock() {
  const summary = h("summary", {}, "Thinking…");
  const text = h("div", { class: "thought-text" });
  const block = h("details", { class: "thought" }, summary, text);
  return { block, summary, text };
}

function thoughtLabel(seconds) {
  return `Thought for ${Math.max(1, Math.round(seconds || 0))} s`;
}

function assistantMessage(message, model) {
  const bubble = h("div", { class: "bubble md" });
  const meta = h("footer", { class: "meta" });
  const thought = thoughtBlock();
  thought.block.hidden = !(message && message.thinking);
  const article = h("article", { class: "message assistant", dataset: { model } },
    h("h3", { class: "who" }, modelName(model)), thought.block, bubble, meta);
  if (message) {
    if (message.thinking) {
      thought.summary.textContent = thoughtLabel(message.thought_s);
      thought.text.textContent = message.thinking;
    }
    renderInto(bubble, message.content);
    fillMeta(meta, message);
  }
  return { article, bubble, meta, thought };
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
    current.messages.forEach((message, i) => {
      if (message.role === "user") nodes.push(userMessage(message, i));
      else if (message.role === "assistant") nodes.push(assistantMessage(message, message.model || current.model).article);
    });
  }
  thread.replaceChildren(...nodes);
  if (generation && generation.conversation === current) thread.append(generation.view.article);
  else offerRegenerate();
  scrollToEnd();
}

/** The last answer of the open conversation can be written again. */
function offerRegenerate() {
  thread.querySelectorAll(".regenerate").forEach((b) => b.remove());
  const last = current && current.messages[current.messages.length - 1];
  const article = [...thread.querySelectorAll(".message.assistant")].pop();
  if (!last || last.role !== "assistant" || !article || generation) return;
  const button = h("button", { type: "button", class: "button small ghost regenerate" }, "Regenerate");
  button.addEventListener("click", () => {
    if (generation || current.messages[current.messages.length - 1] !== last) return;
    current.messages.pop();
    conversations.save(current);
    renderThread();
    answer(current);
  });
  article.querySelector(".meta").append(button);
}

/** Edit a sent message in place; sending it replaces it and every later turn, then asks again. */
function editMessage(article, index) {
  if (generation) return;
  const message = current.messages[index];
  const box = h("textarea", { class: "edit-box", rows: "3", maxlength: "8000", "aria-label": "Edit message" });
  box.value = message.content;
  const save = h("button", { type: "submit", class: "button small primary" }, "Send edited message");
  const cancel = h("button", { type: "button", class: "button small" }, "Cancel");
  const form = h("form", { class: "edit-form" }, box, h("div", { class: "card-actions" }, save, cancel));
  cancel.addEventListener("click", () => renderThread());
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = box.value;
    if (!text.trim() || generation || current.messages[index] !== message) return;
    current.messages = current.messages.slice(0, index);
    current.messages.push({ ...message, content: text, at: Date.now() });
    if (index === 0) current.title = titleFrom(text);
    conversations.save(current);
    renderList();
    renderThread();
    answer(current);
  });
  box.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.stopPropagation();
      renderThread();
    }
  });
  article.querySelector(".bubble").replaceWith(form);
  article.querySelector(".meta").hidden = true;
  box.focus();
}

// -- conversations ----------------------------------------------------------------------------------------

function renderList() {
  const all = conversations.list();
  const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const items = all.filter((c) => {
    if (!words.length) return true;
    const text = `${c.title}\n${c.messages.map((m) => m.content).join("\n")}`.toLowerCase();
    return words.every((w) => text.includes(w));
  });
  $("no-conversations").hidden = all.length > 0;
  $("no-matches").hidden = items.length > 0 || !all.length;
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
  showSettings();
  setAttached([]);
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
    .filter((m) => (m.role === "user" || m.role === "assistant") && (m.content.trim() || (m.images && m.images.length)))
    .slice(-MAX_HISTORY)
    .map(({ role, content, images }) => (images && images.length ? { role, content, images } : { role, content }));
}

/** What is sent: the system prompt, the newest turns that fit the model's context, the options. */
function requestOf(conversation) {
  const settings = conversation.settings || {};
  const model = store.get(conversation.model);
  const context = (model && model.context_length) || 2048;
  const reserve = Math.min(settings.max_tokens || 1024, Math.floor(context / 2));
  const system = settings.system && settings.system.trim() ? { role: "system", content: settings.system } : null;
  const fitted = fitToContext(system, historyOf(conversation), context, reserve);
  const options = {};
  if (typeof settings.temperature === "number") options.temperature = settings.temperature;
  if (settings.max_tokens) options.max_tokens = settings.max_tokens;
  const body = { model: conversation.model, messages: fitted.messages, stream: true };
  if (Object.keys(options).length) body.options = options;
  return { body, dropped: fitted.dropped, context };
}

/** Said once per conversation: the oldest turns are no longer sent. */
function noteTrimmed(conversation, context) {
  if (conversation.trimmedNoted) return;
  conversation.trimmedNoted = true;
  conversations.save(conversation);
  const note = h("p", { class: "notice info context-note", role: "status" },
    `This conversation is longer than ${modelName(conversation.model)} can read at once (${contextLabel(context)}): `
    + "its oldest messages are left out of what the model sees. The system prompt is always kept.");
  if (conversation === current) thread.insertBefore(note, thread.lastElementChild);
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
  if (g.thinking) {
    g.view.thought.block.hidden = false;
    g.view.thought.text.textContent = g.thinking;
  }
  if (g.text) renderInto(g.view.bubble, g.text);
  if (pinned) scrollToEnd();
}

function thinking() {
  return h("div", { class: "thinking", role: "img", "aria-label": "Waiting for the first words" }, h("span"), h("span"), h("span"));
}

async function ask(text) {
  const model = picker.value;
  const images = attached.map((a) => a.data);
  if (generation || !model || (!text.trim() && !images.length)) return;
  if (!current) current = conversations.create(model);
  if (!current.messages.length) thread.replaceChildren();
  current.model = model;
  const message = { role: "user", content: text, at: Date.now() };
  if (images.length) message.images = images;
  current.messages.push(message);
  if (current.title === "New chat") current.title = titleFrom(text || "Image");
  conversations.save(current);
  setAttached([]);
  renderList();
  thread.querySelectorAll(".regenerate").forEach((b) => b.remove());
  thread.append(userMessage(message, current.messages.length - 1));
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
  const g = { controller: new AbortController(), conversation, view, model, text: "", thinking: "", frame: 0, stopped: false };
  generation = g;
  picker.disabled = true;
  updateComposer();
  announce(status, `${modelName(model)} is answering…`);
  let stats = null;
  let failure = null;
  const asked = requestOf(conversation);
  if (asked.dropped) noteTrimmed(conversation, asked.context);
  try {
    const response = await request("/api/chat", {
      method: "POST",
      body: asked.body,
      signal: g.controller.signal,
      accept: "text/event-stream",
    });
    if (!(response.headers.get("Content-Type") || "").includes("text/event-stream")) {
      const body = await response.json(); // a server that did not stream: the whole answer at once
      g.text = body.response || "";
      g.thinking = body.thinking || "";
      stats = body;
    } else {
      for await (const { event, data } of serverEvents(response.body)) {
        if (event === "thinking" && typeof data.content === "string") {
          if (!g.thinkingSince) g.thinkingSince = performance.now();
          g.thinking += data.content;
          scheduleRender();
        } else if (event === "token" && typeof data.content === "string") {
          if (g.thinkingSince && !g.thoughtFor) {
            g.thoughtFor = (performance.now() - g.thinkingSince) / 1000;
            view.thought.summary.textContent = thoughtLabel(g.thoughtFor);
          }
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
    if (g.thinking) {
      message.thinking = g.thinking;
      message.thought_s = g.thoughtFor || (g.thinkingSince ? (performance.now() - g.thinkingSince) / 1000 : 0);
      view.thought.summary.textContent = thoughtLabel(message.thought_s);
      view.thought.text.textContent = g.thinking;
      view.thought.block.hidden = false;
    }
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
  if (failure && !g.text) {
    if (conversation === current) showError(failure, conversation);
    announce(status, `No answer: ${failure.message}`); // never left saying "... is answering"
  } else if (failure) announce(status, `The answer was cut short: ${failure.message}`);
  else if (g.stopped) announce(status, "Stopped.");
  else announce(status, "Answer complete.");
  picker.disabled = !available().length;
  updateComposer();
  if (conversation === current) offerRegenerate();
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

// -- settings, attachments, export and import ------------------------------------------------------------------

function showSettings() {
  const s = (current && current.settings) || {};
  settingsFields.system.value = s.system || "";
  settingsFields.temperature.value = typeof s.temperature === "number" ? String(s.temperature) : "";
  settingsFields.max_tokens.value = s.max_tokens ? String(s.max_tokens) : "";
}

function readSettings() {
  if (!current) return;
  const settings = {};
  if (settingsFields.system.value.trim()) settings.system = settingsFields.system.value;
  const t = settingsFields.temperature.valueAsNumber;
  if (Number.isFinite(t) && t >= 0 && t <= 2) settings.temperature = t;
  const m = settingsFields.max_tokens.valueAsNumber;
  if (Number.isInteger(m) && m >= 1) settings.max_tokens = m;
  current.settings = settings;
  if (current.messages.length) conversations.save(current);
}

for (const field of Object.values(settingsFields)) field.addEventListener("change", readSettings);

function setAttached(list) {
  attached = list;
  attachmentList.replaceChildren(...attached.map((a, i) => {
    const remove = h("button", { type: "button", class: "button small ghost", "aria-label": `Remove image ${a.name}` }, "✕");
    remove.addEventListener("click", () => setAttached(attached.filter((_, j) => j !== i)));
    return h("li", {}, h("img", { src: dataUrl(a.data), alt: a.name }), remove);
  }));
  attachmentList.hidden = attached.length === 0;
}

async function attach(files) {
  if (!files.length || attachButton.hidden) return;
  for (const file of files) {
    if (attached.length >= MAX_IMAGES) {
      announce(status, `At most ${MAX_IMAGES} images a message.`);
      showNotice(`At most ${MAX_IMAGES} images can go with one message.`);
      break;
    }
    try {
      const image = await readImage(file);
      setAttached([...attached, image]);
    } catch (err) {
      showNotice(err.message);
    }
  }
  announce(status, `${attached.length} image(s) attached.`);
}

function showNotice(text) {
  const box = h("p", { class: "notice warn attach-note", role: "alert" }, text);
  document.querySelectorAll(".attach-note").forEach((n) => n.remove());
  $("composer").before(box);
  setTimeout(() => box.remove(), 6000);
}

attachButton.addEventListener("click", () => $("image-input").click());
$("image-input").addEventListener("change", (e) => {
  attach([...e.target.files]);
  e.target.value = "";
});
prompt.addEventListener("paste", (e) => {
  const files = imageFiles(e.clipboardData);
  if (files.length && !attachButton.hidden) {
    e.preventDefault();
    attach(files);
  }
});
$("composer").addEventListener("dragover", (e) => {
  if (!attachButton.hidden && e.dataTransfer && [...e.dataTransfer.types].includes("Files")) {
    e.preventDefault();
    $("composer").classList.add("dropping");
  }
});
$("composer").addEventListener("dragleave", () => $("composer").classList.remove("dropping"));
$("composer").addEventListener("drop", (e) => {
  $("composer").classList.remove("dropping");
  const files = imageFiles(e.dataTransfer);
  if (files.length) {
    e.preventDefault();
    attach(files);
  }
});

$("export-md").addEventListener("click", () => {
  if (current && current.messages.length) download(fileName(current, "md"), "text/markdown", toMarkdown(current, modelName));
});
$("export-json").addEventListener("click", () => {
  if (current && current.messages.length) download(fileName(current, "json"), "application/json", toJson(current));
});
$("import").addEventListener("click", () => $("import-file").click());
$("import-file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file) return;
  try {
    const added = conversations.add(fromJson(await file.text()));
    openConversation(added.id);
    announce(status, `Imported “${added.title}”.`);
  } catch (err) {
    const box = $("undo");
    box.replaceChildren(h("span", {}, err.message));
    box.hidden = false;
    clearTimeout(undoTimer);
    undoTimer = setTimeout(() => {
      box.hidden = true;
    }, 8000);
  }
});
search.addEventListener("input", renderList);

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
