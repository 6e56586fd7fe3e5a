// The operator's API reference (/api/docs): /api/openapi.json rendered as a list of routes with their
// parameters, request and response schemas, the error shape and the security schemes. No library and
// no CDN; every text goes in through textContent (the document is data, never markup).

import "./header.js";

const METHODS = ["get", "head", "post", "put", "patch", "delete"];
const SECURITY = { operatorToken: "operator", visitorCookie: "visitor", accountSession: "signed in", apiKey: "API key" };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function refName(ref) {
  return ref.split("/").pop();
}

/** A schema as compact text: `{ error: { code: string, message: string } }`; a $ref is expanded once per line of descent. */
export function schemaText(doc, schema, indent = "", seen = new Set()) {
  if (!schema || typeof schema !== "object") return "any";
  if (schema.$ref) {
    const name = refName(schema.$ref);
    const target = doc.components?.schemas?.[name];
    if (!target || seen.has(name)) return name;
    return `${name} ${schemaText(doc, target, indent, new Set([...seen, name]))}`;
  }
  for (const key of ["oneOf", "anyOf"]) {
    if (schema[key]) return schema[key].map((s) => schemaText(doc, s, indent, seen)).join(" | ");
  }
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  const type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type;
  if (type === "array") return `[${schemaText(doc, schema.items, indent, seen)}]`;
  if (schema.properties) {
    const inner = `${indent}  `;
    const required = new Set(schema.required || []);
    const lines = Object.entries(schema.properties).map(
      ([name, prop]) => `${inner}${name}${required.has(name) ? "" : "?"}: ${schemaText(doc, prop, inner, seen)}`,
    );
    return lines.length ? `{\n${lines.join(",\n")}\n${indent}}` : "{}";
  }
  const limits = [];
  if (schema.minLength !== undefined || schema.maxLength !== undefined) {
    limits.push(`length ${schema.minLength ?? 0}..${schema.maxLength ?? ""}`);
  }
  if (schema.minimum !== undefined || schema.maximum !== undefined) {
    limits.push(`${schema.minimum ?? ""}..${schema.maximum ?? ""}`);
  }
  return `${type || "any"}${limits.length ? ` (${limits.join(", ")})` : ""}`;
}

function who(doc, op) {
  const security = op.security ?? doc.security ?? [];
  const names = security.flatMap((req) => {
    const keys = Object.keys(req);
    return keys.length ? keys.map((k) => SECURITY[k] || k) : ["anyone"];
  });
  return names.length ? [...new Set(names)].join(" or ") : "anyone";
}

function contentBlocks(doc, content) {
  const out = [];
  for (const [type, media] of Object.entries(content || {})) {
    out.push(el("p", { class: "api-media" }, type), el("pre", { class: "api-schema", tabindex: "0" }, schemaText(doc, media.schema)));
  }
  return out;
}

function parameters(doc, params, route) {
  const rows = params.map((p) =>
    el(
      "tr",
      {},
      el("td", {}, el("code", {}, p.name)),
      el("td", {}, p.in),
      el("td", {}, p.required ? "yes" : "no"),
      el("td", {}, schemaText(doc, p.schema)),
      el("td", {}, p.description || ""),
    ),
  );
  const head = el("tr", {}, ...["name", "in", "required", "schema", "about"].map((h) => el("th", { scope: "col" }, h)));
  const region = { class: "table-scroll", tabindex: "0", role: "region", "aria-label": `Parameters of ${route}` };
  return el("div", region, el("table", { class: "api-params" }, el("thead", {}, head), el("tbody", {}, ...rows)));
}

function responses(doc, all) {
  const list = el("dl", { class: "api-responses" });
  for (const [status, raw] of Object.entries(all || {})) {
    const response = raw.$ref ? doc.components.responses[refName(raw.$ref)] : raw;
    const label = raw.$ref ? `${response.description} (${refName(raw.$ref)})` : response.description;
    list.append(el("dt", {}, status), el("dd", {}, label, ...(raw.$ref ? [] : contentBlocks(doc, response.content))));
  }
  return list;
}

function operation(doc, path, method, op) {
  const id = `${method}-${path}`.replace(/[^A-Za-z0-9]+/g, "-");
  const section = el(
    "section",
    { class: "card api-op", id, "data-route": `${method.toUpperCase()} ${path}` },
    el("h2", {}, el("span", { class: `api-method ${method}` }, method.toUpperCase()), " ", el("code", {}, path)),
    el("p", {}, op.summary || ""),
    el("p", { class: "api-who" }, `Who: ${who(doc, op)}`),
  );
  if (op.parameters?.length) section.append(el("h3", {}, "Parameters"), parameters(doc, op.parameters, `${method.toUpperCase()} ${path}`));
  if (op.requestBody) {
    section.append(el("h3", {}, `Request body${op.requestBody.required ? "" : " (optional)"}`));
    section.append(...contentBlocks(doc, op.requestBody.content));
  }
  section.append(el("h3", {}, "Responses"), responses(doc, op.responses));
  return [section, el("li", {}, el("a", { href: `#${id}` }, `${method.toUpperCase()} ${path}`))];
}

function components(doc) {
  const out = [el("h2", {}, "Error shape")];
  out.push(el("p", {}, doc.info?.description || ""));
  out.push(el("pre", { class: "api-schema", tabindex: "0" }, schemaText(doc, { $ref: "#/components/schemas/Error" })));
  out.push(el("h2", {}, "Security schemes"));
  const list = el("dl", { class: "api-responses" });
  for (const [name, scheme] of Object.entries(doc.components?.securitySchemes || {})) {
    const where = scheme.type === "http" ? `HTTP ${scheme.scheme}` : `${scheme.in} ${scheme.name}`;
    list.append(el("dt", {}, name), el("dd", {}, `${where}${scheme.description ? `: ${scheme.description}` : ""}`));
  }
  out.push(list);
  return out;
}

export function render(doc) {
  document.getElementById("title").textContent = `${doc.info.title} API ${doc.info.version}`;
  const toc = el("ul");
  const operations = document.getElementById("operations");
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      if (!ops[method]) continue;
      const [section, entry] = operation(doc, path, method, ops[method]);
      operations.append(section);
      toc.append(entry);
    }
  }
  document.getElementById("toc").append(toc);
  document.getElementById("components").append(...components(doc));
}

async function main() {
  const problem = document.getElementById("problem");
  try {
    const response = await fetch("/api/openapi.json", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`/api/openapi.json answered ${response.status}`);
    render(await response.json());
  } catch (error) {
    problem.textContent = `The API description could not be loaded: ${error.message}. Reload the page to try again.`;
    problem.hidden = false;
  }
}

main();
