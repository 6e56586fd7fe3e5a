// The account page: sign in / sign up (or a new password from a reset link) when signed out; the account,
// its usage chart (inline SVG), purchases, API keys and a "use it from your tools" snippet when signed in.

import { api, ApiError, request } from "./api.js";
import { currentAccount } from "./account-menu.js";
import { copyButton, h } from "./ui.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function showError(form, err) {
  const box = form.querySelector(".form-error");
  box.textContent = err instanceof ApiError ? err.message : String(err);
  if (err instanceof ApiError && err.retryAfter) box.textContent += ` (try again in ${err.retryAfter} s)`;
  box.hidden = false;
  const first = form.querySelector("input");
  if (first) first.setAttribute("aria-describedby", box.id || "");
}

function clearError(form) {
  const box = form.querySelector(".form-error");
  if (box) box.hidden = true;
}

function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await action(Object.fromEntries(new FormData(form)));
    } catch (err) {
      showError(form, err);
    } finally {
      button.disabled = false;
    }
  });
}

// -- signed out ---------------------------------------------------------------------------------------

function signedOut() {
  $("signed-out").hidden = false;
  const reset = new URLSearchParams(window.location.search).get("reset");
  if (reset) {
    $("reset").hidden = false;
    onSubmit($("reset"), async ({ password }) => {
      await api("/api/auth/reset", { method: "POST", body: { token: reset, password } });
      window.location.assign("/account?reset_done=1#sign-in");
    });
  }
  if (new URLSearchParams(window.location.search).get("reset_done")) {
    // The reset ended every session and revoked every API key: say so once, before signing in again.
    const ok = $("sign-in").querySelector(".form-ok");
    ok.textContent = "Password changed: every session ended and every API key was revoked. Sign in with the new password.";
    ok.hidden = false;
  }
  onSubmit($("sign-in"), async ({ email, password }) => {
    await api("/api/auth/login", { method: "POST", body: { email, password } });
    window.location.assign("/account");
  });
  $("forgot").addEventListener("click", async () => {
    const form = $("sign-in");
    clearError(form);
    const email = $("in-email").value.trim();
    if (!email) {
      showError(form, "Type your e-mail first, then ask for a reset link.");
      $("in-email").focus();
      return;
    }
    try {
      const answer = await api("/api/auth/forgot", { method: "POST", body: { email } });
      const ok = form.querySelector(".form-ok");
      ok.textContent = answer.message;
      ok.hidden = false;
    } catch (err) {
      showError(form, err);
    }
  });
  onSubmit($("sign-up"), async ({ email, password }) => {
    await api("/api/auth/signup", { method: "POST", body: { email, password } });
    window.location.assign("/account");
  });
  const target = window.location.hash === "#sign-up" ? "up-email" : "in-email";
  $(target).focus();
}

// -- signed in ----------------------------------------------------------------------------------------

function money(cents, currency) {
  if (!cents) return "Free";
  return new Intl.NumberFormat(undefined, { style: "currency", currency: (currency || "usd").toUpperCase() }).format(cents / 100);
}

function day(iso) {
  return iso ? new Date(iso).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" }) : "";
}

async function showPurchases() {
  const { purchases } = await api("/api/purchases");
  const body = $("purchases").querySelector("tbody");
  body.replaceChildren(
    ...purchases.map((p) =>
      h("tr", {}, h("td", {}, p.model), h("td", {}, day(p.created_at)), h("td", {}, money(p.amount_cents, p.currency)),
        h("td", {}, p.status === "paid" ? "Paid" : p.status)),
    ),
  );
  $("no-purchases").hidden = purchases.length > 0;
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

async function showUsage() {
  const { usage, days } = await api("/api/account/usage?days=30");
  const dates = [];
  for (let i = days - 1; i >= 0; i -= 1) dates.push(new Date(Date.now() - i * 86400000).toISOString().slice(0, 10));
  const models = [...new Set(usage.map((u) => u.model))].sort();
  const perDay = new Map(dates.map((d) => [d, new Map()]));
  let total = 0;
  for (const u of usage) {
    const tokens = u.prompt_tokens + u.completion_tokens;
    total += tokens;
    perDay.get(u.day)?.set(u.model, tokens);
  }
  const max = Math.max(1, ...[...perDay.values()].map((m) => [...m.values()].reduce((a, b) => a + b, 0)));
  const width = 600;
  const height = 160;
  const bar = width / dates.length;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, class: "usage-svg", "aria-hidden": "true" });
  dates.forEach((d, i) => {
    let y = height;
    models.forEach((m, k) => {
      const tokens = perDay.get(d).get(m) || 0;
      if (!tokens) return;
      const tall = (tokens / max) * (height - 10);
      y -= tall;
      const rect = svg("rect", { x: i * bar + 1, y, width: Math.max(1, bar - 2), height: tall, class: `series-${k % 6}` });
      rect.append(Object.assign(document.createElementNS(SVG, "title"), { textContent: `${d} · ${m}: ${tokens} tokens` }));
      chart.append(rect);
    });
  });
  chart.append(svg("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis" }));
  const legend = h("ul", { class: "legend" }, models.map((m, k) => h("li", {}, h("span", { class: `swatch series-${k % 6}` }), m)));
  $("usage-chart").replaceChildren(chart, legend);
  $("usage-chart").setAttribute("aria-label", `Tokens per day over ${days} days: ${total} in all`);
  $("usage-summary").textContent = total
    ? `${total.toLocaleString()} tokens over ${days} days across ${models.length} model${models.length === 1 ? "" : "s"}.`
    : "No chats yet in the last 30 days.";
}

async function showKeys() {
  const { keys } = await api("/api/account/keys");
  $("keys").replaceChildren(
    ...keys.map((k) => {
      const revoke = h("button", { type: "button", class: "button small danger" }, "Revoke", h("span", { class: "sr-only" }, ` ${k.name}`));
      const confirm = h("button", { type: "button", class: "button small danger", hidden: true }, "Yes, revoke it");
      const cancel = h("button", { type: "button", class: "button small ghost", hidden: true }, "Keep it");
      const asking = (on) => {
        revoke.hidden = on;
        confirm.hidden = !on;
        cancel.hidden = !on;
        (on ? confirm : revoke).focus();
      };
      revoke.addEventListener("click", () => asking(true));
      cancel.addEventListener("click", () => asking(false));
      confirm.addEventListener("click", async () => {
        try {
          await request(`/api/account/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
          await showKeys();
        } catch (err) {
          $("key-error").textContent = err.message;
          $("key-error").hidden = false;
        }
      });
      return h("li", { class: "key", dataset: { id: k.id } },
        h("span", { class: "key-name" }, k.name), h("code", {}, `${k.prefix}…`),
        h("span", { class: "hint" }, `created ${day(k.created)}`, k.last_used ? ` · last used ${day(k.last_used)}` : " · never used"),
        revoke, confirm, cancel);
    }),
  );
}

let shownKey = "sk-studio-…";

function renderSnippets() {
  const model = $("snippet-model").value || "tinyllama:latest";
  const base = `${window.location.origin}/v1`;
  $("snippet-curl").textContent =
    `curl ${base}/chat/completions \\\n  -H "Authorization: Bearer ${shownKey}" \\\n  -H "Content-Type: application/json" \\\n` +
    `  -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello"}]}'`;
  $("snippet-python").textContent =
    `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}", api_key="${shownKey}")\n` +
    `reply = client.chat.completions.create(\n    model="${model}",\n    messages=[{"role": "user", "content": "Hello"}],\n)\n` +
    "print(reply.choices[0].message.content)";
}

async function showSnippets() {
  let models = [];
  try {
    models = (await api("/v1/models")).data.map((m) => m.id);
  } catch {
    models = [];
  }
  $("snippet-model").replaceChildren(...models.map((m) => h("option", { value: m }, m)));
  $("snippet-model").addEventListener("change", renderSnippets);
  renderSnippets();
}

function wireKeyForm() {
  const form = $("new-key");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("key-error").hidden = true;
    try {
      const created = await api("/api/account/keys", { method: "POST", body: { name: $("key-name").value } });
      shownKey = created.key;
      const shown = $("new-key-shown");
      shown.replaceChildren(
        h("p", {}, h("strong", {}, `Your new key "${created.name}"`), ": copy it now, it will not be shown again."),
        h("p", {}, h("code", { id: "new-key-value" }, created.key), " ", copyButton(created.key, "Copy key")),
      );
      shown.hidden = false;
      form.reset();
      renderSnippets();
      await showKeys();
    } catch (err) {
      $("key-error").textContent = err.message;
      $("key-error").hidden = false;
    }
  });
}

async function signedIn(account) {
  $("signed-in").hidden = false;
  $("account-email").textContent = account.email;
  $("account-role").textContent = account.role === "operator" ? "operator" : "member";
  $("account-since").textContent = day(account.created);
  $("sign-out-everywhere").addEventListener("click", async () => {
    const keys = $("sign-out-keys").checked ? "&keys=1" : "";
    await request(`/api/auth/logout?everywhere=1${keys}`, { method: "POST" });
    window.location.assign("/");
  });
  onSubmit($("password"), async ({ current, new: next }) => {
    await request("/api/account/password", { method: "POST", body: { current, new: next } });
    $("password").reset();
    $("password").querySelector(".form-ok").hidden = false;
  });
  wireKeyForm();
  await Promise.all([showPurchases(), showUsage(), showKeys(), showSnippets()]);
}

const account = await currentAccount();
if (account) await signedIn(account);
else signedOut();
