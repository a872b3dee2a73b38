// Realtime vs polling: pickup latency (send -> first receive) percentiles per worker mode
// and Redis commands per second per worker, from the stats frame (computed by the web
// process from what workers write to Redis). Text only: values come from Redis.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const MODE_COLOURS = {realtime: "#2563eb", polling: "#d97706"};
const PERCENTILES = ["p50", "p95", "p99"];

function showCompare(frame) {
  if (!frame.compare) return;
  const rows = Object.entries(frame.compare).map(([mode, m]) => {
    const row = document.createElement("tr");
    const values = {mode, workers: m.workers, pickups: m.pickups, p50: m.p50, p95: m.p95,
                    p99: m.p99, commands: m.commands_per_second};
    for (const [field, v] of Object.entries(values)) {
      const td = document.createElement("td");
      td.dataset.mode = mode;
      td.dataset.field = field;
      td.textContent = v === null || v === undefined ? "—"
        : typeof v === "number" && field !== "workers" && field !== "pickups" ? v.toFixed(1)
        : String(v);
      row.append(td);
    }
    return row;
  });
  document.querySelector("#compare tbody").replaceChildren(...rows);
  document.querySelector("#compare-workers tbody").replaceChildren(...(frame.workers || []).map(
    (w) => {
      const row = document.createElement("tr");
      for (const [field, v] of [["id", w.id], ["mode", w.mode],
                                ["commands", w.commands_per_second]]) {
        const td = document.createElement("td");
        td.dataset.field = field;
        td.textContent = v === null || v === undefined ? "—" : String(v);
        row.append(td);
      }
      return row;
    }));
  drawCompare(frame.compare);
}

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// Grouped bars on a log scale: realtime pickups take about a millisecond, polling's up to
// POLL_INTERVAL, three decades apart.
function drawCompare(compare) {
  const svg = document.getElementById("compare-chart");
  const width = 640, height = 280, left = 70, right = 120, top = 16, bottom = 48;
  const plotW = width - left - right, plotH = height - top - bottom;
  const modes = Object.keys(compare);
  const values = modes.flatMap((m) => PERCENTILES.map((p) => compare[m][p])).filter(
    (v) => v !== null);
  const lo = 0.1;
  const hi = Math.max(10, ...values.map((v) => Math.pow(10, Math.ceil(Math.log10(Math.max(v, lo))))));
  const y = (v) => top + plotH * (1 - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) /
                                       (Math.log10(hi) - Math.log10(lo)));
  const parts = [];
  for (let t = lo; t <= hi * 1.0001; t *= 10) {
    parts.push(svgEl("line", {x1: left, x2: left + plotW, y1: y(t), y2: y(t), stroke: "#ddd"}));
    parts.push(svgEl("text", {x: left - 6, y: y(t) + 4, "text-anchor": "end",
                              "font-size": 11, class: "tick"}, t < 1 ? t.toFixed(1) : String(t)));
  }
  const groupW = plotW / PERCENTILES.length, barW = groupW / (modes.length + 1);
  PERCENTILES.forEach((p, i) => {
    const x0 = left + i * groupW + barW / 2;
    modes.forEach((mode, j) => {
      const v = compare[mode][p];
      if (v === null) return;
      const bar = svgEl("rect", {x: x0 + j * barW, y: y(v), width: barW - 4,
                                 height: top + plotH - y(v), fill: MODE_COLOURS[mode] || "#888",
                                 "data-mode": mode, "data-percentile": p});
      bar.append(svgEl("title", {}, `${mode} ${p}: ${v.toFixed(1)} ms`));
      parts.push(bar);
    });
    parts.push(svgEl("text", {x: left + (i + 0.5) * groupW, y: top + plotH + 16,
                              "text-anchor": "middle", "font-size": 12, class: "tick"}, p));
  });
  parts.push(svgEl("line", {x1: left, x2: left, y1: top, y2: top + plotH, stroke: "#1b1b1b"}));
  parts.push(svgEl("line", {x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH,
                            stroke: "#1b1b1b"}));
  parts.push(svgEl("text", {x: left + plotW / 2, y: height - 8, "text-anchor": "middle",
                            "font-size": 12, id: "compare-x-title"},
                   "percentile of pickups, last 5 minutes"));
  parts.push(svgEl("text", {x: 14, y: top + plotH / 2, "text-anchor": "middle", "font-size": 12,
                            transform: `rotate(-90 14 ${top + plotH / 2})`, id: "compare-y-title"},
                   "pickup latency, ms (log scale)"));
  modes.forEach((mode, j) => {
    const ly = top + 14 + j * 18;
    parts.push(svgEl("rect", {x: left + plotW + 14, y: ly - 10, width: 12, height: 12,
                              fill: MODE_COLOURS[mode] || "#888"}));
    parts.push(svgEl("text", {x: left + plotW + 32, y: ly, "font-size": 12}, mode));
  });
  svg.replaceChildren(...parts);
}
