// Compare: the reports of `tuneforge compare` (fine-tuning vs RAG), and a form that starts one.
// The form's options come from the compare command's own parser, so new options appear here.
import { api, el, toast } from "/ui/static/app.js";
import { fieldBlock, formValues } from "/ui/static/form.js";

let options, listBox, viewBox, poll = null;

export async function show(main) {
  ({options} = await api("/ui/api/compare/options"));
  const fields = options.map(o => ({...o, optional: !o.required && o.kind !== "bool",
    help: `${o.flag}: ${o.help}` + (o.repeatable ? " (several: a,b)" : "")}));
  const name = el("input", {type: "text", id: "compare-name", value: "compare-1"});
  const form = el("div", {class: "panel", id: "compare-form"},
    el("h2", {}, "Run a comparison"),
    el("p", {class: "muted"}, "Runs tuneforge compare as a separate process; its report appears here when it is done."),
    el("div", {class: "field"}, el("label", {for: "compare-name"}, "name"), name,
      el("div", {class: "help"}, "the output folder: runs/compare/<name>")),
    fields.map(fieldBlock),
    el("div", {class: "row"}, el("button", {id: "compare-start", onclick: () => start()}, "Run compare")));
  listBox = el("div", {class: "panel", id: "reports"});
  viewBox = el("div", {class: "panel", id: "report-view"}, el("p", {class: "muted"}, "Pick a report."));
  main.replaceChildren(el("div", {class: "grid"}, form, el("div", {}, listBox, viewBox)));
  await refresh(true);

  async function start() {
    const values = formValues(form, fields);
    for (const o of fields) if (o.repeatable && values[o.name]) values[o.name] = values[o.name].split(",").map(s => s.trim());
    try {
      const started = await api("/ui/api/compare/start", {name: name.value, options: values});
      toast(`started: ${started.command}`);
      await refresh(false, started.name);
    } catch (error) { toast(error.message); }
  }
}

async function refresh(first, focus) {
  clearTimeout(poll);
  const {reports} = await api("/ui/api/compare/reports");
  listBox.replaceChildren(el("h2", {}, "Comparisons"),
    reports.length ? el("table", {id: "reports-table"},
      el("tr", {}, ["name", "state", ""].map(h => el("th", {}, h))),
      reports.map(r => el("tr", {"data-report": r.name},
        el("td", {}, r.name),
        el("td", {}, el("span", {class: `status ${r.running ? "running" : r.has_report ? "finished" : r.exit_code ? "failed" : "stopped"}`},
          r.running ? "running" : r.has_report ? "report ready" : r.exit_code ? `failed (exit ${r.exit_code})` : "no report")),
        el("td", {}, r.has_report ? el("button", {class: "secondary", onclick: () => open(r.name)}, "open") : null,
          r.running ? el("button", {class: "secondary", onclick: () => stop(r.name)}, "stop") : null))))
    : el("p", {class: "muted"}, "No comparison yet."));
  const shown = reports.find(r => r.name === focus) || (first && reports.find(r => r.has_report));
  if (shown && shown.has_report && (first || focus)) open(shown.name);
  else if (shown) viewBox.replaceChildren(el("h2", {}, shown.name), el("pre", {class: "log", id: "compare-log"}, shown.log || "starting..."));
  if (reports.some(r => r.running)) poll = setTimeout(() => refresh(false, focus), 2000);
}

async function stop(name) {
  try { await api(`/ui/api/compare/${encodeURIComponent(name)}/stop`, {}); await refresh(false, name); }
  catch (error) { toast(error.message); }
}

function open(name) {
  viewBox.replaceChildren(el("h2", {}, name),
    el("iframe", {class: "report", id: "report-frame", title: `compare report ${name}`,
      src: `/ui/api/compare/${encodeURIComponent(name)}/report`}));
}
