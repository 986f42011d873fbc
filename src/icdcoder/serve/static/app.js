// The review page: plain JavaScript over the workstation API (no build step).
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { note: null, selected: 0, picker: null, queue: [], searchTimer: null, searchSeq: 0, allCandidates: false };
/** Candidates listed before "show all". */
const CANDIDATES_SHOWN = 10;

// ------------------------------------------------------------------------------------------------ API
function headers(json) {
  const h = { "X-User": $("#user").value.trim() || "local" };
  const token = localStorage.getItem("icdcoder-token");
  if (token) h["Authorization"] = "Bearer " + token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(method, path, body, retried) {
  const response = await fetch(path, { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401 && !retried) {
    const token = prompt("This server needs an API token:");
    if (token) { localStorage.setItem("icdcoder-token", token.trim()); return api(method, path, body, true); }
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { const data = await response.json(); detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail); } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

const getJSON = async (path) => (await api("GET", path)).json();
const sendJSON = async (method, path, body) => (await api(method, path, body)).json();

function say(message, isError) {
  const status = $("#status");
  status.textContent = message;
  status.classList.toggle("error", Boolean(isError));
}

async function guarded(action) {
  try { await action(); } catch (err) { say(err.message, true); }
}

// ------------------------------------------------------------------------------------------------ colours
function colour(index) { return `hsl(${Math.round((index * 137.508) % 360)}, 75%, 80%)`; }
function codeColours(codes) { const map = {}; codes.forEach((code, i) => { map[code.id] = colour(i); }); return map; }

// ------------------------------------------------------------------------------------------------ the note
/** Evidence shown for a code: its spans of the note's words, else the sentences its translation supports. */
function shownSpans(code) { return code.evidence.length ? code.evidence : code.sentence_evidence; }

/** The note as segments between every span boundary; each marked segment lists the codes whose evidence covers it. */
function renderText(note) {
  const article = $("#note-text");
  article.replaceChildren();
  const colours = codeColours(note.codes);
  const marks = [];
  for (const code of note.codes) {
    if (code.decision === "rejected") continue;
    for (const span of shownSpans(code)) marks.push({ start: span.start, end: span.end, code, traits: span.traits || [] });
  }
  const cuts = new Set([0, note.text.length]);
  for (const mark of marks) { cuts.add(mark.start); cuts.add(mark.end); }
  const points = [...cuts].sort((a, b) => a - b);
  for (let i = 0; i + 1 < points.length; i++) {
    const [start, end] = [points[i], points[i + 1]];
    const covering = marks.filter((m) => m.start <= start && m.end >= end);
    const segment = document.createElement("span");
    segment.textContent = note.text.slice(start, end);
    segment.dataset.start = start;
    segment.dataset.end = end;
    if (covering.length) {
      const ids = [...new Set(covering.map((m) => m.code.id))];
      segment.className = "ev" + (ids.length > 1 ? " multi" : "") + (covering.every((m) => m.traits.includes("negated")) ? " negated" : "");
      segment.dataset.codes = ids.join(" ");
      segment.style.background = colours[ids[0]];
      segment.title = covering.map((m) => `${m.code.code} ${m.code.description}${m.traits.length ? " [" + m.traits.join(", ") + "]" : ""}`).join("\n");
      segment.addEventListener("mouseenter", () => linkHover(ids, true));
      segment.addEventListener("mouseleave", () => linkHover(ids, false));
      segment.addEventListener("click", () => selectCode(note.codes.findIndex((c) => c.id === ids[0])));
    } else {
      segment.className = "seg";
    }
    article.appendChild(segment);
  }
}

function linkHover(ids, on) {
  for (const id of ids) {
    document.querySelectorAll(`#note-text .ev`).forEach((el) => { if (el.dataset.codes.split(" ").includes(String(id))) el.classList.toggle("hl", on); });
    const row = document.querySelector(`#codes tr[data-id="${id}"]`);
    if (row) row.classList.toggle("hl", on);
  }
}

function traitBadges(code) {
  const traits = new Set();
  for (const span of shownSpans(code)) for (const trait of span.traits || []) traits.add(trait);
  return [...traits].map((t) => `<span class="trait ${t}">${t}</span>`).join("");
}

function escapeHtml(text) { const div = document.createElement("div"); div.textContent = text ?? ""; return div.innerHTML; }

function decisionBadge(code) {
  if (code.origin === "added") return `<span class="badge added">added</span>`;
  if (code.decision) return `<span class="badge ${code.decision}">${code.decision}</span>` + (code.original_code ? ` <small>was ${escapeHtml(code.original_code)}</small>` : "");
  if (code.origin === "excluded") return `<span class="badge">excluded: ${escapeHtml(code.reason)}</span>`;
  return "";
}

/** An element: `tag` with its attributes (`className`, `title`, `dataset`) and children (text or elements). */
function el(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "dataset") Object.assign(element.dataset, value);
    else element[name] = value;
  }
  element.append(...children);
  return element;
}

/** Whether a code is in the reviewed code list (review.kept on the server): the ones Excludes1 is checked among. */
function isKept(code) { return code.decision !== "rejected" && (code.decision === "accepted" || code.origin === "coded"); }

/** What the code set says of a code, under its description: a non-billable code's problem (the note as its tooltip)
 * with its replacements as buttons (a click changes the code to it: a 'change' decision), the kept codes an Excludes1
 * note forbids beside it (hovering the flag outlines them), a billable code's release note. Null when nothing to say. */
function validityBox(code, note) {
  const validity = code.validity;
  if (!validity) return null;
  const box = el("div", { className: "validity" });
  if (!validity.billable) {
    const problem = (validity.problem || "not billable").replace(/_/g, " ");
    box.append(el("span", { className: "flag problem", title: validity.note }, `⚠ ${problem}`));
    if (validity.replacements.length) box.append(" use ");
    validity.replacements.forEach((replacement, i) => box.append(el("button", {
      type: "button", className: "replace", title: `change to ${replacement} ${validity.replacement_descriptions[i] || ""} (f: the first)`,
      dataset: { replace: replacement, system: validity.replacement_system },
    }, replacement)));
  } else if (validity.note) {
    box.append(el("small", { className: "release" }, validity.note));
  }
  if (validity.excludes1.length) {
    const partners = note.codes.filter((other) => other.id !== code.id && isKept(other) && validity.excludes1.includes(other.code)).map((other) => other.id);
    const flag = el("span", { className: "flag excludes1", title: "An Excludes1 note: these conditions are not coded together" },
      `Excludes1 with ${validity.excludes1.join(", ")}`);
    flag.addEventListener("mouseenter", () => linkHover(partners, true));
    flag.addEventListener("mouseleave", () => linkHover(partners, false));
    box.append(flag);
  }
  return box.childNodes.length ? box : null;
}

/** Change a code to the replacement its validity suggests (the first when none is named). */
function replaceCode(code, replacement) {
  const validity = code.validity;
  const chosen = replacement || (validity && !validity.billable && validity.replacements[0]);
  if (!chosen) { say(`${code.code}: no replacement to take`, true); return; }
  guarded(() => decide(code.id, "change", { code: chosen, system: validity.replacement_system }));
}

function renderCodes(note) {
  const body = $("#codes tbody");
  body.replaceChildren();
  const colours = codeColours(note.codes);
  note.codes.forEach((code, index) => {
    const row = document.createElement("tr");
    row.dataset.id = code.id;
    row.dataset.code = code.code;
    const flags = [
      code.decision === "rejected" ? "rejected" : "", code.origin === "excluded" && !code.decision ? "excluded" : "",
      code.validity && !code.validity.billable ? "invalid" : "", code.validity && code.validity.excludes1.length ? "conflict" : "",
      index === state.selected ? "selected" : "",
    ];
    row.className = flags.filter(Boolean).join(" ");
    row.innerHTML = `<td><span class="swatch" style="background:${colours[code.id]}"></span></td>
      <td class="code">${escapeHtml(code.code)}</td>
      <td class="description">${escapeHtml(code.description)}<br><small>${code.system}${code.score != null ? " · " + code.score.toFixed(2) : ""}</small></td>
      <td>${escapeHtml(code.assertion || "")} ${traitBadges(code)}</td>
      <td class="decision">${decisionBadge(code)}</td>
      <td class="actions"><button data-act="accept" title="accept (a)">✓</button><button data-act="reject" title="reject (r)">✗</button><button data-act="change" title="change (c)">✎</button><button data-act="undo" title="undo (u)">↺</button></td>`;
    const box = validityBox(code, note);
    if (box) row.querySelector(".description").append(box);
    row.addEventListener("mouseenter", () => linkHover([code.id], true));
    row.addEventListener("mouseleave", () => linkHover([code.id], false));
    row.addEventListener("click", (event) => {
      selectCode(index);
      const act = event.target.dataset.act;
      if (act) guarded(() => act === "change" ? openPicker({ kind: "change", codeId: code.id }) : decide(code.id, act));
      if (event.target.dataset.replace) replaceCode(code, event.target.dataset.replace);
    });
    body.appendChild(row);
  });
}

// ------------------------------------------------------------------------------------------------ candidates
/** The codes the coder scored below its threshold (not codes of the note), best first: the first few, or all. */
function renderCandidates(note) {
  const candidates = note.candidates || [];
  $("#candidates").hidden = !candidates.length;
  $("#candidates-count").textContent = `(${candidates.length})`;
  const shown = state.allCandidates ? candidates : candidates.slice(0, CANDIDATES_SHOWN);
  $("#candidates-table tbody").replaceChildren(...shown.map(candidateRow));
  const more = $("#candidates-more");
  more.hidden = candidates.length <= CANDIDATES_SHOWN;
  more.textContent = state.allCandidates ? "Show fewer" : `Show all ${candidates.length}`;
  more.setAttribute("aria-expanded", String(state.allCandidates));
}

function candidateRow(candidate, index) {
  const accept = el("button", { type: "button", className: "accept-candidate", title: "accept: add it as a code (the selected words as its evidence)" }, "✓ accept");
  accept.setAttribute("aria-label", `accept ${candidate.code} ${candidate.description}`);
  accept.addEventListener("mousedown", (event) => event.preventDefault()); // keep the selection in the note
  accept.addEventListener("click", () => guarded(() => acceptCandidate(candidate, index)));
  return el("tr", { dataset: { code: candidate.code, system: candidate.system } },
    el("td", { className: "code" }, candidate.code),
    el("td", { className: "description" }, candidate.description, el("br"), el("small", {}, candidate.system)),
    el("td", { className: "score" }, candidate.score.toFixed(3)),
    el("td", { className: "actions" }, accept));
}

/** Add a candidate as a code, as "add a code" does (audited), the selected words of the note as its evidence if any;
 * focus moves on to the next candidate's accept when this one had it (keyboard use). */
async function acceptCandidate(candidate, index) {
  const fromKeyboard = document.activeElement && document.activeElement.classList.contains("accept-candidate");
  const span = selectionOffsets();
  const added = await sendJSON("POST", `/v1/notes/${state.note.id}/codes`, { code: candidate.code, system: candidate.system, ...(span || {}) });
  await reloadNote();
  selectCode(state.note.codes.length - 1);
  say(`accepted ${added.code}` + (span ? ` with the evidence “${state.note.text.slice(span.start, span.end)}”` : " (no evidence: select words of the note first to give it some)"));
  const buttons = document.querySelectorAll("#candidates-table .accept-candidate");
  if (fromKeyboard && buttons.length) buttons[Math.min(index, buttons.length - 1)].focus();
}

function render() {
  const note = state.note;
  $("#empty").hidden = Boolean(note);
  $("#workspace").hidden = !note;
  if (!note) return;
  $("#note-title").textContent = note.external_id;
  $("#note-meta").textContent = `${note.language} · ${note.profile} · ${note.status} · ${note.model_version || ""}`;
  $("#mark-reviewed").textContent = note.status === "reviewed" ? "Reopen" : "Mark reviewed";
  state.selected = Math.min(state.selected, Math.max(note.codes.length - 1, 0));
  renderText(note);
  renderCodes(note);
  renderCandidates(note);
  renderQueue();
}

function selectCode(index) {
  if (!state.note || index < 0 || index >= state.note.codes.length) return;
  state.selected = index;
  document.querySelectorAll("#codes tbody tr").forEach((row, i) => row.classList.toggle("selected", i === index));
  const row = document.querySelectorAll("#codes tbody tr")[index];
  if (row) row.scrollIntoView({ block: "nearest" });
}

// ------------------------------------------------------------------------------------------------ actions
async function openNote(id) {
  state.note = await getJSON(`/v1/notes/${id}`);
  state.selected = 0;
  state.allCandidates = false;
  closePicker();
  render();
  say(`note ${state.note.external_id}: ${state.note.codes.length} codes`);
}

async function reloadNote() { if (state.note) { state.note = await getJSON(`/v1/notes/${state.note.id}`); render(); } }

async function decide(codeId, action, extra) {
  const code = await sendJSON("POST", `/v1/notes/${state.note.id}/codes/${codeId}`, { action, ...(extra || {}) });
  say(`${action}: ${code.code}`);
  await reloadNote();
}

async function codeNote() {
  const text = $("#note-input").value;
  if (!text.trim()) { say("paste a note first", true); return; }
  say("coding…");
  const body = { text, language: $("#note-lang").value, profile: $("#note-profile").value, id: $("#note-id").value.trim() || "note" };
  const note = await sendJSON("POST", "/v1/notes", body);
  state.note = note;
  state.selected = 0;
  state.allCandidates = false;
  await loadQueue();
  render();
  say(`coded: ${note.codes.length} codes`);
}

async function openFile(file) {
  const text = await file.text();
  if (file.name.endsWith(".jsonl")) {
    const notes = text.split("\n").filter((line) => line.trim()).map((line) => JSON.parse(line))
      .map((r) => ({ text: r.text, id: String(r.id ?? "note"), language: r.language || $("#note-lang").value, translation: r.translation || "" }));
    const job = await sendJSON("POST", "/v1/jobs", { notes, profile: $("#note-profile").value });
    say(`queued ${job.total} notes (job ${job.id.slice(0, 8)}); they appear in the queue as they are coded`);
    pollJob(job.id);
  } else {
    $("#note-input").value = text;
    $("#note-id").value = file.name.replace(/\.[^.]+$/, "");
  }
}

async function pollJob(id) {
  const job = await getJSON(`/v1/jobs/${id}`);
  await loadQueue();
  if (job.status === "queued" || job.status === "running") setTimeout(() => guarded(() => pollJob(id)), 1500);
  else say(`job ${id.slice(0, 8)}: ${job.status}, ${job.done} of ${job.total} coded`, job.status === "failed");
}

async function markReviewed() {
  const reviewed = state.note.status !== "reviewed";
  await sendJSON("POST", `/v1/notes/${state.note.id}/review`, { reviewed });
  say(reviewed ? "marked reviewed" : "reopened");
  await reloadNote();
  await loadQueue();
}

// ------------------------------------------------------------------------------------------------ queue
async function loadQueue() {
  const filter = $("#queue-filter").value;
  const data = await getJSON("/v1/notes" + (filter ? `?status=${filter}` : ""));
  state.queue = data.notes;
  const label = { coded: "to review", reviewed: "reviewed", pending: "coding", failed: "failed" };
  $("#queue-counts").textContent = Object.entries(data.counts).map(([k, v]) => `${v} ${label[k] || k}`).join(" · ");
  renderQueue();
}

function renderQueue() {
  const list = $("#queue-list");
  list.replaceChildren();
  for (const item of state.queue) {
    const li = document.createElement("li");
    li.innerHTML = `${escapeHtml(item.external_id)} <span class="st">${item.status} · ${item.n_codes} codes</span>`;
    li.dataset.id = item.id;
    if (state.note && item.id === state.note.id) li.className = "current";
    li.addEventListener("click", () => guarded(() => openNote(item.id)));
    list.appendChild(li);
  }
}

async function nextNote() {
  await loadQueue();
  const waiting = state.queue.filter((n) => n.status === "coded" && (!state.note || n.id !== state.note.id));
  if (!waiting.length) { say("no note waiting for review"); return; }
  const after = state.note ? waiting.find((n) => n.created_at > state.note.created_at) : null;
  await openNote((after || waiting[0]).id);
}

// ------------------------------------------------------------------------------------------------ code picker
function openPicker(mode) {
  state.picker = mode;
  $("#picker").hidden = false;
  const input = $("#picker-input");
  if (mode.kind === "change") {
    const code = state.note.codes.find((c) => c.id === mode.codeId);
    $("#picker-title").textContent = `Change ${code.code} to:`;
    input.value = code.code;
  } else {
    $("#picker-title").textContent = `Add a code for “${state.note.text.slice(mode.start, mode.end)}” (${mode.start}-${mode.end}):`;
    input.value = state.note.text.slice(mode.start, mode.end);
  }
  input.focus();
  input.select();
  search(input.value);
}

function closePicker() { state.picker = null; $("#picker").hidden = true; $("#picker-hits").replaceChildren(); }

function search(query) {
  clearTimeout(state.searchTimer);
  state.searchTimer = setTimeout(() => guarded(async () => {
    const seq = ++state.searchSeq;
    if (!query.trim()) { $("#picker-hits").replaceChildren(); return; }
    const hits = await getJSON(`/v1/codes?q=${encodeURIComponent(query)}&limit=15`);
    if (seq !== state.searchSeq) return; // a newer query answered first
    const list = $("#picker-hits");
    list.replaceChildren();
    hits.forEach((hit, i) => {
      const li = document.createElement("li");
      li.dataset.code = hit.code;
      li.dataset.system = hit.system;
      li.className = i === 0 ? "active" : "";
      li.innerHTML = `<span class="code">${escapeHtml(hit.code)}</span> ${escapeHtml(hit.description)} <span class="form">${hit.form ? "“" + escapeHtml(hit.form) + "”" : hit.system}</span>`;
      li.addEventListener("click", () => guarded(() => choose(hit.code, hit.system)));
      list.appendChild(li);
    });
  }), 150);
}

async function choose(code, system) {
  const mode = state.picker;
  closePicker();
  if (mode.kind === "change") {
    await decide(mode.codeId, "change", { code, system });
  } else {
    const added = await sendJSON("POST", `/v1/notes/${state.note.id}/codes`, { code, system, start: mode.start, end: mode.end });
    say(`added ${added.code}`);
    await reloadNote();
    selectCode(state.note.codes.length - 1);
  }
}

function movePickerActive(step) {
  const items = [...document.querySelectorAll("#picker-hits li")];
  if (!items.length) return;
  const current = items.findIndex((li) => li.classList.contains("active"));
  const next = Math.max(0, Math.min(items.length - 1, current + step));
  items.forEach((li, i) => li.classList.toggle("active", i === next));
  items[next].scrollIntoView({ block: "nearest" });
}

/** The note offsets of the current text selection, or null when it is not inside the note. */
function selectionOffsets() {
  const selection = window.getSelection();
  if (!selection || selection.isCollapsed || !selection.rangeCount) return null;
  const range = selection.getRangeAt(0);
  const article = $("#note-text");
  if (!article.contains(range.startContainer) || !article.contains(range.endContainer)) return null;
  const offset = (node, within) => {
    if (node === article) {
      const child = article.childNodes[within];
      return child ? Number(child.dataset.start) : state.note.text.length;
    }
    const segment = node.nodeType === Node.TEXT_NODE ? node.parentElement : node;
    return Number(segment.dataset.start) + (node.nodeType === Node.TEXT_NODE ? within : 0);
  };
  let [start, end] = [offset(range.startContainer, range.startOffset), offset(range.endContainer, range.endOffset)];
  while (start < end && /\s/.test(state.note.text[start])) start++;
  while (end > start && /\s/.test(state.note.text[end - 1])) end--;
  return start < end ? { start, end } : null;
}

function addFromSelection() {
  const span = selectionOffsets();
  if (!span) { say("select words of the note first", true); return; }
  openPicker({ kind: "add", ...span });
}

// ------------------------------------------------------------------------------------------------ exports
async function runExport(kind) {
  const note = state.note ? `note=${state.note.id}` : "";
  const paths = {
    "fhir-note": [`/v1/export/fhir?${note}`, "bundle.json"], "fhir-all": ["/v1/export/fhir", "bundle.json"],
    "D.tsv": ["/v1/export/codiesp/D.tsv", "D.tsv"], "P.tsv": ["/v1/export/codiesp/P.tsv", "P.tsv"], "X.tsv": ["/v1/export/codiesp/X.tsv", "X.tsv"],
    "jsonl": ["/v1/export/jsonl", "reviewed.jsonl"],
  };
  if (kind === "fhir-note" && !state.note) { say("open a note first", true); return; }
  const [path, name] = paths[kind];
  const response = await api("GET", path);
  const text = await response.text();
  $("#export-preview").textContent = text;
  $("#export-preview").dataset.kind = kind;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: response.headers.get("content-type") || "text/plain" }));
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  say(`exported ${name}`);
}

// ------------------------------------------------------------------------------------------------ keyboard
function onKey(event) {
  if (event.target.closest("input, textarea, select")) {
    if (event.target.id === "picker-input") {
      if (event.key === "Escape") closePicker();
      else if (event.key === "ArrowDown") { movePickerActive(1); event.preventDefault(); }
      else if (event.key === "ArrowUp") { movePickerActive(-1); event.preventDefault(); }
      else if (event.key === "Enter") {
        const active = document.querySelector("#picker-hits li.active");
        if (active) guarded(() => choose(active.dataset.code, active.dataset.system));
      }
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const code = state.note && state.note.codes[state.selected];
  const actions = {
    j: () => selectCode(state.selected + 1), k: () => selectCode(state.selected - 1),
    a: () => code && guarded(() => decide(code.id, "accept")), r: () => code && guarded(() => decide(code.id, "reject")),
    u: () => code && guarded(() => decide(code.id, "undo")), c: () => code && openPicker({ kind: "change", codeId: code.id }),
    f: () => code && replaceCode(code),
    "+": () => state.note && addFromSelection(), d: () => state.note && guarded(markReviewed), n: () => guarded(nextNote),
    "?": () => $("#help").showModal(), Escape: () => closePicker(),
  };
  if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
}

// ------------------------------------------------------------------------------------------------ start
function start() {
  $("#user").value = localStorage.getItem("icdcoder-user") || "";
  $("#user").addEventListener("change", () => localStorage.setItem("icdcoder-user", $("#user").value.trim()));
  $("#code-note").addEventListener("click", () => guarded(codeNote));
  $("#note-file").addEventListener("change", (e) => e.target.files[0] && guarded(() => openFile(e.target.files[0])));
  $("#queue-filter").addEventListener("change", () => guarded(loadQueue));
  $("#next-note").addEventListener("click", () => guarded(nextNote));
  $("#mark-reviewed").addEventListener("click", () => guarded(markReviewed));
  $("#add-from-selection").addEventListener("mousedown", (e) => e.preventDefault()); // keep the selection
  $("#add-from-selection").addEventListener("click", addFromSelection);
  $("#picker-input").addEventListener("input", (e) => search(e.target.value));
  $("#picker-cancel").addEventListener("click", closePicker);
  $("#candidates-more").addEventListener("click", () => { state.allCandidates = !state.allCandidates; renderCandidates(state.note); });
  $("#help-toggle").addEventListener("click", () => $("#help").showModal());
  document.querySelectorAll("[data-export]").forEach((b) => b.addEventListener("click", () => guarded(() => runExport(b.dataset.export))));
  document.addEventListener("keydown", onKey);
  guarded(loadQueue);
  const requested = new URLSearchParams(location.search).get("note");
  if (requested) guarded(() => openNote(requested));
}

document.addEventListener("DOMContentLoaded", start);
