/* latentatlas: the interactive page of a run folder (maps, hover readout, geodesics).
 *
 * Reads the JSON payload in <script id="la-data"> written by latentatlas.report.interactive and
 * draws it with plotly.js (inlined in the page). Exposes window.latentatlas:
 *   pointAt(i, j)     -> {i, j, t: [t0, t1], metric: [[g00, g01], [g10, g11]], sqrt_det_g,
 *                         label, posterior: {index, t, axis0, axis1, values} | null}
 *                        (grid indices i along axis0, j along axis1; values as in atlas.npz)
 *   geodesic(a, b)    -> {length, straight_length, dijkstra_length, points: [[t0, t1], ...]}
 *                        (a, b: [t0, t1] coordinates; lengths in Fisher units of one sample)
 *   metricAt([t0, t1]) -> [[g00, g01], [g01, g11]] bilinearly interpolated
 * For path runs: pointAt(i) -> {i, s, metric, potential}.
 *
 * Geodesics: Dijkstra on the 16-neighbour grid graph (edge length: Simpson's rule for
 * int sqrt(dt^T g dt) with g at both nodes and bilinearly interpolated at the midpoint), then
 * discrete geodesic shortening: the discrete energy sum_k dx_k^T g(mid_k) dx_k is minimised over
 * the interior points by Gauss-Seidel Newton sweeps (gradient including the derivative of the
 * bilinear metric), coarse to fine (17, 33, 65 points). Lengths are measured on the final
 * polyline with Simpson's rule on 4 sub-segments per segment; if shortening did not shorten the
 * Dijkstra path, the Dijkstra path is returned.
 */
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("la-data").textContent);
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];

  function decode(p) {
    if (p === null || p === undefined) return null;
    const bin = atob(p.b64);
    const bytes = new Uint8Array(bin.length);
    for (let k = 0; k < bin.length; k++) bytes[k] = bin.charCodeAt(k);
    const Ctor = { f32: Float32Array, f64: Float64Array, i32: Int32Array }[p.dtype];
    return { shape: p.shape, data: new Ctor(bytes.buffer) };
  }

  function fmt(x, digits) {
    if (x === null || x === undefined || !isFinite(x)) return String(x);
    return Number(x).toPrecision(digits || 5);
  }

  function nearest(axis, x) {
    let best = 0;
    for (let k = 1; k < axis.length; k++) {
      if (Math.abs(axis[k] - x) < Math.abs(axis[best] - x)) best = k;
    }
    return best;
  }

  function fracIndex(axis, x) {
    const n = axis.length;
    if (x <= axis[0]) return 0;
    if (x >= axis[n - 1]) return n - 1;
    let lo = 0, hi = n - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (axis[mid] <= x) lo = mid; else hi = mid;
    }
    return lo + (x - axis[lo]) / (axis[hi] - axis[lo]);
  }

  function loadImage(images, onload) {
    if (!images) return null;
    const img = new Image();
    img.onload = onload || null;
    img.src = images.uri;
    return img;
  }

  function drawTile(canvas, images, sprite, a, b) {
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!sprite || !sprite.complete) return false;
    const [h, w] = images.tile;
    ctx.drawImage(sprite, b * w, a * h, w, h, 0, 0, canvas.width, canvas.height);
    return true;
  }

  // ------------------------------------------------------------------------------------------
  // 2-D atlases and planes
  // ------------------------------------------------------------------------------------------
  function atlasPage() {
    const axis0 = decode(data.axis0).data, axis1 = decode(data.axis1).data;
    const G0 = axis0.length, G1 = axis1.length;
    const M = decode(data.metric).data; // (G0, G1, 2, 2)
    const labels = data.labels ? decode(data.labels).data : null;
    const names = data.names;
    const lo0 = axis0[0], hi0 = axis0[G0 - 1], lo1 = axis1[0], hi1 = axis1[G1 - 1];
    const h0 = 0.5 * (hi0 - lo0) / Math.max(1, G0 - 1), h1 = 0.5 * (hi1 - lo1) / Math.max(1, G1 - 1);

    // metric as (g00, g01, g11), symmetrised
    function node(i, j) {
      const k = (i * G1 + j) * 4;
      return [M[k], 0.5 * (M[k + 1] + M[k + 2]), M[k + 3]];
    }
    function metricFrac(fi, fj) {
      const i = Math.min(Math.floor(fi), G0 - 2 < 0 ? 0 : G0 - 2);
      const j = Math.min(Math.floor(fj), G1 - 2 < 0 ? 0 : G1 - 2);
      const u = G0 > 1 ? fi - i : 0, v = G1 > 1 ? fj - j : 0;
      const a = node(i, j), b = node(Math.min(i + 1, G0 - 1), j);
      const c = node(i, Math.min(j + 1, G1 - 1)), d = node(Math.min(i + 1, G0 - 1), Math.min(j + 1, G1 - 1));
      const out = [0, 0, 0];
      for (let m = 0; m < 3; m++) {
        out[m] = (1 - u) * (1 - v) * a[m] + u * (1 - v) * b[m] + (1 - u) * v * c[m] + u * v * d[m];
      }
      return out;
    }
    function metricAt(t) { return metricFrac(fracIndex(axis0, t[0]), fracIndex(axis1, t[1])); }
    function quad(g, d0, d1) { return Math.max(0, g[0] * d0 * d0 + 2 * g[1] * d0 * d1 + g[2] * d1 * d1); }
    function segLength(p, q, nsub) {
      const d0 = (q[0] - p[0]) / nsub, d1 = (q[1] - p[1]) / nsub;
      let total = 0;
      for (let s = 0; s < nsub; s++) {
        const a = [p[0] + s * d0, p[1] + s * d1], b = [a[0] + d0, a[1] + d1];
        const m = [0.5 * (a[0] + b[0]), 0.5 * (a[1] + b[1])];
        total += (Math.sqrt(quad(metricAt(a), d0, d1)) + 4 * Math.sqrt(quad(metricAt(m), d0, d1))
          + Math.sqrt(quad(metricAt(b), d0, d1))) / 6;
      }
      return total;
    }
    function polyLength(pts, nsub) {
      let total = 0;
      for (let k = 0; k + 1 < pts.length; k++) total += segLength(pts[k], pts[k + 1], nsub);
      return total;
    }
    function clampPoint(p) {
      return [Math.min(hi0, Math.max(lo0, p[0])), Math.min(hi1, Math.max(lo1, p[1]))];
    }

    // Dijkstra on the 16-neighbour grid graph
    const OFFSETS = [];
    for (const [a, b] of [[1, 0], [0, 1], [1, 1], [1, -1], [2, 1], [1, 2], [2, -1], [1, -2]]) {
      OFFSETS.push([a, b], [-a, -b]);
    }
    function edgeLength(i, j, di, dj) {
      const d0 = axis0[i + di] - axis0[i], d1 = axis1[j + dj] - axis1[j];
      const a = node(i, j), b = node(i + di, j + dj), m = metricFrac(i + 0.5 * di, j + 0.5 * dj);
      return (Math.sqrt(quad(a, d0, d1)) + 4 * Math.sqrt(quad(m, d0, d1)) + Math.sqrt(quad(b, d0, d1))) / 6;
    }
    function dijkstra(src, dst) {
      const n = G0 * G1;
      const dist = new Float64Array(n).fill(Infinity);
      const prev = new Int32Array(n).fill(-1);
      const done = new Uint8Array(n);
      const heapD = [], heapN = [];
      function push(d, v) {
        heapD.push(d); heapN.push(v);
        let c = heapD.length - 1;
        while (c > 0) {
          const p = (c - 1) >> 1;
          if (heapD[p] <= heapD[c]) break;
          [heapD[p], heapD[c]] = [heapD[c], heapD[p]]; [heapN[p], heapN[c]] = [heapN[c], heapN[p]];
          c = p;
        }
      }
      function pop() {
        const d = heapD[0], v = heapN[0];
        const lastD = heapD.pop(), lastN = heapN.pop();
        if (heapD.length) {
          heapD[0] = lastD; heapN[0] = lastN;
          let c = 0;
          for (;;) {
            const l = 2 * c + 1, r = l + 1;
            let m = c;
            if (l < heapD.length && heapD[l] < heapD[m]) m = l;
            if (r < heapD.length && heapD[r] < heapD[m]) m = r;
            if (m === c) break;
            [heapD[m], heapD[c]] = [heapD[c], heapD[m]]; [heapN[m], heapN[c]] = [heapN[c], heapN[m]];
            c = m;
          }
        }
        return [d, v];
      }
      dist[src] = 0;
      push(0, src);
      while (heapD.length) {
        const [d, v] = pop();
        if (done[v]) continue;
        done[v] = 1;
        if (v === dst) break;
        const i = Math.floor(v / G1), j = v % G1;
        for (const [di, dj] of OFFSETS) {
          const a = i + di, b = j + dj;
          if (a < 0 || a >= G0 || b < 0 || b >= G1) continue;
          const w = a * G1 + b;
          if (done[w]) continue;
          const nd = d + edgeLength(i, j, di, dj);
          if (nd < dist[w]) { dist[w] = nd; prev[w] = v; push(nd, w); }
        }
      }
      const path = [];
      for (let v = dst; v !== -1; v = prev[v]) {
        path.push([axis0[Math.floor(v / G1)], axis1[v % G1]]);
        if (v === src) break;
      }
      return path.reverse();
    }
    function resample(pts, n) {
      // n points at equal Fisher arc length along the polyline pts
      const cum = [0];
      for (let k = 0; k + 1 < pts.length; k++) cum.push(cum[k] + segLength(pts[k], pts[k + 1], 2));
      const total = cum[cum.length - 1];
      if (!(total > 0) || pts.length < 2) return Array.from({ length: n }, (_, k) => {
        const s = k / (n - 1), a = pts[0], b = pts[pts.length - 1];
        return [a[0] + s * (b[0] - a[0]), a[1] + s * (b[1] - a[1])];
      });
      const out = [];
      let seg = 0;
      for (let k = 0; k < n; k++) {
        const target = total * k / (n - 1);
        while (seg < pts.length - 2 && cum[seg + 1] < target) seg++;
        const span = cum[seg + 1] - cum[seg];
        const s = span > 0 ? Math.min(1, Math.max(0, (target - cum[seg]) / span)) : 0;
        out.push([pts[seg][0] + s * (pts[seg + 1][0] - pts[seg][0]),
          pts[seg][1] + s * (pts[seg + 1][1] - pts[seg][1])]);
      }
      out[0] = pts[0].slice(); out[n - 1] = pts[pts.length - 1].slice();
      return out;
    }
    function dG(m) {
      // derivatives of the bilinear metric at m along t0 and t1 (central differences, half a cell)
      const out = [];
      for (const [c, h] of [[0, h0], [1, h1]]) {
        const p = m.slice(), q = m.slice();
        p[c] += h; q[c] -= h;
        const pc = clampPoint(p), qc = clampPoint(q);
        const span = pc[c] - qc[c];
        const gp = metricAt(pc), gq = metricAt(qc);
        out.push(span > 0 ? [0, 1, 2].map((k) => (gp[k] - gq[k]) / span) : [0, 0, 0]);
      }
      return out;
    }
    function shorten(pts, sweeps) {
      const n = pts.length;
      const tol = 1e-9 * Math.max(hi0 - lo0, hi1 - lo1);
      for (let it = 0; it < sweeps; it++) {
        let moved = 0;
        for (let k = 1; k < n - 1; k++) {
          const p = pts[k - 1], x = pts[k], q = pts[k + 1];
          const m1 = [0.5 * (p[0] + x[0]), 0.5 * (p[1] + x[1])], m2 = [0.5 * (x[0] + q[0]), 0.5 * (x[1] + q[1])];
          const g1 = metricAt(m1), g2 = metricAt(m2), D1 = dG(m1), D2 = dG(m2);
          const a0 = x[0] - p[0], a1 = x[1] - p[1], b0 = q[0] - x[0], b1 = q[1] - x[1];
          const grad = [
            2 * (g1[0] * a0 + g1[1] * a1) - 2 * (g2[0] * b0 + g2[1] * b1),
            2 * (g1[1] * a0 + g1[2] * a1) - 2 * (g2[1] * b0 + g2[2] * b1),
          ];
          for (let c = 0; c < 2; c++) {
            const e1 = D1[c], e2 = D2[c];
            grad[c] += 0.5 * (e1[0] * a0 * a0 + 2 * e1[1] * a0 * a1 + e1[2] * a1 * a1)
              + 0.5 * (e2[0] * b0 * b0 + 2 * e2[1] * b0 * b1 + e2[2] * b1 * b1);
          }
          const H00 = 2 * (g1[0] + g2[0]), H01 = 2 * (g1[1] + g2[1]), H11 = 2 * (g1[2] + g2[2]);
          const det = H00 * H11 - H01 * H01;
          if (!(det > 0) || !(H00 > 0)) continue;
          const s0 = (H11 * grad[0] - H01 * grad[1]) / det, s1 = (H00 * grad[1] - H01 * grad[0]) / det;
          if (!isFinite(s0) || !isFinite(s1)) continue;
          const nx = clampPoint([x[0] - 0.8 * s0, x[1] - 0.8 * s1]);
          moved = Math.max(moved, Math.abs(nx[0] - x[0]), Math.abs(nx[1] - x[1]));
          pts[k] = nx;
        }
        if (moved < tol) break;
      }
      return pts;
    }
    function refine(pts) {
      const out = [pts[0]];
      for (let k = 1; k < pts.length; k++) {
        out.push([0.5 * (pts[k - 1][0] + pts[k][0]), 0.5 * (pts[k - 1][1] + pts[k][1])], pts[k]);
      }
      return out;
    }
    function checkPoint(p, name) {
      if (!Array.isArray(p) || p.length !== 2 || !isFinite(p[0]) || !isFinite(p[1])) {
        throw new Error(name + ": expected [t0, t1] (two finite numbers), got " + JSON.stringify(p));
      }
      const e0 = 1e-9 * (hi0 - lo0), e1 = 1e-9 * (hi1 - lo1);
      if (p[0] < lo0 - e0 || p[0] > hi0 + e0 || p[1] < lo1 - e1 || p[1] > hi1 + e1) {
        throw new Error(name + ": expected a point inside [" + lo0 + ", " + hi0 + "] x [" + lo1
          + ", " + hi1 + "], got " + JSON.stringify(p));
      }
      return clampPoint([Number(p[0]), Number(p[1])]);
    }
    function geodesic(a, b) {
      a = checkPoint(a, "a"); b = checkPoint(b, "b");
      const src = nearest(axis0, a[0]) * G1 + nearest(axis1, a[1]);
      const dst = nearest(axis0, b[0]) * G1 + nearest(axis1, b[1]);
      let grid = dijkstra(src, dst);
      if (grid.length < 2) grid = [a, b];
      grid[0] = a; grid[grid.length - 1] = b;
      const dLen = polyLength(grid, 4);
      let pts = shorten(resample(grid, 17), 400);
      pts = shorten(refine(pts), 400);
      pts = shorten(refine(pts), 400);
      let length = polyLength(pts, 4);
      if (!(length <= dLen)) { pts = grid; length = dLen; }
      const straight = polyLength([a, b], 256);
      return { length: length, straight_length: straight, dijkstra_length: dLen, points: pts };
    }
    function posteriorNear(t) {
      const P = data.posteriors;
      if (!P) return null;
      if (!P._values) P._values = decode(P.values);
      const a = nearest(P.points0, t[0]), b = nearest(P.points1, t[1]);
      const [, , q0, q1] = P._values.shape;
      const nb = P.points1.length;
      const off = (a * nb + b) * q0 * q1;
      const values = [];
      for (let i = 0; i < q0; i++) {
        values.push(Array.from(P._values.data.subarray(off + i * q1, off + (i + 1) * q1)));
      }
      return { index: [P.index0[a], P.index1[b]], t: [P.points0[a], P.points1[b]], axis0: P.axis0,
        axis1: P.axis1, pool: P.pool, values: values };
    }
    function pointAt(i, j) {
      if (!Number.isInteger(i) || i < 0 || i >= G0) throw new Error("i: expected an int in [0, " + (G0 - 1) + "], got " + i);
      if (!Number.isInteger(j) || j < 0 || j >= G1) throw new Error("j: expected an int in [0, " + (G1 - 1) + "], got " + j);
      const k = (i * G1 + j) * 4;
      const g = [[M[k], M[k + 1]], [M[k + 2], M[k + 3]]];
      const det = M[k] * M[k + 3] - M[k + 1] * M[k + 2];
      const t = [axis0[i], axis1[j]];
      return { i: i, j: j, t: t, metric: g, sqrt_det_g: Math.sqrt(Math.max(0, det)),
        label: labels ? labels[i * G1 + j] : null, posterior: posteriorNear(t) };
    }

    // ---- drawing ----
    const layers = data.layers.map((L) => ({ ...L, _v: decode(L.values).data }));
    const mapDiv = document.getElementById("la-map");
    const readout = document.getElementById("la-readout");
    const geoDiv = document.getElementById("la-geodesic");
    const stripsDiv = document.getElementById("la-strips");
    const imgCanvas = document.getElementById("la-image");
    const images = data.images || null;
    const sprite = loadImage(images);

    function heatTrace(L) {
      const z = [];
      let lo = Infinity, hi = -Infinity;
      for (let j = 0; j < G1; j++) {
        const row = new Array(G0);
        for (let i = 0; i < G0; i++) {
          const v = L._v[i * G1 + j];
          row[i] = isFinite(v) ? v : null;
          if (isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        }
        z.push(row);
      }
      const tr = { type: "heatmap", x: Array.from(axis0), y: Array.from(axis1), z: z,
        colorscale: L.colorscale, hoverinfo: "none", colorbar: { title: { text: "" }, len: 0.9 } };
      if (L.kind === "signed") {
        const s = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
        tr.zmin = -s; tr.zmax = s; tr.colorscale = "RdBu"; tr.reversescale = true;
      } else if (L.kind === "categorical") {
        const kmin = isFinite(lo) ? Math.round(lo) : 0, kmax = isFinite(hi) ? Math.round(hi) : 0;
        const n = kmax - kmin + 1, cs = [];
        for (let c = 0; c < n; c++) {
          const col = PALETTE[(kmin + c) % PALETTE.length < 0 ? 0 : (kmin + c) % PALETTE.length];
          cs.push([c / n, col], [(c + 1) / n, col]);
        }
        tr.colorscale = cs; tr.zmin = kmin - 0.5; tr.zmax = kmax + 0.5;
      }
      return tr;
    }
    const base = [
      null,
      { type: "scatter", mode: "lines", x: [], y: [], hoverinfo: "skip", name: "metric ellipse",
        line: { color: "#00e5ff", width: 2 }, showlegend: false },
      { type: "scatter", mode: "markers", x: [], y: [], hoverinfo: "skip", showlegend: false,
        marker: { color: "#00e5ff", size: 6, symbol: "cross" } },
      { type: "scatter", mode: "lines", x: [], y: [], hoverinfo: "skip", name: "geodesic",
        line: { color: "#7CFC00", width: 3 } },
      { type: "scatter", mode: "lines", x: [], y: [], hoverinfo: "skip", name: "straight line",
        line: { color: "#ffffff", width: 2, dash: "dash" } },
      { type: "scatter", mode: "markers", x: [], y: [], hoverinfo: "skip", showlegend: false,
        marker: { color: "#ff4df0", size: 10, line: { color: "#000", width: 1 } } },
    ];
    const overlayNames = [];
    for (const [name, pts] of Object.entries(data.ridges || {})) {
      base.push({ type: "scatter", mode: "markers", x: pts[0], y: pts[1], hoverinfo: "skip", name: name,
        marker: { color: "cyan", size: 4, symbol: "square" }, visible: true });
      overlayNames.push(name);
    }
    (data.geodesics || []).forEach((g, k) => {
      base.push({ type: "scatter", mode: "lines", x: g.map((p) => p[0]), y: g.map((p) => p[1]),
        hoverinfo: "skip", name: "analyses geodesic " + k, visible: "legendonly",
        line: { color: "#ffa500", width: 1.5 } });
    });
    const layout = {
      margin: { l: 60, r: 10, t: 50, b: 50 }, hovermode: "closest", dragmode: "zoom",
      xaxis: { title: { text: names[0] }, range: [lo0, hi0] },
      yaxis: { title: { text: names[1] }, range: [lo1, hi1] },
      legend: { orientation: "h", y: -0.15 }, title: { text: "", font: { size: 13 }, x: 0.01, xanchor: "left" },
    };
    const config = { displaylogo: false, responsive: false, scrollZoom: true,
      modeBarButtonsToRemove: ["sendDataToCloud", "toImage"] };
    let current = 0;
    function drawLayer(k) {
      current = k;
      base[0] = heatTrace(layers[k]);
      layout.title.text = layers[k].name + (layers[k].note ? " (" + layers[k].note + ")" : "");
      return Plotly.react(mapDiv, base, layout, config);
    }

    // controls
    const controls = document.getElementById("la-controls");
    const sel = document.createElement("select");
    sel.id = "la-layer";
    layers.forEach((L, k) => { const o = document.createElement("option"); o.value = k; o.textContent = L.name; sel.appendChild(o); });
    sel.addEventListener("change", () => drawLayer(Number(sel.value)));
    const clear = document.createElement("button");
    clear.textContent = "clear geodesic";
    clear.addEventListener("click", () => clearGeodesic());
    controls.append("map: ", sel, " ", clear);

    const ellipseScale = 0.06 * Math.min(hi0 - lo0, hi1 - lo1);
    function ellipse(t, g) {
      // {t + dt : dt^T g dt = eps^2}, eps chosen so the largest semi-axis is ellipseScale
      const tr = g[0] + g[2], dt = Math.sqrt(Math.max(0, 0.25 * (g[0] - g[2]) ** 2 + g[1] * g[1]));
      const lmin = 0.5 * tr - dt, lmax = 0.5 * tr + dt;
      if (!(lmin > 0)) return null;
      const eps = ellipseScale * Math.sqrt(lmin);
      // eigenvector of lmax
      let v0 = g[1], v1 = lmax - g[0];
      if (Math.abs(v0) + Math.abs(v1) < 1e-300) { v0 = 1; v1 = 0; }
      const nv = Math.hypot(v0, v1); v0 /= nv; v1 /= nv;
      const ra = eps / Math.sqrt(lmax), rb = eps / Math.sqrt(lmin);
      const x = [], y = [];
      for (let k = 0; k <= 64; k++) {
        const th = 2 * Math.PI * k / 64, c = Math.cos(th) * ra, s = Math.sin(th) * rb;
        x.push(t[0] + c * v0 - s * v1); y.push(t[1] + c * v1 + s * v0);
      }
      return { x: x, y: y, eps: eps };
    }

    let posteriorDrawn = false;
    function showPoint(i, j) {
      const p = pointAt(i, j);
      const g = [p.metric[0][0], 0.5 * (p.metric[0][1] + p.metric[1][0]), p.metric[1][1]];
      const el = ellipse(p.t, g);
      const lines = [
        names[0] + " = " + fmt(p.t[0]) + "   (i = " + i + ")",
        names[1] + " = " + fmt(p.t[1]) + "   (j = " + j + ")",
        "metric g = [[" + fmt(p.metric[0][0]) + ", " + fmt(p.metric[0][1]) + "],",
        "            [" + fmt(p.metric[1][0]) + ", " + fmt(p.metric[1][1]) + "]]",
        "sqrt det g = " + fmt(p.sqrt_det_g),
        layers[current].name + " = " + fmt(layers[current]._v[i * G1 + j]),
      ];
      if (p.label !== null) lines.push("class = " + p.label);
      lines.push(el ? "ellipse: Fisher distance " + fmt(el.eps, 3) + " around the point"
        : "metric not positive definite here: no ellipse");
      if (p.posterior) lines.push("posterior at (" + fmt(p.posterior.t[0], 4) + ", " + fmt(p.posterior.t[1], 4) + ")"
        + (p.posterior.pool > 1 ? ", cells pooled " + p.posterior.pool + "x" + p.posterior.pool : ""));
      readout.textContent = lines.join("\n");
      Plotly.restyle(mapDiv, { x: [el ? el.x : []], y: [el ? el.y : []] }, [1]);
      Plotly.restyle(mapDiv, { x: [[p.t[0]]], y: [[p.t[1]]] }, [2]);
      if (p.posterior) {
        const z = [];
        const q0 = p.posterior.values.length, q1 = p.posterior.values[0].length;
        for (let b = 0; b < q1; b++) { const row = []; for (let a = 0; a < q0; a++) row.push(p.posterior.values[a][b]); z.push(row); }
        Plotly.react("la-posterior", [
          { type: "heatmap", x: p.posterior.axis0, y: p.posterior.axis1, z: z, colorscale: "Viridis", hoverinfo: "none" },
          { type: "scatter", mode: "markers", x: [p.posterior.t[0]], y: [p.posterior.t[1]], hoverinfo: "skip",
            marker: { color: "red", size: 8, symbol: "x" } },
        ], { margin: { l: 45, r: 5, t: 25, b: 35 }, title: { text: "posterior p(t | x ~ p(x|t'))", font: { size: 11 } },
          xaxis: { title: { text: names[0] } }, yaxis: { title: { text: names[1] } } },
        { displaylogo: false, staticPlot: true });
        posteriorDrawn = true;
      }
      if (images) {
        const a = nearest(images.index0, i), b = nearest(images.index1, j);
        imgCanvas.style.display = "block";
        drawTile(imgCanvas, images, sprite, a, b);
      }
      api.lastPoint = p;
      return p;
    }

    let clicks = [];
    function clearGeodesic() {
      clicks = [];
      geoDiv.textContent = "";
      stripsDiv.innerHTML = "";
      Plotly.restyle(mapDiv, { x: [[], [], []], y: [[], [], []] }, [3, 4, 5]);
      api.lastGeodesic = null;
    }
    function along(pts, n) {
      return resample(pts, n);
    }
    function drawStrips(geo, a, b) {
      stripsDiv.innerHTML = "";
      if (!images) return;
      const rows = [["geodesic", geo.points, geo.length], ["straight line", [a, b], geo.straight_length]];
      for (const [name, pts, len] of rows) {
        const div = document.createElement("div");
        div.className = "la-strip";
        const label = document.createElement("span");
        label.textContent = name + " (" + fmt(len, 4) + ")";
        div.appendChild(label);
        const dense = name === "geodesic" ? pts : Array.from({ length: 65 }, (_, k) => [a[0] + (b[0] - a[0]) * k / 64, a[1] + (b[1] - a[1]) * k / 64]);
        for (const t of along(dense, 8)) {
          const c = document.createElement("canvas");
          c.width = 64; c.height = 64;
          drawTile(c, images, sprite, nearest(images.index0, nearest(axis0, t[0])), nearest(images.index1, nearest(axis1, t[1])));
          div.appendChild(c);
        }
        stripsDiv.appendChild(div);
      }
    }
    function showGeodesic(a, b) {
      const t0 = performance.now();
      const geo = geodesic(a, b);
      const ms = performance.now() - t0;
      Plotly.restyle(mapDiv, {
        x: [geo.points.map((p) => p[0]), [a[0], b[0]], [a[0], b[0]]],
        y: [geo.points.map((p) => p[1]), [a[1], b[1]], [a[1], b[1]]],
      }, [3, 4, 5]);
      geoDiv.textContent = "geodesic length " + fmt(geo.length) + "  vs  straight line " + fmt(geo.straight_length)
        + "   (Fisher units of one sample; grid path before shortening " + fmt(geo.dijkstra_length) + "; "
        + ms.toFixed(0) + " ms; on the exact Gaussian metric this overestimates the Fisher-Rao distance by < 0.7 % on a"
        + " 16 x 16 grid, < 0.07 % on 48 x 48)\nfrom (" + fmt(a[0], 4) + ", " + fmt(a[1], 4) + ") to (" + fmt(b[0], 4) + ", " + fmt(b[1], 4) + ")";
      drawStrips(geo, a, b);
      api.lastGeodesic = geo;
      return geo;
    }
    function onClick(evt) {
      if (!evt || !evt.points || !evt.points.length) return;
      const pt = evt.points[0];
      const i = nearest(axis0, pt.x), j = nearest(axis1, pt.y);
      const t = [axis0[i], axis1[j]];
      if (clicks.length >= 2) clearGeodesic();
      clicks.push(t);
      if (clicks.length === 1) {
        Plotly.restyle(mapDiv, { x: [[t[0]]], y: [[t[1]]] }, [5]);
        geoDiv.textContent = "first point (" + fmt(t[0], 4) + ", " + fmt(t[1], 4) + "): click a second point";
      } else {
        showGeodesic(clicks[0], clicks[1]);
      }
    }

    const api = { kind: data.kind, names: names, shape: [G0, G1], pointAt: pointAt,
      geodesic: geodesic, metricAt: (t) => { const g = metricAt(checkPoint(t, "t")); return [[g[0], g[1]], [g[1], g[2]]]; },
      showPoint: showPoint, showGeodesic: showGeodesic, clearGeodesic: clearGeodesic,
      lastPoint: null, lastGeodesic: null, ready: false };
    window.latentatlas = api;
    drawLayer(0).then(() => {
      mapDiv.on("plotly_hover", (evt) => {
        if (!evt || !evt.points || !evt.points.length) return;
        const pt = evt.points[0];
        showPoint(nearest(axis0, pt.x), nearest(axis1, pt.y));
      });
      mapDiv.on("plotly_click", onClick);
      api.ready = true;
      document.body.setAttribute("data-la-ready", "1");
    });
    return api;
  }

  // ------------------------------------------------------------------------------------------
  // 1-D paths
  // ------------------------------------------------------------------------------------------
  function pathPage() {
    const s = decode(data.s).data, g = decode(data.metric).data;
    const pot = data.potential ? decode(data.potential).data : null;
    const dist = data.distances ? decode(data.distances).data : null;
    const jumps = data.jumps || [];
    const images = data.images || null;
    const mapDiv = document.getElementById("la-map");
    const readout = document.getElementById("la-readout");
    const imgCanvas = document.getElementById("la-image");
    const stripsDiv = document.getElementById("la-strips");
    document.getElementById("la-posterior").style.display = "none";
    const P = s.length;
    function pointAt(i) {
      if (!Number.isInteger(i) || i < 0 || i >= P) throw new Error("i: expected an int in [0, " + (P - 1) + "], got " + i);
      return { i: i, s: s[i], metric: g[i], potential: pot ? pot[i] : null };
    }
    const traces = [{ type: "scatter", mode: "lines+markers", x: Array.from(s), y: Array.from(g), name: "g(s)",
      hoverinfo: "none", marker: { size: 3 }, xaxis: "x", yaxis: "y" }];
    const mid = [];
    for (let k = 0; k + 1 < P; k++) mid.push(0.5 * (s[k] + s[k + 1]));
    if (dist) {
      traces.push({ type: "scatter", mode: "lines+markers", x: mid, y: Array.from(dist), name: "distance between consecutive posterior means",
        hoverinfo: "none", marker: { size: 3 }, xaxis: "x", yaxis: "y2" });
      const jx = jumps.filter((k) => k >= 0 && k < mid.length);
      traces.push({ type: "scatter", mode: "markers", x: jx.map((k) => mid[k]), y: jx.map((k) => dist[k]), name: "jump",
        hoverinfo: "none", marker: { color: "red", size: 10, symbol: "triangle-down" }, xaxis: "x", yaxis: "y2" });
    }
    if (pot) {
      traces.push({ type: "scatter", mode: "lines", x: Array.from(s), y: Array.from(pot), name: "potential",
        hoverinfo: "none", xaxis: "x", yaxis: "y3" });
    }
    const layout = { margin: { l: 70, r: 10, t: 20, b: 40 }, hovermode: "x", showlegend: true,
      legend: { orientation: "h", y: -0.12 },
      xaxis: { title: { text: "s (position along the path)" }, anchor: "y3" },
      yaxis: { title: { text: "g(s)" }, type: "log", domain: [0.68, 1] },
      yaxis2: { title: { text: "distance" }, domain: [0.35, 0.64] },
      yaxis3: { title: { text: "potential" }, domain: [0, 0.31] },
      shapes: jumps.filter((k) => k >= 0 && k < mid.length).map((k) => ({ type: "line", xref: "x", yref: "paper",
        x0: mid[k], x1: mid[k], y0: 0, y1: 1, line: { color: "red", width: 1, dash: "dot" } })) };
    const sprite = loadImage(images, () => drawStrip());
    function drawStrip() {
      if (!images) return;
      stripsDiv.innerHTML = "";
      const div = document.createElement("div");
      div.className = "la-strip";
      const n = Math.min(24, images.index1.length);
      for (let k = 0; k < n; k++) {
        const b = Math.round(k * (images.index1.length - 1) / Math.max(1, n - 1));
        const c = document.createElement("canvas");
        c.width = 48; c.height = 48;
        const idx = images.index1[b];
        const jump = jumps.some((q) => q === idx || q + 1 === idx);
        c.style.border = jump ? "2px solid red" : "1px solid #ccc";
        c.title = "s = " + fmt(s[idx], 4);
        drawTile(c, images, sprite, 0, b);
        div.appendChild(c);
      }
      stripsDiv.appendChild(div);
    }
    function showPoint(i) {
      const p = pointAt(i);
      readout.textContent = "s = " + fmt(p.s) + "   (i = " + i + ")\ng(s) = " + fmt(p.metric)
        + (p.potential !== null ? "\npotential = " + fmt(p.potential) : "");
      if (images) {
        imgCanvas.style.display = "block";
        drawTile(imgCanvas, images, sprite, 0, nearest(images.index1, i));
      }
      api.lastPoint = p;
      return p;
    }
    const api = { kind: "path", shape: [P], pointAt: pointAt, showPoint: showPoint,
      geodesic: () => { throw new Error("geodesic: a path run is 1-D; its length is the sum of its distances"); },
      lastPoint: null, lastGeodesic: null, ready: false };
    window.latentatlas = api;
    Plotly.react(mapDiv, traces, layout, { displaylogo: false }).then(() => {
      mapDiv.on("plotly_hover", (evt) => {
        if (!evt || !evt.points || !evt.points.length) return;
        showPoint(nearest(s, evt.points[0].x));
      });
      api.ready = true;
      document.body.setAttribute("data-la-ready", "1");
    });
    return api;
  }

  if (data.kind === "path") pathPage(); else atlasPage();
})();
