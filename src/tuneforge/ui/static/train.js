// Train: a form over the training config (fields from the config dataclasses), the memory plan
// before start, start/stop/resume, live curves from metrics.jsonl, and the runs folder.
import { api, ApiFailure, el, toast } from "/ui/static/app.js";
import { lineChart } from "/ui/static/chart.js";
import { fieldBlock, formValues, showFieldError } from "/ui/static/form.js";

// Fields shown open; the others sit in a folded "more options" block of their section.
const FIRST = ["model", "method", "max_steps", "epochs", "lr", "batch_size", "report_to",
  "data.path", "data.format", "data.max_length", "data.val_fraction"];

let schema, fields, form, planBox, runsBox, runView;
let selected = null, poll = null, records = [], since = 0;

export async function show(main, info) {
  schema = await api("/ui/api/config-schema");
  fields = schema.sections.flatMap(s => s.fields);
  for (const field of fields) if (field.name === "model") field.default = info.model;
  const name = el("input", {type: "text", id: "run-name", value: `run-${new Date().toISOString().slice(5, 16).replace(/[-:T]/g, "")}`});
  form = el("div", {class: "panel", id: "train-form"},
    el("h2", {}, "New training run"),
    el("div", {class: "field"}, el("label", {for: "run-name"}, "run name"), name,
      el("div", {class: "help"}, `the run folder: ${schema.runs}/<name>`), el("div", {class: "field-error", id: "err-name"})),
    schema.sections.map(section => {
      const open = section.fields.filter(f => FIRST.includes(f.name));
      const more = section.fields.filter(f => !FIRST.includes(f.name));
      return el("div", {}, el("h3", {}, section.title), open.map(fieldBlock),
        el("details", {class: "section"}, el("summary", {}, `more ${section.title} options (${more.length})`), more.map(fieldBlock)));
    }),
    el("p", {class: "muted"}, "Set by the UI: " + Object.entries(schema.ui_sets).map(([k, v]) => `${k} (${v})`).join("; ")),
    el("div", {class: "row"},
      el("button", {id: "plan-btn", class: "secondary", onclick: () => plan()}, "Plan memory"),
      el("button", {id: "start-btn", onclick: () => start()}, "Start training")));
  planBox = el("div", {class: "panel", id: "plan"}, el("h2", {}, "Memory plan"),
    el("p", {class: "muted"}, "Plan memory (or start) to see the predicted peak before anything loads."));
  runsBox = el("div", {class: "panel", id: "runs"});
  runView = el("div", {class: "panel", id: "run-view"}, el("p", {class: "muted"}, "Pick a run to see its curves."));
  main.replaceChildren(el("div", {class: "grid"}, form, el("div", {}, planBox, runView, runsBox)));
  await refreshRuns();
}

function request() {
  return {name: document.getElementById("run-name").value, values: formValues(form, fields)};
}

function failed(error) {
  if (error instanceof ApiFailure && showFieldError(form, error.param, error.message)) return;
  showFieldError(form, null);
  toast(error.message);
}

function showPlan(plan) {
  const gib = plan.total_bytes / 2 ** 30;
  planBox.replaceChildren(el("h2", {}, "Memory plan"),
    el("p", {}, el("b", {id: "plan-total"}, gib >= 1 ? `${gib.toFixed(2)} GiB` : `${(plan.total_bytes / 2 ** 20).toFixed(1)} MiB`),
      ` predicted peak per ${plan.device_type} device`),
    el("pre", {id: "plan-table"}, plan.table));
}

async function plan() {
  try {
    showFieldError(form, null);
    showPlan(await api("/ui/api/train/plan", request()));
  } catch (error) { failed(error); }
}

async function start() {
  const body = request();
  try {
    showFieldError(form, null);
    showPlan(await api("/ui/api/train/plan", body));
    const started = await api("/ui/api/train/start", body);
    toast(`started: ${started.command}`);
    await refreshRuns();
    select(started.name);
  } catch (error) { failed(error); }
}

async function refreshRuns() {
  const {runs} = await api("/ui/api/runs");
  const rows = runs.map(run => {
    const s = run.summary || {};
    const actions = el("td", {},
      el("button", {class: "secondary", onclick: () => select(run.name)}, "view"), " ",
      ["running", "starting"].includes(run.status) ? el("button", {class: "secondary", "data-stop": run.name, onclick: () => act(run.name, "stop")}, "stop") : null,
      ["stopped", "finished"].includes(run.status) ? el("button", {class: "secondary", "data-resume": run.name, onclick: () => act(run.name, "resume")}, "resume") : null);
    return el("tr", {class: run.name === selected ? "selected" : "", "data-run": run.name},
      el("td", {}, run.name), el("td", {}, el("span", {class: `status ${run.status}`}, run.status)),
      el("td", {}, run.config ? `${run.config.method} · ${run.config.model}` : ""),
      el("td", {}, s.steps ?? ""), el("td", {}, s.final_loss != null ? s.final_loss.toFixed(4) : ""),
      el("td", {}, s.best_val_loss != null ? s.best_val_loss.toFixed(4) : ""),
      el("td", {}, s.tokens_per_s != null ? Math.round(s.tokens_per_s) : ""), actions);
  });
  runsBox.replaceChildren(el("h2", {}, `Runs in ${schema.runs}`),
    runs.length ? el("table", {id: "runs-table"},
      el("tr", {}, ["run", "status", "method · model", "steps", "final loss", "best val loss", "tokens/s", ""].map(h => el("th", {}, h))), rows)
    : el("p", {class: "muted"}, "No runs yet."));
}

async function act(name, action) {
  try {
    const answer = await api(`/ui/api/runs/${encodeURIComponent(name)}/${action}`, {});
    toast(action === "stop" ? `${name}: SIGTERM sent (checkpoint, then exit)` : `resumed: ${answer.command}`);
    await refreshRuns();
    select(name);
  } catch (error) { toast(error.message); }
}

function select(name) {
  if (selected !== name) { records = []; since = 0; }
  selected = name;
  clearTimeout(poll);
  for (const row of runsBox.querySelectorAll("tr[data-run]")) row.classList.toggle("selected", row.dataset.run === name);
  update();
}

function series(key) {
  return records.filter(r => typeof r[key] === "number").map(r => [r.step, r[key]]);
}

async function update() {
  const name = selected;
  let detail, fresh;
  try {
    [detail, fresh] = await Promise.all([
      api(`/ui/api/runs/${encodeURIComponent(name)}`),
      api(`/ui/api/runs/${encodeURIComponent(name)}/metrics?since=${since}`)]);
  } catch (error) { toast(error.message); return; }
  if (name !== selected) return;
  records = fresh.reset ? fresh.records : records.concat(fresh.records);
  since = fresh.next;
  const live = ["running", "starting"].includes(fresh.status);
  runView.replaceChildren(
    el("h2", {}, `${name} `, el("span", {class: `status ${fresh.status}`, id: "run-status"}, fresh.status)),
    el("div", {class: "charts"},
      el("div", {id: "chart-loss"}, lineChart("loss (train, validation)", [{name: "loss", points: series("loss")}, {name: "val_loss", points: series("val_loss")}])),
      el("div", {id: "chart-lr"}, lineChart("learning rate", [{name: "lr", points: series("lr")}])),
      el("div", {id: "chart-tps"}, lineChart("tokens / s", [{name: "tokens_per_s", points: series("tokens_per_s")}]))),
    detail.summary ? el("details", {open: true}, el("summary", {}, "summary.json"), el("pre", {id: "run-summary"}, JSON.stringify(detail.summary, null, 2))) : null,
    detail.config_text ? el("details", {}, el("summary", {}, "config.yaml (tuneforge train --config ... --resume continues it)"), el("pre", {}, detail.config_text)) : null,
    fresh.log ? el("details", {open: live || fresh.status === "failed"}, el("summary", {}, "log"), el("pre", {class: "log", id: "run-log"}, fresh.log)) : null);
  if (live) poll = setTimeout(update, 1000);
  else refreshRuns();
}
