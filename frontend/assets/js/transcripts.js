// A conversation out of the browser and back: Markdown and JSON exports, a checked JSON import, and what is
// sent to the model when a conversation is longer than its context (the oldest turns are left out).

import { titleFrom } from "./conversations.js";

export const FORMAT = "local-ai-studio.conversation";
const ROLES = ["system", "user", "assistant"];
const IMAGE_TOKENS = 768; // what Ollama counts for an image in a vision model's context

/** About how many tokens a message takes (4 characters a token, plus the images). */
export function tokensOf(message) {
  return Math.ceil((message.content || "").length / 4) + 4 + IMAGE_TOKENS * (message.images ? message.images.length : 0);
}

/**
 * The messages that fit in `context` tokens with `reserve` left for the answer: the system prompt always, then
 * the newest turns; {messages, dropped} where dropped counts the turns left out.
 */
export function fitToContext(system, turns, context, reserve) {
  const budget = Math.max(256, context - reserve) - (system ? tokensOf(system) : 0);
  const kept = [];
  let used = 0;
  for (let i = turns.length - 1; i >= 0; i -= 1) {
    const cost = tokensOf(turns[i]);
    if (kept.length && used + cost > budget) break; // the newest message always goes
    kept.unshift(turns[i]);
    used += cost;
  }
  // never start on an answer: its question was left out
  while (kept.length > 1 && kept[0].role === "assistant") kept.shift();
  return { messages: system ? [system, ...kept] : kept, dropped: turns.length - kept.length };
}

function stamp(ms) {
  return new Date(ms || Date.now()).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

export function toMarkdown(conversation, nameOf) {
  const lines = [`# ${conversation.title}`, "", `Model: ${nameOf(conversation.model)} (${conversation.model}) · ${stamp(conversation.updated)}`, ""];
  const system = conversation.settings && conversation.settings.system;
  if (system) lines.push("## System prompt", "", system, "");
  for (const m of conversation.messages) {
    lines.push(m.role === "user" ? "## You" : `## ${nameOf(m.model || conversation.model)}`, "");
    if (m.images && m.images.length) lines.push(`_(${m.images.length} image${m.images.length > 1 ? "s" : ""} attached)_`, "");
    lines.push(m.content, "");
  }
  return lines.join("\n");
}

export function toJson(conversation) {
  const { title, model, created, updated, settings, messages } = conversation;
  return JSON.stringify({ format: FORMAT, version: 1, conversation: { title, model, created, updated, settings: settings || {}, messages } }, null, 2);
}

/** A conversation from an exported JSON file (without its id), or an Error saying what is wrong with it. */
export function fromJson(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error("This file is not JSON: export a conversation as JSON to import it.");
  }
  const c = doc && doc.format === FORMAT ? doc.conversation : null;
  if (!c || !Array.isArray(c.messages)) throw new Error("This file is not a conversation exported from Local AI Studio.");
  const messages = c.messages.map((m, i) => {
    if (!m || !ROLES.includes(m.role) || typeof m.content !== "string") {
      throw new Error(`Message ${i + 1} of the file has no role or text.`);
    }
    const out = { role: m.role, content: m.content, at: Number(m.at) || Date.now() };
    if (Array.isArray(m.images)) out.images = m.images.filter((x) => typeof x === "string");
    if (typeof m.thinking === "string") out.thinking = m.thinking;
    if (typeof m.thought_s === "number") out.thought_s = m.thought_s;
    if (typeof m.model === "string") out.model = m.model;
    return out;
  });
  const s = c.settings && typeof c.settings === "object" ? c.settings : {};
  const settings = {};
  if (typeof s.system === "string") settings.system = s.system;
  if (typeof s.temperature === "number") settings.temperature = s.temperature;
  if (Number.isInteger(s.max_tokens)) settings.max_tokens = s.max_tokens;
  const first = messages.find((m) => m.role === "user");
  return {
    title: typeof c.title === "string" && c.title.trim() ? c.title : titleFrom(first ? first.content : "Imported chat"),
    model: typeof c.model === "string" ? c.model : "",
    created: Number(c.created) || Date.now(),
    settings,
    messages,
  };
}

/** Offer `text` as a file download. */
export function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function fileName(conversation, ext) {
  const base = conversation.title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "conversation";
  return `${base}.${ext}`;
}
