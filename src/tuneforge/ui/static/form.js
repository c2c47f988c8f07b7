// Form fields drawn from field descriptions ({name, kind, optional, default, choices, help}):
// the training config's (from the dataclasses) and the compare command's (from its parser).
import { el } from "/ui/static/app.js";

/** The element id of a field: dots (data.max_length) become "__". */
export function fieldId(name) { return "f-" + name.replaceAll(".", "__"); }
export function errorId(name) { return "err-" + name.replaceAll(".", "__"); }

function text(value) {
  if (value === null || value === undefined) return "";
  return Array.isArray(value) ? value.join(",") : String(value);
}

/** One field: label, input (checkbox, select or text box), help line, error slot. */
export function fieldBlock(field) {
  const id = fieldId(field.name);
  let input;
  if (field.kind === "bool") {
    input = el("input", {type: "checkbox", id, name: field.name, checked: Boolean(field.default)});
  } else if (field.choices && field.kind !== "list") {
    const options = field.optional || field.default === null ? [el("option", {value: ""}, "")] : [];
    input = el("select", {id, name: field.name},
      options, field.choices.map(c => el("option", {value: c, selected: String(c) === text(field.default)}, c)));
  } else {
    const hint = field.kind === "list" ? (field.choices ? field.choices.join(",") : "a,b") :
      (field.optional ? "(empty: none)" : "");
    input = el("input", {type: "text", id, name: field.name, value: text(field.default), placeholder: hint});
  }
  const label = el("label", {for: id}, field.name.replace(/^data\./, ""),
    el("span", {class: "muted"}, ` ${field.kind}${field.optional ? " or empty" : ""}`));
  const help = el("div", {class: "help"}, field.help);
  const error = el("div", {class: "field-error", id: errorId(field.name), role: "alert"});
  return field.kind === "bool"
    ? el("div", {class: "field check"}, input, " ", label, help, error)
    : el("div", {class: "field"}, label, input, help, error);
}

/** The values of fields inside `container`: text as typed, checkboxes as booleans. */
export function formValues(container, fields) {
  const values = {};
  for (const field of fields) {
    const input = container.querySelector("#" + CSS.escape(fieldId(field.name)));
    if (!input) continue;
    values[field.name] = field.kind === "bool" ? input.checked : input.value;
  }
  return values;
}

/** Clear every field error, then show `message` next to `name` (or return false if no such field). */
export function showFieldError(container, name, message) {
  for (const node of container.querySelectorAll(".field-error")) node.textContent = "";
  for (const node of container.querySelectorAll(".field.invalid")) node.classList.remove("invalid");
  if (!name) return false;
  const slot = container.querySelector("#" + CSS.escape(errorId(name)));
  if (!slot) return false;
  slot.textContent = message;
  slot.parentElement.classList.add("invalid");
  slot.parentElement.scrollIntoView({block: "center"});
  return true;
}
