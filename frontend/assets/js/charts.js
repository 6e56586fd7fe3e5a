// Charts for the console and the account page: inline SVG drawn here, no library, nothing from another
// site. Each chart is an <svg role="img"> with a one-line summary as its name, and its numbers as a real
// <table> beside it (in a <details>), so screen readers and keyboard users get the same facts.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A round axis maximum (1, 2, 5 x 10^n) at or above `value`. */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= value);
}

/** "2026-12-06" -> "6 Dec" (UTC: the days are UTC days). */
export function dayLabel(day) {
  const d = new Date(`${day}T00:00:00Z`);
  return d.toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
}

/** Every UTC day from `from` to `to` (YYYY-MM-DD), inclusive. */
export function daysBetween(from, to) {
  const out = [];
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`); t += 86400000) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

function compact(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(n * 100) / 100);
}

/**
 * Bars per day: `days` (YYYY-MM-DD, in order), `series` [{name, values: [per day], className}], drawn
 * side by side (`stacked` false) or on top of each other. A y axis with three ticks, day labels along
 * the x axis (every few days so they never collide), a legend, and the table beside it.
 */
export function barChart(container, { days, series, stacked = false, title, unit = "", format = compact }) {
  const width = 640;
  const height = 220;
  const left = 44;
  const bottom = 26;
  const top = 10;
  const plotW = width - left - 8;
  const plotH = height - top - bottom;
  const totals = days.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const peak = stacked ? Math.max(0, ...totals) : Math.max(0, ...series.flatMap((s) => s.values));
  const counts = series.every((s) => s.values.every((v) => Number.isInteger(v || 0)));
  const max = counts ? Math.max(niceMax(peak), 2) : niceMax(peak); // counts: whole ticks (0, 1, 2), never 0.5
  const slot = plotW / Math.max(days.length, 1);
  const y = (v) => top + plotH - (v / max) * plotH;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", preserveAspectRatio: "none" });
  const everything = series.reduce((sum, s) => sum + s.values.reduce((a, b) => a + b, 0), 0);
  const summary = `${title}: ${series.map((s) => `${s.name} ${format(s.values.reduce((a, b) => a + b, 0))}${unit}`).join(", ")} over ${days.length} days`;
  chart.setAttribute("aria-label", summary);
  for (const tick of [0, max / 2, max]) {
    chart.append(
      svg("line", { x1: left, x2: width - 8, y1: y(tick), y2: y(tick), class: tick ? "grid" : "axis" }),
      svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end", class: "tick" }, format(tick)),
    );
  }
  const every = Math.ceil(days.length / 6);
  days.forEach((day, i) => {
    const x0 = left + i * slot;
    if ((days.length - 1 - i) % every === 0) {
      chart.append(svg("text", { x: x0 + slot / 2, y: height - 8, "text-anchor": "middle", class: "tick" }, dayLabel(day)));
    }
    let base = 0;
    const barW = stacked ? slot * 0.7 : (slot * 0.8) / series.length;
    series.forEach((s, k) => {
      const v = s.values[i] || 0;
      if (!v) return;
      const x = stacked ? x0 + slot * 0.15 : x0 + slot * 0.1 + k * barW;
      const y1 = y(stacked ? base + v : v);
      const y0 = y(stacked ? base : 0);
      base += stacked ? v : 0;
      const bar = svg("rect", { x, y: y1, width: Math.max(barW - 1, 1), height: Math.max(y0 - y1, 1), class: `bar ${s.className}` });
      bar.dataset.day = day;
      bar.dataset.series = s.name;
      bar.dataset.value = String(v);
      bar.append(svg("title", {}, `${dayLabel(day)}, ${s.name}: ${format(v)}${unit}`));
      chart.append(bar);
    });
  });
  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const s of series) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${s.className}`;
    li.append(swatch, s.name);
    legend.append(li);
  }
  const table = dataTable(
    title,
    ["Day", ...series.map((s) => s.name)],
    days.map((day, i) => [dayLabel(day), ...series.map((s) => `${format(s.values[i] || 0)}${unit}`)]).filter((_, i) =>
      series.some((s) => s.values[i])),
  );
  const empty = document.createElement("p");
  empty.className = "chart-empty";
  empty.textContent = everything ? "" : "Nothing yet in these 30 days.";
  container.replaceChildren(chart, legend, table);
  if (!everything) container.append(empty);
  container.dataset.points = String(chart.querySelectorAll("rect.bar").length);
}

/** Horizontal bars, one per label: [{label, value, note}] (answers in flight per Ollama node...). */
export function barList(container, rows, { title, format = compact }) {
  const max = niceMax(Math.max(0, ...rows.map((r) => r.value)));
  const list = document.createElement("ul");
  list.className = "bar-list";
  list.setAttribute("aria-label", title);
  for (const r of rows) {
    const li = document.createElement("li");
    li.dataset.label = r.label;
    li.dataset.value = String(r.value);
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = r.label;
    const figure = document.createElement("span");
    figure.className = "bar-figure";
    figure.textContent = `${format(r.value)}${r.note ? ` · ${r.note}` : ""}`;
    const track = svg("svg", { viewBox: "0 0 100 6", preserveAspectRatio: "none", class: "bar-track", "aria-hidden": "true" });
    track.append(svg("rect", { x: 0, y: 0, width: 100, height: 6, rx: 3, class: "track" }));
    if (r.value) track.append(svg("rect", { x: 0, y: 0, width: (100 * r.value) / max, height: 6, rx: 3, class: "bar series-0" }));
    li.append(name, figure, track);
    list.append(li);
  }
  container.replaceChildren(list);
}

/** The numbers behind a chart: a real table, folded away under "Table" (screen readers get it as is). */
export function dataTable(caption, head, rows) {
  const details = document.createElement("details");
  details.className = "chart-table";
  const summary = document.createElement("summary");
  summary.textContent = `${caption}: the numbers`;
  const scroll = document.createElement("div");
  scroll.className = "table-scroll";
  scroll.tabIndex = 0;
  scroll.setAttribute("role", "region");
  scroll.setAttribute("aria-label", `${caption}, table`);
  const table = document.createElement("table");
  table.className = "data-table";
  const cap = document.createElement("caption");
  cap.className = "sr-only";
  cap.textContent = caption;
  const thead = table.createTHead().insertRow();
  for (const h of head) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = h;
    thead.append(th);
  }
  const body = table.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    for (const v of r) tr.insertCell().textContent = v;
  }
  if (!rows.length) body.insertRow().insertCell().textContent = "No data yet.";
  table.prepend(cap);
  scroll.append(table);
  details.append(summary, scroll);
  return details;
}
