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

/** Chat works with installed models the visitor owns, and with installed free ones. */
export function chattable(model) {
  return Boolean(model && model.install && model.install.state === "installed" && (model.owned || model.free));
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
    spec("License", model.license || "–", "license"),
  );
}
