// The page of `alexnet serve`: pick or drop an image, see it, see the top-5 classes as bars.
// Everything it loads comes from this server.
"use strict";

const $ = (id) => document.getElementById(id);
let lastFile = null;

function headers() {
  const token = $("token").value || sessionStorage.getItem("alexnet-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function showModel() {
  const response = await fetch("/model", { headers: headers() });
  if (response.status === 401) { $("token-box").hidden = false; $("model").textContent = "a token is needed"; return; }
  const m = await response.json();
  const acc = m.accuracy && m.accuracy.top1 !== undefined
    ? `, top-1 ${(100 * m.accuracy.top1).toFixed(1)}% (${m.accuracy.protocol || "center"}, ${m.accuracy.split || "val"})` : "";
  $("model").textContent = `${m.variant}, ${m.num_classes} classes, ${m.input_size} px input${acc}; ${m.weights}`;
}

function bars(top) {
  const list = $("result");
  list.replaceChildren();
  for (const t of top) {
    const row = document.createElement("li");
    const name = Object.assign(document.createElement("span"), { className: "name", textContent: t.class, title: t.class });
    const bar = Object.assign(document.createElement("span"), { className: "bar" });
    const fill = Object.assign(document.createElement("span"), { className: "fill" });
    fill.style.width = `${(100 * t.prob).toFixed(1)}%`;
    fill.style.display = "block";
    bar.append(fill);
    const prob = Object.assign(document.createElement("span"), { className: "prob", textContent: `${(100 * t.prob).toFixed(2)}%` });
    row.append(name, bar, prob);
    row.dataset.index = t.index;
    row.dataset.prob = t.prob;
    list.append(row);
  }
}

async function classify(file) {
  lastFile = file;
  $("why").hidden = $("heat-box").hidden = true;  // the last image's explanation goes with it
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("result").replaceChildren();
  say("classifying\u2026");
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch("/predict?topk=5", { method: "POST", body: form, headers: headers() });
    const body = await response.json();
    if (response.status === 401) { $("token-box").hidden = false; say(body.error, true); return; }
    if (!response.ok) { say(body.error || `error ${response.status}`, true); return; }
    bars(body.top);
    say(`${body.protocol} crop \u00b7 ${body.model.variant}`);
    await explain(form);
    document.body.dataset.state = "done";
  } catch (e) {
    say(`the server did not answer (${e})`, true);
  }
}

// Beside the bars: Grad-CAM over the crop, and a strip of each stage's most active maps.
async function explain(form) {
  const asked = lastFile;
  try {
    const response = await fetch("/explain", { method: "POST", body: form, headers: headers() });
    if (!response.ok || asked !== lastFile) return;  // the classes are shown; the explanation is extra
    const body = await response.json();
    if (asked !== lastFile) return;  // another image was picked meanwhile
    $("heat").src = body.gradcam.png;
    $("heat-caption").textContent = `where the evidence for \u201c${body.target.class}\u201d lies in the crop the network saw (Grad-CAM at ${body.gradcam.stage})`;
    const strips = $("stages");
    strips.replaceChildren();
    for (const st of body.stages) {
      const row = Object.assign(document.createElement("figure"), { className: "stage" });
      const img = Object.assign(document.createElement("img"), { src: st.png, alt: `${st.name}: its most active maps` });
      const sparse = st.sparsity === null ? "" : `, ${(100 * st.sparsity).toFixed(0)}% zero`;
      const cap = Object.assign(document.createElement("figcaption"), { textContent: `${st.name} ${st.shape.join("\u00d7")}${sparse}` });
      row.append(cap, img);
      strips.append(row);
    }
    $("heat-box").hidden = false;
    $("why").hidden = false;
  } catch (e) {
    // the explanation is extra: the classes stand without it
  }
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) classify(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
$("retry").addEventListener("click", () => {
  sessionStorage.setItem("alexnet-token", $("token").value);
  showModel();
  if (lastFile) classify(lastFile);
});
showModel();
