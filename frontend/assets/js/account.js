// The account page: sign in / sign up (or a new password from a reset link) when signed out; the account,
// its usage chart (inline SVG), purchases, API keys and a "use it from your tools" snippet when signed in.

import { api, ApiError, request } from "./api.js";
import { currentAccount } from "./account-menu.js";
import { barChart, daysBetween } from "./charts.js";
import { copyButton, h } from "./ui.js";

const $ = (id) => document.getElementById(id);

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

async function showUsage() {
  const { usage, days } = await api("/api/account/usage?days=30");
  const to = new Date().toISOString().slice(0, 10);
  const span = daysBetween(new Date(Date.now() - (days - 1) * 86400000).toISOString().slice(0, 10), to);
  const models = [...new Set(usage.map((u) => u.model))].sort();
  const series = models.map((m, k) => ({
    name: m,
    className: `series-${k % 6}`,
    values: span.map((d) => usage.filter((u) => u.day === d && u.model === m).reduce((a, u) => a + u.prompt_tokens + u.completion_tokens, 0)),
  }));
  barChart($("usage-chart"), { days: span, series, stacked: true, title: "Tokens per day", unit: " tokens" });
  const total = series.reduce((a, s) => a + s.values.reduce((x, y) => x + y, 0), 0);
  $("usage-summary").textContent = total
    ? `${total.toLocaleString("en-US")} tokens over ${days} days across ${models.length} model${models.length === 1 ? "" : "s"}.`
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
          if (k.id === shownKeyId) forgetShownKey(); // a dead key must not stay on screen, nor in the snippets
          $("key-status").textContent = `Key "${k.name}" revoked: it no longer works anywhere.`;
          $("key-status").hidden = false;
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

const KEY_PLACEHOLDER = "sk-studio-…";
let shownKey = KEY_PLACEHOLDER;
let shownKeyId = null;

function forgetShownKey() {
  shownKey = KEY_PLACEHOLDER;
  shownKeyId = null;
  $("new-key-shown").replaceChildren();
  $("new-key-shown").hidden = true;
  renderSnippets();
}

// One set-up per tool (docs/api-clients.md has the same): [id, title, text for (origin, key, model)].
const SNIPPETS = [
  ["curl", "curl", (o, k, m) =>
    `curl ${o}/v1/chat/completions \\\n  -H "Authorization: Bearer ${k}" \\\n  -H "Content-Type: application/json" \\\n` +
    `  -d '{"model": "${m}", "messages": [{"role": "user", "content": "Hello"}]}'`],
  ["python", "Python, the openai SDK (pip install openai)", (o, k, m) =>
    `from openai import OpenAI\n\nclient = OpenAI(base_url="${o}/v1", api_key="${k}")\n` +
    `reply = client.chat.completions.create(\n    model="${m}",\n    messages=[{"role": "user", "content": "Hello"}],\n)\n` +
    "print(reply.choices[0].message.content)"],
  ["anthropic", "Python, the anthropic SDK (pip install anthropic)", (o, k, m) =>
    `import anthropic\n\nclient = anthropic.Anthropic(base_url="${o}", api_key="${k}")\n` +
    `reply = client.messages.create(\n    model="${m}",\n    max_tokens=1024,\n` +
    `    messages=[{"role": "user", "content": "Hello"}],\n)\nprint(reply.content[0].text)`],
  ["claude-code", "Claude Code", (o, k, m) =>
    `export ANTHROPIC_BASE_URL=${o}\nexport ANTHROPIC_AUTH_TOKEN=${k}\n` +
    `export ANTHROPIC_DEFAULT_HAIKU_MODEL=${m}\nexport CLAUDE_CODE_SUBAGENT_MODEL=${m}\nclaude --model ${m}`],
  ["codex", "Codex CLI (~/.codex/config.toml, then export the key)", (o, k, m) =>
    `model = "${m}"\nmodel_provider = "studio"\n\n[model_providers.studio]\nname = "Local AI Studio"\n` +
    `base_url = "${o}/v1"\nenv_key = "STUDIO_API_KEY"\nwire_api = "responses"\n\n` +
    `# in your shell:\n# export STUDIO_API_KEY=${k}\n# codex exec --skip-git-repo-check "Hello"`],
  ["langchain", "LangChain (pip install langchain-openai)", (o, k, m) =>
    `from langchain_openai import ChatOpenAI\n\nllm = ChatOpenAI(base_url="${o}/v1", api_key="${k}", model="${m}")\n` +
    `print(llm.invoke("Hello").content)`],
  ["open-webui", "Open WebUI (Admin settings, Connections, OpenAI API; or its environment)", (o, k) =>
    `OPENAI_API_BASE_URL=${o}/v1\nOPENAI_API_KEY=${k}`],
  ["llm", "llm (extra-openai-models.yaml beside llm's logs.db)", (o, k, m) =>
    `- model_id: studio-${m}\n  model_name: ${m}\n  api_base: "${o}/v1"\n  api_key_name: studio\n\n` +
    `# then: llm keys set studio   (paste ${k})\n#       llm -m studio-${m} "Hello"`],
];

function renderSnippets() {
  const model = $("snippet-model").value || "tinyllama:latest";
  const origin = window.location.origin;
  $("snippets").replaceChildren(
    ...SNIPPETS.map(([id, title, text]) => {
      const body = text(origin, shownKey, model);
      const heading = h("h3", { id: `snippet-${id}-title` }, title);
      const pre = h("pre", { id: `snippet-${id}`, tabindex: "0", "aria-labelledby": `snippet-${id}-title` }, body);
      return h("section", { class: "snippet" }, heading, pre, copyButton(() => pre.textContent, `Copy the ${title} set-up`));
    }),
  );
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
      shownKeyId = created.id;
      $("key-status").hidden = true;
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
