// What the pages say about a model: its specs, its size class, whether it can be chatted with.

import { billions, bytes, memory, price } from "./format.js";
import { h } from "./ui.js";

export const SIZES = {
  small: { label: "Under 2B", test: (b) => b < 2 },
  medium: { label: "2B to 5B", test: (b) => b >= 2 && b <= 5 },
  large: { label: "Over 5B", test: (b) => b > 5 },
};

export function sizeClass(model) {
  const b = billions(model.parameter_size);
  return Object.keys(SIZES).find((key) => SIZES[key].test(b)) || "";
}

export function priceLabel(model) {
  return model.free || !model.price_cents ? "Free" : price(model.price_cents, model.currency);
}

/** What a model can do, in Ollama's words, as the marketplace names it. */
export const CAPABILITIES = {
  completion: "Chat",
  vision: "Vision",
  tools: "Tools",
  thinking: "Thinking",
  embedding: "Embeddings",
};

export function can(model, capability) {
  const caps = model && Array.isArray(model.capabilities) ? model.capabilities : ["completion"];
  return caps.includes(capability);
}

/** An embedding-only model makes vectors, it cannot answer in a chat. */
export function canChat(model) {
  return can(model, "completion");
}

/** Chat works with installed models the visitor owns, and with installed free ones, that can chat. */
export function chattable(model) {
  return Boolean(model && model.install && model.install.state === "installed" && (model.owned || model.free) && canChat(model));
}

/** "128K tokens" */
export function contextLabel(tokens) {
  if (!tokens) return "–";
  return tokens >= 1024 ? `${Math.round(tokens / 1024)}K tokens` : `${tokens} tokens`;
}

export function capabilityList(model) {
  const caps = (Array.isArray(model.capabilities) ? model.capabilities : ["completion"]).filter((c) => CAPABILITIES[c]);
  return h("ul", { class: "capabilities", "aria-label": "Capabilities" },
    ...caps.map((c) => h("li", { class: `capability ${c}`, dataset: { capability: c } }, CAPABILITIES[c])));
}

export function specList(model) {
  const spec = (term, value, cls) => h("div", { class: cls }, h("dt", {}, term), h("dd", {}, value));
  return h(
    "dl",
    { class: "specs" },
    spec("Family", model.family || "–"),
    spec("Parameters", model.parameter_size || "–"),
    spec("Download", bytes(model.download_bytes)),
    spec("RAM needed", memory(model.ram_bytes)),
    spec("Context", contextLabel(model.context_length)),
    spec("Quantization", model.quantization || "–"),
    spec("License", model.license || "–", "license"),
  );
}
