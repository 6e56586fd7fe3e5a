// A small, safe markdown renderer for model answers.
//
// It builds DOM nodes and puts every character the model wrote into text nodes (textContent), never into
// innerHTML, so `<script>` or `<img onerror>` in an answer shows as text. Supported: paragraphs (single
// newlines kept), headings, **bold**, *italic*, ~~strike~~, `inline code`, fenced code blocks with a copy
// button (an unclosed fence, as while streaming, runs to the end), bullet and numbered lists (nested by
// indentation), block quotes, rules, simple tables, and links: http(s) only, opened with rel=noopener.

import { copyButton, h } from "./ui.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_DIVIDER = /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/;

/** The markdown `text` as a DocumentFragment. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  blocks(String(text ?? "").replace(/\r\n?/g, "\n").split("\n"), fragment, false);
  return fragment;
}

/** Replace `container`'s content with the rendered `text`. */
export function renderInto(container, text) {
  container.replaceChildren(renderMarkdown(text));
}

function indentOf(line) {
  const m = /^[ \t]*/.exec(line)[0];
  return m.replace(/\t/g, "    ").length;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function blocks(lines, parent, tight) {
  let i = 0;
  let paragraphs = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length && !new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}\\s*$`).test(lines[i])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (or past the end while the answer is still streaming)
      parent.append(codeBlock(body.join("\n"), m[2]));
    } else if ((m = HEADING.exec(line))) {
      const level = Math.min(6, m[1].length + 2); // answers sit under the page's own h1/h2
      parent.append(inline(m[2], h(`h${level}`)));
      i += 1;
    } else if (RULE.test(line) && !ITEM.test(line)) {
      parent.append(h("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && lines[i].trim() && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
        inner.push(lines[i].replace(QUOTE, ""));
        i += 1;
      }
      const quote = h("blockquote");
      blocks(inner, quote, false);
      parent.append(quote);
    } else if (ITEM.test(line)) {
      i = list(lines, i, parent);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_DIVIDER.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      i = table(lines, i, parent);
    } else {
      const text = [];
      while (i < lines.length && lines[i].trim() && !(text.length && startsBlock(lines[i]))) {
        text.push(lines[i].trim());
        i += 1;
      }
      if (tight) {
        if (paragraphs) parent.append(h("br"));
        lineBroken(text, parent);
      } else {
        parent.append(lineBroken(text, h("p")));
      }
      paragraphs += 1;
    }
  }
}

function lineBroken(lines, parent) {
  lines.forEach((text, n) => {
    if (n) parent.append(h("br"));
    inline(text, parent);
  });
  return parent;
}

function codeBlock(code, lang) {
  const language = (lang || "").replace(/[^\w+#.-]/g, "").slice(0, 24);
  const codeEl = h("code", language ? { dataset: { lang: language } } : {}, code);
  return h(
    "div",
    { class: "codeblock" },
    h("div", { class: "codeblock-bar" }, h("span", { class: "codeblock-lang" }, language || "code"),
      copyButton(() => code, "Copy code")),
    h("pre", { tabindex: "0" }, codeEl),
  );
}

function list(lines, start, parent) {
  const first = ITEM.exec(lines[start]);
  const base = indentOf(first[1]);
  const ordered = /\d/.test(first[2]);
  const el = ordered ? h("ol") : h("ul");
  if (ordered) {
    const n = Number.parseInt(first[2], 10);
    if (n !== 1) el.setAttribute("start", String(n));
  }
  let i = start;
  let loose = false;
  const items = [];
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || indentOf(m[1]) > base + 1 || /\d/.test(m[2]) !== ordered) break;
    const content = [m[3]];
    const contentIndent = indentOf(m[1]) + m[2].length + 1;
    i += 1;
    while (i < lines.length) {
      const next = lines[i];
      if (!next.trim()) {
        // a blank line: the item goes on if what follows is indented under it, or the list goes on
        let j = i + 1;
        while (j < lines.length && !lines[j].trim()) j += 1;
        if (j < lines.length && indentOf(lines[j]) > base + 1) {
          content.push("");
          i = j;
          continue;
        }
        const after = j < lines.length && ITEM.exec(lines[j]);
        if (after && indentOf(after[1]) <= base + 1 && /\d/.test(after[2]) === ordered) loose = true;
        break;
      }
      const nested = ITEM.exec(next);
      if (nested && indentOf(nested[1]) <= base + 1) break; // the next item of this list
      if (indentOf(next) <= base && startsBlock(next)) break;
      content.push(next.slice(Math.min(indentOf(next), contentIndent)));
      i += 1;
    }
    items.push(content);
    while (i < lines.length && !lines[i].trim()) {
      const after = ITEM.exec(lines.slice(i).find((l) => l.trim()) || "");
      if (after && indentOf(after[1]) <= base + 1 && /\d/.test(after[2]) === ordered) i += 1;
      else break;
    }
  }
  for (const content of items) {
    const li = h("li");
    blocks(content, li, !loose);
    el.append(li);
  }
  parent.append(el);
  return i;
}

function cells(row) {
  return row.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

function table(lines, start, parent) {
  const head = cells(lines[start]);
  const aligns = cells(lines[start + 1]).map((c) => (c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : ""));
  const thead = h("thead", {}, h("tr", {}, head.map((c, n) => inline(c, h("th", { scope: "col", class: alignClass(aligns[n]) })))));
  const tbody = h("tbody");
  let i = start + 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
    const row = cells(lines[i]);
    tbody.append(h("tr", {}, head.map((_, n) => inline(row[n] ?? "", h("td", { class: alignClass(aligns[n]) })))));
    i += 1;
  }
  parent.append(h("div", { class: "table-scroll", tabindex: "0" }, h("table", {}, thead, tbody)));
  return i;
}

function alignClass(align) {
  return align ? `align-${align}` : null;
}

// -- inline -----------------------------------------------------------------------------------------------

const AUTOLINK = /^https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]]/;
const LINK = /^\[((?:[^\][]|\[[^\]]*\])*)\]\(\s*<?([^\s()<>]+(?:\([^\s()]*\)[^\s()<>]*)*)>?(?:\s+"[^"]*")?\s*\)/;

/** Safe link target: an absolute http(s) URL, else null. */
export function safeUrl(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function link(href, children) {
  return h("a", { href, rel: "noopener noreferrer nofollow", target: "_blank" }, children);
}

/** Render inline markdown from `text` into `parent` (returned). */
function inline(text, parent) {
  let plain = "";
  const flush = () => {
    if (plain) parent.append(document.createTextNode(plain));
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const rest = text.slice(i);
    if (c === "\\" && i + 1 < text.length && /[\\`*_{}[\]()#+\-.!~|<>]/.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      const ticks = /^`+/.exec(rest)[0];
      const close = findTicks(text, i + ticks.length, ticks.length);
      if (close >= 0) {
        flush();
        let code = text.slice(i + ticks.length, close);
        if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) code = code.slice(1, -1);
        parent.append(h("code", {}, code));
        i = close + ticks.length;
        continue;
      }
      plain += ticks;
      i += ticks.length;
      continue;
    }
    const emphasis = delimited(text, i);
    if (emphasis) {
      flush();
      parent.append(inline(emphasis.inner, h(emphasis.tag)));
      i = emphasis.end;
      continue;
    }
    if (c === "[") {
      const m = LINK.exec(rest);
      if (m) {
        flush();
        const href = safeUrl(m[2]);
        if (href) parent.append(inline(m[1], link(href, [])));
        else inline(m[1], parent); // not http(s): the words stay, the link goes
        i += m[0].length;
        continue;
      }
    }
    if ((c === "h" || c === "H") && (i === 0 || /[\s(*_]/.test(text[i - 1]))) {
      const m = AUTOLINK.exec(rest);
      const href = m && safeUrl(m[0]);
      if (href) {
        flush();
        parent.append(link(href, [m[0]]));
        i += m[0].length;
        continue;
      }
    }
    plain += c;
    i += 1;
  }
  flush();
  return parent;
}

function findTicks(text, from, n) {
  let i = from;
  while (i < text.length) {
    const j = text.indexOf("`", i);
    if (j < 0) return -1;
    let k = j;
    while (text[k] === "`") k += 1;
    if (k - j === n) return j;
    i = k;
  }
  return -1;
}

/** `**bold**`, `__bold__`, `*em*`, `_em_`, `~~del~~` starting at `i`: {tag, inner, end} or null. */
function delimited(text, i) {
  for (const [marker, tag] of [["**", "strong"], ["__", "strong"], ["~~", "del"], ["*", "em"], ["_", "em"]]) {
    if (!text.startsWith(marker, i)) continue;
    const open = i + marker.length;
    if (open >= text.length || /\s/.test(text[open])) continue;
    if (marker[0] === "_" && i > 0 && /\w/.test(text[i - 1])) continue; // snake_case is not emphasis
    let search = open + 1;
    while (search <= text.length) {
      const close = text.indexOf(marker, search);
      if (close < 0) break;
      const before = text[close - 1];
      const after = text[close + marker.length];
      const doubled = marker.length === 1 && (text[close + 1] === marker || before === marker);
      const intraword = marker[0] === "_" && after !== undefined && /\w/.test(after);
      if (!/\s/.test(before) && !doubled && !intraword) {
        return { tag, inner: text.slice(open, close), end: close + marker.length };
      }
      search = close + 1;
    }
  }
  return null;
}
