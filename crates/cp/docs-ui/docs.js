// Renders /openapi.json as a browsable reference with a "try it" form per operation.
"use strict";

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
};

let spec = null;

function resolve(schema) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return spec.components.schemas[name];
  }
  return schema;
}

// A compact example-shaped sketch of a schema, refs expanded to a small depth.
function sketch(schema, depth = 0) {
  schema = resolve(schema) || {};
  if (depth > 4) return "…";
  if (schema.oneOf || schema.anyOf) return (schema.oneOf || schema.anyOf).map((s) => sketch(s, depth + 1));
  if (schema.allOf) return Object.assign({}, ...schema.allOf.map((s) => sketch(s, depth + 1)));
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  if (schema.enum) return schema.enum.join(" | ");
  if (type === "object" || schema.properties) {
    const out = {};
    for (const [k, v] of Object.entries(schema.properties || {})) out[k] = sketch(v, depth + 1);
    if (schema.additionalProperties) out["<key>"] = sketch(schema.additionalProperties, depth + 1);
    return out;
  }
  if (type === "array") return [sketch(schema.items, depth + 1)];
  return type || "any";
}

function operationView(path, method, op) {
  const body = el("div", { class: "body" });
  for (const paragraph of [op.summary, op.description]) {
    if (paragraph) body.append(el("p", {}, paragraph));
  }
  const params = op.parameters || [];
  const inputs = {};
  if (params.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "description"), el("th", {}, "value")));
    for (const p of params) {
      const input = el("input", { name: p.name });
      inputs[p.name] = { input, where: p.in };
      table.append(el("tr", {}, el("td", {}, p.name + (p.required ? " *" : "")), el("td", {}, p.in), el("td", {}, p.description || ""), el("td", {}, input)));
    }
    body.append(table);
  }
  let bodyInput = null;
  const content = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (content) {
    body.append(el("h4", {}, "Request body"));
    bodyInput = el("textarea", {});
    bodyInput.value = JSON.stringify(sketch(content.schema), null, 2);
    body.append(bodyInput);
  }
  body.append(el("h4", {}, "Responses"));
  for (const [status, response] of Object.entries(op.responses || {})) {
    const schema = response.content && response.content["application/json"] && response.content["application/json"].schema;
    body.append(el("div", {}, el("strong", {}, status + " "), response.description || ""));
    if (schema) body.append(el("pre", {}, JSON.stringify(sketch(schema), null, 2)));
  }
  const output = el("pre", {});
  const button = el("button", {}, "Send request");
  button.addEventListener("click", async () => {
    let url = path;
    const query = new URLSearchParams();
    for (const [name, { input, where }] of Object.entries(inputs)) {
      if (!input.value) continue;
      if (where === "path") url = url.replace("{" + name + "}", encodeURIComponent(input.value));
      else if (where === "query") query.append(name, input.value);
    }
    if ([...query].length) url += "?" + query;
    const headers = {};
    const key = document.getElementById("api-key").value.trim();
    if (key.startsWith("wrn_")) headers["X-API-Key"] = key; else if (key) headers["Authorization"] = "Bearer " + key;
    const init = { method: method.toUpperCase(), headers };
    if (bodyInput) { headers["Content-Type"] = "application/json"; init.body = bodyInput.value; }
    output.textContent = "…";
    try {
      const response = await fetch(url, init);
      const text = await response.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
      output.textContent = response.status + " " + response.statusText + "\n" + shown;
    } catch (error) {
      output.textContent = String(error);
    }
  });
  body.append(el("h4", {}, "Try it"), button, output);
  // One sentence beside the path; the whole text inside.
  const text = op.summary || "";
  const firstSentence = text.split(/(?<=\.)\s/)[0];
  const summary = el("summary", {}, el("span", { class: "method " + method }, method), el("span", { class: "path" }, path), el("span", { class: "summary" }, firstSentence));
  const details = el("details", { class: "op", id: (op.operationId || method + path) }, summary, body);
  return details;
}

async function main() {
  spec = await (await fetch("/openapi.json")).json();
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  document.getElementById("description").textContent = spec.info.description || "";
  const byTag = new Map((spec.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of ["get", "post", "put", "patch", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operationView(path, method, op));
    }
  }
  const main = document.getElementById("operations");
  const nav = document.getElementById("nav");
  main.textContent = "";
  for (const [tag, ops] of byTag) {
    if (!ops.length) continue;
    const description = (spec.tags || []).find((t) => t.name === tag);
    main.append(el("h2", { id: "tag-" + tag }, tag), el("p", {}, (description && description.description) || ""), ...ops);
    nav.append(el("a", { href: "#tag-" + tag }, tag + " (" + ops.length + ")"));
  }
}

main().catch((error) => {
  document.getElementById("operations").textContent = "Could not load the API description: " + error;
});
