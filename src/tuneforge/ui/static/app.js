// The shell: API calls with the key, the element helper, and the page router.
// Each page is a module exporting `show(main)`; /ui/<page> loads it.

const KEY_COOKIE = "tuneforge_ui_key";

/** The API key the login form stored (the server may need none). */
function apiKey() {
  const entry = document.cookie.split("; ").find(c => c.startsWith(KEY_COOKIE + "="));
  return entry ? decodeURIComponent(entry.slice(KEY_COOKIE.length + 1)) : null;
}

/** An error answered by the server: `.param` names the field at fault, when one is. */
export class ApiFailure extends Error {
  constructor(message, status, param) { super(message); this.status = status; this.param = param; }
}

/** Request headers: the key, JSON, and the header that marks a write as the UI's own. */
export function headers(write = false, json = true) {
  const h = {};
  const key = apiKey();
  if (key) h["Authorization"] = `Bearer ${key}`;
  if (json) h["Content-Type"] = "application/json";
  if (write) h["X-Tuneforge-UI"] = "1";
  return h;
}

/** GET (no body) or POST (body) a JSON API path; throws ApiFailure on an error answer. */
export async function api(path, body, options = {}) {
  const write = body !== undefined;
  const response = await fetch(path, {
    method: write ? "POST" : "GET",
    headers: headers(write, !options.raw),
    body: write ? (options.raw ? body : JSON.stringify(body)) : undefined,
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiFailure(error.message || `${response.status} ${text.slice(0, 200)}`, response.status, error.param);
  }
  return data;
}

/** el("div", {class: "x", onclick: f}, child, "text", ...): an element; text is never HTML. */
export function el(tag, attributes = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "value" && !tag.startsWith("svg:")) node.value = value;
    else if (name === "checked") node.checked = Boolean(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let toastTimer = null;
/** A short message in the corner (errors that belong to no field). */
export function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

async function main() {
  const page = location.pathname.split("/")[2] || "train";
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  const root = document.getElementById("page");
  try {
    const info = await api("/ui/api/info");
    document.getElementById("where").textContent =
      `serving ${info.served_as} · runs in ${info.runs}` + (info.stores.length ? ` · stores ${info.stores.join(", ")}` : "");
    const module = await import(`/ui/static/${page}.js`);
    await module.show(root, info);
  } catch (error) {
    root.replaceChildren(el("div", {class: "error-box"}, String(error.message || error)));
  }
  document.body.dataset.ready = page;
}

main();
