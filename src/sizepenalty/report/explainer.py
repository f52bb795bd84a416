"""The interactive SPL explainer: one offline HTML page (no CDN, no network).

Four panels, after the companion document of the thesis:

1. "Dice blindspot": one training sample (one patch) holds an 800-voxel and a 50-voxel lesion;
   a model trained with Dice alone and one with Dice + SPL grow their predicted volumes over 150
   gradient steps. Both losses reduce the sample exactly as the study's training does (Dice per
   sample, SPL over the sample's whole reference volume), and the trajectories are real gradient
   steps through this package's losses (:func:`blindspot_trajectories`), embedded as data. The
   lesions are drawn as filled discs (area = predicted voxels inside the lesion) inside dashed
   reference outlines, with the voxel counts and the sample's Dice at the chosen step, beside the
   curves of the same steps.
2. Sliders for V_g, V_p/V_g and τ showing the size weight, relative error, loss and gradient; the
   page re-implements the SPL formula in JavaScript and the browser test checks it against Python.
3. The loss landscape over (V_g, V_p/V_g): click to drop a particle that descends it.
4. Per-voxel gradient magnitudes of Dice vs SPL in that same sample when the large lesion is
   found and the small one missed (:func:`gradient_spectra`, autograd through the package's losses).

Every plot is SVG with ticks, axis labels with units and a legend, in the Okabe-Ito
colour-blind-safe palette, with line styles and markers so that it also reads in greyscale.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sizepenalty.losses import build_loss

Params = Mapping[str, Mapping[str, Any]] | None
Weights = Mapping[str, float] | None

SIZES = (800, 50)
BACKGROUND = 4000
REGIONS = ("large lesion", "small lesion", "background")
START_LOGITS = (-2.5, -2.5, -6.0)  # large lesion, small lesion, background: p = 0.076, 0.0025
STEPS = 150
LR = 3.0


def _one_sample(sizes=SIZES, background=BACKGROUND) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample (1, 1, 1, 1, M): the large lesion's voxels, the small lesion's, then background;
    and each voxel's region index (0, 1, 2)."""
    m = sum(sizes) + background
    region = torch.full((m,), 2, dtype=torch.long)
    region[: sizes[0]] = 0
    region[sizes[0] : sizes[0] + sizes[1]] = 1
    y = (region < 2).float().view(1, 1, 1, 1, m)
    return y, region


@dataclass(frozen=True)
class Trajectory:
    """One network's training on the blindspot sample; entry ``t`` of each list is the state after
    ``t`` gradient steps (entry 0: before training). Volumes are soft (sums of probabilities).

    Args:
        large: predicted voxels inside the 800-voxel lesion.
        small: predicted voxels inside the 50-voxel lesion.
        background: predicted voxels in the background (false positives).
        dice: the sample's soft Dice, ``1 -`` the package's Dice term on the network's logits.
    """

    large: list[float]
    small: list[float]
    background: list[float]
    dice: list[float]


def _readout(loss, z: torch.Tensor, y: torch.Tensor, region: torch.Tensor) -> list[float]:
    """Predicted voxels inside the large lesion, the small one and the background at logits ``z``,
    and the sample's soft Dice (``1 -`` the Dice term of ``loss``, a :class:`CombinedLoss`)."""
    with torch.no_grad():
        p = torch.sigmoid(z)[0, 0, 0, 0]
        dice = 1.0 - float(loss.terms["D"](z, y))
    return [round(float(p[region == i].sum()), 3) for i in range(3)] + [round(dice, 6)]


def blindspot_trajectories(
    steps: int = STEPS, lr: float = LR, params: Params = None, weights: Weights = None
) -> dict[str, Trajectory]:
    """The blindspot simulation, per network: Dice alone ("D") and Dice + SPL ("S+D") with the
    study's loss hyper-parameters and weights (as :func:`sizepenalty.losses.build_loss` takes
    them; default: the thesis's), over ``steps`` plain gradient-descent steps of rate ``lr``.

    Setting (stated on the page): one sample holds both lesions and 4000 background voxels; the
    voxels of each region share one logit, starting at p = 0.076 in the lesions and 0.0025 in the
    background. With one sample the Dice reduction (per sample or batch) makes no difference, and
    SPL sees the sample's total reference volume (850 voxels).
    """
    y, region = _one_sample()
    out: dict[str, Trajectory] = {}
    for code in ("D", "S+D"):
        loss = build_loss(code, params, weights)
        theta = torch.tensor(START_LOGITS, requires_grad=True)
        rows = []
        for step in range(steps + 1):
            z = theta[region].view(y.shape)
            rows.append(_readout(loss, z, y, region))
            if step == steps:
                break
            total, _ = loss(z, y)
            (g,) = torch.autograd.grad(total, theta)
            with torch.no_grad():
                theta -= lr * g
        out[code] = Trajectory(*(list(column) for column in zip(*rows)))
    return out


def gradient_spectra(params: Params = None) -> dict[str, object]:
    """|d loss / d logit| per voxel in the same sample when the large lesion is predicted well
    (p = 0.9), the small one missed (p = 0.05) and background at p = 0.01, for Dice alone and SPL
    alone. Returns, per loss and region, the mean per voxel (every voxel of a region has the same
    value: they share p) and the total over the region (what moves the region's volume)."""
    y, region = _one_sample()
    p = torch.tensor([0.9, 0.05, 0.01])[region].view(y.shape)
    z = torch.logit(p).clone().requires_grad_(True)
    out: dict[str, object] = {"regions": list(REGIONS)}
    for code in ("D", "S"):
        total, _ = build_loss(code, params)(z, y)
        (g,) = torch.autograd.grad(total, z)
        g = g.abs()[0, 0, 0, 0]
        out[code] = {
            "mean": {name: float(g[region == i].mean()) for i, name in enumerate(REGIONS)},
            "total": {name: float(g[region == i].sum()) for i, name in enumerate(REGIONS)},
        }
    return out


def _setup() -> dict[str, object]:
    """The blindspot setting the page states: steps, learning rate, start probability per region."""
    p0 = torch.sigmoid(torch.tensor(START_LOGITS))
    return {"steps": STEPS, "lr": LR, "p0": [round(float(v), 4) for v in p0]}


def build_explainer(params: Params = None, weights: Weights = None) -> str:
    """The page's HTML with its data embedded, for the study's loss hyper-parameters and weights."""
    combined = build_loss("S+D", params, weights)
    spl = combined.terms["S"]
    trajectories = blindspot_trajectories(params=params, weights=weights)
    data = {
        "params": {
            "tau": spl.tau,
            "eps": spl.eps,
            "cap": spl.cap,
            "lambda_size": combined.weights["S"],
        },  # fmt: skip
        "sizes": list(SIZES),
        "background": BACKGROUND,
        "setup": _setup(),
        "blindspot": {code: asdict(t) for code, t in trajectories.items()},
        "spectra": gradient_spectra(params),
    }
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return TEMPLATE.replace("__DATA__", payload)


def run_explainer(cfg, out: str | Path) -> None:
    """The explainer stage: the page for the study's Dice and SPL settings (what S+D uses)."""
    from sizepenalty.data.io import write_text_atomic

    losses = cfg.losses  # the page shows SPL without the optional size gate
    html = build_explainer(losses.ungated_params_for("S+D"), losses.weights_for("S+D"))
    write_text_atomic(out, html)


def spl_value(v_g: float, ratio: float, tau: float, eps: float = 1e-5, cap: float = 10.0) -> float:
    """SPL for a predicted volume ``ratio * v_g`` (the value the page's sliders display)."""
    from sizepenalty.losses import SizePenaltyLoss

    spl = SizePenaltyLoss(tau=tau, eps=eps, cap=cap)
    vg = torch.tensor([float(v_g)], dtype=torch.float64)
    return float(spl.from_volumes(vg * ratio, vg)[0])




TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Size Penalty Loss — interactive explainer</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#111;line-height:1.45}
h2{border-bottom:1px solid #ccc;margin-top:1.8em}svg{background:#fff;max-width:100%;height:auto;font-family:inherit}
.row{display:flex;gap:1.2em;flex-wrap:wrap;align-items:flex-start}.ctl{min-width:300px}
label{display:block;margin:.4em 0 .1em}input[type=range]{width:280px;vertical-align:middle}
table{border-collapse:collapse}td{padding:.15em .6em;border-bottom:1px solid #eee}td.v{font-family:monospace;text-align:right}
.small{font-size:.85em;color:#444}button{padding:.3em .8em;min-width:5em}
.controls{margin:.6em 0}.controls b{font-variant-numeric:tabular-nums}
.key{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;margin-right:.3em;border:1px solid #333}
svg .tick{font-size:12px;fill:#222}svg .axis-label{font-size:13px;fill:#111}svg .legend text{font-size:12px;fill:#111}
svg .title{font-size:13px;font-weight:600}svg .count{font-size:12.5px;font-variant-numeric:tabular-nums}
</style></head><body>
<h1>Size Penalty Loss, interactively</h1>
<p>SPL adds <code>min(c, exp(−V<sub>g</sub>/τ)·|V<sub>p</sub>−V<sub>g</sub>|/(V<sub>g</sub>+ε))</code> to a spatial loss,
so that small lesions, which Dice barely notices, still get pressure to have the right volume.
Everything on this page runs offline. The numbers in panels 1 and 4 are not illustrations: they were computed
with the <code>sizepenalty</code> package's own loss functions (real gradient steps and autograd gradients)
and embedded here; panels 2 and 3 evaluate the same SPL formula in your browser.</p>

<h2>1. The Dice blindspot</h2>
<p id="blind-setup">One training sample (one patch) holds an <b>800-voxel</b> and a <b>50-voxel</b> lesion among
<span id="bg-voxels"></span> background voxels. Two networks grow their predicted volumes by plain gradient descent
(<span id="n-steps"></span> steps, learning rate <span id="lr"></span>): one with Dice alone (D), one with Dice + SPL
(S+D; λ<sub>S</sub> = <span id="lambda-s"></span>, τ = <span id="tau-s"></span> voxels).
Both losses reduce the sample as the study's training does: Dice over the sample, SPL over the sample's whole
reference volume (850 voxels) — so SPL sees the two lesions as one volume and cannot single out the small one.
The voxels of each region share one logit (start: p = <span id="p0-lesion"></span> in the lesions,
<span id="p0-bg"></span> in the background); every frame below is one real gradient step through
<code>sizepenalty</code>'s DiceLoss and SizePenaltyLoss, nothing fitted or interpolated.
After <span id="n-steps-2"></span> steps the small lesion is <span id="blind-summary"></span>.</p>
<div class="controls"><button id="play">Play</button>
<label for="step" style="display:inline">gradient step</label> <input id="step" type="range" min="0" max="150" value="150">
<b><span id="step-out">150</span></b> of <span id="step-max"></span></div>
<div class="row">
<svg id="lesions" width="440" height="470" viewBox="0 0 440 470" role="img" aria-label="predicted lesions as filled discs inside their reference outlines"></svg>
<svg id="blind" width="620" height="470" viewBox="0 0 620 470" role="img" aria-label="predicted volume per lesion over the gradient steps"></svg>
</div>
<p class="small">Left: each filled disc's area is the predicted volume inside that lesion (the sum of the
voxels' probabilities; one area scale for both lesions); the dashed circle is the reference outline (800 and 50
voxels). Dice is the sample's soft Dice (1 − the Dice loss). Right: the same steps as curves; the vertical line
marks the step shown on the left.</p>

<h2>2. The loss, term by term</h2>
<div class="row"><div class="ctl">
<label for="vg">Reference volume V<sub>g</sub> (voxels): <span id="vg-out"></span></label><input id="vg" type="range" min="1" max="3000" step="1" value="50">
<label for="ratio">Prediction ratio V<sub>p</sub>/V<sub>g</sub>: <span id="ratio-out"></span></label><input id="ratio" type="range" min="0" max="4" step="0.01" value="1.5">
<label for="tau">Size scale τ (voxels): <span id="tau-out"></span></label><input id="tau" type="range" min="50" max="3000" step="10" value="600">
<table>
<tr><td>size weight exp(−V<sub>g</sub>/τ)</td><td class="v" id="out-weight"></td></tr>
<tr><td>relative error</td><td class="v" id="out-rel"></td></tr>
<tr><td>loss (capped at c)</td><td class="v" id="out-loss"></td></tr>
<tr><td>|∂loss/∂V<sub>p</sub>| (0 past the cap)</td><td class="v" id="out-grad"></td></tr>
<tr><td>|∂/∂V<sub>p</sub>| before the cap</td><td class="v" id="out-grad-precap"></td></tr>
</table></div>
<svg id="curve" width="560" height="320" viewBox="0 0 560 320" role="img" aria-label="SPL against the prediction ratio"></svg></div>

<h2>3. The loss landscape</h2>
<p>SPL over the reference volume V<sub>g</sub> and the prediction ratio V<sub>p</sub>/V<sub>g</sub>, both on log
scales; the dashed line is a perfect volume. The colour is the loss (scale on the right); the flat yellow region
at the top left is the cap. Click in the plot to drop a particle that follows −∂SPL/∂V<sub>p</sub>.</p>
<div class="row"><svg id="land" width="760" height="400" viewBox="0 0 760 400" role="img" aria-label="SPL landscape"></svg>
<div class="ctl" style="min-width:240px;max-width:300px"><div>particles: <span id="particle-count">0</span></div><button id="clear">Clear</button>
<p class="small">Small lesions (left) get a steep slope toward ratio 1; large lesions (right) a
faint one (the size weight); particles starting in the capped band do not move: no gradient.</p></div></div>

<h2>4. Where the gradient goes</h2>
<p>|∂loss/∂logit| in the same sample when the large lesion is found (p = 0.9) and the small one is missed
(p = 0.05), background at p = 0.01. Every voxel of a region has the same value (they share p). Dice's pull on
each voxel of the missed lesion is set by the whole sample's overlap; SPL's push is the same size weight and sign
for every voxel of the sample (it only knows the sample's total volume), scaled by p(1−p).</p>
<svg id="spectra" width="960" height="330" viewBox="0 0 960 330" role="img" aria-label="gradient magnitude per region"></svg>
<table id="spectra-table"></table>

<script>
"use strict";
const DATA = __DATA__;
const P = DATA.params;
const fmt = v => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0)) ? v.toExponential(4) : v.toFixed(6);
// Okabe–Ito colour-blind-safe palette: vermillion for Dice, blue for SPL, everywhere on the page.
const OI = {dice: "#D55E00", spl: "#0072B2", grey: "#6b6b6b", grid: "#e6e6e6"};

// ---- small SVG plotting kit: elements, ticks, axes with labels, legends, markers
const NS = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs, parent, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  if (text !== undefined) rich(e, text);
  return e;
}
// "V_p/V_g" -> V with subscript p over V with subscript g (one character after "_").
function rich(e, text) {
  String(text).split(/(_.)/).forEach(part => {
    if (part.length === 2 && part[0] === "_") svgEl("tspan", {"baseline-shift": "sub", "font-size": "75%"}, e).textContent = part[1];
    else if (part) e.appendChild(document.createTextNode(part));
  });
}
function niceTicks(lo, hi, n) {
  const span = hi - lo, mag = 10 ** Math.floor(Math.log10(span / n));
  const step = [1, 2, 2.5, 5, 10].map(f => f * mag).find(s => span / s <= n);
  const out = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) out.push(+(k * step).toPrecision(12));
  return out;
}
function logTicks(lo, hi) {
  const out = [];
  for (let k = Math.ceil(Math.log10(lo) - 1e-9); k <= Math.floor(Math.log10(hi) + 1e-9); k++) out.push(10 ** k);
  return out;
}
const SUP = {"-": "⁻", "0": "⁰", "1": "¹", "2": "²", "3": "³", "4": "⁴", "5": "⁵", "6": "⁶", "7": "⁷", "8": "⁸", "9": "⁹"};
function tickText(v) {
  if (v !== 0 && (Math.abs(v) < 0.01 || Math.abs(v) >= 1e5)) {
    const k = Math.round(Math.log10(Math.abs(v)));
    if (Math.abs(10 ** k - Math.abs(v)) < 1e-9 * Math.abs(v)) return "10" + String(k).split("").map(c => SUP[c]).join("");
    return v.toExponential(1);
  }
  return String(+v.toPrecision(6));
}
// A plot area box = [left, top, right, bottom] (px) with scales, grid, tick marks with values and
// axis labels; axis = {lo, hi, log, label, ticks, format}. Returns the scales and their inverses.
function axes(svg, box, ax, ay, grid = true) {
  const [l, t, r, b] = box;
  const scale = (a, p0, p1) => { const f = a.log ? Math.log10 : v => v, f0 = f(a.lo), f1 = f(a.hi);
    return [v => p0 + (f(v) - f0) / (f1 - f0) * (p1 - p0), q => { const u = f0 + (q - p0) / (p1 - p0) * (f1 - f0); return a.log ? 10 ** u : u; }]; };
  const [X, Xi] = scale(ax, l, r), [Y, Yi] = scale(ay, b, t);
  const g = svgEl("g", {class: "axes"}, svg);
  const xt = ax.ticks || (ax.log ? logTicks(ax.lo, ax.hi) : niceTicks(ax.lo, ax.hi, 6));
  const yt = ay.ticks || (ay.log ? logTicks(ay.lo, ay.hi) : niceTicks(ay.lo, ay.hi, 5));
  xt.forEach(v => { const x = X(v);
    if (grid) svgEl("line", {x1: x, x2: x, y1: t, y2: b, stroke: OI.grid}, g);
    svgEl("line", {x1: x, x2: x, y1: b, y2: b + 5, stroke: "#333"}, g);
    svgEl("text", {x, y: b + 18, "text-anchor": "middle", class: "tick", "data-axis": "x", "data-value": v}, g, (ax.format || tickText)(v)); });
  yt.forEach(v => { const y = Y(v);
    if (grid) svgEl("line", {x1: l, x2: r, y1: y, y2: y, stroke: OI.grid}, g);
    svgEl("line", {x1: l - 5, x2: l, y1: y, y2: y, stroke: "#333"}, g);
    svgEl("text", {x: l - 8, y: y + 4, "text-anchor": "end", class: "tick", "data-axis": "y", "data-value": v}, g, (ay.format || tickText)(v)); });
  svgEl("rect", {x: l, y: t, width: r - l, height: b - t, fill: "none", stroke: "#333"}, g);
  svgEl("text", {x: (l + r) / 2, y: b + 38, "text-anchor": "middle", class: "axis-label", "data-axis": "x"}, g, ax.label);
  const yl = svgEl("text", {x: 0, y: 0, "text-anchor": "middle", class: "axis-label", "data-axis": "y",
    transform: `translate(${l - 46},${(t + b) / 2}) rotate(-90)`}, g, ay.label);
  return {X, Y, Xi, Yi, g, box, yl};
}
function marker(parent, kind, x, y, r, fill, attrs = {}) {
  const a = Object.assign({fill, stroke: "#fff", "stroke-width": 1}, attrs);
  if (kind === "circle") return svgEl("circle", Object.assign({cx: x, cy: y, r}, a), parent);
  if (kind === "square") return svgEl("rect", Object.assign({x: x - r * 0.9, y: y - r * 0.9, width: 1.8 * r, height: 1.8 * r}, a), parent);
  const pts = kind === "triangle" ? [[0, -1.2], [1.1, 0.8], [-1.1, 0.8]] : [[0, -1.3], [1.1, 0], [0, 1.3], [-1.1, 0]];
  return svgEl("polygon", Object.assign({points: pts.map(([u, v]) => `${x + u * r},${y + v * r}`).join(" ")}, a), parent);
}
// items: {label, color, dash, width, marker, fill, swatch}; one item per line, or side by side (row).
function legend(svg, x, y, items, row = false) {
  const g = svgEl("g", {class: "legend"}, svg), bg = svgEl("rect", {fill: "#fff", "fill-opacity": 0.92, stroke: "#bbb", rx: 3}, g);
  let xx = x;
  items.forEach((it, i) => { const yy = row ? y + 8 : y + 8 + i * 18;
    if (it.swatch) it.swatch(g, xx + 18, yy);
    else {
      if (it.color) svgEl("line", {x1: xx + 4, x2: xx + 32, y1: yy, y2: yy, stroke: it.color, "stroke-width": it.width || 2, "stroke-dasharray": it.dash || ""}, g);
      if (it.marker) marker(g, it.marker, xx + 18, yy, 4.5, it.fill || it.color);
    }
    const label = svgEl("text", {x: xx + 40, y: yy + 4}, g, it.label);
    if (row) xx += 40 + label.getComputedTextLength() + 18; });
  const bb = g.getBBox();
  bg.setAttribute("x", bb.x - 5); bg.setAttribute("y", bb.y - 3); bg.setAttribute("width", bb.width + 10); bg.setAttribute("height", bb.height + 6);
  return g;
}
const clear = svg => { while (svg.firstChild) svg.removeChild(svg.firstChild); };

// SPL, as in sizepenalty.losses.SizePenaltyLoss (checked against Python by the browser test).
function spl(vg, vp, tau, eps, cap) {
  const weight = Math.exp(-vg / tau);
  const rel = Math.abs(vp - vg) / (vg + eps);
  const raw = weight * rel;
  const loss = Math.min(cap, raw);
  const gradPre = weight / (vg + eps) * (vp === vg ? 0 : 1);
  return {weight, rel, loss, grad: raw < cap ? gradPre : 0, gradPre, dLdVp: raw < cap ? Math.sign(vp - vg) * gradPre : 0};
}

// ---- panel 1: the lesions as filled discs, and the curves of the same steps
const NETS = [{code: "D", tag: "d", name: "Dice alone (D)", color: OI.dice, dash: ""},
              {code: "S+D", tag: "sd", name: "Dice + SPL (S+D)", color: OI.spl, dash: "8 4"}];
const LESIONS = [{key: "large", size: DATA.sizes[0], marker: "circle"}, {key: "small", size: DATA.sizes[1], marker: "triangle"}];
const T = DATA.blindspot, N = T.D.large.length - 1;
const R_LARGE = 70, PX2_PER_VOXEL = Math.PI * R_LARGE ** 2 / DATA.sizes[0];  // one area scale for both lesions
const radius = voxels => Math.sqrt(Math.max(voxels, 0) * PX2_PER_VOXEL / Math.PI);
const lesionSvg = document.getElementById("lesions");
NETS.forEach((n, row) => {
  const y0 = row * 205, cy = y0 + 108;
  svgEl("text", {x: 8, y: y0 + 20, class: "title", fill: n.color}, lesionSvg, n.name);
  const dice = svgEl("text", {x: 432, y: y0 + 20, "text-anchor": "end", class: "count"}, lesionSvg, "sample Dice ");
  svgEl("tspan", {id: `blind-${n.tag}-dice`, "font-weight": 600}, dice);
  LESIONS.forEach((les, j) => {
    const cx = j ? 300 : 110, rr = radius(les.size);
    svgEl("circle", {id: `lesion-${n.tag}-${les.key}`, cx, cy, r: 0, fill: n.color, "fill-opacity": 0.78}, lesionSvg);
    svgEl("circle", {id: `ref-${n.tag}-${les.key}`, cx, cy, r: rr, fill: "none", stroke: "#111", "stroke-width": 1.6, "stroke-dasharray": "5 3"}, lesionSvg);
    const t = svgEl("text", {x: cx, y: cy + (j ? 42 : R_LARGE + 20), "text-anchor": "middle", class: "count"}, lesionSvg);
    svgEl("tspan", {id: `blind-${n.tag}-${les.key}`, "font-weight": 600}, t);
    svgEl("tspan", {}, t, ` / ${les.size} voxels`);
  });
  const bgt = svgEl("text", {x: 432, y: y0 + 196, "text-anchor": "end", class: "tick"}, lesionSvg, "background (false positives): ");
  svgEl("tspan", {id: `blind-${n.tag}-bg`}, bgt); svgEl("tspan", {}, bgt, " voxels");
  if (row === 0) svgEl("line", {x1: 0, x2: 440, y1: 204, y2: 204, stroke: "#ccc"}, lesionSvg);
});
legend(lesionSvg, 14, 432, [
  {label: "predicted inside the lesion (area ∝ voxels)", swatch: (g, x, y) => { svgEl("circle", {cx: x - 6, cy: y, r: 6, fill: OI.dice, "fill-opacity": 0.78}, g); svgEl("circle", {cx: x + 8, cy: y, r: 6, fill: OI.spl, "fill-opacity": 0.78}, g); }},
  {label: "reference outline (800 and 50 voxels)", swatch: (g, x, y) => svgEl("circle", {cx: x, cy: y, r: 6.5, fill: "none", stroke: "#111", "stroke-width": 1.6, "stroke-dasharray": "3 2"}, g)},
]);

const blindSvg = document.getElementById("blind");
const bax = axes(blindSvg, [64, 14, 606, 404], {lo: 0, hi: N, label: "training time (gradient steps)"},
  {lo: 0, hi: 1, label: "predicted / reference volume (ratio)"});
NETS.forEach(n => LESIONS.forEach(les => {
  const vs = T[n.code][les.key];
  svgEl("path", {class: `curve curve-${n.tag}-${les.key}`, d: vs.map((v, i) => `${i ? "L" : "M"}${bax.X(i).toFixed(2)},${bax.Y(v / les.size).toFixed(2)}`).join(""),
    fill: "none", stroke: n.color, "stroke-width": 2.2, "stroke-dasharray": n.dash}, blindSvg);
  for (let i = 0; i <= N; i += 25) marker(blindSvg, les.marker, bax.X(i), bax.Y(vs[i] / les.size), 4.5, n.color);
}));
legend(blindSvg, bax.X(0.36 * N), bax.Y(0.86), NETS.flatMap(n => LESIONS.map(les =>
  ({label: `${n.name}, ${les.size}-voxel lesion`, color: n.color, dash: n.dash, marker: les.marker}))));
const cursor = svgEl("g", {id: "blind-cursor-group"}, blindSvg);
const stepIn = document.getElementById("step");
stepIn.max = N;
function showStep(step) {
  NETS.forEach(n => { const t = T[n.code];
    LESIONS.forEach(les => {
      document.getElementById(`lesion-${n.tag}-${les.key}`).setAttribute("r", radius(t[les.key][step]));
      document.getElementById(`blind-${n.tag}-${les.key}`).textContent = t[les.key][step].toFixed(1);
    });
    document.getElementById(`blind-${n.tag}-dice`).textContent = t.dice[step].toFixed(3);
    document.getElementById(`blind-${n.tag}-bg`).textContent = t.background[step].toFixed(1);
  });
  clear(cursor);
  const x = bax.X(step);
  svgEl("line", {id: "blind-cursor", x1: x, x2: x, y1: bax.box[1], y2: bax.box[3], stroke: "#111", "stroke-width": 1.2, "stroke-dasharray": "2 3"}, cursor);
  NETS.forEach(n => LESIONS.forEach(les => marker(cursor, les.marker, x, bax.Y(T[n.code][les.key][step] / les.size), 6.5, n.color, {stroke: "#111", "stroke-width": 1.3})));
  svgEl("text", {x: Math.min(x + 5, bax.box[2] - 60), y: bax.box[3] - 6, class: "tick"}, cursor, `step ${step}`);
  document.getElementById("step-out").textContent = step;
  stepIn.value = step;
}
stepIn.addEventListener("input", () => showStep(+stepIn.value));
let timer = null;
const playBtn = document.getElementById("play");
function stop() { clearInterval(timer); timer = null; playBtn.textContent = "Play"; }
playBtn.addEventListener("click", () => {
  if (timer) return stop();
  let s = +stepIn.value >= N ? 0 : +stepIn.value;
  playBtn.textContent = "Pause";
  timer = setInterval(() => { showStep(s); if (++s > N) stop(); }, 40);
});
showStep(N);
document.getElementById("step-max").textContent = N;
document.getElementById("bg-voxels").textContent = DATA.background;
document.getElementById("lambda-s").textContent = P.lambda_size;
document.getElementById("tau-s").textContent = P.tau;
document.getElementById("n-steps").textContent = DATA.setup.steps;
document.getElementById("n-steps-2").textContent = DATA.setup.steps;
document.getElementById("lr").textContent = DATA.setup.lr;
document.getElementById("p0-lesion").textContent = DATA.setup.p0[0];
document.getElementById("p0-bg").textContent = DATA.setup.p0[2];
document.getElementById("blind-summary").textContent =
  `${T.D.small[N].toFixed(1)} of 50 voxels with Dice alone and ${T["S+D"].small[N].toFixed(1)} with Dice + SPL`;

// ---- panel 2
const ids = ["vg", "ratio", "tau"], el = Object.fromEntries(ids.map(i => [i, document.getElementById(i)]));
const curveSvg = document.getElementById("curve");
function drawCurve(vg, ratio, tau, r) {
  clear(curveSvg);
  const qs = Array.from({length: 201}, (_, i) => i / 50), ls = qs.map(q => spl(vg, q * vg, tau, P.eps, P.cap).loss);
  const top = niceTicks(0, Math.max(...ls, 1e-6) * 1.05, 5), max = Math.max(...ls, 1e-6);
  if (top[top.length - 1] < max) top.push(+(2 * top[top.length - 1] - top[top.length - 2]).toPrecision(12));
  const hi = top[top.length - 1];
  const ax = axes(curveSvg, [66, 12, 548, 238], {lo: 0, hi: 4, label: "prediction ratio V_p/V_g (ratio)"}, {lo: 0, hi, label: "SPL (loss)", ticks: top});
  const items = [{label: `SPL at V_g = ${vg}, τ = ${tau} voxels`, color: OI.spl}];
  if (P.cap <= hi) { svgEl("line", {x1: ax.X(0), x2: ax.X(4), y1: ax.Y(P.cap), y2: ax.Y(P.cap), stroke: OI.grey, "stroke-width": 1.5, "stroke-dasharray": "6 4"}, curveSvg);
    items.push({label: `cap c`, color: OI.grey, dash: "6 4", width: 1.5}); }
  svgEl("path", {d: qs.map((q, i) => `${i ? "L" : "M"}${ax.X(q).toFixed(2)},${ax.Y(ls[i]).toFixed(2)}`).join(""), fill: "none", stroke: OI.spl, "stroke-width": 2.4}, curveSvg);
  marker(curveSvg, "diamond", ax.X(ratio), ax.Y(r.loss), 6, OI.dice, {id: "curve-point", stroke: "#111"});
  items.push({label: "sliders' point", marker: "diamond", fill: OI.dice});
  legend(curveSvg, 12, 296, items, true);
}
function updateSliders() {
  const vg = +el.vg.value, ratio = +el.ratio.value, tau = +el.tau.value, r = spl(vg, ratio * vg, tau, P.eps, P.cap);
  document.getElementById("vg-out").textContent = vg;
  document.getElementById("ratio-out").textContent = ratio.toFixed(2);
  document.getElementById("tau-out").textContent = tau;
  const out = {"out-weight": r.weight, "out-rel": r.rel, "out-loss": r.loss, "out-grad": r.grad, "out-grad-precap": r.gradPre};
  for (const [id, v] of Object.entries(out)) { const c = document.getElementById(id); c.textContent = fmt(v); c.dataset.value = String(v); }
  drawCurve(vg, ratio, tau, r);
}
ids.forEach(i => el[i].addEventListener("input", updateSliders));
updateSliders();

// ---- panel 3: viridis (colour-blind-safe, monotone in lightness) over sqrt(loss / cap)
const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"].map(
  h => [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16)));
function viridis(u) {
  const f = Math.min(1, Math.max(0, u)) * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(f)), w = f - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + w * (VIRIDIS[i + 1][k] - c)));
}
const landSvg = document.getElementById("land");
const LBOX = [70, 36, 640, 350];
const lax = axes(landSvg, LBOX, {lo: 1, hi: 5000, log: true, label: "reference volume V_g (voxels, log scale)", ticks: [1, 10, 100, 1000, 5000]},
  {lo: 0.05, hi: 50, log: true, label: "prediction ratio V_p/V_g (ratio, log scale)", ticks: [0.05, 0.1, 1, 10, 50]}, false);
(function heatmap() {
  const w = LBOX[2] - LBOX[0], h = LBOX[3] - LBOX[1], cv = document.createElement("canvas");
  cv.width = w; cv.height = h;
  const c = cv.getContext("2d"), img = c.createImageData(w, h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const vg = lax.Xi(LBOX[0] + x + 0.5), ratio = lax.Yi(LBOX[1] + y + 0.5), rgb = viridis(Math.sqrt(spl(vg, ratio * vg, P.tau, P.eps, P.cap).loss / P.cap));
    const k = 4 * (y * w + x); img.data[k] = rgb[0]; img.data[k + 1] = rgb[1]; img.data[k + 2] = rgb[2]; img.data[k + 3] = 255; }
  c.putImageData(img, 0, 0);
  landSvg.insertBefore(svgEl("image", {x: LBOX[0], y: LBOX[1], width: w, height: h, preserveAspectRatio: "none", href: cv.toDataURL()}), landSvg.firstChild);
})();
(function colourBar() {
  const x = LBOX[2] + 26, t = LBOX[1], b = LBOX[3], g = svgEl("g", {class: "colour-bar"}, landSvg);
  for (let i = 0; i < 100; i++) svgEl("rect", {x, y: b - (i + 1) * (b - t) / 100, width: 16, height: (b - t) / 100 + 0.6, fill: `rgb(${viridis((i + 0.5) / 100).join(",")})`}, g);
  svgEl("rect", {x, y: t, width: 16, height: b - t, fill: "none", stroke: "#333"}, g);
  [0, 0.1, 0.5, 1, 2, 5, 10, 20, 50].filter(v => v < P.cap).concat([P.cap]).forEach(v => { const y = b - Math.sqrt(v / P.cap) * (b - t);
    svgEl("line", {x1: x + 16, x2: x + 21, y1: y, y2: y, stroke: "#333"}, g);
    svgEl("text", {x: x + 24, y: y + 4, class: "tick", "data-axis": "colour", "data-value": v}, g, tickText(v)); });
  svgEl("text", {class: "axis-label", "text-anchor": "middle", transform: `translate(${x + 58},${(t + b) / 2}) rotate(-90)`}, g, "SPL (loss; cap at top)");
})();
const ONE = lax.Y(1);
svgEl("line", {x1: LBOX[0], x2: LBOX[2], y1: ONE, y2: ONE, stroke: "#000", "stroke-width": 3.5}, landSvg);
svgEl("line", {x1: LBOX[0], x2: LBOX[2], y1: ONE, y2: ONE, stroke: "#fff", "stroke-width": 1.8, "stroke-dasharray": "6 4"}, landSvg);
const particleLayer = svgEl("g", {id: "particles"}, landSvg);
legend(landSvg, LBOX[0] + 4, 4, [
  {label: "perfect volume (V_p = V_g)", swatch: (g, x, y) => { svgEl("line", {x1: x - 14, x2: x + 14, y1: y, y2: y, stroke: "#000", "stroke-width": 3.5}, g);
    svgEl("line", {x1: x - 14, x2: x + 14, y1: y, y2: y, stroke: "#fff", "stroke-width": 1.8, "stroke-dasharray": "6 4"}, g); }},
]);
legend(landSvg, LBOX[0] + 250, 4, [{label: "particle following −∂SPL/∂V_p (click to drop)", marker: "circle", fill: "#fff",
  swatch: (g, x, y) => svgEl("circle", {cx: x, cy: y, r: 5, fill: "#fff", stroke: "#000", "stroke-width": 1.5}, g)}]);
let particles = [];
function drawLand() {
  clear(particleLayer);
  particles.forEach(p => svgEl("circle", {cx: lax.X(p.vg), cy: lax.Y(p.r), r: 5, fill: "#fff", stroke: "#000", "stroke-width": 1.5, class: "particle"}, particleLayer));
  document.getElementById("particle-count").textContent = particles.length;
}
landSvg.addEventListener("click", ev => {
  const b = landSvg.getBoundingClientRect(), vb = landSvg.viewBox.baseVal;
  const x = (ev.clientX - b.left) * vb.width / b.width, y = (ev.clientY - b.top) * vb.height / b.height;
  if (x < LBOX[0] || x > LBOX[2] || y < LBOX[1] || y > LBOX[3]) return;  // outside the plot area
  particles.push({vg: lax.Xi(x), r: lax.Yi(y)}); drawLand(); });
document.getElementById("clear").addEventListener("click", () => { particles = []; drawLand(); });
// Gradient descent on V_p, in ratio units: dSPL/dr = V_g * dSPL/dV_p = ±w·V_g/(V_g+ε) below the cap.
setInterval(() => { particles.forEach(p => { const s = spl(p.vg, p.r * p.vg, P.tau, P.eps, P.cap);
  const step = 0.03 * p.vg * s.dLdVp * Math.max(1, p.r); p.r = Math.abs(p.r - 1) <= Math.abs(step) ? 1 : Math.max(0.05, p.r - step); });
  if (particles.length) drawLand(); }, 40);
drawLand();

// ---- panel 4: per voxel and summed over each region, Dice vs SPL, log scale
(function drawSpectra() {
  const S = DATA.spectra, svg = document.getElementById("spectra"), R = S.regions;
  const LOSSES = [{code: "D", name: "Dice (D)", color: OI.dice, marker: "circle", dash: "", dx: -0.13},
                  {code: "S", name: "SPL (S)", color: OI.spl, marker: "square", dash: "5 3", dx: 0.13}];
  [["mean", "per voxel", [86, 52, 456, 270]], ["total", "summed over the region", [574, 52, 944, 270]]].forEach(([key, title, box]) => {
    const vals = LOSSES.flatMap(l => R.map(r => S[l.code][key][r])).filter(v => v > 0);
    const lo = 10 ** Math.floor(Math.log10(Math.min(...vals))), hi = 10 ** Math.ceil(Math.log10(Math.max(...vals)));
    const ax = axes(svg, box, {lo: -0.5, hi: R.length - 0.5, label: `region of the sample (${DATA.sizes.join(", ")} and ${DATA.background} voxels)`, ticks: R.map((_, i) => i), format: i => R[i]},
      {lo, hi, log: true, label: "|∂loss/∂logit| (loss per logit)"});
    ax.yl.setAttribute("transform", `translate(${box[0] - 56},${(box[1] + box[3]) / 2}) rotate(-90)`);
    svgEl("text", {x: (box[0] + box[2]) / 2, y: box[1] - 8, "text-anchor": "middle", class: "title"}, svg, title);
    LOSSES.forEach(l => R.forEach((r, i) => { const v = S[l.code][key][r], x = ax.X(i + l.dx), y = ax.Y(Math.max(v, lo));
      svgEl("line", {x1: x, x2: x, y1: box[3], y2: y, stroke: l.color, "stroke-width": 3, "stroke-dasharray": l.dash}, svg);
      marker(svg, l.marker, x, y, 6, l.color, {class: `point-${l.code}`, stroke: "#111"});
      svgEl("text", {x: x + (l.dx < 0 ? -9 : 9), y: y + 4, "text-anchor": l.dx < 0 ? "end" : "start", class: "tick value"}, svg, v.toExponential(1)); }));
  });
  legend(svg, 90, 6, LOSSES.map(l => ({label: l.name, color: l.color, dash: l.dash, width: 3, marker: l.marker})), true);
  const key = l => `<span class="key" style="background:${l.color}"></span>`;
  const rows = ["<tr><td>mean |∂/∂logit| per voxel</td>" + R.map(r => `<td>${r}</td>`).join("") + "</tr>"];
  LOSSES.forEach(l => rows.push(`<tr><td>${key(l)}${l.name}</td>` + R.map(r => `<td class="v">${S[l.code].mean[r].toExponential(2)}</td>`).join("") + "</tr>"));
  rows.push("<tr><td>summed over the region</td>" + R.map(() => "<td></td>").join("") + "</tr>");
  LOSSES.forEach(l => rows.push(`<tr><td>${key(l)}${l.name}</td>` + R.map(r => `<td class="v">${S[l.code].total[r].toExponential(2)}</td>`).join("") + "</tr>"));
  document.getElementById("spectra-table").innerHTML = rows.join("");
})();
</script></body></html>
"""
