// devpush dashboard behaviour: theme toggle, HTMX error toasts, live deployment lists and the
// deployment log view (older lines on scroll-up, new lines live from the SSE stream).
"use strict";

(function () {
  const STATUS = window.DEVPUSH_STATUS || {};

  // ---- theme -------------------------------------------------------------------------------
  window.devpushTheme = function (choice) {
    if (choice === "system") localStorage.removeItem("devpush-theme");
    else localStorage.setItem("devpush-theme", choice);
    if (choice === "system") document.documentElement.removeAttribute("data-theme");
    else document.documentElement.setAttribute("data-theme", choice);
  };

  // ---- toasts (HTMX errors arrive as server-rendered fragments) -----------------------------
  function toast(html) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const holder = document.createElement("div");
    holder.innerHTML = html;
    const node = holder.firstElementChild || holder;
    box.appendChild(node);
    setTimeout(() => node.remove(), 7000);
  }
  document.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    const body = xhr && xhr.responseText;
    if (body && body.trim().startsWith("<")) toast(body);
    else toast('<div class="toast error"><strong>Request failed</strong>The server answered ' +
      (xhr ? xhr.status : "nothing") + ".</div>");
  });
  document.addEventListener("htmx:sendError", () => {
    toast('<div class="toast error"><strong>Offline?</strong>devpush could not be reached.</div>');
  });

  // Preset detection re-renders the command fields; keep what the user typed meanwhile
  // (a field counts as typed when it differs from what detection last put there).
  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    if (!target || target.id !== "commands" || event.detail.xhr.status !== 200) return;
    const template = document.createElement("template");
    template.innerHTML = event.detail.serverResponse;
    const fresh = template.content.querySelector("#commands");
    if (!fresh) return;
    for (const key of ["build_command", "pre_deploy_command", "start_command"]) {
      const now = target.querySelector('[name="' + key + '"]');
      const before = target.querySelector('[name="detected_' + key + '"]');
      const next = fresh.querySelector('[name="' + key + '"]');
      if (now && next && now.value.trim() && now.value !== (before ? before.value : "")) {
        next.setAttribute("value", now.value);
      }
    }
    event.detail.serverResponse = fresh.outerHTML;
  });

  function setBadge(el, status, conclusion) {
    if (!el) return;
    const key = status === "completed" && conclusion ? conclusion : status;
    const pair = STATUS[key] || [key, "muted"];
    el.textContent = pair[0];
    el.className = "badge " + pair[1];
    el.dataset.status = key;
  }

  // ---- server-sent events over fetch (so Last-Event-ID can be sent on the first request) ---
  async function streamEvents(url, lastEventId, onEvent, signal) {
    const headers = { Accept: "text/event-stream" };
    if (lastEventId) headers["Last-Event-ID"] = String(lastEventId);
    const response = await fetch(url, { headers, signal, credentials: "same-origin" });
    if (!response.ok || !response.body) throw new Error("stream answered " + response.status);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = { event: "message", data: [], id: null };
        for (const line of raw.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") event.event = val;
          else if (field === "data") event.data.push(val);
          else if (field === "id") event.id = val;
        }
        if (event.data.length) {
          if (onEvent({ event: event.event, data: event.data.join("\n"), id: event.id }) === false) return;
        }
      }
    }
  }

  // ---- the deployment log view ----------------------------------------------------------------
  function fmtTime(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  class LogView {
    constructor(root) {
      this.root = root;
      this.box = root.querySelector("[data-log-lines]");
      this.state = root.querySelector("[data-log-state]");
      this.projectId = root.dataset.project;
      this.deploymentId = root.dataset.deployment;
      this.badge = document.getElementById("status-badge");
      this.seen = new Set();
      this.lastSeq = 0;
      this.older = null;
      this.loadingOlder = false;
      this.follow = true;
      this.ended = false;
      this.status = this.badge ? this.badge.dataset.status : null;
      this.box.addEventListener("scroll", () => this.onScroll());
      this.start();
    }

    lineNode(line) {
      const row = document.createElement("div");
      row.className = ["line", line.phase, line.stream, line.level || ""].join(" ").trim();
      row.dataset.seq = line.seq;
      const ts = document.createElement("span");
      ts.className = "ts";
      ts.textContent = fmtTime(line.ts);
      const msg = document.createElement("span");
      msg.className = "msg";
      if (line.replica) {  // replica 0 (and a single instance) untagged: the usual case
        const replica = document.createElement("span");
        replica.className = "replica";
        replica.title = "replica " + line.replica;
        replica.textContent = "r" + line.replica;
        msg.append(replica);
      }
      msg.append(line.message);
      row.append(ts, msg);
      return row;
    }

    atBottom() {
      return this.box.scrollHeight - this.box.scrollTop - this.box.clientHeight < 40;
    }

    append(lines) {
      const stick = this.follow && this.atBottom();
      for (const line of lines) {
        if (this.seen.has(line.seq)) continue;
        this.seen.add(line.seq);
        this.lastSeq = Math.max(this.lastSeq, line.seq);
        this.box.appendChild(this.lineNode(line));
      }
      this.updateEmpty();
      if (stick) this.box.scrollTop = this.box.scrollHeight;
    }

    prepend(lines) {
      const before = this.box.scrollHeight;
      const frag = document.createDocumentFragment();
      for (const line of lines) {
        if (this.seen.has(line.seq)) continue;
        this.seen.add(line.seq);
        frag.appendChild(this.lineNode(line));
      }
      const first = this.box.querySelector(".line");
      this.box.insertBefore(frag, first);
      this.box.scrollTop += this.box.scrollHeight - before;
      this.updateEmpty();
    }

    updateEmpty() {
      const empty = this.box.querySelector("[data-empty]");
      if (empty) empty.hidden = this.seen.size > 0;
    }

    url(extra) {
      const params = new URLSearchParams({ deployment: this.deploymentId, limit: "200" });
      if (extra) params.set("before_cursor", extra);
      return "/api/v1/projects/" + this.projectId + "/logs?" + params;
    }

    async fetchPage(cursor) {
      const response = await fetch(this.url(cursor), { credentials: "same-origin" });
      if (!response.ok) throw new Error("logs answered " + response.status);
      const page = await response.json();
      const lines = page.items.slice().sort((a, b) => a.seq - b.seq);
      return { lines, next: page.next_cursor };
    }

    async start() {
      try {
        const { lines, next } = await this.fetchPage(null);
        this.older = next;
        this.append(lines);
        this.box.scrollTop = this.box.scrollHeight;
      } catch (err) {
        this.setState("Could not load the log: " + err.message, true);
      }
      this.connect();
    }

    async onScroll() {
      this.follow = this.atBottom();
      if (this.box.scrollTop > 60 || !this.older || this.loadingOlder) return;
      this.loadingOlder = true;
      try {
        const { lines, next } = await this.fetchPage(this.older);
        this.older = next;
        this.prepend(lines);
      } finally {
        this.loadingOlder = false;
      }
    }

    setState(text, off) {
      if (!this.state) return;
      this.state.textContent = text;
      this.state.classList.toggle("off", !!off);
    }

    onStatus(payload) {
      const key = payload.status === "completed" && payload.conclusion ? payload.conclusion : payload.status;
      // the summary (and the badge in it) is swapped on each refresh: find the current one;
      // hx-sync="this:replace" on it lets only the latest refresh land, so two changes in
      // quick succession (finalize, then completed) never leave the older one shown
      this.badge = document.getElementById("status-badge");
      setBadge(this.badge, payload.status, payload.conclusion);
      if (key !== this.status) {
        this.status = key;
        const summary = document.getElementById("summary");
        if (summary && window.htmx) window.htmx.trigger(summary, "refresh");
      }
    }

    async connect() {
      const url = "/api/v1/deployments/" + this.deploymentId + "/events";
      let failures = 0;
      while (!this.ended) {
        this.setState("Live");
        try {
          await streamEvents(url, this.lastSeq, (event) => {
            const data = JSON.parse(event.data);
            if (event.event === "log") this.append([data]);
            else if (event.event === "status") this.onStatus(data);
            else if (event.event === "end") { this.ended = true; return false; }
            failures = 0;
            return true;
          });
        } catch (err) {
          failures += 1;
        }
        if (this.ended) break;
        if (["failed", "canceled", "skipped"].includes(this.status)) break;
        this.setState("Reconnecting…", true);
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** failures, 10000)));
      }
      this.setState("Finished", true);
    }
  }

  // ---- live lists: refresh a fragment when the project's stream says something changed -------
  function liveList(el) {
    const project = el.dataset.liveProject;
    if (!project || !window.EventSource) return;
    const source = new EventSource("/api/v1/projects/" + project + "/events");
    let timer = null;
    const refresh = () => {
      clearTimeout(timer);
      timer = setTimeout(() => window.htmx && window.htmx.trigger(el, "refresh"), 250);
    };
    for (const kind of ["deployment.created", "deployment.status", "alias"]) {
      source.addEventListener(kind, refresh);
    }
    source.addEventListener("end", () => source.close());
    const state = document.querySelector("[data-live-state]");
    source.onopen = () => state && state.classList.remove("off");
    source.onerror = () => state && state.classList.add("off");
  }

  function boot(root) {
    root.querySelectorAll("[data-log-view]").forEach((el) => {
      if (!el._logView) el._logView = new LogView(el);
    });
    root.querySelectorAll("[data-live-project]").forEach((el) => {
      if (!el._live) { el._live = true; liveList(el); }
    });
  }
  document.addEventListener("DOMContentLoaded", () => boot(document));
})();
