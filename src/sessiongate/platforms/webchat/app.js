// The sessiongate web chat page: one WebSocket, no build step, no dependencies.
//
// The browser keeps a random client id in localStorage; the gateway maps it to one
// web conversation, so a reload (or a visit tomorrow) shows the same conversation.
// Frames are described in sessiongate/platforms/webchat.py.
"use strict";

(() => {
  const CLIENT_KEY = "sessiongate.client";
  const CLIENT_RE = /^[A-Za-z0-9_-]{1,128}$/;
  // Closed on purpose by the server: reconnecting would be refused again.
  const FINAL_CLOSES = new Set([4400, 4401, 4403]);

  const $ = (id) => document.getElementById(id);
  const log = $("conversation");
  const input = $("message");
  const send = $("send");
  const newSession = $("new-session");
  const status = $("status");

  const client = clientId();
  const refPrefix = randomId(6);
  const pending = new Map(); // ref -> the user's bubble, until its reply arrives
  let counter = 0;
  let socket = null;
  let shownSession = null; // the session whose ledger the page shows last
  let retryDelay = 500;

  function randomId(bytes) {
    // getRandomValues works on plain http:// too, unlike crypto.randomUUID.
    const raw = crypto.getRandomValues(new Uint8Array(bytes));
    return btoa(String.fromCharCode(...raw))
      .replace(/\+/g, "-")
      .replace(/\//g, "_")
      .replace(/=+$/, "");
  }

  function clientId() {
    let id = null;
    try {
      id = localStorage.getItem(CLIENT_KEY);
    } catch (_) {
      // Storage disabled: this tab still works, a reload starts afresh.
    }
    if (!id || !CLIENT_RE.test(id)) {
      id = randomId(18);
      try {
        localStorage.setItem(CLIENT_KEY, id);
      } catch (_) {
        // See above.
      }
    }
    return id;
  }

  function setStatus(kind, text) {
    status.className = `status ${kind}`;
    status.textContent = text;
    const open = kind === "connected";
    send.disabled = !open;
    newSession.disabled = !open;
  }

  function setSession(session) {
    const id = $("session-id");
    const state = $("session-state");
    if (!session) {
      id.textContent = "none yet";
      state.textContent = "–";
      state.className = "state";
      return;
    }
    id.textContent = session.id;
    id.title = session.key + (session.title ? ` — ${session.title}` : "");
    state.textContent = session.state;
    state.className = `state state-${session.state}`;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text; // never innerHTML: text stays text
    return node;
  }

  const WHO = { user: "You", assistant: "Agent", system: "System", tool: "Tool", notice: "Gateway" };

  function bubble(role, text, classes = []) {
    const node = element("article", ["msg", role, ...classes].join(" "));
    node.dataset.role = role;
    node.dataset.testid = `msg-${role}`;
    node.append(element("div", "who", WHO[role] || role), element("div", "text", text));
    return node;
  }

  function place(node) {
    $("empty")?.remove();
    log.append(node);
    node.scrollIntoView({ block: "end" });
    return node;
  }

  function recalledList(hits) {
    const details = element("details", "recalled");
    details.dataset.testid = "recalled";
    details.append(element("summary", "", `Memory recalled (${hits.length})`));
    const list = element("ul");
    for (const hit of hits) {
      const where = hit.session_id ? `session ${hit.session_id}` : hit.provider;
      list.append(element("li", "", `${hit.text} (${where})`));
    }
    details.append(list);
    return details;
  }

  function ledgerBubble(entry) {
    const node = bubble(entry.role, entry.text, ["ledger", "current"]);
    node.dataset.seq = String(entry.seq);
    return node;
  }

  // The ledger of the session on show, as the server has it (on connect and after
  // commands). A new session keeps the earlier one above a divider until reload.
  function showConversation(frame) {
    const sid = frame.session ? frame.session.id : null;
    setSession(frame.session);
    const shown = [...log.querySelectorAll(".current")].filter((n) => !n.classList.contains("pending"));
    if (shownSession !== null && sid !== shownSession) {
      for (const node of log.querySelectorAll(".current:not(.pending)")) {
        node.classList.replace("current", "earlier");
      }
      if (sid) place(element("div", "divider current", `New session ${sid}`));
      frame.entries.forEach((entry) => place(ledgerBubble(entry)));
    } else {
      reconcile(shown.filter((n) => n.classList.contains("ledger")), frame.entries);
    }
    shownSession = sid;
    settleUnconfirmed(frame.entries);
    // Messages still waiting for their reply are the newest: keep them last.
    for (const node of pending.values()) log.append(node);
  }

  function reconcile(shown, entries) {
    const same =
      shown.length === entries.length &&
      shown.every((n, i) => n.dataset.role === entries[i].role && n.querySelector(".text").textContent === entries[i].text);
    if (same) {
      shown.forEach((n, i) => (n.dataset.seq = String(entries[i].seq)));
      return;
    }
    // Entries changed under the page (/undo, another tab): redraw them in place.
    const anchor = shown[0] || null;
    for (const entry of entries) {
      const node = ledgerBubble(entry);
      if (anchor) log.insertBefore(node, anchor);
      else place(node);
    }
    shown.forEach((n) => n.remove());
  }

  // Messages sent on a socket that dropped: the server answers everything it read,
  // so one that reached the ledger is shown from there; others are marked.
  function settleUnconfirmed(entries) {
    const said = new Set(entries.filter((e) => e.role === "user").map((e) => e.text));
    for (const node of log.querySelectorAll(".unconfirmed")) {
      if (said.has(node.querySelector(".text").textContent)) node.remove();
      else mark(node, "failed", "Not delivered: the connection dropped. Send it again.");
    }
  }

  function mark(node, kind, text) {
    node.classList.remove("pending", "unconfirmed", "ledger");
    node.classList.add(kind);
    node.querySelector(".note")?.remove();
    node.append(element("div", "note", text));
  }

  // A reply can come from a session the page has not shown yet: the first message
  // creates one, and a policy reset starts a fresh one for the message.
  function followSession(session, mine) {
    if (!session || session.id === shownSession) return;
    if (shownSession !== null) {
      for (const node of log.querySelectorAll(".current")) {
        if (node !== mine && !node.classList.contains("pending")) node.classList.replace("current", "earlier");
      }
      const divider = element("div", "divider current", `New session ${session.id}`);
      if (mine) log.insertBefore(divider, mine);
      else place(divider);
    }
    shownSession = session.id;
  }

  function showReply(frame) {
    const mine = pending.get(frame.ref);
    pending.delete(frame.ref);
    mine?.classList.remove("pending");
    setSession(frame.session);
    // Commands are followed by the conversation itself, which redraws what changed.
    if (!frame.command) followSession(frame.session, mine);
    if (frame.command || frame.notice) {
      place(bubble("notice", frame.reply, ["current"]));
      return;
    }
    const node = bubble("assistant", frame.reply, ["ledger", "current"]);
    if (frame.interrupted) node.classList.add("interrupted");
    if (frame.recalled.length) node.append(recalledList(frame.recalled));
    place(node);
  }

  function showError(frame) {
    const mine = frame.ref ? pending.get(frame.ref) : null;
    if (mine) {
      pending.delete(frame.ref);
      mark(mine, "failed", frame.message);
    } else {
      place(bubble("notice", frame.message, ["error", "current"]));
    }
  }

  function onFrame(event) {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    if (frame.type === "conversation") showConversation(frame);
    else if (frame.type === "reply") showReply(frame);
    else if (frame.type === "error") showError(frame);
  }

  function socketUrl() {
    const url = new URL("ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.searchParams.set("client", client);
    // The page remembers a ?token= in a cookie; pass it along too in case cookies are off.
    const token = new URLSearchParams(window.location.search).get("token");
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  function connect() {
    setStatus("connecting", "connecting…");
    socket = new WebSocket(socketUrl());
    socket.addEventListener("open", () => {
      retryDelay = 500;
      setStatus("connected", "connected");
    });
    socket.addEventListener("message", onFrame);
    socket.addEventListener("close", (event) => {
      for (const node of pending.values()) mark(node, "unconfirmed", "Waiting for the connection…");
      pending.clear();
      if (FINAL_CLOSES.has(event.code)) {
        setStatus("refused", event.reason || `refused (${event.code})`);
        return;
      }
      setStatus("disconnected", `disconnected — retrying in ${Math.round(retryDelay / 1000) || 1}s`);
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    });
  }

  function say(text) {
    if (!text.trim() || !socket || socket.readyState !== WebSocket.OPEN) return false;
    const ref = `${refPrefix}-${++counter}`;
    const command = text.trim().startsWith("/");
    const node = place(bubble("user", text, command ? ["command", "pending", "current"] : ["ledger", "pending", "current"]));
    pending.set(ref, node);
    socket.send(JSON.stringify({ type: "message", text, ref }));
    return true;
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    if (say(input.value)) input.value = "";
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  newSession.addEventListener("click", () => say("/new"));

  connect();
  input.focus();
})();
