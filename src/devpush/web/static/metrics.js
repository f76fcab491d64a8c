// The metrics charts (templates/metrics/_charts.html): one deployment's samples from
// GET /api/v1/deployments/{id}/metrics, drawn with uPlot (static/vendor/, fetched by
// scripts/vendor.py), refreshed every 30 s.
(function () {
  "use strict";
  var REFRESH_MS = 30000;
  var SERIES = {
    cpu: [["CPU %", function (p) { return p.cpu_percent; }, "#2563eb"]],
    memory: [["MiB", function (p) { return p.memory_bytes == null ? null : p.memory_bytes / 1048576; }, "#7c3aed"]],
    requests: [
      ["2xx", function (p) { return p.status_2xx; }, "#16a34a"],
      ["3xx", function (p) { return p.status_3xx; }, "#0891b2"],
      ["4xx", function (p) { return p.status_4xx; }, "#d97706"],
      ["5xx", function (p) { return p.status_5xx; }, "#dc2626"],
    ],
    latency: [
      ["p50", function (p) { return p.p50_ms; }, "#16a34a"],
      ["p95", function (p) { return p.p95_ms; }, "#d97706"],
      ["p99", function (p) { return p.p99_ms; }, "#dc2626"],
    ],
  };

  function say(root, text) {
    var note = root.parentElement.querySelector("[data-metrics-note]");
    if (!note) return;
    note.hidden = !text;
    note.textContent = text || "";
  }

  function draw(root, body) {
    var xs = body.points.map(function (p) { return Date.parse(p.ts) / 1000; });
    Object.keys(SERIES).forEach(function (name) {
      var box = root.querySelector('[data-chart="' + name + '"]');
      var defs = SERIES[name];
      var data = [xs].concat(defs.map(function (d) { return body.points.map(d[1]); }));
      var opts = {
        width: Math.max(box.clientWidth || 320, 240),
        height: 160,
        series: [{}].concat(defs.map(function (d) { return { label: d[0], stroke: d[2], width: 1.5 }; })),
        axes: [{}, { size: 56 }],
        scales: { y: { range: function (u, min, max) { return [0, Math.max(max || 0, 1)]; } } },
      };
      if (box._chart) box._chart.destroy();
      box.innerHTML = "";
      box._chart = new window.uPlot(opts, data, box);
    });
    say(root, body.points.length ? "" : "No samples in this range yet: they come every " + body.interval + " s while the deployment is live.");
  }

  async function load(root) {
    if (typeof window.uPlot !== "function") {
      say(root, "The chart library (uPlot) did not load: run `python3 scripts/vendor.py` on the server.");
      return;
    }
    var url = "/api/v1/deployments/" + encodeURIComponent(root.dataset.metrics) +
      "/metrics?since=" + encodeURIComponent(root.dataset.since || "1h");
    try {
      var response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) {
        say(root, "Metrics are unavailable (HTTP " + response.status + ").");
        return;
      }
      draw(root, await response.json());
    } catch (err) {
      say(root, "Metrics are unavailable: " + err.message);
    }
  }

  function start() {
    document.querySelectorAll("[data-metrics]").forEach(function (root) {
      var card = root.closest(".metrics-card");
      card.querySelectorAll("[data-metrics-range]").forEach(function (button) {
        button.addEventListener("click", function () {
          card.querySelectorAll("[data-metrics-range]").forEach(function (b) { b.removeAttribute("aria-pressed"); });
          button.setAttribute("aria-pressed", "true");
          root.dataset.since = button.dataset.metricsRange;
          load(root);
        });
      });
      load(root);
      setInterval(function () { if (!document.hidden) load(root); }, REFRESH_MS);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
