// Numbers for people: sizes, speeds, time left, prices, model sizes.

const DECIMAL = ["B", "KB", "MB", "GB", "TB"];

/** Download sizes in decimal units (as Ollama shows them): 637700138 -> "638 MB". */
export function bytes(n) {
  if (!Number.isFinite(n) || n < 0) return "–";
  let i = 0;
  while (n >= 1000 && i < DECIMAL.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1).replace(/\.0$/, "")} ${DECIMAL[i]}`;
}

/** Memory in binary units, labelled the way people read RAM: 8589934592 -> "8 GB". */
export function memory(n) {
  if (!Number.isFinite(n) || n <= 0) return "–";
  const gib = n / 2 ** 30;
  if (gib >= 1) return `${gib.toFixed(1).replace(/\.0$/, "")} GB`;
  return `${Math.round(n / 2 ** 20)} MB`;
}

export function speed(bytesPerS) {
  return Number.isFinite(bytesPerS) && bytesPerS > 0 ? `${bytes(bytesPerS)}/s` : "";
}

/** Time left: 42 -> "42 s left", 190 -> "about 3 min left". */
export function eta(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 1) return "almost done";
  if (seconds < 60) return `${Math.ceil(seconds)} s left`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `about ${minutes} min left`;
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return `about ${h} h${m ? ` ${m} min` : ""} left`;
}

const priceFormats = new Map();

/** 499, "usd" -> "$4.99"; 0 -> "Free". */
export function price(cents, currency = "usd") {
  if (!cents) return "Free";
  const code = (currency || "usd").toUpperCase();
  if (!priceFormats.has(code)) {
    priceFormats.set(code, new Intl.NumberFormat(undefined, { style: "currency", currency: code }));
  }
  return priceFormats.get(code).format(cents / 100);
}

/** "1.1B" -> 1.1, "494.03M" -> 0.494, "7B" -> 7 (billions of parameters); NaN when unknown. */
export function billions(parameterSize) {
  const m = /^([\d.]+)\s*([KMBT])?/i.exec(String(parameterSize || ""));
  if (!m) return NaN;
  const scale = { K: 1e-6, M: 1e-3, B: 1, T: 1e3 }[(m[2] || "B").toUpperCase()];
  return Number(m[1]) * scale;
}

export function count(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

const relative = typeof Intl.RelativeTimeFormat === "function" ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

/** A timestamp (ms) as "just now", "5 min ago", "yesterday", or a date. */
export function ago(ms, now = Date.now()) {
  const s = Math.round((now - ms) / 1000);
  if (s < 45) return "just now";
  if (!relative) return new Date(ms).toLocaleDateString();
  if (s < 3600) return relative.format(-Math.round(s / 60), "minute");
  if (s < 86400) return relative.format(-Math.round(s / 3600), "hour");
  if (s < 7 * 86400) return relative.format(-Math.round(s / 86400), "day");
  return new Date(ms).toLocaleDateString();
}
