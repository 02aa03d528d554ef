/* pbft trace viewer (docs/viewer.md). Draws the model pbft.trace.html packed into #data on
   one canvas: time flows down, one column per lane. Only what is in the time window is
   drawn (binary search on the sorted send times); when too many arrows would be visible,
   a density summary is drawn instead. After each draw, #drawn says what was drawn (for the
   browser test and for measuring). */
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const S = D.S, A = D.A, M = D.M, H = D.header || {};
  const NA = A.t0.length, NM = M.t.length;
  // Unpack what html.py packed tightly: end times, the lie/fate/copy bits, mark fields.
  A.t1 = new Float64Array(NA); A.l = new Uint8Array(NA); A.f = new Uint8Array(NA); A.c = new Uint32Array(NA);
  for (let i = 0; i < NA; i++) {
    A.t1[i] = A.t0[i] + A.dt[i]; const b = A.b[i]; A.l[i] = b & 3; A.f[i] = (b >> 2) & 3; A.c[i] = b >> 4;
  }
  A.x = A.x || {};
  M.f = new Array(NM);
  for (let j = 0; j < NM; j++) {
    const f = {};
    if (M.l[j] >= 0 && D.lanes[M.l[j]][1] === "replica") f.replica = D.lanes[M.l[j]][0];
    if (M.v[j] >= 0) f.view = M.v[j];
    if (M.q[j] >= 0) f.seq = M.q[j];
    if (M.g[j] >= 0) f.digest = S[M.g[j]];
    M.f[j] = Object.assign(f, M.x[j] || {});
  }
  const LANES = D.lanes.map((l, i) => ({ i, name: l[0], kind: l[1], byz: !!l[2] }));
  const PHASE = ["REQUEST", "PRE-PREPARE", "PREPARE", "COMMIT", "REPLY", "CHECKPOINT", "VIEW-CHANGE",
    "NEW-VIEW", "FETCH-STATE", "STATE-CHUNK"];
  const COLOR = {
    "REQUEST": "#0ea5e9", "PRE-PREPARE": "#7c3aed", "PREPARE": "#2563eb", "COMMIT": "#16a34a",
    "REPLY": "#64748b", "CHECKPOINT": "#ca8a04", "VIEW-CHANGE": "#ea580c", "NEW-VIEW": "#db2777",
    "FETCH-STATE": "#92400e", "STATE-CHUNK": "#a16207", "": "#9ca3af"
  };
  const RED = "#dc2626", DIGEST_COLORS = ["#7c3aed", "#dc2626", "#0d9488", "#d97706"];
  const MAX_ARROWS = 2500;     // beyond this many in the window: density summary
  const LANE_HEAD = 38, GUTTER = 64, PAD_R = 16;
  const str = (i) => (i < 0 ? null : S[i]);
  const kindOf = (i) => S[A.k[i]] || "";
  const colorOf = (k) => COLOR[k] || COLOR[""];

  // ---- indexes ---------------------------------------------------------------------------
  // An arrow is drawn near its send time unless it was delivered: dropped and lost ones
  // end in a mark just after the send. Arrows longer than `SHORT` are few and kept apart.
  const dur = new Float64Array(NA);
  for (let i = 0; i < NA; i++) dur[i] = A.f[i] === 2 ? 0 : A.t1[i] - A.t0[i];
  const SHORT = (function () {
    if (!NA) return 0;
    const s = Array.from(dur).sort((a, b) => a - b);
    return Math.max(s[Math.min(s.length - 1, Math.floor(s.length * 0.99))], 1e-9);
  })();
  const TYPICAL = (function () {  // the median delivery time: how long a window is readable
    const s = []; for (let i = 0; i < NA; i += Math.max(1, Math.floor(NA / 2000))) if (A.f[i] === 0) s.push(dur[i]);
    s.sort((a, b) => a - b); return s.length ? Math.max(s[s.length >> 1], 0.01) : 1;
  })();
  const LONG = [];
  for (let i = 0; i < NA; i++) if (dur[i] > SHORT) LONG.push(i);
  const CERT = new Map();  // mark index -> [arrows, votes]
  for (const c of D.C) CERT.set(c[0], { arrows: c[1], votes: c[2] });
  const EQ = D.E.map((e) => ({ t: e[0], lane: e[1], label: e[2], arrows: e[3], kind: e[4],
    view: e[5], seq: e[6], digests: e[7] }));
  const EQ_OF = new Map();  // arrow -> equivocation index
  EQ.forEach((e, j) => e.arrows.forEach((i) => EQ_OF.set(i, j)));
  const BY_ID = new Map();  // "src id" -> first arrow, to find the honest message of a lie
  for (let i = 0; i < NA; i++) { const key = A.s[i] + " " + A.id[i]; if (!BY_ID.has(key)) BY_ID.set(key, i); }
  const KINDS = [];
  { const seen = new Set(A.k.map((k) => S[k] || ""));
    for (const k of PHASE) if (seen.has(k)) KINDS.push(k);
    for (const k of seen) if (!KINDS.includes(k)) KINDS.push(k); }
  const T_END = D.tEnd, F = H.f != null ? H.f : Math.floor(((H.n || LANES.length) - 1) / 3);

  function lowerBound(arr, x) {  // first index with arr[i] >= x
    let lo = 0, hi = arr.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (arr[mid] < x) lo = mid + 1; else hi = mid; }
    return lo;
  }

  // ---- state -----------------------------------------------------------------------------
  const st = {
    a: 0, b: 1, kinds: new Set(KINDS), hidden: new Set(), vmin: null, vmax: null, qmin: null, qmax: null,
    sel: null,     // {type: "arrow"|"mark"|"eq", i}
    hover: null,   // mark index hovered (certificate)
  };
  const canvas = document.getElementById("plot"), ctx = canvas.getContext("2d");
  const ov = document.getElementById("overview"), octx = ov.getContext("2d");
  let W = 0, Hh = 0, hits = null, firstDraw = null;
  const drawTimes = [];

  function passView(v) { return v < 0 || ((st.vmin == null || v >= st.vmin) && (st.vmax == null || v <= st.vmax)); }
  function passSeq(q) { return q < 0 || ((st.qmin == null || q >= st.qmin) && (st.qmax == null || q <= st.qmax)); }
  function passArrow(i) {
    return st.kinds.has(kindOf(i)) && !st.hidden.has(A.s[i]) && !st.hidden.has(A.d[i]) &&
      passView(A.v[i]) && passSeq(A.q[i]);
  }
  function passMark(j) {
    const l = M.l[j], f = M.f[j];
    if (l >= 0 && st.hidden.has(l)) return false;
    return passView(f.view != null ? f.view : -1) && passSeq(f.seq != null ? f.seq : -1);
  }

  // ---- geometry --------------------------------------------------------------------------
  let cols = [];  // lane index -> x (or undefined when hidden)
  function layout() {
    const r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    W = Math.max(200, r.width); Hh = Math.max(200, r.height);
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(Hh * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const or = ov.getBoundingClientRect();
    ov.width = Math.round(or.width * dpr); ov.height = Math.round(or.height * dpr);
    octx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const shown = LANES.filter((l) => !st.hidden.has(l.i));
    // replicas get twice a client's width: that is where the protocol happens
    const weight = (l) => (l.kind === "client" ? 1 : 2);
    const unit = (W - GUTTER - PAD_R) / Math.max(1, shown.reduce((n, l) => n + weight(l), 0));
    cols = []; cols.width = [];
    let x = GUTTER;
    for (const l of shown) { cols[l.i] = x + unit * weight(l) / 2; cols.width[l.i] = unit * weight(l); x += unit * weight(l); }
    cols.step = 2 * unit;
  }
  const yOf = (t) => LANE_HEAD + (t - st.a) * (Hh - LANE_HEAD) / (st.b - st.a);
  const tOf = (y) => st.a + (y - LANE_HEAD) * (st.b - st.a) / (Hh - LANE_HEAD);

  // ---- drawing ---------------------------------------------------------------------------
  function visibleArrows() {
    const out = [];
    const lo = lowerBound(A.t0, st.a - SHORT), hi = lowerBound(A.t0, st.b + 1e-9);
    if (hi - lo > MAX_ARROWS * 4) return null;  // certainly too many: density
    for (let i = lo; i < hi; i++) if (dur[i] <= SHORT && passArrow(i)) out.push(i);
    for (const i of LONG) if (A.t0[i] <= st.b && A.t1[i] >= st.a && passArrow(i)) out.push(i);
    return out.length > MAX_ARROWS ? null : out;
  }

  function arrowHead(x0, y0, x1, y1, size) {
    const ang = Math.atan2(y1 - y0, x1 - x0);
    ctx.beginPath();
    ctx.moveTo(x1, y1);
    ctx.lineTo(x1 - size * Math.cos(ang - 0.4), y1 - size * Math.sin(ang - 0.4));
    ctx.lineTo(x1 - size * Math.cos(ang + 0.4), y1 - size * Math.sin(ang + 0.4));
    ctx.closePath(); ctx.fill();
  }

  // Where an arrow's line ends: its receiver at delivery, or part of the way for a drop
  // (a cross) or a message still in flight at the end (a circle).
  function ends(i) {
    const x0 = cols[A.s[i]], y0 = yOf(A.t0[i]), xd = cols[A.d[i]];
    // delivered, or dropped on arrival (at a crashed replica): the line reaches the receiver
    if (A.f[i] === 0 || (A.f[i] === 1 && A.t1[i] > A.t0[i])) return [x0, y0, xd, yOf(A.t1[i])];
    const y1 = Math.max(yOf(A.t1[i]), y0 + 10);
    return [x0, y0, x0 + (xd - x0) * 0.55, Math.min(y1, y0 + 14)];
  }

  function label(text, x, y, color, opts) {
    opts = opts || {};
    ctx.font = (opts.bold ? "600 " : "") + (opts.size || 11) + "px system-ui, sans-serif";
    const w = ctx.measureText(text).width;
    let lx = opts.align === "right" ? x - w - 4 : x + 4;
    if (lx + w > W - 2) lx = W - w - 4;
    if (lx < 2) lx = 2;
    if (opts.bg) {
      ctx.fillStyle = opts.bg; ctx.strokeStyle = opts.border || opts.bg; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.rect(lx - 3, y - 8, w + 6, 16); ctx.fill(); ctx.stroke();
    }
    ctx.fillStyle = color; ctx.textBaseline = "middle"; ctx.fillText(text, lx, y);
    return [lx - 3, y - 8, w + 6, 16];
  }

  function drawLanes() {
    ctx.font = "600 12px system-ui, sans-serif";
    for (const l of LANES) {
      const x = cols[l.i]; if (x === undefined) continue;
      if (l.byz) {
        ctx.fillStyle = "rgba(220,38,38,0.07)";
        ctx.fillRect(x - cols.width[l.i] / 2 + 2, LANE_HEAD, cols.width[l.i] - 4, Hh - LANE_HEAD);
      }
      ctx.strokeStyle = l.byz ? "#fca5a5" : l.kind === "client" ? "#bae6fd" : "#cbd5e1";
      ctx.lineWidth = l.byz ? 2 : 1.2;
      ctx.beginPath(); ctx.moveTo(x, LANE_HEAD); ctx.lineTo(x, Hh); ctx.stroke();
    }
  }

  function drawLaneHeads() {
    ctx.fillStyle = "#f1f5f9"; ctx.fillRect(0, 0, W, LANE_HEAD);
    ctx.strokeStyle = "#cbd5e1"; ctx.beginPath(); ctx.moveTo(0, LANE_HEAD); ctx.lineTo(W, LANE_HEAD); ctx.stroke();
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    for (const l of LANES) {
      const x = cols[l.i]; if (x === undefined) continue;
      ctx.font = "600 12.5px system-ui, sans-serif";
      ctx.fillStyle = l.byz ? RED : l.kind === "client" ? "#0369a1" : "#0f172a";
      ctx.fillText(l.kind === "client" ? "client " + l.name : "replica " + l.name, x, 13);
      ctx.font = "10.5px system-ui, sans-serif";
      ctx.fillText(l.byz ? "\u2620 Byzantine" : l.kind === "client" ? "" : "correct", x, 28);
    }
    ctx.textAlign = "left";
    ctx.fillStyle = "#64748b"; ctx.font = "10.5px system-ui, sans-serif";
    ctx.fillText("time (ms)", 6, 28);
  }

  function drawAxis() {
    const span = st.b - st.a, target = span / ((Hh - LANE_HEAD) / 60);
    const p = Math.pow(10, Math.floor(Math.log10(target)));
    const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= target) || p * 10;
    ctx.font = "10.5px system-ui, sans-serif"; ctx.textBaseline = "middle";
    for (let t = Math.ceil(st.a / step) * step; t <= st.b; t += step) {
      const y = yOf(t);
      ctx.strokeStyle = "#f1f5f9"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(GUTTER - 4, y); ctx.lineTo(W - PAD_R, y); ctx.stroke();
      ctx.fillStyle = "#64748b";
      const txt = step < 1 ? t.toFixed(Math.min(3, Math.ceil(-Math.log10(step)))) : String(Math.round(t));
      ctx.fillText(txt, 6, y);
    }
  }

  function drawBands(counts) {
    const lastLabel = new Map();
    let inWindow = 0;
    for (const b of D.B) if (b[3] >= st.a && b[2] <= st.b) inWindow++;
    for (const b of D.B) {
      const [kind, lane, t0, t1, text, open] = b;
      const x = cols[lane]; if (x === undefined || t1 < st.a || t0 > st.b) continue;
      const y0 = Math.max(yOf(t0), LANE_HEAD), y1 = Math.min(Math.max(yOf(t1), yOf(t0) + 3), Hh);
      const w = cols.width[lane] - 8;
      if (kind === "view-change") {
        ctx.fillStyle = "rgba(234,88,12,0.13)"; ctx.fillRect(x - w / 2, y0, w, y1 - y0);
        ctx.strokeStyle = "rgba(234,88,12,0.6)"; ctx.setLineDash([4, 3]); ctx.strokeRect(x - w / 2, y0, w, y1 - y0);
        ctx.setLineDash([]);
        label(text + (open ? " (unfinished)" : ""), x - w / 2, y0 + 9, "#9a3412", { size: 10.5 });
        counts["view-change"] = (counts["view-change"] || 0) + 1;
      } else if (kind === "down") {
        ctx.fillStyle = "rgba(15,23,42,0.12)"; ctx.fillRect(x - w / 2, y0, w, y1 - y0);
        ctx.strokeStyle = "rgba(15,23,42,0.35)"; ctx.lineWidth = 1;
        ctx.save(); ctx.beginPath(); ctx.rect(x - w / 2, y0, w, y1 - y0); ctx.clip();
        for (let yy = y0; yy < y1 + w; yy += 10) {  // hatching
          ctx.beginPath(); ctx.moveTo(x - w / 2, yy); ctx.lineTo(x + w / 2, yy - w); ctx.stroke();
        }
        ctx.restore();
        label("down" + (open ? " to the end" : ""), x - w / 2, y0 + 9, "#0f172a", { size: 10.5, bg: "#fff" });
        counts.down = (counts.down || 0) + 1;
      } else if (kind === "op") {
        ctx.fillStyle = open ? "rgba(220,38,38,0.35)" : "rgba(14,165,233,0.35)";
        ctx.fillRect(x - 3, y0, 6, y1 - y0);
        ctx.fillRect(x - 5, y0, 10, 1.5);
        const last = lastLabel.get(lane);
        if (inWindow < 400 && (last === undefined || y0 - last > 13)) {
          label(text, x + 5, Math.max(y0 + 7, LANE_HEAD + 8), open ? "#b91c1c" : "#075985", { size: 10.5 });
          lastLabel.set(lane, y0);
        }
        counts.op = (counts.op || 0) + 1;
      }
    }
  }

  function drawArrows(list, counts, hl) {
    const rec = [];
    const fade = hl ? 0.12 : 1;
    const detail = list.length < 700;  // few enough for labels
    const lieLabels = new Set(), dropLabels = new Set();
    for (const i of list) {
      const k = kindOf(i), [x0, y0, x1, y1] = ends(i), lit = hl && hl.has(i);
      const lie = A.l[i];
      ctx.globalAlpha = hl && !lit ? fade : 1;
      if (lit) {  // a certificate member: a yellow halo
        ctx.strokeStyle = "rgba(250,204,21,0.9)"; ctx.lineWidth = 7;
        ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
      }
      if (lie) {  // a lie: a red dashed outline under the arrow
        ctx.strokeStyle = RED; ctx.lineWidth = 4.5; ctx.setLineDash([5, 3]);
        ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke(); ctx.setLineDash([]);
        counts.lie = (counts.lie || 0) + 1;
      }
      ctx.strokeStyle = colorOf(k); ctx.fillStyle = colorOf(k);
      ctx.lineWidth = lit ? 2.4 : 1.3;
      if (A.f[i] === 2 || A.c[i] > 0) ctx.setLineDash([3, 3]);
      ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke(); ctx.setLineDash([]);
      if (A.f[i] === 0) arrowHead(x0, y0, x1, y1, 7);
      else if (A.f[i] === 1) {  // dropped: a cross
        ctx.strokeStyle = RED; ctx.lineWidth = 2;
        ctx.beginPath(); ctx.moveTo(x1 - 4, y1 - 4); ctx.lineTo(x1 + 4, y1 + 4);
        ctx.moveTo(x1 + 4, y1 - 4); ctx.lineTo(x1 - 4, y1 + 4); ctx.stroke();
        counts.dropped = (counts.dropped || 0) + 1;
        const key = Math.round(x1 / 80) + ":" + Math.round(y1 / 12);
        if (detail && !dropLabels.has(key)) {
          dropLabels.add(key); label("dropped: " + ((A.x[i] || {}).reason || "?"), x1 + 2, y1 + 8, RED, { size: 10 });
        }
      } else {  // lost: an open circle
        ctx.strokeStyle = "#6b7280"; ctx.lineWidth = 1.3;
        ctx.beginPath(); ctx.arc(x1, y1, 3.5, 0, 6.3); ctx.stroke();
        counts.lost = (counts.lost || 0) + 1;
      }
      if (detail && lie) {
        const key = A.s[i] + " " + A.t0[i] + " " + A.h[i] + " " + lie;
        if (!lieLabels.has(key)) {
          lieLabels.add(key);
          ctx.globalAlpha = 1;  // what a lie replaced stays readable under a highlight
          const text = lie === 2 ? "mutated: replaces honest " + k + " d=" + (str(A.hd[i]) || "?")
            : "forged " + k;
          label(text, (x0 + x1) / 2 + 2, (y0 + y1) / 2 + 10, RED, { size: 10.5, bg: "rgba(255,255,255,0.85)" });
          const h = A.h[i] >= 0 ? BY_ID.get(A.s[i] + " " + A.h[i]) : undefined;
          if (lie === 2 && h !== undefined && A.t0[h] >= st.a && A.t0[h] <= st.b && cols[A.d[h]] !== undefined) {
            // link the lie to the honest message it replaced
            const [hx0, hy0, hx1, hy1] = ends(h);
            ctx.strokeStyle = "rgba(100,116,139,0.8)"; ctx.lineWidth = 1; ctx.setLineDash([2, 3]);
            ctx.beginPath(); ctx.moveTo((x0 + x1) / 2, (y0 + y1) / 2); ctx.lineTo((hx0 + hx1) / 2, (hy0 + hy1) / 2);
            ctx.stroke(); ctx.setLineDash([]);
            label("honest", (hx0 + hx1) / 2 - 2, (hy0 + hy1) / 2, "#475569", { size: 10, align: "right", bg: "rgba(255,255,255,0.85)" });
            counts["lie-link"] = (counts["lie-link"] || 0) + 1;
          }
        }
      }
      rec.push([x0, y0, x1, y1, i]);
    }
    ctx.globalAlpha = 1;
    counts.arrows = list.length;
    return rec;
  }

  function drawDensity(counts) {
    // Message ends per lane per 3-pixel row, drawn as bars whose width grows with the count.
    const rows = Math.ceil((Hh - LANE_HEAD) / 3), n = LANES.length;
    const bins = new Float64Array(rows * n);
    const lo = lowerBound(A.t0, st.a), hi = lowerBound(A.t0, st.b + 1e-9);
    const scale = rows / (st.b - st.a);
    let max = 1;
    for (let i = lo; i < hi; i++) {
      if (!passArrow(i)) continue;
      const r = Math.floor((A.t0[i] - st.a) * scale);
      const b1 = r * n + A.s[i], b2 = r * n + A.d[i];
      if (++bins[b1] > max) max = bins[b1];
      if (++bins[b2] > max) max = bins[b2];
    }
    for (let l = 0; l < n; l++) {
      const x = cols[l]; if (x === undefined) continue;
      ctx.fillStyle = LANES[l].byz ? "rgba(220,38,38,0.55)" : "rgba(37,99,235,0.5)";
      for (let r = 0; r < rows; r++) {
        const c = bins[r * n + l]; if (!c) continue;
        const w = Math.max(1, (cols.width[l] - 12) * Math.sqrt(c / max));
        ctx.fillRect(x - w / 2, LANE_HEAD + r * 3, w, 3);
      }
    }
    counts.density = hi - lo;
    label("zoomed out: " + (hi - lo).toLocaleString() + " messages shown as density; zoom in (wheel) to see arrows",
      GUTTER, LANE_HEAD + 12, "#334155", { size: 11, bg: "rgba(255,255,255,0.9)", border: "#cbd5e1" });
  }

  const MARK_STYLE = {
    "prepared": ["P", COLOR["PREPARE"]], "committed": ["C", COLOR["COMMIT"]], "executed": ["E", "#334155"],
    "checkpoint-stable": ["\u2713", COLOR["CHECKPOINT"]], "view-change-started": ["\u25B2", "#ea580c"],
    "view-installed": ["V", "#ea580c"], "state-transfer-started": ["\u21E3", "#92400e"],
    "state-installed": ["S", "#92400e"], "rejected": ["\u2715", "#d97706"], "evidence": ["!", RED],
    "crash": ["\u2620", "#0f172a"], "restart": ["\u21BB", "#0f172a"], "start": ["\u25B8", "#0f172a"], "submit": ["\u25B6", "#0284c7"],
    "complete": ["\u25A0", "#0284c7"]
  };

  function markText(j) {
    const f = M.f[j], y = S[M.y[j]];
    switch (y) {
      case "prepared": case "committed": case "executed":
        return y + " v" + f.view + " n" + f.seq + " d=" + f.digest;
      case "checkpoint-stable": return "checkpoint n" + f.seq + " stable";
      case "view-change-started": return "view change to v" + f.view;
      case "view-installed": return "view v" + f.view + " installed (primary " + f.primary + ")";
      case "rejected": return "rejected from " + f.peer + ": " + f.reason + (f.detail ? " (" + f.detail + ")" : "");
      case "evidence": return "evidence: " + f.kind + " by " + f.culprit;
      case "crash": return "crash";
      case "start": return "process started" + (f.pid ? " (pid " + f.pid + ")" : "");
      case "restart": return "restart" + (f.amnesia ? " (amnesia)" : "");
      case "submit": return "submit t=" + f.timestamp + ": " + f.op;
      case "complete": return "complete t=" + f.timestamp + ": " + f.result;
      default: return y + (f.seq != null ? " n" + f.seq : "");
    }
  }

  function drawMarks(counts, dense) {
    const rec = [];
    const lo = lowerBound(M.t, st.a), hi = lowerBound(M.t, st.b + 1e-9);
    const slot = new Map(), lastLabel = new Map();
    const many = hi - lo > 1500, maxStack = Math.max(1, Math.min(6, Math.floor((cols.step / 2 - 6) / 13)));
    for (let j = lo; j < hi; j++) {
      const y = S[M.y[j]], l = M.l[j];
      if (y === "violation" || l < 0) continue;
      if (!passMark(j)) continue;
      const x0 = cols[l]; if (x0 === undefined) continue;
      const big = y === "crash" || y === "restart" || y === "evidence" || y === "view-installed";
      if ((dense || many) && !big) continue;
      const yy = yOf(M.t[j]);
      const key = l + ":" + Math.round(yy / 4);
      const k = slot.get(key) || 0; slot.set(key, k + 1);
      if (k >= maxStack && !big) { counts.stacked = (counts.stacked || 0) + 1; continue; }
      const x = x0 - 12 - 13 * (k % maxStack);  // marks stack leftwards of the lane, within it
      const [sym, color] = MARK_STYLE[y] || ["\u2022", "#334155"];
      const faulty = M.f[j].faulty;
      if (y === "view-installed" || y === "checkpoint-stable") {
        ctx.strokeStyle = color; ctx.lineWidth = y === "view-installed" ? 2 : 1.2;
        ctx.beginPath(); ctx.moveTo(x0 - cols.step / 2 + 6, yy); ctx.lineTo(x0 + cols.step / 2 - 6, yy); ctx.stroke();
      }
      ctx.fillStyle = "#fff"; ctx.strokeStyle = color; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.arc(x, yy, 6, 0, 6.3); ctx.fill(); ctx.stroke();
      if (y === "committed" || y === "evidence") { ctx.fillStyle = color; ctx.fill(); }
      ctx.fillStyle = y === "committed" || y === "evidence" ? "#fff" : color;
      ctx.font = "600 9px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
      ctx.fillText(sym, x, yy + 0.5); ctx.textAlign = "left";
      if (faulty) { ctx.strokeStyle = RED; ctx.lineWidth = 1; ctx.beginPath(); ctx.arc(x, yy, 8, 0, 6.3); ctx.stroke(); }
      counts[y] = (counts[y] || 0) + 1;
      rec.push([x, yy, j]);
      // labels where they do not collide, on the right of the lane
      if (!many && (y !== "executed" || (st.b - st.a) < 40)) {
        const last = lastLabel.get(l);
        if (last === undefined || yy - last > 13) {
          label(markText(j), x0 + 6, yy, color, { size: 10 });
          lastLabel.set(l, yy);
        }
      }
    }
    return rec;
  }

  function drawEquivocations(counts, dense) {
    const rec = [];
    let lastY = -1e9;
    for (let j = 0; j < EQ.length; j++) {
      const e = EQ[j], x = cols[e.lane];
      if (x === undefined || e.t < st.a || e.t > st.b) continue;
      if (!passView(e.view) || !passSeq(e.seq)) continue;
      const y = yOf(e.t);
      if (!dense) {
        // connect the heads of the first sends of each digest, and label each head
        const first = e.arrows.filter((i) => A.t0[i] === e.t && cols[A.d[i]] !== undefined && passArrow(i));
        // a red arc through each member a little way from the sender: "these were one slot"
        const pts = first.map((i) => {
          const [x0, y0, x1, y1] = ends(i), len = Math.hypot(x1 - x0, y1 - y0) || 1, u = Math.min(0.8, 105 / len);
          return [x0 + (x1 - x0) * u, y0 + (y1 - y0) * u, x1, y1, i];
        }).sort((p, q) => Math.abs(p[0] - x) - Math.abs(q[0] - x));
        if (pts.length > 1) {
          ctx.strokeStyle = RED; ctx.lineWidth = 2; ctx.setLineDash([4, 3]);
          const angs = pts.map((p) => Math.atan2(p[1] - y, p[0] - x));
          ctx.beginPath(); ctx.arc(x, y, Math.hypot(pts[0][0] - x, pts[0][1] - y), Math.min(...angs) - 0.15, Math.max(...angs) + 0.15);
          ctx.stroke();
          ctx.setLineDash([]);
          const seen = new Set();
          for (const p of pts) {
            const dg = str(A.g[p[4]]), c = DIGEST_COLORS[Math.max(0, e.digests.indexOf(dg)) % DIGEST_COLORS.length];
            ctx.fillStyle = RED; ctx.beginPath(); ctx.arc(p[0], p[1], 3, 0, 6.3); ctx.fill();
            label("d=" + dg, p[2] + 2, p[3] + 12, c, { size: 10.5, bold: true, bg: "rgba(255,255,255,0.9)" });
            seen.add(dg);
          }
        }
      }
      // the badge at the sender's lane: visible without clicking, at any zoom
      ctx.fillStyle = RED; ctx.beginPath();
      ctx.moveTo(x, y - 8); ctx.lineTo(x + 8, y); ctx.lineTo(x, y + 8); ctx.lineTo(x - 8, y); ctx.closePath(); ctx.fill();
      ctx.fillStyle = "#fff"; ctx.font = "700 10px system-ui, sans-serif"; ctx.textAlign = "center";
      ctx.textBaseline = "middle"; ctx.fillText("\u2260", x, y + 0.5); ctx.textAlign = "left";
      let box = [x - 8, y - 8, 16, 16];
      const ly = Math.max(y, lastY + 18);  // labels of badges close together stack down
      if (ly - y < 90) {
        ctx.font = "600 11.5px system-ui, sans-serif";
        const w = ctx.measureText(e.label).width;
        // left of the lane when it fits, else above the badge (the arrows go down from it)
        box = x - 16 - w >= 2 ? label(e.label, x - 12, ly, "#fff", { size: 11.5, bold: true, bg: RED, align: "right" })
          : label(e.label, x - 14, ly - 17, "#fff", { size: 11.5, bold: true, bg: RED });
        lastY = ly;
      }
      counts.equivocation = (counts.equivocation || 0) + 1;
      rec.push([box, j, x, y]);
    }
    return rec;
  }

  function wrap(text, width) {
    const words = text.split(" "), lines = [];
    let cur = "";
    for (const w of words) {
      const t = cur ? cur + " " + w : w;
      if (ctx.measureText(t).width > width && cur) { lines.push(cur); cur = w; } else cur = t;
    }
    if (cur) lines.push(cur);
    return lines;
  }

  function drawViolations(counts) {
    let k = 0;
    for (const v of D.V) {
      const [t, check, detail] = v;
      if (t < st.a || t > st.b) {
        const up = t < st.a, y = up ? LANE_HEAD + 10 : Hh - 10;
        label((up ? "\u25B2" : "\u25BC") + " violation at " + t + " ms (click the banner)", W / 2 - 120, y - k * 18, "#fff",
          { size: 11, bold: true, bg: RED });
        k++;
        continue;
      }
      const y = yOf(t);
      ctx.strokeStyle = RED; ctx.lineWidth = 2.5;
      ctx.beginPath(); ctx.moveTo(GUTTER - 6, y); ctx.lineTo(W - PAD_R, y); ctx.stroke();
      ctx.font = "600 12px system-ui, sans-serif";
      // A few lines on the plot (wrapping is redone every frame); the whole text is in the
      // banner and the findings list.
      const shown = detail.length > 400 ? detail.slice(0, 400) + " \u2026" : detail;
      const lines = wrap("VIOLATION (" + check + ") at " + t + " ms: " + shown, Math.min(560, W - GUTTER - 40));
      const w = Math.max(...lines.map((s) => ctx.measureText(s).width)) + 14, h = lines.length * 16 + 8;
      const bx = GUTTER + 4, by = y + 6 + h > Hh ? y - 6 - h : y + 6;
      ctx.fillStyle = "#fef2f2"; ctx.strokeStyle = RED; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.rect(bx, by, w, h); ctx.fill(); ctx.stroke();
      ctx.fillStyle = "#991b1b"; ctx.textBaseline = "middle";
      lines.forEach((s, n) => ctx.fillText(s, bx + 7, by + 12 + n * 16));
      counts.violation = (counts.violation || 0) + 1;
    }
  }

  function certificateOf() {
    const j = st.hover != null ? st.hover : st.sel && st.sel.type === "mark" ? st.sel.i : null;
    if (j == null) return null;
    const c = CERT.get(j);
    return c ? { j, c } : null;
  }

  function draw() {
    const t0 = performance.now();
    layout();
    ctx.clearRect(0, 0, W, Hh);
    const counts = {};
    drawAxis();
    drawLanes();
    drawBands(counts);
    const list = visibleArrows(), dense = list === null;
    const cert = certificateOf();
    let hl = cert ? new Set(cert.c.arrows) : null;
    if (!hl && st.sel && st.sel.type === "eq") hl = new Set(EQ[st.sel.i].arrows);
    if (!hl && st.sel && st.sel.type === "arrow") hl = new Set([st.sel.i]);
    let arrowRec = [];
    if (dense) drawDensity(counts); else arrowRec = drawArrows(list, counts, hl);
    const markRec = drawMarks(counts, dense);
    if (cert) {
      const j = cert.j, x = cols[M.l[j]], y = yOf(M.t[j]);
      const need = 2 * F + 1;
      label(S[M.y[j]] + " v" + M.f[j].view + " n" + M.f[j].seq + ": " + cert.c.votes + " of 2f+1=" + need +
        " votes, " + cert.c.arrows.length + " messages", (x || GUTTER) + 6, y - 16, "#713f12",
        { size: 11, bold: true, bg: "#fef9c3", border: "#facc15" });
      counts.certificate = cert.c.arrows.length;
    }
    const eqRec = drawEquivocations(counts, dense);
    drawViolations(counts);
    drawLaneHeads();
    hits = { arrows: arrowRec, marks: markRec, eqs: eqRec };
    drawOverview();
    syncInputs();
    const ms = performance.now() - t0;
    drawTimes.push(ms); if (drawTimes.length > 200) drawTimes.shift();
    if (firstDraw === null) { ctx.getImageData(0, 0, 1, 1); firstDraw = performance.now(); }
    document.getElementById("drawn").textContent = JSON.stringify({
      lanes: LANES.filter((l) => cols[l.i] !== undefined).length, arrows: counts.arrows || 0, density: dense,
      marks: counts, window: [st.a, st.b], messages: NA, firstDrawMs: Math.round(firstDraw),
      lastDrawMs: +ms.toFixed(2), bench: bench, selftest: selftestResult
    });
  }

  // ---- overview strip: the whole run's density, and the window -----------------------------
  let ovBins = null;
  function drawOverview() {
    const w = ov.clientWidth, h = ov.clientHeight, span = Math.max(T_END, 1e-9);
    if (!ovBins || ovBins.length !== h) {
      ovBins = new Float64Array(h);
      for (let i = 0; i < NA; i++) ovBins[Math.min(h - 1, Math.floor(A.t0[i] / span * h))]++;
      ovBins.max = Math.max(1, ...ovBins);
    }
    octx.clearRect(0, 0, w, h);
    octx.fillStyle = "#94a3b8";
    for (let r = 0; r < h; r++) if (ovBins[r]) {
      const bw = (w - 6) * Math.sqrt(ovBins[r] / ovBins.max); octx.fillRect(3, r, bw, 1);
    }
    octx.fillStyle = RED;
    for (const e of EQ) octx.fillRect(w - 8, e.t / span * h - 1, 6, 3);
    for (const v of D.V) octx.fillRect(0, v[0] / span * h - 1.5, w, 3);
    octx.strokeStyle = "#0f172a"; octx.lineWidth = 1.5;
    const y0 = st.a / span * h, y1 = st.b / span * h;
    octx.strokeRect(1, y0, w - 2, Math.max(2, y1 - y0));
  }

  // ---- controls --------------------------------------------------------------------------
  const LOG_MIN = Math.log(Math.max(T_END / 1e5, 1e-3)), LOG_MAX = Math.log(Math.max(T_END * 1.2, 1));
  function syncInputs() {
    const ta = document.getElementById("ta"), tb = document.getElementById("tb"), z = document.getElementById("zoom");
    if (document.activeElement !== ta) ta.value = +st.a.toFixed(2);
    if (document.activeElement !== tb) tb.value = +st.b.toFixed(2);
    if (document.activeElement !== z) z.value = Math.round((Math.log(st.b - st.a) - LOG_MIN) / (LOG_MAX - LOG_MIN) * 1000);
  }
  let pending = false;
  function redraw() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); } }
  function setWindow(a, b) {
    const minSpan = 1e-3, span = Math.max(b - a, minSpan);
    const lo = -0.05 * Math.max(T_END, 1), hi = T_END * 1.05 + 1;
    if (span >= hi - lo) { a = lo; b = hi; } else { a = Math.min(Math.max(a, lo), hi - span); b = a + span; }
    st.a = a; st.b = b;
  }
  function zoomAt(t, factor) { setWindow(t - (t - st.a) * factor, t + (st.b - t) * factor); }
  function goTo(t, before) {  // a window around t, wide enough for a few hundred arrows
    const i = lowerBound(A.t0, t);
    const lo = A.t0[Math.max(0, i - 60)] ?? 0, hi = A.t0[Math.min(NA - 1, i + 25)] ?? T_END;
    const span = Math.min(Math.max(hi - lo, 6 * TYPICAL), 30 * TYPICAL);
    setWindow(t - span * before, t + span * (1 - before));
  }

  function buildControls() {
    const kinds = document.getElementById("kinds");
    for (const k of KINDS) {
      const lab = document.createElement("label"); lab.className = "chip";
      lab.innerHTML = '<input type="checkbox" checked><span class="sw"></span>';
      lab.querySelector(".sw").style.background = colorOf(k);
      lab.appendChild(document.createTextNode(k || "(undecodable)"));
      lab.dataset.kind = k;
      lab.querySelector("input").addEventListener("change", (ev) => {
        if (ev.target.checked) st.kinds.add(k); else st.kinds.delete(k);
        lab.classList.toggle("off", !ev.target.checked); redraw();
      });
      kinds.appendChild(lab);
    }
    const ls = document.getElementById("lanesel");
    for (const l of LANES) {
      const lab = document.createElement("label"); lab.className = "chip";
      lab.innerHTML = '<input type="checkbox" checked><span class="sw"></span>';
      lab.querySelector(".sw").style.background = l.byz ? RED : l.kind === "client" ? "#0ea5e9" : "#334155";
      lab.appendChild(document.createTextNode(l.name));
      lab.querySelector("input").addEventListener("change", (ev) => {
        if (ev.target.checked) st.hidden.delete(l.i); else st.hidden.add(l.i);
        lab.classList.toggle("off", !ev.target.checked); redraw();
      });
      ls.appendChild(lab);
    }
    for (const id of ["vmin", "vmax", "qmin", "qmax"]) {
      document.getElementById(id).addEventListener("input", (ev) => {
        const v = ev.target.value.trim(); st[id] = v === "" ? null : Number(v); redraw();
      });
    }
    const ta = document.getElementById("ta"), tb = document.getElementById("tb");
    const onTime = () => { const a = Number(ta.value), b = Number(tb.value); if (b > a) { setWindow(a, b); redraw(); } };
    ta.addEventListener("change", onTime); tb.addEventListener("change", onTime);
    document.getElementById("zoom").addEventListener("input", (ev) => {
      const span = Math.exp(LOG_MIN + (LOG_MAX - LOG_MIN) * ev.target.value / 1000), mid = (st.a + st.b) / 2;
      setWindow(mid - span / 2, mid + span / 2); redraw();
    });
    document.getElementById("fit").addEventListener("click", () => { setWindow(-1, T_END + 1); redraw(); });
    const gv = document.getElementById("goviol"), banner = document.getElementById("banner");
    if (D.V.length) {
      gv.hidden = false; banner.hidden = false;
      banner.textContent = "\u26A0 VIOLATION (" + D.V[0][1] + ") at " + D.V[0][0] + " ms: " + D.V[0][2];
      const go = () => { goTo(D.V[0][0], 0.7); redraw(); };
      gv.addEventListener("click", go); banner.addEventListener("click", go);
    }
    // the header
    const e = D.end || {};
    document.getElementById("title").textContent = "pbft trace \u00b7 " + (H.scenario || "run");
    const sum = document.getElementById("summary");
    if (e.verdict) {
      const v = document.createElement("span"); v.className = e.verdict; v.textContent = e.verdict; sum.appendChild(v);
    }
    const parts = [];
    if (H.seed != null) parts.push("seed " + H.seed);
    if (H.n != null) parts.push("n=" + H.n + (H.f != null ? " f=" + H.f : ""));
    if (H.mode) parts.push("mode " + H.mode);
    if (H.byzantine && H.byzantine.length) parts.push("Byzantine: " + H.byzantine.join(", "));
    if (H.broken) parts.push("broken core: " + H.broken);
    if (e.requests_total != null) parts.push(e.requests_completed + "/" + e.requests_total + " requests");
    if (e.view_changes != null) parts.push(e.view_changes + " view changes");
    parts.push(NA.toLocaleString() + " messages", T_END + " ms");
    if (D.ignored) parts.push(D.ignored + " records not drawn");
    sum.appendChild(document.createTextNode((e.verdict ? " \u00b7 " : "") + parts.join(" \u00b7 ")));
    buildFindings(); buildLegend();
  }

  function esc(s) { return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;"); }

  function buildFindings() {
    const ul = document.getElementById("findlist"), add = (mark, text, fn) => {
      const li = document.createElement("li"); li.dataset.mark = mark; li.textContent = text;
      li.addEventListener("click", fn); ul.appendChild(li);
    };
    for (const v of D.V) add("violation", "violation at " + v[0] + " ms (" + v[1] + "): " + v[2], () => { goTo(v[0], 0.7); redraw(); });
    EQ.forEach((e, j) => add("equivocation", e.label.replace("equivocation: ", "equivocation by " + LANES[e.lane].name + ": ") +
      " at " + e.t + " ms", () => { goTo(e.t, 0.3); st.sel = { type: "eq", i: j }; showEq(j); redraw(); }));
    let forged = 0, mutated = 0, firstLie = -1;
    for (let i = 0; i < NA; i++) if (A.l[i]) { if (A.l[i] === 1) forged++; else mutated++; if (firstLie < 0) firstLie = i; }
    if (forged + mutated) add("lie", mutated + " mutated and " + forged + " forged messages (red dashed)", () => {
      goTo(A.t0[firstLie], 0.3); st.sel = { type: "arrow", i: firstLie }; showArrow(firstLie); redraw(); });
    const ev = M.y.reduce((n, y) => n + (S[y] === "evidence" ? 1 : 0), 0);
    if (ev) add("evidence", ev + " evidence records (replicas caught an equivocation)", () => {
      const j = M.y.findIndex((y) => S[y] === "evidence"); goTo(M.t[j], 0.5); redraw(); });
    const rej = M.y.reduce((n, y) => n + (S[y] === "rejected" ? 1 : 0), 0);
    if (rej) add("rejected", rej + " inputs rejected by cores (\u2715 marks)", () => {
      const j = M.y.findIndex((y) => S[y] === "rejected"); goTo(M.t[j], 0.5); redraw(); });
    if (!ul.children.length) add("none", "nothing Byzantine in this trace", () => {});
  }

  function buildLegend() {
    const body = document.getElementById("legendbody");
    const row = (drawFn, text) => {
      const div = document.createElement("div"), c = document.createElement("canvas");
      c.width = 36; c.height = 16; drawFn(c.getContext("2d")); div.appendChild(c);
      div.appendChild(document.createTextNode(text)); body.appendChild(div);
    };
    const line = (color, dash, under) => (g) => {
      if (under) { g.strokeStyle = RED; g.lineWidth = 4.5; g.setLineDash([5, 3]); g.beginPath(); g.moveTo(2, 8); g.lineTo(30, 8); g.stroke(); }
      g.setLineDash(dash || []); g.strokeStyle = color; g.fillStyle = color; g.lineWidth = 1.5;
      g.beginPath(); g.moveTo(2, 8); g.lineTo(30, 8); g.stroke();
      g.beginPath(); g.moveTo(34, 8); g.lineTo(27, 4); g.lineTo(27, 12); g.fill();
    };
    for (const k of KINDS) row(line(colorOf(k)), k || "(undecodable bytes)");
    row(line("#2563eb", null, true), "a lie: mutated or forged (label says which)");
    row(line("#2563eb", [3, 3]), "a duplicate copy, or lost (ends in \u25CB)");
    row((g) => { g.strokeStyle = "#2563eb"; g.beginPath(); g.moveTo(2, 8); g.lineTo(22, 8); g.stroke();
      g.strokeStyle = RED; g.lineWidth = 2; g.beginPath(); g.moveTo(20, 4); g.lineTo(28, 12); g.moveTo(28, 4); g.lineTo(20, 12); g.stroke(); },
    "dropped by the network (reason shown)");
    row((g) => { g.fillStyle = RED; g.beginPath(); g.moveTo(18, 0); g.lineTo(26, 8); g.lineTo(18, 16); g.lineTo(10, 8); g.fill(); },
      "equivocation: one slot, different digests");
    row((g) => { g.strokeStyle = "rgba(250,204,21,0.9)"; g.lineWidth = 7; g.beginPath(); g.moveTo(2, 8); g.lineTo(32, 8); g.stroke(); },
      "certificate of the hovered P / C mark");
    for (const [y, [sym, color]] of Object.entries(MARK_STYLE)) {
      if (y === "submit" || y === "complete") continue;
      row((g) => { g.fillStyle = "#fff"; g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath(); g.arc(18, 8, 6, 0, 6.3); g.fill(); g.stroke();
        if (y === "committed" || y === "evidence") { g.fillStyle = color; g.fill(); }
        g.fillStyle = y === "committed" || y === "evidence" ? "#fff" : color; g.font = "600 9px sans-serif"; g.textAlign = "center"; g.textBaseline = "middle"; g.fillText(sym, 18, 8.5); }, y);
    }
    row((g) => { g.fillStyle = "rgba(234,88,12,0.13)"; g.fillRect(4, 1, 28, 14); g.strokeStyle = "rgba(234,88,12,0.6)"; g.setLineDash([4, 3]); g.strokeRect(4, 1, 28, 14); },
      "view change in progress");
    row((g) => { g.fillStyle = "rgba(15,23,42,0.15)"; g.fillRect(4, 1, 28, 14); }, "replica down (crash .. restart)");
    row((g) => { g.fillStyle = "rgba(14,165,233,0.45)"; g.fillRect(15, 0, 6, 16); }, "client operation (submit .. complete)");
    row((g) => { g.strokeStyle = RED; g.lineWidth = 2.5; g.beginPath(); g.moveTo(0, 8); g.lineTo(36, 8); g.stroke(); }, "the violation");
  }

  // ---- details ---------------------------------------------------------------------------
  function table(head, rows, extraHtml) {
    document.getElementById("detail").innerHTML = '<div class="head">' + esc(head) + "</div><table>" +
      rows.filter((r) => r[1] !== null && r[1] !== undefined && r[1] !== -1 && r[1] !== "")
        .map((r) => "<tr><td>" + esc(r[0]) + "</td><td>" + esc(typeof r[1] === "object" ? JSON.stringify(r[1]) : r[1]) + "</td></tr>").join("") +
      "</table>" + (extraHtml || "");
  }
  function laneName(l) { const x = LANES[l]; return x.kind === "client" ? x.name : "replica " + x.name; }
  function showArrow(i) {
    const fate = ["delivered", "dropped", "lost (in flight at the end)"][A.f[i]];
    const rows = [["kind", kindOf(i)], ["from", laneName(A.s[i])], ["to", laneName(A.d[i])], ["sent at", A.t0[i] + " ms"],
      [fate === "delivered" ? "delivered at" : fate, A.f[i] === 0 ? A.t1[i] + " ms (" + +(A.t1[i] - A.t0[i]).toFixed(3) + " ms later)" : A.f[i] === 1 ? "at " + A.t1[i] + " ms" : "yes"],
      ["view", A.v[i]], ["seq", A.q[i]], ["digest", str(A.g[i])], ["id", str(A.id[i])], ["size", A.z[i] + " bytes"],
      ["lie", ["", "forged: the honest core sent nothing like it", "mutated: replaces the honest message below"][A.l[i]]],
      ["honest id", str(A.h[i])], ["honest digest", str(A.hd[i])], ["copy", A.c[i] ? "duplicate #" + A.c[i] : null],
      ["client", str(A.cl[i])], ["timestamp", A.ts[i]]];
    for (const [k, v] of Object.entries(A.x[i] || {})) rows.push([k, v]);
    let extra = "";
    const h = A.h[i] >= 0 ? BY_ID.get(A.s[i] + " " + A.h[i]) : undefined;
    if (h !== undefined) extra += '<p><a data-go="' + h + '">show the honest message it replaced</a></p>';
    else if (A.l[i] === 2) extra += "<p>The honest message was not sent to anyone (the behaviour withheld it).</p>";
    if (EQ_OF.has(i)) extra += '<p><a data-eq="' + EQ_OF.get(i) + '">part of an equivocation: show the group</a></p>';
    table(kindOf(i) + " " + laneName(A.s[i]) + " \u2192 " + laneName(A.d[i]), rows, extra);
    wireLinks();
  }
  function showMark(j) {
    const f = M.f[j], rows = [["type", S[M.y[j]]], ["at", M.t[j] + " ms"], ["lane", M.l[j] >= 0 ? laneName(M.l[j]) : "all"]];
    for (const [k, v] of Object.entries(f)) rows.push([k, v]);
    let extra = "";
    const c = CERT.get(j);
    if (c) {
      extra = "<p><b>Certificate</b>: " + c.votes + " distinct replicas of the 2f+1=" + (2 * F + 1) + " needed, from these messages:</p><ul>" +
        c.arrows.map((i) => '<li><a data-go="' + i + '">' + esc(kindOf(i) + " from " + laneName(A.s[i]) + " at " + A.t0[i] + " ms") + "</a></li>").join("") + "</ul>";
    }
    table(markText(j), rows, extra); wireLinks();
  }
  function showEq(j) {
    const e = EQ[j];
    table(e.label, [["sender", laneName(e.lane)], ["first at", e.t + " ms"], ["kind", e.kind], ["view", e.view], ["seq", e.seq],
      ["digests", e.digests.join(", ")], ["messages", e.arrows.length]],
    "<ul>" + e.arrows.slice(0, 40).map((i) => '<li><a data-go="' + i + '">' + esc("to " + laneName(A.d[i]) + " at " + A.t0[i] + " ms: d=" + str(A.g[i])) + "</a></li>").join("") + "</ul>");
    wireLinks();
  }
  function wireLinks() {
    for (const a of document.querySelectorAll("#detail a[data-go]")) a.addEventListener("click", () => {
      const i = +a.dataset.go; st.sel = { type: "arrow", i }; st.hover = null;
      if (A.t0[i] < st.a || A.t0[i] > st.b) goTo(A.t0[i], 0.4);
      showArrow(i); redraw();
    });
    for (const a of document.querySelectorAll("#detail a[data-eq]")) a.addEventListener("click", () => {
      const j = +a.dataset.eq; st.sel = { type: "eq", i: j }; showEq(j); redraw();
    });
  }

  // ---- hit testing and input -------------------------------------------------------------
  function segDist(px, py, x0, y0, x1, y1) {
    const dx = x1 - x0, dy = y1 - y0, l2 = dx * dx + dy * dy;
    const u = l2 ? Math.max(0, Math.min(1, ((px - x0) * dx + (py - y0) * dy) / l2)) : 0;
    return Math.hypot(px - x0 - u * dx, py - y0 - u * dy);
  }
  function hitAt(px, py) {
    if (!hits) return null;
    for (const [x, y, j] of hits.marks) if (Math.hypot(px - x, py - y) <= 7) return { type: "mark", i: j };
    for (const [box, j, x, y] of hits.eqs) {
      if ((px >= box[0] && px <= box[0] + box[2] && py >= box[1] && py <= box[1] + box[3]) || Math.hypot(px - x, py - y) <= 9)
        return { type: "eq", i: j };
    }
    let best = null, bd = 5;
    for (const [x0, y0, x1, y1, i] of hits.arrows) {
      const d = segDist(px, py, x0, y0, x1, y1); if (d < bd) { bd = d; best = { type: "arrow", i }; }
    }
    return best;
  }
  function pos(ev) { const r = canvas.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; }
  let drag = null;
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const [, py] = pos(ev);
    if (ev.shiftKey) { const d = (st.b - st.a) * ev.deltaY / 1000; setWindow(st.a + d, st.b + d); }
    else zoomAt(tOf(Math.max(py, LANE_HEAD)), Math.exp(ev.deltaY / 400));
    redraw();
  }, { passive: false });
  canvas.addEventListener("mousedown", (ev) => { drag = { y: ev.clientY, a: st.a, b: st.b, moved: false }; });
  window.addEventListener("mousemove", (ev) => {
    if (drag) {
      const dy = ev.clientY - drag.y;
      if (Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) {
        canvas.classList.add("dragging");
        const dt = dy * (drag.b - drag.a) / (Hh - LANE_HEAD); setWindow(drag.a - dt, drag.b - dt); redraw();
      }
      return;
    }
    if (ev.target !== canvas) return;
    const [px, py] = pos(ev), h = hitAt(px, py);
    const hv = h && h.type === "mark" && CERT.has(h.i) ? h.i : null;
    canvas.style.cursor = h ? "pointer" : "";
    if (hv !== st.hover) { st.hover = hv; redraw(); }
  });
  window.addEventListener("mouseup", (ev) => {
    const d = drag; drag = null; canvas.classList.remove("dragging");
    if (!d || d.moved || ev.target !== canvas) return;
    const [px, py] = pos(ev), h = hitAt(px, py);
    st.sel = h;
    if (!h) document.getElementById("detail").textContent = "Nothing there: click an arrow or a mark.";
    else if (h.type === "arrow") showArrow(h.i); else if (h.type === "mark") showMark(h.i); else showEq(h.i);
    redraw();
  });
  ov.addEventListener("click", (ev) => {
    const r = ov.getBoundingClientRect(), t = (ev.clientY - r.top) / r.height * T_END, span = st.b - st.a;
    setWindow(t - span / 2, t + span / 2); redraw();
  });
  window.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT") return;
    const span = st.b - st.a, mid = (st.a + st.b) / 2;
    if (ev.key === "+" || ev.key === "=") zoomAt(mid, 0.7);
    else if (ev.key === "-") zoomAt(mid, 1 / 0.7);
    else if (ev.key === "ArrowDown" || ev.key === "PageDown") setWindow(st.a + span * 0.25, st.b + span * 0.25);
    else if (ev.key === "ArrowUp" || ev.key === "PageUp") setWindow(st.a - span * 0.25, st.b - span * 0.25);
    else if (ev.key === "Escape") { st.sel = null; st.hover = null; }
    else return;
    redraw();
  });
  window.addEventListener("resize", () => { ovBins = null; redraw(); });

  // ---- start -----------------------------------------------------------------------------
  // The hash may ask for a window (#t=A-B), a selected mark (#mark=J) or a measurement (#bench).
  let bench = null, selftestResult = null;
  buildControls();
  const at = D.at;
  // else the first message (a real run's processes start well before they talk)
  if (at != null) goTo(at, D.V.length && at === D.V[0][0] ? 0.7 : 0.4); else goTo(NA ? A.t0[0] : 0, 0.05);
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("t")) { const [a, b] = hash.get("t").split("_").map(Number); if (b > a) setWindow(a, b); }
  if (hash.has("mark")) { const j = +hash.get("mark"); if (j >= 0 && j < NM) { st.sel = { type: "mark", i: j }; showMark(j); } }
  if (hash.has("eq")) { const j = +hash.get("eq"); if (EQ[j]) { st.sel = { type: "eq", i: j }; } }
  draw();
  if (hash.has("bench")) {
    // Zoom in and out and pan, drawing synchronously, and report the times in #drawn.
    const times = { zoom: [], pan: [] };
    // getImageData waits for the canvas to be rasterised, so the time is the whole frame's
    const run = (kind, fn) => {
      fn(); const t = performance.now(); draw(); ctx.getImageData(0, 0, 1, 1); times[kind].push(performance.now() - t);
    };
    for (let k = 0; k < 20; k++) {
      run("zoom", () => zoomAt((st.a + st.b) / 2, k < 10 ? 1.6 : 1 / 1.6));
      run("pan", () => { const s = st.b - st.a; setWindow(st.a + s * 0.2, st.b + s * 0.2); });
    }
    setWindow(-1, T_END + 1); run("zoom", () => {});
    for (let k = 0; k < 10; k++) run("pan", () => goTo(T_END * (k + 0.5) / 10, 0.5));
    const stat = (xs) => ({ n: xs.length, mean: +(xs.reduce((s, x) => s + x, 0) / xs.length).toFixed(2), max: +Math.max(...xs).toFixed(2) });
    bench = { zoom: stat(times.zoom), pan: stat(times.pan) };
    draw();
  }
  if (hash.has("selftest")) selftest();

  // Drives the page with synthetic input events, as a user would, and reports in #drawn
  // whether each did what it should (tests/trace/test_browser.py).
  function selftest() {
    const out = { errors: [] }, r = canvas.getBoundingClientRect();
    const at = (type, x, y, extra) => {
      const init = Object.assign({ clientX: r.left + x, clientY: r.top + y, bubbles: true, cancelable: true }, extra || {});
      // on the canvas: they bubble to the window's listeners with the canvas as target
      canvas.dispatchEvent(type === "wheel" ? new WheelEvent(type, init) : new MouseEvent(type, init));
    };
    window.addEventListener("error", (ev) => out.errors.push(String(ev.message)));
    try {
      const m = hits.marks.find((h) => CERT.has(h[2]));
      if (m) { at("mousemove", m[0], m[1]); out.hover = st.hover === m[2]; draw(); out.certificate = JSON.parse(document.getElementById("drawn").textContent).marks.certificate || 0; }
      at("mousemove", 1, 1);
      const a = hits.arrows[Math.floor(hits.arrows.length / 2)];
      if (a) {
        const x = (a[0] + a[2]) / 2, y = (a[1] + a[3]) / 2;
        at("mousedown", x, y); at("mouseup", x, y);
        out.click = !!st.sel && st.sel.type === "arrow" && !!document.querySelector("#detail table");
      }
      const span = st.b - st.a;
      at("wheel", 300, 300, { deltaY: -400 }); out.zoom = st.b - st.a < span;
      const a0 = st.a;
      at("mousedown", 300, 300); at("mousemove", 300, 400); at("mouseup", 300, 400); out.pan = st.a < a0;
      const s2 = st.b - st.a;
      window.dispatchEvent(new KeyboardEvent("keydown", { key: "-" })); out.key = st.b - st.a > s2;
      const chip = document.querySelector("#kinds label.chip input");
      chip.click(); out.filter = st.kinds.size === KINDS.length - 1; chip.click();
    } catch (err) { out.errors.push(String(err && err.stack || err)); }
    selftestResult = out;  // every later drawing reports it
    draw();
  }
})();
