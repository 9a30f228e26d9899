// The page of `aiayn serve`: translate or generate with a served model, and draw the attention
// weights of one translated sentence. Every text a user or a model produces is put into the
// page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];
let maps = null; // the last attention response

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function current() {
  return models.find((m) => m.name === $("model").value);
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const reply = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(`${response.status}: ${reply.error}`);
  return reply;
}

async function loadModels() {
  const response = await fetch("/v1/models");
  models = (await response.json()).models;
  for (const m of models) $("model").append(element("option", "", m.name));
  showModel();
}

function showModel() {
  const m = current();
  if (!m) return;
  const translation = m.kind === "translation";
  const languages = translation && m.source_language ? ` ${m.source_language} → ${m.target_language}` : "";
  $("model-info").textContent =
    `${m.kind}${languages}, ${m.parameters.toLocaleString("en")} parameters, ${m.precision} on ${m.device}`;
  $("run").textContent = translation ? "Translate" : "Generate";
  $("translate-options").hidden = !translation;
  $("generate-options").hidden = translation;
  $("input").placeholder = translation ? "One sentence per line" : "A prompt to continue";
  if (translation) $("beam").value = m.decode.beam;
}

async function run() {
  const m = current();
  $("run").disabled = true;
  setStatus(m.kind === "translation" ? "translating…" : "generating…");
  try {
    if (m.kind === "translation") await translate(m);
    else await generate(m);
    setStatus("");
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    $("run").disabled = false;
  }
}

async function translate(m) {
  const texts = $("input").value.split("\n").filter((line) => line.trim());
  if (!texts.length) throw new Error("type a sentence first");
  const beam = Number($("beam").value);
  const reply = await postJSON("/v1/translate", { model: m.name, texts, beam });
  $("results").replaceChildren();
  texts.forEach((text, i) => {
    const box = element("div", "result");
    box.append(element("div", "source", text), element("div", "output", reply.translations[i]));
    if (reply.truncated[i]) box.append(element("div", "note", "input cut to the model's positions"));
    const show = element("button", "show-attention", "Show attention");
    show.type = "button";
    show.addEventListener("click", () => openAttention(m, text, beam));
    box.append(show);
    $("results").append(box);
  });
}

async function generate(m) {
  const prompt = $("input").value;
  const box = element("div", "result");
  const output = element("div", "output");
  output.append(element("span", "source", prompt));
  const continuation = element("span", "continuation");
  output.append(continuation);
  box.append(output);
  $("results").replaceChildren(box);
  $("attention").hidden = true;
  const response = await fetch("/v1/generate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      model: m.name,
      prompt,
      stream: true,
      max_new_tokens: Number($("max-new-tokens").value),
      temperature: Number($("temperature").value),
    }),
  });
  if (!response.ok) {
    const reply = await response.json().catch(() => ({ error: response.statusText }));
    throw new Error(`${response.status}: ${reply.error}`);
  }
  // Server-Sent Events over the POST's body: "event: NAME\ndata: JSON\n\n"
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "{}");
      if (event === "token") continuation.textContent += data.text;
      else if (event === "done") continuation.textContent = data.text;
      else if (event === "error") throw new Error(`${data.status}: ${data.error}`);
    }
  }
}

async function openAttention(m, text, beam) {
  setStatus("computing attention…");
  try {
    const reply = await postJSON("/v1/translate", { model: m.name, text, beam, attention: true });
    if (!reply.attention) throw new Error("nothing to show for an empty translation");
    maps = reply.attention;
    $("attention-sentence").textContent = `${text} → ${reply.translations[0]}`;
    fillSelect($("layer"), maps.layers, (i) => `layer ${i + 1}`);
    fillSelect($("head"), maps.heads, (i) => `head ${i + 1}`, "average of heads");
    $("layer").value = String(maps.layers - 1);
    $("attention").hidden = false;
    draw();
    setStatus("");
    $("attention").scrollIntoView({ block: "nearest" });
  } catch (error) {
    setStatus(error.message, true);
  }
}

function fillSelect(select, count, label, first) {
  select.replaceChildren();
  if (first) select.append(new Option(first, "avg"));
  for (let i = 0; i < count; i++) select.append(new Option(label(i), String(i)));
}

function axes(kind) {
  if (kind === "encoder_self") return [maps.source_tokens, maps.source_tokens];
  if (kind === "decoder_self") return [maps.output_tokens, maps.input_tokens];
  return [maps.output_tokens, maps.source_tokens];
}

function weightsOf(kind, layer, head) {
  const heads = maps[kind][layer]; // heads × rows × columns
  if (head !== "avg") return heads[Number(head)];
  return heads[0].map((row, r) =>
    row.map((_, c) => heads.reduce((sum, h) => sum + h[r][c], 0) / heads.length));
}

function draw() {
  const kind = $("kind").value;
  const [rows, columns] = axes(kind);
  const weights = weightsOf(kind, Number($("layer").value), $("head").value);
  const table = $("heatmap");
  table.replaceChildren();
  const head = table.insertRow();
  head.append(element("th", "corner"));
  columns.forEach((token, c) => {
    const th = element("th", "col", token);
    th.dataset.col = c;
    head.append(th);
  });
  rows.forEach((token, r) => {
    const tr = table.insertRow();
    const th = element("th", "row", token);
    th.dataset.row = r;
    tr.append(th);
    columns.forEach((key, c) => {
      const w = weights[r][c];
      const td = element("td", "cell");
      td.dataset.row = r;
      td.dataset.col = c;
      td.dataset.weight = w.toFixed(4);
      td.title = `${token} → ${key}: ${w.toFixed(3)}`;
      td.style.backgroundColor = `rgba(31, 95, 191, ${Math.sqrt(Math.max(0, w)).toFixed(3)})`;
      tr.append(td);
    });
  });
}

function highlight(event) {
  const target = event.target.closest("[data-row], [data-col]");
  for (const node of $("heatmap").querySelectorAll(".hl")) node.classList.remove("hl");
  if (!target) return;
  const { row, col } = target.dataset;
  const marks = [];
  if (row !== undefined) marks.push(`[data-row="${row}"]`);
  if (col !== undefined) marks.push(`[data-col="${col}"]`);
  for (const node of $("heatmap").querySelectorAll(marks.join(","))) node.classList.add("hl");
}

$("model").addEventListener("change", showModel);
$("run").addEventListener("click", run);
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) run();
});
for (const id of ["kind", "layer", "head"]) $(id).addEventListener("change", draw);
$("heatmap").addEventListener("mouseover", highlight);
$("heatmap").addEventListener("mouseleave", () => highlight({ target: document.body }));
loadModels().catch((error) => setStatus(`cannot list the models: ${error.message}`, true));
