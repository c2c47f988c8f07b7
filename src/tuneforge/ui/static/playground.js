// Playground: ask the served model, with or without an adapter and RAG, streamed; side by side,
// the same prompt goes to two configurations at once. Questions go through the server's own
// OpenAI-compatible API (/v1/chat/completions), as any client's would.
import { api, el, headers, toast } from "/ui/static/app.js";

let choices;

export async function show(main) {
  choices = await api("/ui/api/playground");
  const store = el("select", {id: "store", disabled: !choices.stores.length, onchange: () => pickStore(store.value)},
    choices.stores.length ? choices.stores.map(s => el("option", {value: s, selected: s === choices.active_store}, s))
      : el("option", {value: ""}, "no store (start with --store DIR)"));
  const prompt = el("textarea", {id: "prompt", rows: 3, placeholder: "Ask something..."});
  const system = el("input", {type: "text", id: "system", class: "wide", placeholder: "system prompt (optional)"});
  const maxTokens = el("input", {type: "text", id: "max-tokens", value: "128", size: 5});
  const temperature = el("input", {type: "text", id: "temperature", value: "0", size: 4});
  const sideBySide = el("input", {type: "checkbox", id: "side-by-side", onchange: () => { paneB.hidden = !sideBySide.checked; }});
  const paneA = pane("a", false), paneB = pane("b", true);
  paneB.hidden = true;
  main.replaceChildren(
    el("div", {class: "panel"},
      el("div", {class: "row"},
        el("label", {}, "model ", el("select", {id: "model"}, el("option", {value: choices.base}, choices.base))),
        el("label", {}, "RAG store ", store),
        el("label", {}, "max tokens ", maxTokens), el("label", {}, "temperature ", temperature),
        el("label", {}, sideBySide, " side by side")),
      el("div", {class: "field"}, system),
      el("div", {class: "field"}, prompt),
      el("div", {class: "row"}, el("button", {id: "send", onclick: () => send()}, "Send"),
        el("span", {class: "muted"}, "Ctrl+Enter sends"))),
    el("div", {class: "two", id: "panes"}, paneA, paneB));
  prompt.addEventListener("keydown", event => { if (event.key === "Enter" && event.ctrlKey) send(); });

  async function send() {
    const text = prompt.value.trim();
    if (!text) return toast("type a question first");
    const panes = sideBySide.checked ? [paneA, paneB] : [paneA];
    const settings = {system: system.value.trim(), max_tokens: Number(maxTokens.value) || 128,
      temperature: Number(temperature.value) || 0};
    await Promise.all(panes.map(p => ask(p, text, settings)));
  }
}

async function pickStore(name) {
  try { choices = await api("/ui/api/playground/store", {name}); toast(`RAG store: ${name}`); }
  catch (error) { toast(error.message); }
}

function adapterOptions(selectedName) {
  const loaded = choices.adapters.map(a => el("option", {value: a, selected: a === selectedName}, `adapter ${a}`));
  const runs = choices.run_adapters.map(a => el("option", {value: a.name, "data-path": a.path, selected: a.name === selectedName}, `adapter ${a.name} (run, loads on first use)`));
  return [el("option", {value: ""}, "base model (no adapter)"), ...loaded, ...runs];
}

function pane(id, second) {
  const adapter = el("select", {id: `pane-${id}-adapter`}, adapterOptions(second && choices.adapters[0] ? choices.adapters[0] : ""));
  const rag = el("input", {type: "checkbox", id: `pane-${id}-rag`, disabled: !choices.rag});
  const topK = el("input", {type: "text", id: `pane-${id}-topk`, value: "3", size: 3});
  return el("div", {class: "panel", id: `pane-${id}`},
    el("div", {class: "row"}, el("b", {}, second ? "B" : "A"), adapter,
      el("label", {}, rag, " RAG"), el("label", {}, "top k ", topK)),
    el("div", {class: "pane-body"},
      el("div", {class: "answer", id: `pane-${id}-answer`}),
      el("div", {}, el("div", {class: "muted"}, "sources"), el("ol", {class: "sources", id: `pane-${id}-sources`}))),
    el("div", {class: "muted", id: `pane-${id}-meta`}));
}

/** Load a run's adapter into the server (POST /v1/load_lora_adapter), once. */
async function ensureAdapter(name) {
  if (!name || choices.adapters.includes(name)) return;
  const run = choices.run_adapters.find(a => a.name === name);
  const response = await fetch("/v1/load_lora_adapter", {method: "POST", headers: headers(),
    body: JSON.stringify({lora_name: name, lora_path: run.path})});
  if (!response.ok) throw new Error((await response.json()).error.message);
  choices.adapters.push(name);
}

async function ask(pane, question, settings) {
  const id = pane.id.slice(5);
  const answer = document.getElementById(`pane-${id}-answer`);
  const sources = document.getElementById(`pane-${id}-sources`);
  const meta = document.getElementById(`pane-${id}-meta`);
  const adapter = document.getElementById(`pane-${id}-adapter`).value;
  const rag = document.getElementById(`pane-${id}-rag`).checked;
  answer.textContent = ""; sources.replaceChildren(); meta.textContent = "...";
  delete answer.dataset.done;
  const messages = settings.system ? [{role: "system", content: settings.system}] : [];
  messages.push({role: "user", content: question});
  const body = {model: adapter || choices.base, messages, stream: true,
    max_tokens: settings.max_tokens, temperature: settings.temperature,
    stream_options: {include_usage: true}};
  if (rag) body.rag = {top_k: Number(document.getElementById(`pane-${id}-topk`).value) || 3};
  const started = performance.now();
  let tokens = null;
  try {
    await ensureAdapter(adapter);
    const response = await fetch("/v1/chat/completions", {method: "POST", headers: headers(), body: JSON.stringify(body)});
    if (!response.ok) throw new Error((await response.json()).error.message);
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: /, "").trim();
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) answer.textContent += delta.content;
        if (chunk.sources) showSources(sources, chunk.sources);
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    meta.textContent = `${adapter || choices.base}${rag ? " + RAG" : ""} · ${seconds.toFixed(1)} s` + (tokens != null ? ` · ${tokens} tokens` : "");
    if (rag && !sources.children.length) sources.append(el("li", {}, "no source was relevant enough: the answer is the refusal"));
  } catch (error) {
    meta.textContent = "";
    answer.append(el("div", {class: "error-box"}, error.message));
  }
  answer.dataset.done = "1";
}

function showSources(list, sources) {
  list.replaceChildren(...sources.map(s => el("li", {"data-index": s.index},
    el("span", {class: "n"}, `[${s.index}] `), `${s.source}${s.location ? " · " + s.location : ""}`,
    el("div", {class: "muted"}, s.text.length > 220 ? s.text.slice(0, 220) + "..." : s.text))));
}
