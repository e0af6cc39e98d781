// The Switchyard workspace: the shared inbox in the browser. Plain JavaScript, no build step:
// every read and action is a call to the JSON API under /api/v1 with the session cookie (and
// the CSRF token on changes), so the page can do exactly what its user's role can do there.
// Text from customers is only ever put into the page as text (textContent), never as HTML.
"use strict";

const meta = (n) => document.querySelector(`meta[name="${n}"]`).content;
const ME = { agent: meta("sy-agent") || null, role: meta("sy-role"), csrf: meta("sy-csrf") };
const SUPERVISOR = ME.role === "supervisor" || ME.role === "admin";
const $ = (sel, root = document) => root.querySelector(sel);

const state = {
  tab: "mine",
  filters: { status: "", priority: "", tag: "", q: "", queue: "" },
  lines: [],
  selected: null,
  detail: null,
  queues: meta("sy-queues").split(",").filter(Boolean),
  seen: JSON.parse(localStorage.getItem("sy-seen") || "{}"),
  // What an agent typed, per conversation and box: kept when the page redraws (live updates).
  drafts: {},
  viewers: [],
};

// ---- presence: who else is here, who is typing ----------------------------------------------

const presence = { timer: null, typedAt: 0 };

async function report(id, body = {}) {
  try {
    const r = await api("POST", `/api/v1/conversations/${id}/presence`, body);
    if (id === state.selected) showViewers(r.viewers);
  } catch (_) {}
}

function showViewers(viewers) {
  state.viewers = viewers || [];
  const box = $("#presence");
  if (!box) return;
  const me = ME.agent;
  const others = state.viewers.filter((v) => v.agent !== me);
  box.textContent = others.length
    ? "Also here: " + others.map((v) => (v.typing ? `${v.agent} (typing…)` : v.agent)).join(", ")
    : "";
  box.classList.toggle("typing", others.some((v) => v.typing));
}

function typing() {
  if (!state.selected || Date.now() - presence.typedAt < 3000) return;
  presence.typedAt = Date.now();
  report(state.selected, { typing: true });
}

function watchPresence(prev, id) {
  if (prev && prev !== id) report(prev, { leaving: true });
  clearInterval(presence.timer);
  report(id);
  presence.timer = setInterval(() => state.selected && report(state.selected), 10000);
}

addEventListener("pagehide", () => {
  if (!state.selected) return;
  fetch(`/api/v1/conversations/${state.selected}/presence`, {
    method: "POST",
    keepalive: true,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": ME.csrf },
    body: JSON.stringify({ leaving: true }),
  });
});

function draftBox(id, attrs) {
  const key = `${state.selected}:${id}`;
  const t = el("textarea", { id, dir: "auto", ...attrs });
  t.value = state.drafts[key] || "";
  t.addEventListener("input", () => {
    state.drafts[key] = t.value;
    typing();
    if (id === "reply-text") showSnippets(t);
  });
  if (id === "reply-text") {
    t.setAttribute("aria-autocomplete", "list");
    t.addEventListener("keydown", (e) => snippetKeys(t, e));
  }
  return t;
}

// ---- saved replies: `/` in the reply box --------------------------------------------------------

const snippets = { list: [], lang: "en", pick: 0 };

async function loadSnippets() {
  try {
    const r = await api("GET", "/api/v1/snippets");
    snippets.list = r.snippets;
    snippets.lang = r.default_language;
  } catch (_) {}
}

function snippetText(sn) {
  const lang = (state.detail && state.detail.contact && state.detail.contact.language) || snippets.lang;
  const v = sn.variants;
  return v[lang] || v[snippets.lang] || v.text || Object.values(v)[0] || "";
}

function snippetMatches(t) {
  if (!t.value.startsWith("/")) return [];
  const q = t.value.slice(1).toLowerCase();
  return snippets.list.filter((sn) => sn.name.toLowerCase().includes(q) || snippetText(sn).toLowerCase().includes(q)).slice(0, 8);
}

function showSnippets(t) {
  let box = $("#snippets");
  const found = snippetMatches(t);
  if (!found.length) {
    if (box) box.remove();
    t.removeAttribute("aria-activedescendant");
    return;
  }
  if (!box) {
    box = el("ul", { id: "snippets", role: "listbox", "aria-label": "Saved replies" });
    t.after(box);
  }
  snippets.pick = Math.min(snippets.pick, found.length - 1);
  box.replaceChildren(
    ...found.map((sn, i) =>
      el(
        "li",
        {
          id: `snippet-${i}`,
          role: "option",
          "aria-selected": String(i === snippets.pick),
          onmousedown: (e) => {
            e.preventDefault();
            useSnippet(t, sn);
          },
        },
        el("strong", {}, `/${sn.name} `),
        el("span", { dir: "auto" }, snippetText(sn)),
      ),
    ),
  );
  t.setAttribute("aria-activedescendant", `snippet-${snippets.pick}`);
}

function useSnippet(t, sn) {
  t.value = snippetText(sn);
  t.dispatchEvent(new Event("input"));
  const box = $("#snippets");
  if (box) box.remove();
  t.focus();
}

function snippetKeys(t, e) {
  const found = snippetMatches(t);
  if (!found.length) return;
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    snippets.pick = (snippets.pick + (e.key === "ArrowDown" ? 1 : found.length - 1)) % found.length;
    showSnippets(t);
  } else if (e.key === "Enter" || e.key === "Tab") {
    e.preventDefault();
    useSnippet(t, found[snippets.pick] || found[0]);
  } else if (e.key === "Escape") {
    const box = $("#snippets");
    if (box) box.remove();
  }
}

function clearDraft(id) {
  delete state.drafts[`${state.selected}:${id}`];
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = ME.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401) {
    location.href = "/login?expired=1";
    throw new ApiError(401, null);
  }
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function say(text, kind = "info") {
  const s = $("#status");
  s.textContent = text;
  s.dataset.kind = kind;
  clearTimeout(say.t);
  say.t = setTimeout(() => (s.textContent = ""), 6000);
}

const fmtTime = (ms) => new Date(ms).toLocaleString([], { dateStyle: "short", timeStyle: "short" });

function left(ms) {
  const d = Math.round((ms - Date.now()) / 60000);
  if (d < 0) return { text: `${-d} min over`, late: true };
  if (d < 60) return { text: `${d} min left`, late: false };
  return { text: `${Math.floor(d / 60)} h ${d % 60} min left`, late: false };
}

// ---- the list -------------------------------------------------------------------------

function listQuery() {
  const p = new URLSearchParams({ limit: "100" });
  if (state.tab === "mine") p.set("assignee", ME.agent || "");
  if (state.tab === "unassigned") p.set("unassigned", "true");
  for (const [k, v] of Object.entries(state.filters)) if (v) p.set(k, v);
  return `/api/v1/conversations?${p}`;
}

async function loadList() {
  loadLoad();
  if (state.tab === "mine" && !ME.agent) {
    state.lines = [];
    renderList();
    return;
  }
  try {
    const page = await api("GET", listQuery());
    state.lines = page.conversations;
    renderList();
  } catch (e) {
    say(`The list could not be loaded: ${e.message}`, "error");
  }
}

function slaDue(c) {
  const clocks = (c.sla && c.sla.clocks) || c.sla || {};
  let due = null;
  for (const v of Object.values(clocks)) {
    const at = v && (v.due_at || v.due);
    if (typeof at === "number" && (due === null || at < due)) due = at;
  }
  return due;
}

function unread(c) {
  const last = c.last_customer_message_at;
  return typeof last === "number" && last > (state.seen[c.id] || 0) && c.id !== state.selected;
}

function renderList() {
  const ul = $("#lines");
  ul.replaceChildren();
  if (!state.lines.length) {
    ul.append(el("li", { class: "empty" }, "Nothing here."));
  }
  for (const c of state.lines) {
    const due = slaDue(c);
    const sla = due ? left(due) : null;
    const open = (e) => {
      e.preventDefault();
      select(c.id);
    };
    const li = el(
      "li",
      {
        class: ["line", c.id === state.selected ? "selected" : "", unread(c) ? "unread" : ""].join(" "),
        "data-id": c.id,
      },
      el(
        "a",
        { href: `#conversation-${c.id}`, class: "open", onclick: open },
        el(
          "span",
          { class: "who" },
          unread(c) ? el("span", { class: "dot", title: "unread" }, "●") : null,
          el("strong", { dir: "auto" }, c.contact_name || c.contact_phone || `#${c.id}`),
          el("span", { class: `pill status-${c.status}` }, c.status),
          c.priority && c.priority !== "normal" ? el("span", { class: `pill prio-${c.priority}` }, c.priority) : null,
        ),
        el("span", { class: "preview", dir: "auto" }, c.last_message || ""),
        el(
          "span",
          { class: "meta" },
          el("span", {}, c.queue ? `queue ${c.queue}` : "no queue"),
          el("span", { class: "owner" }, c.assignee ? `owner ${c.assignee}` : "unowned"),
          sla ? el("span", { class: sla.late ? "sla late" : "sla", "data-due": due }, sla.text) : null,
        ),
      ),
    );
    ul.append(li);
  }
}

function tickSla() {
  for (const s of document.querySelectorAll(".sla[data-due]")) {
    const l = left(Number(s.dataset.due));
    s.textContent = l.text;
    s.classList.toggle("late", l.late);
  }
}

// ---- one conversation ---------------------------------------------------------------------

async function select(id) {
  const prev = state.selected;
  state.selected = id;
  watchPresence(prev, id);
  document.body.classList.add("reading");
  await loadDetail();
  renderList();
}

async function loadDetail() {
  if (!state.selected) return;
  try {
    const d = await api("GET", `/api/v1/conversations/${state.selected}`);
    state.detail = d;
    const c = d.conversation;
    state.seen[c.id] = Math.max(state.seen[c.id] || 0, c.last_customer_message_at || 0, Date.now());
    localStorage.setItem("sy-seen", JSON.stringify(state.seen));
    renderDetail();
    loadTrace();
  } catch (e) {
    if (e.status === 403 || e.status === 404) {
      state.selected = null;
      state.detail = null;
      $("#conversation").replaceChildren(el("p", { class: "empty" }, "This conversation is no longer yours to see."));
    } else say(`The conversation could not be loaded: ${e.message}`, "error");
  }
}

function deliveryLabel(m) {
  if (m.direction !== "out") return null;
  const s = m.status === "failed" && m.error ? `failed: ${m.error}` : m.status;
  return el("span", { class: `delivery d-${m.status}`, title: m.error || m.status }, s);
}

function mediaOf(m) {
  if (m.kind !== "media" || m.direction !== "in") return null;
  const ty = m.payload && m.payload.type;
  const media = (m.payload && m.payload.message && m.payload.message[ty]) || {};
  const url = `/api/v1/conversations/${m.conversation_id}/messages/${m.id}/media`;
  if (ty === "image" || ty === "sticker") {
    // The bytes are fetched from WhatsApp just after the message arrives: try again a few
    // times before showing it as missing.
    let tries = 0;
    const img = el("img", { class: "media", src: url, alt: media.caption || "a photo from the customer" });
    img.addEventListener("error", () => {
      if (++tries <= 15) setTimeout(() => (img.src = `${url}?try=${tries}`), 1000);
    });
    return img;
  }
  if (ty === "audio")
    return el("audio", { class: "media", controls: true, preload: "none", src: url, "aria-label": media.voice ? "voice note" : "audio" });
  if (ty === "video") return el("video", { class: "media", controls: true, preload: "none", src: url, "aria-label": "video" });
  return el("a", { class: "media", href: url, download: media.filename || "" }, `Download ${media.filename || media.mime_type || "the file"}`);
}

function renderDetail() {
  const d = state.detail;
  const c = d.conversation;
  const root = $("#conversation");
  const owner = c.assignee;
  const mine = owner && owner === ME.agent;
  const items = [
    ...d.messages.map((m) => ({ at: m.created_at, m })),
    ...d.notes.map((n) => ({ at: n.created_at, n })),
  ].sort((a, b) => a.at - b.at);

  const transcript = el("ol", { id: "transcript", "aria-label": "Transcript", tabindex: "0" });
  for (const it of items) {
    if (it.m) {
      const m = it.m;
      const who = m.direction === "in" ? "customer" : m.author === "bot" ? "bot" : "agent";
      transcript.append(
        el(
          "li",
          { class: `msg ${who}` },
          el("div", { class: "by" }, who === "agent" ? m.author : who, " · ", fmtTime(m.created_at), " ", deliveryLabel(m)),
          el("div", { class: "text", dir: "auto" }, m.body),
          mediaOf(m),
        ),
      );
    } else {
      const n = it.n;
      transcript.append(
        el(
          "li",
          { class: "msg note" },
          el("div", { class: "by" }, `Internal note by ${n.author} · never sent to the customer · `, fmtTime(n.created_at)),
          el("div", { class: "text", dir: "auto" }, n.text),
        ),
      );
    }
  }

  const head = el(
    "header",
    { class: "conv-head" },
    el("button", { class: "back", onclick: () => document.body.classList.remove("reading"), "aria-label": "Back to the list" }, "←"),
    el("h2", { dir: "auto" }, (d.contact && (d.contact.name || d.contact.external_id)) || `Conversation ${c.id}`),
    el("span", { class: `pill status-${c.status}` }, c.status),
    el("span", { class: "pill" }, c.queue ? `queue ${c.queue}` : "no queue"),
    el("span", { class: "pill owner" }, owner ? `owner ${owner}` : "unowned"),
    c.priority ? el("span", { class: `pill prio-${c.priority}` }, c.priority) : null,
    ...(c.tags || []).map((t) => el("span", { class: "pill tag" }, `#${t}`)),
    el("span", { id: "presence", role: "status", "aria-live": "polite" }),
  );

  // A redraw keeps the box being typed in focused, with its cursor.
  const focused = document.activeElement && document.activeElement.id;
  const sel = focused && document.activeElement.selectionStart;
  root.replaceChildren(head, transcript, composer(d, mine, owner), actions(d, mine, owner));
  transcript.scrollTop = transcript.scrollHeight;
  const again = focused && document.getElementById(focused);
  if (again && again.tagName === "TEXTAREA") {
    again.focus();
    if (typeof sel === "number") again.setSelectionRange(sel, sel);
  }
  renderCustomer(d);
  showViewers(state.viewers);
}

function composer(d, mine, owner) {
  const c = d.conversation;
  const box = el("form", { id: "composer", onsubmit: (e) => e.preventDefault() });
  if (owner && !mine && !SUPERVISOR) {
    box.append(el("p", { class: "why", role: "status" }, `${owner} owns this conversation: only they can reply.`));
    box.append(el("textarea", { id: "reply-text", disabled: true, "aria-label": "Reply (disabled)" }));
    return box;
  }
  if (!owner && !SUPERVISOR) {
    box.append(
      el("p", { class: "why" }, "Nobody owns this conversation yet. Claim it to reply."),
      el("button", { id: "claim", type: "button", onclick: claim }, "Claim"),
    );
    return box;
  }
  if (d.window_open) {
    box.append(
      el("label", { for: "reply-text" }, "Reply to the customer, or write an internal note"),
      draftBox("reply-text", { rows: "3", placeholder: "Type a reply… (/ for saved replies)" }),
      el(
        "div",
        { class: "row" },
        el("button", { id: "send", type: "button", onclick: sendReply }, "Send"),
        el("button", { id: "add-note", type: "button", class: "secondary", onclick: addNote }, "Add internal note"),
      ),
    );
  } else {
    const tpls = d.templates || [];
    box.append(
      el("p", { class: "why" }, "The customer's 24-hour window is closed: only an approved template can be sent."),
      el("label", { for: "template" }, "Approved template"),
      el("select", { id: "template" }, ...tpls.map((t) => el("option", { value: t.name }, t.name + (t.text ? ` — ${t.text}` : "")))),
      el(
        "div",
        { class: "row" },
        el("button", { id: "send-template", type: "button", onclick: sendTemplate, disabled: !tpls.length }, "Send template"),
      ),
      el("label", { for: "note-text" }, "Internal note"),
      draftBox("note-text", { rows: "2" }),
      el("button", { id: "add-note", type: "button", class: "secondary", onclick: addNote }, "Add internal note"),
    );
  }
  return box;
}

function actions(d, mine, owner) {
  const c = d.conversation;
  if (!(mine || SUPERVISOR)) return el("div");
  const queueSel = el("select", { id: "handoff-queue", "aria-label": "Hand off to queue" }, ...state.queues.map((q) => el("option", { value: q, selected: q === c.queue }, q)));
  const handNote = el("input", { id: "handoff-note", placeholder: "note for whoever takes it", "aria-label": "Hand-off note", dir: "auto" });
  const handAgent = el("input", { id: "handoff-agent", placeholder: "agent id (optional)", "aria-label": "Hand off to agent", size: "12" });
  const tag = el("input", { id: "tag", placeholder: "tag", "aria-label": "Tag to add", size: "10" });
  const open = d.tickets.find((t) => t.status === "open" || t.status === "pending");
  const ticketTitle = el("input", { id: "ticket-title", placeholder: "ticket title", "aria-label": "Ticket title", dir: "auto" });
  return el(
    "div",
    { class: "actions" },
    el(
      "div",
      { class: "row" },
      el("button", { id: "resolve", type: "button", onclick: () => act("status", { status: "resolved" }, "Resolved") }, "Resolve"),
      el(
        "select",
        { id: "conv-status", "aria-label": "Status", onchange: (e) => act("status", { status: e.target.value }, "Status set") },
        ...["open", "waiting", "escalated", "resolved"].map((x) => el("option", { value: x, selected: x === c.status }, `status ${x}`)),
        c.status === "new" ? el("option", { value: "new", selected: true, disabled: true }, "status new") : null,
      ),
      el(
        "select",
        { id: "priority", "aria-label": "Priority", onchange: (e) => act("priority", { priority: e.target.value }, "Priority set") },
        ...["low", "normal", "high", "urgent"].map((p) => el("option", { value: p, selected: p === c.priority }, `priority ${p}`)),
      ),
      el(
        "select",
        {
          id: "snooze",
          "aria-label": "Snooze",
          onchange: (e) => e.target.value && act("snooze", { for: e.target.value }, `Snoozed for ${e.target.value}`),
        },
        el("option", { value: "" }, "snooze…"),
        ...["1h", "4h", "1d", "3d"].map((x) => el("option", { value: x }, `snooze ${x}`)),
      ),
    ),
    el(
      "div",
      { class: "row" },
      queueSel,
      handAgent,
      handNote,
      el(
        "button",
        {
          id: "handoff",
          type: "button",
          class: "secondary",
          onclick: () =>
            act(
              "handoff",
              { queue: queueSel.value, agent: handAgent.value.trim() || undefined, note: handNote.value.trim() || undefined },
              "Handed off",
            ),
        },
        "Hand off",
      ),
    ),
    el(
      "div",
      { class: "row" },
      tag,
      el(
        "button",
        { id: "add-tag", type: "button", class: "secondary", onclick: () => tag.value.trim() && act("tags", { add: [tag.value.trim()] }, "Tagged") },
        "Add tag",
      ),
      open
        ? el(
            "select",
            {
              id: "ticket-status",
              "aria-label": `Ticket #${open.id} status`,
              onchange: (e) => ticket(open.id, { status: e.target.value }),
            },
            ...["open", "pending", "resolved", "closed"].map((x) => el("option", { value: x, selected: x === open.status }, `ticket #${open.id} ${x}`)),
          )
        : null,
      open ? null : ticketTitle,
      open
        ? null
        : el(
            "button",
            {
              id: "open-ticket",
              type: "button",
              class: "secondary",
              onclick: async () => {
                const title = ticketTitle.value.trim();
                if (!title) return say("A ticket needs a title.", "error");
                try {
                  await api("POST", "/api/v1/tickets", { conversation: c.id, title });
                  say("Ticket opened.");
                } catch (e) {
                  say(e.message, "error");
                }
                await loadDetail();
              },
            },
            "Open ticket",
          ),
    ),
  );
}

async function ticket(id, change) {
  try {
    await api("PATCH", `/api/v1/tickets/${id}`, change);
    say(`Ticket #${id} updated.`);
  } catch (e) {
    say(e.message, "error");
  }
  await loadDetail();
}

async function act(what, body, done) {
  try {
    await api("POST", `/api/v1/conversations/${state.selected}/${what}`, body);
    say(done);
  } catch (e) {
    say(e.message, "error");
  }
  await Promise.all([loadDetail(), loadList()]);
}

async function claim() {
  try {
    await api("POST", `/api/v1/conversations/${state.selected}/claim`, {});
    say("You own this conversation now.");
  } catch (e) {
    say(e.status === 409 ? `Taken: ${e.message}` : e.message, "error");
  }
  await Promise.all([loadDetail(), loadList()]);
}

async function sendReply() {
  const t = $("#reply-text");
  const text = t.value.trim();
  if (!text) return;
  t.disabled = true;
  try {
    await api("POST", `/api/v1/conversations/${state.selected}/reply`, { text });
    t.value = "";
    clearDraft("reply-text");
    say("Sent to the outbox.");
  } catch (e) {
    say(e.message, "error");
  }
  t.disabled = false;
  await loadDetail();
}

async function sendTemplate() {
  const template = $("#template").value;
  try {
    await api("POST", `/api/v1/conversations/${state.selected}/reply`, { template });
    say("Template sent to the outbox.");
  } catch (e) {
    say(e.message, "error");
  }
  await loadDetail();
}

async function addNote() {
  const t = $("#note-text") || $("#reply-text");
  const text = t.value.trim();
  if (!text) return;
  try {
    await api("POST", `/api/v1/conversations/${state.selected}/notes`, { text });
    t.value = "";
    clearDraft(t.id);
    say("Note added (never sent).");
  } catch (e) {
    say(e.message, "error");
  }
  await loadDetail();
}

// ---- why, and who --------------------------------------------------------------------------

function stepText(s) {
  switch (s.kind) {
    case "rule":
      return s.matched ? `rule “${s.rule}” matched on ${s.event}` : s.failed ? `rule “${s.rule}” failed: ${s.failed}` : null;
    case "flow_started":
      return `flow ${s.flow} started (${s.by})`;
    case "step_entered":
      return `flow ${s.flow}, step ${s.step}`;
    case "answered":
      return `answered ${s.answer} at ${s.flow}/${s.step}`;
    case "routed":
      return `routed to ${s.queue} by ${s.by}`;
    case "unhandled":
      return `nothing handled it: queue ${s.queue}`;
    case "handed_off":
      return `handed off to ${s.queue} by ${s.by}`;
    case "waiting":
      return `waiting in ${s.queue}: ${s.why}`;
    case "assigned":
      return `assigned to ${s.agent}`;
    case "lookup":
      return s.failed ? `lookup ${s.action} failed: ${s.failed}` : `lookup ${s.action}: ${s.found} found`;
    case "send":
      return s.blocked ? `message ${s.message} blocked: ${s.blocked}` : `sent ${s.message} (${s.by})`;
    case "flow_ended":
      return `flow ${s.flow} ${s.completed ? "completed" : "ended"}: ${s.why}`;
    case "sla":
      return `SLA ${s.clock} ${s.what}`;
    case "interrupted":
      return `${s.intent} interrupted ${s.flow}/${s.step}${s.resumed ? " (the step asked again)" : ""}`;
    case "acknowledged":
      return `told the customer a person will reply (${s.reason}${s.closed ? ", outside hours" : ""}): ${s.template}`;
    case "language_set":
      return `language set to ${s.language} by ${s.by}`;
    case "clarify":
      return `unsure, asked the customer: ${s.candidates.map(([i, p]) => `${i} (${Number(p).toFixed(2)})`).join(" or ")}`;
    case "clarified":
      return s.intent ? `the customer picked ${s.intent}` : "the customer's answer named neither: handed to a person";
    case "withheld":
      return `did NOT run ${s.action} on ${s.connector} for ${s.key}: not confirmed with a button`;
    case "earlier_answer":
      return `answered ${s.answer} of an earlier step ${s.flow}/${s.step}`;
    case "question":
      return `a question (${s.intent}) at ${s.flow}/${s.step}: ${s.answered ? "answered, then asked again" : "not answered"}`;
    default:
      return s.kind ? s.kind.replace(/_/g, " ") : null;
  }
}

async function loadTrace() {
  const panel = $("#trace");
  try {
    const t = await api("GET", `/api/v1/conversations/${state.selected}/trace`);
    const ol = el("ol", { class: "decisions" });
    for (const dcs of t.decisions.slice(-20).reverse()) {
      const tr = dcs.trace;
      const steps = tr.steps.map(stepText).filter(Boolean);
      if (!steps.length && !tr.intent) continue;
      ol.append(
        el(
          "li",
          {},
          el("div", { class: "when" }, isNaN(Date.parse(tr.at)) ? tr.at : fmtTime(Date.parse(tr.at))),
          tr.intent ? el("div", { class: "intent" }, `intent ${tr.intent.intent} (${Number(tr.intent.confidence).toFixed(2)})`) : null,
          el("ul", {}, ...steps.map((s) => el("li", {}, s))),
        ),
      );
    }
    panel.replaceChildren(el("h3", {}, "Why is this here"), t.decisions.length ? ol : el("p", {}, "No decisions yet."));
  } catch (e) {
    panel.replaceChildren(el("h3", {}, "Why is this here"), el("p", {}, e.message));
  }
}

function safeLink(url, text) {
  return typeof url === "string" && /^https?:\/\//.test(url)
    ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, text)
    : text;
}

const LANGUAGES = { en: "English", roman_ur: "Roman Urdu", ur: "Urdu (اردو)" };

// The contact's language: detected from their messages ("auto"), or set by a person.
function languageSelect(id, ct) {
  const detected = !ct.language_set_by;
  const name = (l) => LANGUAGES[l] || l || "not known yet";
  const options = [el("option", { value: "auto" }, `auto: ${detected ? name(ct.language) : "detect again"}`)];
  for (const [code, label] of Object.entries(LANGUAGES)) options.push(el("option", { value: code }, label));
  if (ct.language && !LANGUAGES[ct.language]) options.push(el("option", { value: ct.language }, ct.language));
  const s = el("select", { id: "language", name: "language" }, ...options);
  s.value = detected ? "auto" : ct.language;
  s.onchange = async () => {
    try {
      await api("POST", `/api/v1/conversations/${id}/language`, { language: s.value });
      say(s.value === "auto" ? "Replies follow the customer's language again." : `Replies in ${name(s.value)} from now on.`);
    } catch (e) {
      say(e.message, "error");
    }
    await loadDetail();
  };
  return s;
}

function renderCustomer(d) {
  const ct = d.contact || {};
  const attrs = Object.entries(ct.attributes || {});
  $("#customer").replaceChildren(
    el("h3", {}, "Customer"),
    el(
      "dl",
      {},
      el("dt", {}, "Name"),
      el("dd", { dir: "auto" }, ct.name || "—"),
      el("dt", {}, "Phone"),
      el("dd", {}, ct.phone || ct.external_id || "—"),
      el("dt", {}, el("label", { for: "language" }, "Replies in")),
      el("dd", {}, languageSelect(d.conversation.id, ct)),
      el("dt", {}, "Tags"),
      el("dd", {}, (d.conversation.tags || []).join(", ") || "—"),
      ...attrs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dir: "auto" }, typeof v === "string" ? v : JSON.stringify(v))]),
    ),
    el("h3", {}, "Tickets"),
    d.tickets.length
      ? el("ul", {}, ...d.tickets.map((t) => el("li", {}, `#${t.id} ${t.title} — ${t.status}, ${t.priority}`)))
      : el("p", {}, "No tickets."),
    el("div", { id: "customer-more" }),
  );
  loadCustomer(d.conversation.id);
}

async function loadCustomer(id) {
  try {
    const v = await api("GET", `/api/v1/conversations/${id}/customer`);
    if (id !== state.selected) return;
    const more = $("#customer-more");
    if (!more) return;
    const orders = v.orders || [];
    more.replaceChildren(
      el("h3", {}, "Orders"),
      v.orders_error
        ? el("p", { class: "why" }, `The store did not answer: ${v.orders_error}`)
        : orders.length
          ? el(
              "ul",
              { class: "orders" },
              ...orders.map((o) =>
                el(
                  "li",
                  {},
                  el("strong", {}, o.name || "order"),
                  ` — ${o.status || "?"}`,
                  o.payment === "cod" ? `, COD${o.financial_status ? ` (${o.financial_status})` : ""}` : o.payment ? `, ${o.payment}` : "",
                  o.total !== undefined ? `, ${o.currency || "Rs"} ${o.total}` : "",
                  o.courier ? el("div", {}, `${o.courier} `, safeLink(o.tracking_url, o.tracking_number || "tracking")) : null,
                ),
              ),
            )
          : el("p", {}, v.store ? "No orders for this phone." : "The pack has no store connector."),
      el("h3", {}, "Previous conversations"),
      v.conversations.length
        ? el(
            "ul",
            {},
            ...v.conversations.map((c) =>
              el(
                "li",
                {},
                el("a", { href: `#conversation-${c.id}`, onclick: (e) => (e.preventDefault(), select(c.id)) }, `#${c.id}`),
                ` ${c.status}, ${fmtTime(c.created_at)}`,
              ),
            ),
          )
        : el("p", {}, "None."),
    );
  } catch (_) {}
}

// ---- live ----------------------------------------------------------------------------------

let refresh = null;
function soon(detailToo) {
  clearTimeout(refresh);
  refresh = setTimeout(() => {
    loadList();
    if (detailToo) loadDetail();
  }, 150);
}

function live() {
  const es = new EventSource("/api/v1/events");
  const kinds = [
    "conversation.queued",
    "conversation.assigned",
    "message.received",
    "conversation.status_changed",
    "ticket.created",
    "sla.warning",
    "sla.breached",
  ];
  for (const k of kinds) {
    es.addEventListener(k, (e) => {
      let ev = {};
      try {
        ev = JSON.parse(e.data);
      } catch (_) {}
      soon(ev.conversation_id === state.selected);
    });
  }
  es.addEventListener("presence", (e) => {
    try {
      const ev = JSON.parse(e.data);
      if (ev.conversation_id === state.selected) showViewers(ev.viewers);
    } catch (_) {}
  });
  es.addEventListener("revoked", () => {
    es.close();
    location.href = "/login?expired=1";
  });
  es.onopen = () => $("#live").classList.add("on");
  es.onerror = () => $("#live").classList.remove("on");
}

// ---- keys and set-up -------------------------------------------------------------------------

function move(by) {
  if (!state.lines.length) return;
  const i = state.lines.findIndex((c) => c.id === state.selected);
  const next = state.lines[Math.max(0, Math.min(state.lines.length - 1, i + by))];
  if (next) select(next.id);
}

document.addEventListener("keydown", (e) => {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
  if (typing) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && document.activeElement.id === "reply-text") sendReply();
    if (e.key === "Escape") document.activeElement.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "j") move(1);
  else if (e.key === "k") move(-1);
  else if (e.key === "r" && $("#reply-text")) {
    e.preventDefault();
    $("#reply-text").focus();
  } else if (e.key === "n" && ($("#note-text") || $("#reply-text"))) {
    e.preventDefault();
    ($("#note-text") || $("#reply-text")).focus();
  } else if (e.key === "e" && $("#resolve")) $("#resolve").click();
  else if (e.key === "?") $("#keys").toggleAttribute("hidden");
});

// ---- availability and load ---------------------------------------------------------------------

async function loadLoad() {
  const box = $("#load");
  if (!ME.agent || !box) return;
  try {
    const p = await api("GET", `/api/v1/conversations?assignee=${encodeURIComponent(ME.agent)}&limit=200`);
    const open = p.conversations.filter((c) => c.status !== "resolved").length;
    box.textContent = `${open} of ${meta("sy-capacity")} open`;
  } catch (_) {}
}

function setUpAvailability() {
  const sel = $("#availability");
  if (!sel) return;
  sel.addEventListener("change", async () => {
    try {
      await api("PATCH", `/api/v1/agents/${encodeURIComponent(ME.agent)}`, { availability: sel.value });
      say(`You are ${sel.value}.`);
    } catch (e) {
      say(e.message, "error");
    }
    loadList();
  });
}

function setUp() {
  setUpAvailability();
  loadSnippets();
  for (const b of document.querySelectorAll("[data-tab]")) {
    if (b.dataset.tab === "all" && !SUPERVISOR) b.remove();
    if (b.dataset.tab === "mine" && !ME.agent) b.remove();
    b.addEventListener("click", () => {
      state.tab = b.dataset.tab;
      for (const o of document.querySelectorAll("[data-tab]")) o.setAttribute("aria-selected", String(o === b));
      loadList();
    });
  }
  if (!ME.agent) state.tab = "unassigned";
  const first = document.querySelector(`[data-tab="${state.tab}"]`);
  if (first) first.setAttribute("aria-selected", "true");
  const f = $("#filters");
  f.addEventListener("submit", (e) => {
    e.preventDefault();
    for (const k of Object.keys(state.filters)) {
      const i = f.elements[k];
      if (i) state.filters[k] = i.value.trim();
    }
    loadList();
  });
  f.addEventListener("change", () => f.requestSubmit());
  for (const q of state.queues) f.elements.queue.append(el("option", { value: q }, q));
  loadList();
  live();
  setInterval(tickSla, 30000);
}

setUp();
