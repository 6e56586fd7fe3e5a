// Small DOM helpers shared by the pages. Text always goes in as text nodes, never as HTML.

/**
 * h("button", {class: "button", type: "button", onclick: fn}, "Buy ", h("span", {class: "sr-only"}, name))
 * Attributes: `class`, `dataset` (object), `on<event>` (listener), booleans set as properties
 * (hidden, disabled, checked...), everything else via setAttribute. Children: nodes, strings, null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el[key] = true;
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** A DOM id from a model id: "llama3.2:3b" -> "model-llama3-2-3b". */
export function modelAnchor(id) {
  return `model-${String(id).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")}`;
}

/** Copy text to the clipboard; true when it worked. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h("textarea", { class: "offscreen", readonly: "", "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/** A "Copy" button that says "Copied" for a moment. `text` is a string or a function returning one. */
export function copyButton(text, label = "Copy", extraClass = "") {
  const button = h("button", { type: "button", class: `button small ghost copy ${extraClass}`.trim() }, label);
  button.addEventListener("click", async () => {
    const ok = await copyText(typeof text === "function" ? text() : text);
    button.textContent = ok ? "Copied" : "Copy failed";
    button.classList.toggle("done", ok);
    setTimeout(() => {
      button.textContent = label;
      button.classList.remove("done");
    }, 1600);
  });
  return button;
}

/** Say something to screen readers (and show it when the region is visible). */
export function announce(region, text) {
  if (!region) return;
  region.textContent = "";
  // a fresh text node on the next frame makes repeated messages announced again
  requestAnimationFrame(() => {
    region.textContent = text;
  });
}
