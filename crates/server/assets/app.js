// Cronium web UI: the small amount of script the pages use. Every page works without it;
// this makes the live log and the job statuses live, asks before destructive actions, and adds
// keyboard shortcuts.
// No inline script anywhere (the Content-Security-Policy forbids it): data comes in data-*
// attributes.
(function () {
  "use strict";

  // Ask before a form marked data-confirm is sent.
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });

  document.querySelectorAll("[data-needs-js]").forEach(function (el) { el.hidden = false; });

  // Keyboard shortcuts: two-key "g x" moves, "/" searches, "?" lists them. Ignored while typing.
  var pending = null;
  var go = { d: "/", e: "/events", j: "/jobs", w: "/workflows", s: "/servers", v: "/variables", t: "/tokens" };
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    if (pending === "g" && go[e.key]) { window.location.href = go[e.key]; pending = null; return; }
    pending = null;
    if (e.key === "g") { pending = "g"; return; }
    if (e.key === "?") { var d = document.getElementById("shortcuts"); if (d && d.showModal) d.showModal(); return; }
    if (e.key === "/") { var s = document.querySelector("[data-search]"); if (s) { e.preventDefault(); s.focus(); } return; }
    if (e.key === "f" && viewer) { viewer.toggleFollow(); }
  });

  // The YAML editor: the gutter follows the text, and the line of an error is selected.
  var yaml = document.getElementById("yaml");
  if (yaml) {
    var gutter = document.querySelector(".editor .gutter");
    var bad = document.getElementById("editor-error");
    var badLine = bad && parseInt(bad.getAttribute("data-line") || "0", 10);
    var renumber = function () {
      var n = yaml.value.split("\n").length;
      var out = [];
      for (var i = 1; i <= n; i++) out.push(i === badLine ? '<span class="bad">' + i + "</span>" : String(i));
      gutter.innerHTML = out.join("\n");
    };
    yaml.addEventListener("input", renumber);
    yaml.addEventListener("scroll", function () { gutter.scrollTop = yaml.scrollTop; });
    if (badLine > 0) {
      var lines = yaml.value.split("\n");
      var start = 0;
      for (var i = 0; i < badLine - 1 && i < lines.length; i++) start += lines[i].length + 1;
      yaml.focus();
      yaml.setSelectionRange(start, start + (lines[badLine - 1] || "").length);
    }
  }

  // Live job statuses (the dashboard, the job list): the server's `view` events name a block
  // (tbody[data-view]), its row keys in order and the HTML of the rows that are new or changed;
  // rows are patched in place, the others are left alone (focus and selection survive). A
  // reconnected stream starts with the whole view, which resyncs the page.
  var liveRoot = document.querySelector("[data-live-jobs]");
  if (liveRoot && window.EventSource) liveStatuses(liveRoot);

  function liveStatuses(root) {
    var stateEl = document.querySelector("[data-live-state]");
    function say(text) { if (stateEl) stateEl.textContent = text; }
    function toggle(sel, hidden) { document.querySelectorAll(sel).forEach(function (el) { el.hidden = hidden; }); }
    function patch(d) {
      var body = document.querySelector('tbody[data-view="' + d.view + '"]');
      if (!body) return;
      var have = {};
      Array.prototype.forEach.call(body.children, function (tr) { have[tr.getAttribute("data-key")] = tr; });
      d.keys.forEach(function (k, i) {
        var tr = have[k];
        var html = d.rows[k];
        if (html !== undefined) {
          var t = document.createElement("tbody");
          t.innerHTML = html;
          var fresh = t.firstElementChild;
          if (!fresh) return;
          if (!tr) fresh.classList.add("fresh");
          if (tr) tr.replaceWith(fresh);
          tr = fresh;
          have[k] = fresh;
        }
        if (!tr) return;
        var at = body.children[i];
        if (at !== tr) body.insertBefore(tr, at || null);
      });
      while (body.children.length > d.keys.length) body.removeChild(body.lastElementChild);
      var empty = d.keys.length === 0;
      var table = body.closest("table");
      if (table) table.hidden = empty;
      toggle('[data-empty="' + d.view + '"]', !empty);
      toggle('[data-more="' + d.view + '"]', empty);
      document.querySelectorAll('[data-count="' + d.view + '"]').forEach(function (el) { el.textContent = d.keys.length; });
    }
    var source = new EventSource(root.getAttribute("data-live-jobs"));
    source.addEventListener("open", function () { say("live"); });
    source.addEventListener("view", function (e) { patch(JSON.parse(e.data)); });
    source.addEventListener("error", function (e) {
      if (e.data) say(JSON.parse(e.data).message);
      else if (source.readyState !== EventSource.CLOSED) say("reconnecting…");
      else say("live updates stopped: reload the page");
    });
  }

  // The live log viewer.
  var viewer = null;
  var log = document.getElementById("log");
  if (log) viewer = logViewer(log);

  // A workflow run's page: node statuses (SVG classes and table cells) follow the run's stream.
  var nodesTable = document.getElementById("nodes");
  if (nodesTable && nodesTable.getAttribute("data-live") === "true") runWatcher(nodesTable);

  function runWatcher(table) {
    var run = table.getAttribute("data-run");
    var note = document.getElementById("run-live");
    var esc = function (v) { return window.CSS && CSS.escape ? CSS.escape(v) : v; };
    var byId = function (id) { return document.getElementById(id); };
    function cell(tr, cls, text) { var c = tr.querySelector("." + cls); if (c) c.textContent = text; }
    function apply(s) {
      var badge = byId("run-status");
      if (badge) { badge.textContent = s.status; badge.className = "badge " + s.status; }
      s.nodes.forEach(function (n) {
        var sel = '[data-node="' + esc(n.node) + '"]';
        var g = document.querySelector("g.node" + sel);
        if (g) {
          g.setAttribute("class", "node " + n.status);
          var st = g.querySelector("text.state"); if (st) st.textContent = n.state;
          var t = g.querySelector("title"); if (t) t.textContent = n.node + ": " + n.state;
        }
        var a = document.querySelector('a[data-link="' + esc(n.node) + '"]');
        if (a && n.href) a.setAttribute("href", n.href);
        var tr = table.querySelector("tr" + sel);
        if (!tr) return;
        var b = tr.querySelector(".n-status .badge");
        if (b) { b.textContent = n.state; b.className = "badge " + n.status; }
        var job = tr.querySelector(".n-job");
        if (job && n.href && !job.querySelector("a")) {
          var link = document.createElement("a"); link.href = n.href; link.textContent = n.link; job.appendChild(link);
        }
        cell(tr, "n-started", n.started); cell(tr, "n-ended", n.ended);
        cell(tr, "n-took", n.took); cell(tr, "n-why", n.why);
      });
      var cancel = byId("cancel-form");
      if (cancel) {
        cancel.hidden = s.final;
        var cb = byId("cancel");
        if (cb && s.cancel_requested) { cb.disabled = true; cb.textContent = "Cancelling…"; }
      }
      var retry = byId("retry-form");
      if (retry) retry.hidden = !s.retryable;
      var err = byId("run-error");
      if (err) { err.hidden = !s.error; err.textContent = s.error || ""; }
      if (byId("run-finished")) byId("run-finished").textContent = s.finished;
      if (byId("run-took")) byId("run-took").textContent = s.took;
      var out = byId("run-output"), none = byId("run-output-none");
      if (out && s.output) { out.textContent = s.output; out.hidden = false; if (none) none.hidden = true; }
      else if (none && s.final) none.textContent = "none";
    }
    function connect() {
      var source = new EventSource("/workflow-runs/" + run + "/stream");
      source.addEventListener("open", function () { if (note) note.textContent = "live"; });
      source.addEventListener("state", function (e) { apply(JSON.parse(e.data)); });
      source.addEventListener("end", function (e) {
        source.close();
        if (note) note.textContent = "run ended: " + JSON.parse(e.data).status;
      });
      source.addEventListener("error", function (e) {
        if (e.data) {
          source.close();
          if (note) note.textContent = JSON.parse(e.data).message + " (retrying)";
          window.setTimeout(connect, 2000);
        } else if (note && source.readyState !== EventSource.CLOSED) {
          note.textContent = "reconnecting…";
        }
      });
    }
    connect();
  }

  function logViewer(el) {
    var job = el.getAttribute("data-job");
    // A workflow run's combined log: every node's job on one stream, lines tagged by node,
    // its position (`JOB:SEQ,...`) kept for a resume; no older pages (each job's page has them).
    var streamUrl = el.getAttribute("data-stream");
    var cursor = streamUrl ? el.getAttribute("data-after") || "" : "";
    var lastByJob = {};
    el.hidden = false;
    var last = streamUrl ? 0 : parseInt(el.getAttribute("data-after") || "0", 10);
    var live = el.getAttribute("data-live") === "true";
    var follow = document.getElementById("log-follow");
    var search = document.getElementById("log-search");
    var serverSel = document.getElementById("log-server");
    var state = document.getElementById("log-state");
    var olderLink = document.getElementById("log-older");
    var older = olderLink ? parseInt(olderLink.getAttribute("data-before"), 10) : null;
    var loadingOlder = false;
    var queue = [];
    var scheduled = false;
    var MAX_LINES = 20000;
    var source = null;

    function say(text) { if (state) state.textContent = text; }
    function atBottom() { return el.scrollHeight - el.scrollTop - el.clientHeight < 24; }
    function toBottom() { el.scrollTop = el.scrollHeight; }
    function matches(div) {
      var q = search && search.value.trim().toLowerCase();
      var srv = serverSel && serverSel.value;
      if (srv && div.getAttribute("data-server") !== srv) return false;
      if (q && div.textContent.toLowerCase().indexOf(q) < 0) return false;
      return true;
    }
    function refilter() {
      var shown = 0, all = el.children.length;
      for (var i = 0; i < all; i++) {
        var ok = matches(el.children[i]);
        el.children[i].classList.toggle("hidden", !ok);
        if (ok) shown++;
      }
      var q = search && search.value.trim();
      say(q || (serverSel && serverSel.value) ? shown + " of " + all + " loaded lines match" : "");
    }
    function lineDiv(l) {
      var d = document.createElement("div");
      d.className = "line " + l.stream;
      if (l.stream === "system" && l.line.indexOf("[cronium] output truncated") === 0) d.className += " truncated";
      d.setAttribute("data-seq", l.seq);
      d.setAttribute("data-server", l.server || "");
      var ts = document.createElement("span"); ts.className = "ts"; ts.title = l.ts; d.appendChild(ts);
      if (streamUrl) {
        d.setAttribute("data-server", l.node);
        var n = document.createElement("span"); n.className = "srv"; n.textContent = l.node + (l.server ? " @" + l.server : ""); d.appendChild(n);
      } else if (l.server) { var s = document.createElement("span"); s.className = "srv"; s.textContent = l.server; d.appendChild(s); }
      var t = document.createElement("span"); t.className = "txt"; t.textContent = l.line; d.appendChild(t);
      if (!matches(d)) d.classList.add("hidden");
      return d;
    }
    // Lines arrive in bursts: add them once per frame, in one fragment.
    function flush() {
      scheduled = false;
      if (!queue.length) return;
      var stick = follow ? follow.checked : true;
      var frag = document.createDocumentFragment();
      queue.forEach(function (l) { frag.appendChild(lineDiv(l)); });
      queue = [];
      el.appendChild(frag);
      var empty = document.getElementById("log-empty");
      if (empty) empty.remove();
      // Never keep a whole huge log in the page: drop the oldest lines; they can be fetched again.
      var extra = el.children.length - MAX_LINES;
      if (extra > 0 && stick) {
        for (var i = 0; i < extra; i++) el.removeChild(el.firstElementChild);
        if (!streamUrl) {
          older = parseInt(el.firstElementChild.getAttribute("data-seq"), 10);
          showOlderLink();
        }
      }
      if (stick) toBottom();
    }
    function push(l) {
      if (streamUrl) {
        if (l.seq <= (lastByJob[l.job_id] || 0)) return;
        lastByJob[l.job_id] = l.seq;
      } else {
        if (l.seq <= last) return;
        last = l.seq;
      }
      queue.push(l);
      if (!scheduled) { scheduled = true; window.requestAnimationFrame(flush); }
    }
    function showOlderLink() {
      if (olderLink || older === null) return;
      var p = document.createElement("p"); p.className = "older";
      olderLink = document.createElement("a"); olderLink.id = "log-older"; olderLink.href = "#"; olderLink.textContent = "Older lines";
      olderLink.addEventListener("click", loadOlder);
      p.appendChild(olderLink);
      el.parentNode.insertBefore(p, el);
    }
    function loadOlder(e) {
      if (e) e.preventDefault();
      if (loadingOlder || older === null) return;
      loadingOlder = true;
      say("loading older lines…");
      fetch("/jobs/" + job + "/log/lines?before=" + older, { credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          var next = r.headers.get("X-Older");
          return r.text().then(function (html) { return { html: html, next: next }; });
        })
        .then(function (res) {
          var h = el.scrollHeight;
          el.insertAdjacentHTML("afterbegin", res.html);
          el.scrollTop += el.scrollHeight - h;
          older = res.next ? parseInt(res.next, 10) : null;
          if (older === null && olderLink) { olderLink.parentNode.remove(); olderLink = null; }
          refilter();
          loadingOlder = false;
        })
        .catch(function (err) { say("could not load older lines: " + err.message); loadingOlder = false; });
    }
    if (olderLink) olderLink.addEventListener("click", loadOlder);
    el.addEventListener("scroll", function () {
      if (follow) follow.checked = atBottom();
      if (el.scrollTop < 40 && older !== null) loadOlder();
    });
    if (follow) follow.addEventListener("change", function () { if (follow.checked) toBottom(); });
    if (search) search.addEventListener("input", refilter);
    if (serverSel) serverSel.addEventListener("change", refilter);
    function setStatus(status, exit) {
      var b = document.getElementById("job-status");
      if (b) { b.textContent = status; b.className = "badge " + status; }
      var x = document.getElementById("job-exit");
      if (x && exit !== null && exit !== undefined) x.textContent = exit;
      var c = document.getElementById("cancel");
      if (c) c.closest("form").remove();
    }
    function connect() {
      source = new EventSource(streamUrl
        ? streamUrl + (cursor ? "?after=" + encodeURIComponent(cursor) : "")
        : "/jobs/" + job + "/log/stream?after=" + last);
      source.addEventListener("open", function () { say("live"); });
      source.addEventListener("line", function (e) {
        if (e.lastEventId) cursor = e.lastEventId;
        push(JSON.parse(e.data));
      });
      source.addEventListener("end", function (e) {
        var d = JSON.parse(e.data);
        source.close();
        flush();
        if (!streamUrl) setStatus(d.status, d.exit_code);
        say("finished: " + d.status);
      });
      source.addEventListener("error", function (e) {
        if (e.data) {
          // The server ended the stream without its end: resume where it stopped.
          var d = JSON.parse(e.data);
          source.close();
          say(d.message + " (retrying)");
          window.setTimeout(connect, 2000);
        } else if (source.readyState !== EventSource.CLOSED) {
          say("reconnecting…");
        }
      });
    }
    toBottom();
    if (live) connect();
    if (streamUrl && !el.children.length) {
      var none = document.createElement("p"); none.className = "muted"; none.id = "log-empty"; none.textContent = "No output yet.";
      el.parentNode.insertBefore(none, el.nextSibling);
    }
    return {
      toggleFollow: function () { if (follow) { follow.checked = !follow.checked; if (follow.checked) toBottom(); } }
    };
  }
})();
