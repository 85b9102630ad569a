// The sluice operator console. Plain DOM, no framework. Every string that
// comes from a proposal or a denial (an agent controls them) is inserted
// with textContent, never as HTML.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  const MAX_DENIALS = 50;
  const pendingNodes = new Map(); // proposal id -> <li>, kept so typed reasons survive refreshes
  const decidedNodes = new Map(); // proposal id -> { key, node }, kept so open details survive refreshes
  const denialSeqs = new Set();

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function field(label, value) {
    return el("div", { class: "field" }, el("b", {}, label), value);
  }

  function when(ms) {
    return new Date(ms).toLocaleString();
  }

  function notice(text, ok) {
    const n = $("notice");
    n.textContent = text;
    n.className = ok ? "notice-ok" : "notice-error";
    n.hidden = false;
  }

  function actor() {
    return $("actor").value.trim();
  }

  async function api(method, path, body) {
    const opts = { method, credentials: "same-origin", headers: {} };
    if (method !== "GET") {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = csrf;
      opts.body = JSON.stringify(body || {});
    }
    const r = await fetch(path, opts);
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    return { status: r.status, data: data || {} };
  }

  function who(origin) {
    let s = origin.sandbox;
    if (origin.binary) s += " (" + origin.binary + (origin.pid ? ", pid " + origin.pid : "") + ")";
    return s;
  }

  function pendingItem(p) {
    const reason = el("textarea", { class: "reason", placeholder: "reason (required to reject)", maxLength: 4096 });
    const result = el("div", { class: "result" });
    const approve = el("button", { class: "approve", type: "button" }, "Approve");
    const reject = el("button", { class: "reject", type: "button" }, "Reject");
    const li = el("li", { class: "proposal", "data-proposal-id": p.id },
      el("h3", {}, p.id),
      field("proposed by", who(p.origin)),
      field("when", when(p.created_at_ms)),
      field("intent", p.intent_summary || "(none given)"),
      p.denial ? field("denial", p.denial) : null,
      field("rule", p.rule_name || ""),
      el("pre", { class: "change" }, p.change_yaml),
      el("div", { class: "decide" }, reason, approve, reject),
      result);
    async function decide(verb) {
      const text = reason.value.trim();
      if (verb === "reject" && !text) {
        result.className = "result error";
        result.textContent = "A rejection needs a reason.";
        reason.focus();
        return;
      }
      approve.disabled = reject.disabled = true;
      const body = { reason: text || null };
      if (actor()) body.actor = actor();
      const r = await api("POST", "/api/proposals/" + encodeURIComponent(p.id) + "/" + verb, body);
      if (r.status === 200) {
        const o = r.data.outcome;
        if (o === "applied") notice("Approved " + p.id + " and applied it (" + (r.data.detail || "new generation") + ").", true);
        else if (o === "apply_failed") notice("Approved " + p.id + " but it could NOT be applied; the old policy stays in force: " + (r.data.detail || "unknown error"), false);
        else if (o === "rejected") notice("Rejected " + p.id + ".", true);
        else notice("Approved " + p.id + ".", true);
      } else {
        result.className = "result error";
        result.textContent = (r.data.error || ("HTTP " + r.status));
        approve.disabled = reject.disabled = false;
      }
      await load();
    }
    approve.addEventListener("click", () => decide("approve"));
    reject.addEventListener("click", () => decide("reject"));
    return li;
  }

  // Puts `nodes` in `ul` in this order, moving only nodes that are out of place:
  // moving a node blurs what it contains, which would drop the keys of someone
  // typing a reason when an event refreshes the page.
  function placeInOrder(ul, nodes) {
    let prev = null;
    for (const node of nodes) {
      const want = prev ? prev.nextSibling : ul.firstChild;
      if (want !== node) ul.insertBefore(node, want);
      prev = node;
    }
  }

  function renderPending(list) {
    const ul = $("pending");
    const ids = new Set(list.map((p) => p.id));
    for (const [id, node] of pendingNodes) {
      if (!ids.has(id)) { node.remove(); pendingNodes.delete(id); }
    }
    placeInOrder(ul, list.map((p) => { // the server's order (newest first)
      let node = pendingNodes.get(p.id);
      if (!node) { node = pendingItem(p); pendingNodes.set(p.id, node); }
      return node;
    }));
    $("pending-count").textContent = list.length ? "(" + list.length + ")" : "";
    $("pending-empty").hidden = list.length > 0;
  }

  function decidedItem(p) {
    const history = el("ul", { class: "history" });
    for (const h of p.history) {
      history.append(el("li", {},
        el("span", { class: h.action }, h.action), " by ", h.actor, " at ", when(h.at_ms),
        h.reason ? ": " + h.reason : ""));
    }
    return el("li", { class: "decided", "data-proposal-id": p.id, "data-status": p.status },
      el("h3", {}, p.id, " ", el("span", { class: "status-" + p.status }, p.status)),
      field("proposed by", who(p.origin)),
      field("rule", p.rule_name || ""),
      el("details", {}, el("summary", {}, "change"), el("pre", { class: "change" }, p.change_yaml)),
      history);
  }

  function renderDecided(list) {
    const ul = $("decided");
    const ids = new Set(list.map((p) => p.id));
    for (const [id, entry] of decidedNodes) {
      if (!ids.has(id)) { entry.node.remove(); decidedNodes.delete(id); }
    }
    placeInOrder(ul, list.map((p) => { // the server's order
      // A decided proposal changes only by its status and history; an unchanged
      // one keeps its node (and whatever the reader opened in it).
      const key = p.status + "/" + p.history.length;
      let entry = decidedNodes.get(p.id);
      if (!entry || entry.key !== key) {
        const node = decidedItem(p);
        if (entry) entry.node.replaceWith(node);
        entry = { key, node };
        decidedNodes.set(p.id, entry);
      }
      return entry.node;
    }));
    $("decided-empty").hidden = list.length > 0;
  }

  function denialItem(d) {
    const li = el("li", { class: "denial", "data-seq": String(d.seq) },
      el("span", { class: "when" }, new Date(d.at_ms).toLocaleTimeString()),
      el("span", { class: "line" }, d.line));
    if (d.proposable) {
      const b = el("button", { class: "propose", type: "button" }, "Propose a rule");
      b.addEventListener("click", async () => {
        b.disabled = true;
        const body = actor() ? { actor: actor() } : {};
        const r = await api("POST", "/api/denials/" + d.seq + "/propose", body);
        if (r.status === 201) {
          notice("Proposal " + r.data.proposal.id + " queued for " + d.destination + ".", true);
        } else {
          const errs = (r.data.errors || []).join("\n");
          notice("No proposal: " + (r.data.error || ("HTTP " + r.status)) + (errs ? "\n" + errs : ""), false);
          b.disabled = false;
        }
        await load();
      });
      li.append(" ", b);
    }
    if (d.suggested_snippet) {
      li.append(el("details", {}, el("summary", {}, "suggested change"), el("pre", {}, d.suggested_snippet)));
    }
    return li;
  }

  function addDenial(d, atTop) {
    if (denialSeqs.has(d.seq)) return;
    denialSeqs.add(d.seq);
    const ul = $("denials");
    const node = denialItem(d);
    if (atTop) ul.prepend(node); else ul.append(node);
    while (ul.children.length > MAX_DENIALS) {
      const last = ul.lastElementChild;
      denialSeqs.delete(Number(last.getAttribute("data-seq")));
      last.remove();
    }
    $("denials-empty").hidden = true;
  }

  let loading = null;
  async function load() {
    if (loading) return loading;
    loading = (async () => {
      try {
        const r = await api("GET", "/api/state");
        if (r.status === 401) { notice("The session ended: open the console URL with the token again.", false); return; }
        if (r.status !== 200) { notice("Cannot load the state: " + (r.data.error || ("HTTP " + r.status)), false); return; }
        const s = r.data;
        $("gateway").textContent = "gateway " + s.gateway;
        $("generation").textContent = "(generation " + s.policy.generation + ")";
        $("policy").textContent = s.policy.text;
        renderPending(s.pending);
        renderDecided(s.decided);
        for (const d of s.denials.slice().reverse()) addDenial(d, true);
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  function live() {
    const es = new EventSource("/api/events");
    es.addEventListener("open", () => { $("live").textContent = "live"; $("live").className = "live on"; });
    es.addEventListener("error", () => { $("live").textContent = "reconnecting…"; $("live").className = "live off"; });
    es.addEventListener("denial", (ev) => {
      try { addDenial(JSON.parse(ev.data), true); } catch (_) { /* ignore a broken frame */ }
    });
    es.addEventListener("proposals", () => { load(); });
  }

  load().then(live);
})();
