// Operator page: live traces (ROI, feedback, FD, latency), missing volumes, messages, a volume table.
// Plain SVG drawn by hand: no libraries, nothing fetched from the network.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const W = 800, H = 170, M = { left: 52, right: 8, top: 8, bottom: 22 };
  const COLORS = ["#1f5fbf", "#d9730d", "#2e8540", "#8e3ccb", "#a33b3b", "#00838f"];
  const DEFAULT_FD_THRESHOLD = 0.5; // mm; Power et al. 2012, NeuroImage 59:2142 (FD > 0.5 mm)

  let run = {};
  let records = new Map(); // volume -> record (a re-sent volume replaces the old one)
  let pending = false;
  const tbody = document.querySelector("#volumes tbody");
  const rows = new Map();

  function fmt(v, digits) {
    return theramarkNumber(v) ? v.toFixed(digits) : "";
  }

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceRange(lo, hi) {
    if (!(isFinite(lo) && isFinite(hi))) return [0, 1];
    if (hi - lo < 1e-12) { const pad = Math.abs(hi) * 0.05 || 0.5; return [lo - pad, hi + pad]; }
    const pad = 0.05 * (hi - lo);
    return [lo - pad, hi + pad];
  }

  // series: [{name, xs, ys}]; opts: {xmax, ymin, ymax, hline, bad: [volumes], blocks: true}
  function plot(svg, series, opts) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const xmax = Math.max(opts.xmax || 1, 1);
    let lo = Infinity, hi = -Infinity;
    for (const s of series) for (const y of s.ys) if (theramarkNumber(y)) { lo = Math.min(lo, y); hi = Math.max(hi, y); }
    // A reference line far above the data (a 2 s TR over 20 ms latencies) would flatten the trace:
    // then it is named at the top instead of drawn.
    const offScale = theramarkNumber(opts.hline) && isFinite(hi) && opts.hline > 3 * Math.max(hi, 1e-9);
    if (theramarkNumber(opts.hline) && !offScale) { lo = Math.min(lo, opts.hline); hi = Math.max(hi, opts.hline); }
    let [ymin, ymax] = niceRange(lo, hi);
    if (opts.ymin !== undefined) ymin = opts.ymin;
    if (opts.ymax !== undefined) ymax = Math.max(opts.ymax, hi);
    const px = (x) => M.left + (W - M.left - M.right) * (x - 1) / Math.max(xmax - 1, 1);
    const py = (y) => H - M.bottom - (H - M.top - M.bottom) * (y - ymin) / (ymax - ymin || 1);

    if (opts.blocks && run.tr && Array.isArray(run.blocks)) {
      const active = run.feedback_blocks || ["regulate"];
      for (const b of run.blocks) {
        if (!active.includes(b.trial_type)) continue;
        const x0 = px(1 + b.onset / run.tr), x1 = px(1 + (b.onset + b.duration) / run.tr);
        el("rect", { class: "block", x: x0, y: M.top, width: Math.max(x1 - x0, 0),
                     height: H - M.top - M.bottom }, svg);
      }
    }
    el("line", { class: "axis", x1: M.left, y1: H - M.bottom, x2: W - M.right, y2: H - M.bottom }, svg);
    el("line", { class: "axis", x1: M.left, y1: M.top, x2: M.left, y2: H - M.bottom }, svg);
    for (const y of [ymin, ymax]) {
      el("text", { x: M.left - 4, y: py(y) + 4, "text-anchor": "end" }, svg).textContent =
        Math.abs(y) >= 100 ? y.toFixed(0) : y.toPrecision(3);
    }
    el("text", { x: M.left, y: H - 6 }, svg).textContent = "1";
    el("text", { x: W - M.right, y: H - 6, "text-anchor": "end" }, svg).textContent = "volume " + xmax;
    if (offScale) {
      el("text", { class: "off-scale", x: W - M.right, y: M.top + 10, "text-anchor": "end" }, svg).textContent =
        (opts.hlineLabel || "limit") + " " + opts.hline.toPrecision(4) + " \u2191 (off scale)";
    } else if (theramarkNumber(opts.hline)) {
      el("line", { class: "threshold", x1: M.left, x2: W - M.right, y1: py(opts.hline), y2: py(opts.hline) }, svg);
    }
    for (const v of opts.bad || []) {
      el("line", { class: "bad-volume", x1: px(v), x2: px(v), y1: H - M.bottom, y2: H - M.bottom - 8 }, svg);
    }
    let count = 0;
    series.forEach((s, i) => {
      let d = "", pen = false;
      for (let k = 0; k < s.xs.length; k++) {
        const y = s.ys[k];
        if (!theramarkNumber(y)) { pen = false; continue; } // a gap for missing volumes
        d += (pen ? "L" : "M") + px(s.xs[k]).toFixed(1) + " " + py(y).toFixed(1);
        pen = true;
        if (i === 0) count++;
      }
      const path = el("path", { class: "trace", d: d || "M0 0", stroke: COLORS[i % COLORS.length] }, svg);
      path.dataset.series = s.name;
    });
    svg.dataset.n = String(count);
  }

  function render() {
    pending = false;
    const recs = Array.from(records.values()).sort((a, b) => a.volume - b.volume);
    const xs = recs.map((r) => r.volume);
    const lastVolume = xs.length ? xs[xs.length - 1] : 0;
    const xmax = Math.max(run.n_volumes || 0, lastVolume);
    const bad = recs.filter((r) => r.status !== "ok").map((r) => r.volume);
    const choice = document.getElementById("roi-choice");
    for (const name of run.rois || []) {
      const key = "roi_" + name;
      if (!choice.querySelector('option[value="' + key + '"]') && recs.some((r) => key in r)) {
        const option = document.createElement("option");
        option.value = key;
        option.textContent = name;
        choice.appendChild(option);
      }
    }
    const roiKey = choice.value || "roi";
    const roiSeries = [{ name: roiKey, xs, ys: recs.map((r) => r[roiKey]) }];
    plot(document.getElementById("plot-roi"), roiSeries, { xmax, bad, blocks: true });
    plot(document.getElementById("plot-feedback"),
         [{ name: "feedback", xs, ys: recs.map((r) => r.feedback) }], { xmax, ymin: 0, ymax: 1, bad, blocks: true });
    const fdThreshold = theramarkNumber(run.fd_threshold) ? run.fd_threshold : DEFAULT_FD_THRESHOLD;
    plot(document.getElementById("plot-fd"), [{ name: "fd", xs, ys: recs.map((r) => r.fd) }],
         { xmax, ymin: 0, hline: fdThreshold, hlineLabel: "threshold (mm)", bad });
    const lat = recs.map((r) => r.latency_ms);
    plot(document.getElementById("plot-latency"), [{ name: "latency_ms", xs, ys: lat }],
         { xmax, ymin: 0, hline: theramarkNumber(run.tr) ? 1000 * run.tr : undefined,
           hlineLabel: "TR (ms)", bad });

    const progress = document.getElementById("progress");
    progress.textContent = "volume " + lastVolume + " / " + (run.n_volumes || "?");
    progress.dataset.volume = String(lastVolume);
    progress.dataset.nVolumes = String(run.n_volumes || "");
    const last = recs[recs.length - 1];
    document.getElementById("block-now").textContent = last && last.block ? "block: " + last.block : "";
    const finite = lat.filter(theramarkNumber).sort((a, b) => a - b);
    document.getElementById("latency-summary").textContent = finite.length
      ? "latency median " + finite[Math.floor((finite.length - 1) / 2)].toFixed(0) + " ms, max "
        + finite[finite.length - 1].toFixed(0) + " ms"
      : "";
  }

  function schedule() {
    if (!pending) { pending = true; setTimeout(render, 30); }
  }

  function makeRow(r) {
    const tr = document.createElement("tr");
    tr.className = r.status || "";
    tr.dataset.volume = String(r.volume);
    const cells = [r.volume, r.status, r.block || "", fmt(r.roi, 3), fmt(r.feedback, 3), fmt(r.fd, 3),
                   fmt(r.latency_ms, 1), r.message || ""];
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = String(c);
      tr.appendChild(td);
    }
    return tr;
  }

  function issueItem(r) {
    const li = document.createElement("li");
    li.dataset.volume = String(r.volume);
    li.textContent = "volume " + r.volume + ": " + r.status + (r.message ? " \u2014 " + r.message : "");
    return li;
  }

  function addRecord(r) {
    const old = rows.get(r.volume);
    const row = makeRow(r);
    if (old) old.replaceWith(row); else tbody.insertBefore(row, tbody.firstChild); // newest on top
    rows.set(r.volume, row);
    const issues = document.getElementById("issues");
    const oldIssue = issues.querySelector('li[data-volume="' + r.volume + '"]');
    if (oldIssue) oldIssue.remove();
    if (r.status !== "ok") issues.appendChild(issueItem(r));
    document.getElementById("issue-count").textContent = String(issues.children.length);
    records.set(r.volume, r);
  }

  function addMessage(m) {
    const li = document.createElement("li");
    li.className = m.level || "info";
    const when = theramarkNumber(m.time) ? new Date(1000 * m.time).toLocaleTimeString() + " " : "";
    li.textContent = when + m.text;
    const list = document.getElementById("messages");
    list.insertBefore(li, list.firstChild);
  }

  document.getElementById("roi-choice").addEventListener("change", schedule);

  theramarkFeed({
    snapshot(info, recs, messages) {
      run = info;
      records = new Map();
      rows.clear();
      tbody.textContent = "";
      document.getElementById("issues").textContent = "";
      document.getElementById("messages").textContent = "";
      for (const r of recs) addRecord(r);
      for (const m of messages) addMessage(m);
      schedule();
    },
    run(info) { run = info; schedule(); },
    record(r) { addRecord(r); schedule(); },
    message: addMessage,
    status(text, ok) {
      const c = document.getElementById("connection");
      c.textContent = text;
      c.className = ok ? "ok" : "bad";
    },
  });
})();
