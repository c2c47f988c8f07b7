// Data: open a file, see its invalid records by line, token lengths, and one example with the
// tokens that carry loss highlighted (what `tuneforge data inspect` prints).
import { api, ApiFailure, el, toast } from "/ui/static/app.js";
import { barChart } from "/ui/static/chart.js";
import { fieldBlock, formValues, showFieldError } from "/ui/static/form.js";

export async function show(main, info) {
  const schema = await api("/ui/api/config-schema");
  const dataFields = schema.sections.find(s => s.title === "data").fields.filter(f => f.name !== "data.path");
  const path = el("input", {type: "text", id: "data-path", class: "wide", placeholder: "train.jsonl, a folder, or demo"});
  const upload = el("input", {type: "file", id: "data-file", accept: ".jsonl,.json,.csv,.parquet"});
  const model = el("input", {type: "text", id: "data-model", class: "wide", value: info.model});
  const example = el("input", {type: "text", id: "data-example", class: "wide", value: "0"});
  const options = el("details", {class: "section"}, el("summary", {}, "data options (as training reads them)"),
    dataFields.map(fieldBlock));
  const results = el("div", {id: "data-results"});
  const form = el("div", {class: "panel"},
    el("h2", {}, "Open a data file"),
    el("div", {class: "field"}, el("label", {for: "data-path"}, "file on this machine"), path, el("div", {class: "field-error", id: "err-data__path"})),
    el("div", {class: "field"}, el("label", {for: "data-file"}, "or upload one"), upload),
    el("div", {class: "field"}, el("label", {for: "data-model"}, "model (its tokenizer and chat template)"), model),
    el("div", {class: "field"}, el("label", {for: "data-example"}, "example to show (index)"), example, el("div", {class: "field-error", id: "err-example"})),
    options,
    el("div", {class: "row"}, el("button", {id: "data-inspect", onclick: () => inspect()}, "Inspect")));
  main.replaceChildren(el("div", {class: "grid"}, form, results));

  upload.addEventListener("change", async () => {
    const file = upload.files[0];
    if (!file) return;
    try {
      const saved = await api(`/ui/api/data/upload?name=${encodeURIComponent(file.name)}`, await file.arrayBuffer(), {raw: true});
      path.value = saved.path;
      await inspect();
    } catch (error) { toast(error.message); }
  });

  async function inspect() {
    showFieldError(form, null);
    results.replaceChildren(el("p", {class: "muted"}, "reading and tokenizing..."));
    try {
      const report = await api("/ui/api/data/inspect", {
        path: path.value, model: model.value, example: Number(example.value) || 0,
        options: formValues(form, dataFields)});
      results.replaceChildren(render(report));
    } catch (error) {
      if (error instanceof ApiFailure) showFieldError(form, error.param, error.message);
      results.replaceChildren(el("div", {class: "error-box", id: "data-error"}, error.message));
    }
  }
}

function pct(x) { return `${(100 * x).toFixed(1)}%`; }

function render(report) {
  const numbers = el("div", {class: "numbers", id: "data-numbers"},
    [["format", report.format], ["rows read", report.rows_read], ["train examples", report.train_examples],
     ["validation examples", report.val_examples], ["invalid records", report.invalid.count],
     ["duplicates removed", report.duplicates_removed], ["tokens carrying loss", pct(report.supervised_share)],
     ["over max_length", report.touched_by_truncation], ["packing efficiency", pct(report.packing_efficiency)],
     ...Object.entries(report.percentiles).map(([k, v]) => [`length ${k}`, v])]
      .map(([k, v]) => el("div", {}, el("b", {}, v), k)));
  const invalid = report.invalid.count
    ? el("div", {class: "panel", id: "data-errors"},
        el("h3", {}, `invalid records: ${report.invalid.count}` + (report.invalid.count > report.invalid.samples.length ? ` (first ${report.invalid.samples.length} shown)` : "")),
        el("table", {class: "errors"}, el("tr", {}, el("th", {}, "line"), el("th", {}, "file"), el("th", {}, "problem")),
          report.invalid.samples.map(s => el("tr", {}, el("td", {class: "line"}, s.line ?? ""), el("td", {}, s.file ?? ""), el("td", {}, s.message)))))
    : el("div", {class: "panel", id: "data-errors"}, el("h3", {}, "invalid records"), el("p", {class: "muted"}, "none: every record is valid"));
  const example = el("div", {class: "example", id: "data-example-view"},
    report.example.map(span => span.supervised ? el("span", {class: "loss"}, span.text) : span.text));
  return el("div", {},
    el("div", {class: "panel"}, el("h2", {}, report.path), el("p", {class: "muted"}, `tokenized with ${report.model}`), numbers),
    invalid,
    el("div", {class: "panel", id: "data-histogram"},
      barChart("token length per example (before truncation)", report.histogram, report.max_length)),
    el("div", {class: "panel"},
      el("h3", {}, `example ${report.example_index}`),
      el("p", {class: "legend muted"}, "highlighted: ", el("span", {class: "loss"}, "tokens that carry loss"), "; the rest is context only"),
      example),
    el("details", {}, el("summary", {}, "as `tuneforge data inspect` prints it"), el("pre", {}, report.text)));
}
