"""The interactive SPL explainer: one offline HTML page (no CDN, no network).

Four panels, after the companion document of the thesis:

1. "Dice blindspot": one training sample (one patch) holds an 800-voxel and a 50-voxel lesion;
   a model trained with Dice alone and one with Dice + SPL grow their predicted volumes over 150
   gradient steps. Both losses reduce the sample exactly as the study's training does (Dice per
   sample, SPL over the sample's whole reference volume), and the trajectories are real gradient
   steps through this package's losses (:func:`blindspot_trajectories`), embedded as data.
2. Sliders for V_g, V_p/V_g and τ showing the size weight, relative error, loss and gradient; the
   page re-implements the SPL formula in JavaScript and the browser test checks it against Python.
3. The loss landscape over (V_g, V_p/V_g): click to drop a particle that descends it.
4. Per-voxel gradient magnitudes of Dice vs SPL in that same sample when the large lesion is
   found and the small one missed (:func:`gradient_spectra`, autograd through the package's losses).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sizepenalty.losses import build_loss

Params = Mapping[str, Mapping[str, Any]] | None
Weights = Mapping[str, float] | None

SIZES = (800, 50)
BACKGROUND = 4000
REGIONS = ("large lesion", "small lesion", "background")


def _one_sample(sizes=SIZES, background=BACKGROUND) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample (1, 1, 1, 1, M): the large lesion's voxels, the small lesion's, then background;
    and each voxel's region index (0, 1, 2)."""
    m = sum(sizes) + background
    region = torch.full((m,), 2, dtype=torch.long)
    region[: sizes[0]] = 0
    region[sizes[0] : sizes[0] + sizes[1]] = 1
    y = (region < 2).float().view(1, 1, 1, 1, m)
    return y, region


def blindspot_trajectories(
    epochs: int = 150, lr: float = 3.0, params: Params = None, weights: Weights = None
) -> dict[str, list[list[float]]]:
    """Predicted volume inside the large and the small lesion (voxels) per step, for Dice alone
    ("D") and Dice + SPL ("S+D") with the study's loss hyper-parameters and weights (as
    :func:`sizepenalty.losses.build_loss` takes them; default: the thesis's).

    Setting (stated on the page): one sample holds both lesions and 4000 background voxels; the
    voxels of each region share one logit, starting at p = 0.076 in the lesions and 0.0025 in the
    background, trained by plain gradient descent. With one sample the Dice reduction (per sample or
    batch) makes no difference, and SPL sees the sample's total reference volume (850 voxels).
    """
    y, region = _one_sample()
    out: dict[str, list[list[float]]] = {}
    for code in ("D", "S+D"):
        loss = build_loss(code, params, weights)
        theta = torch.tensor([-2.5, -2.5, -6.0], requires_grad=True)
        traj = []
        for step in range(epochs + 1):
            z = theta[region].view(y.shape)
            p = torch.sigmoid(z).detach()[0, 0, 0, 0]
            traj.append([round(float(p[region == i].sum()), 3) for i in (0, 1)])
            if step == epochs:
                break
            total, _ = loss(z, y)
            (g,) = torch.autograd.grad(total, theta)
            with torch.no_grad():
                theta -= lr * g
        out[code] = traj
    return out


def gradient_spectra(params: Params = None) -> dict[str, object]:
    """|d loss / d logit| per voxel in the same sample when the large lesion is predicted well
    (p = 0.9), the small one missed (p = 0.05) and background at p = 0.01, for Dice alone and SPL
    alone. Returns a voxel profile (40 voxels of each region) per loss, and the mean and the total
    per region (the total is what moves a region's volume)."""
    y, region = _one_sample()
    p = torch.tensor([0.9, 0.05, 0.01])[region].view(y.shape)
    z = torch.logit(p).clone().requires_grad_(True)
    out: dict[str, object] = {"regions": list(REGIONS)}
    for code in ("D", "S"):
        total, _ = build_loss(code, params)(z, y)
        (g,) = torch.autograd.grad(total, z)
        g = g.abs()[0, 0, 0, 0]
        out[code] = {
            "profile": [float(v) for i in range(3) for v in g[region == i][:40]],
            "mean": {name: float(g[region == i].mean()) for i, name in enumerate(REGIONS)},
            "total": {name: float(g[region == i].sum()) for i, name in enumerate(REGIONS)},
        }
    return out


def build_explainer(params: Params = None, weights: Weights = None) -> str:
    """The page's HTML with its data embedded, for the study's loss hyper-parameters and weights."""
    combined = build_loss("S+D", params, weights)
    spl = combined.terms["S"]
    data = {
        "params": {
            "tau": spl.tau,
            "eps": spl.eps,
            "cap": spl.cap,
            "lambda_size": combined.weights["S"],
        },  # fmt: skip
        "sizes": list(SIZES),
        "background": BACKGROUND,
        "blindspot": blindspot_trajectories(params=params, weights=weights),
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
h2{border-bottom:1px solid #ccc;margin-top:1.8em}canvas{border:1px solid #bbb;background:#fff;max-width:100%}
.row{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start}.ctl{min-width:300px}
label{display:block;margin:.4em 0 .1em}input[type=range]{width:280px}
table{border-collapse:collapse}td{padding:.15em .6em;border-bottom:1px solid #eee}td.v{font-family:monospace;text-align:right}
.legend span{display:inline-block;margin-right:1em}.small{font-size:.85em;color:#444}button{padding:.3em .8em}
</style></head><body>
<h1>Size Penalty Loss, interactively</h1>
<p>SPL adds <code>min(c, exp(−V<sub>g</sub>/τ)·|V<sub>p</sub>−V<sub>g</sub>|/(V<sub>g</sub>+ε))</code> to a spatial loss,
so that small lesions, which Dice barely notices, still get pressure to have the right volume.
Everything on this page runs offline; the curves in panels 1 and 4 were computed with the
<code>sizepenalty</code> package's own loss functions and embedded here.</p>

<h2>1. The Dice blindspot</h2>
<p id="blind-setup">One training sample (one patch) holds an <b>800-voxel</b> and a <b>50-voxel</b> lesion among
<span id="bg-voxels"></span> background voxels. Two models grow their predicted volumes by gradient descent: one with
Dice alone, one with Dice + SPL (λ<sub>S</sub> = <span id="lambda-s"></span>, τ = <span id="tau-s"></span> voxels).
Both losses reduce the sample as the study's training does: Dice over the sample, SPL over the sample's whole
reference volume (850 voxels) — so SPL sees the two lesions as one volume and cannot single out the small one.
The voxels of each region share one logit; every curve is real gradient steps through <code>sizepenalty</code>'s
losses. After 150 steps the small lesion is <span id="blind-summary"></span>.</p>
<div class="row"><canvas id="blind" width="640" height="300"></canvas>
<div class="ctl"><button id="play">Play</button> <input id="epoch" type="range" min="0" max="150" value="150">
<div>epoch <span id="epoch-out">150</span></div>
<table id="blind-table"></table>
<p class="legend small"><span>— Dice alone</span><span>- - Dice + SPL</span><span>thick: 800 voxels, thin: 50 voxels</span></p></div></div>

<h2>2. The loss, term by term</h2>
<div class="row"><div class="ctl">
<label for="vg">Reference volume V<sub>g</sub> (voxels): <span id="vg-out"></span></label><input id="vg" type="range" min="1" max="3000" step="1" value="50">
<label for="ratio">Prediction ratio V<sub>p</sub>/V<sub>g</sub>: <span id="ratio-out"></span></label><input id="ratio" type="range" min="0" max="4" step="0.01" value="1.5">
<label for="tau">Size scale τ (voxels): <span id="tau-out"></span></label><input id="tau" type="range" min="50" max="3000" step="10" value="600">
</div><table>
<tr><td>size weight exp(−V<sub>g</sub>/τ)</td><td class="v" id="out-weight"></td></tr>
<tr><td>relative error</td><td class="v" id="out-rel"></td></tr>
<tr><td>loss (capped at c)</td><td class="v" id="out-loss"></td></tr>
<tr><td>|∂loss/∂V<sub>p</sub>| (0 past the cap)</td><td class="v" id="out-grad"></td></tr>
<tr><td>|∂/∂V<sub>p</sub>| before the cap</td><td class="v" id="out-grad-precap"></td></tr>
</table><canvas id="curve" width="420" height="220"></canvas></div>

<h2>3. The loss landscape</h2>
<p>SPL over reference volume V<sub>g</sub> (x, 1 to 5000 voxels) and prediction ratio V<sub>p</sub>/V<sub>g</sub>
(y, 0.05 to 50), both on log scales; the dashed line is a perfect volume. Darker = higher loss; the flat
black region at the top left is the cap. Click anywhere to drop a particle that follows −∂SPL/∂V<sub>p</sub>.</p>
<div class="row"><canvas id="land" width="640" height="320"></canvas>
<div class="ctl"><div>particles: <span id="particle-count">0</span></div><button id="clear">Clear</button>
<p class="small">Small lesions (left) get a steep slope toward ratio 1; large lesions (right) a
faint one (the size weight); particles starting in the capped band do not move: no gradient.</p></div></div>

<h2>4. Where the gradient goes</h2>
<p>|∂loss/∂logit| per voxel (log scale) in the same sample when the large lesion is found (p = 0.9)
and the small one is missed (p = 0.05). Dice's pull on each voxel of the missed lesion is set by the
whole sample's overlap; SPL's push is the same size weight and sign for every voxel of the sample
(it only knows the sample's total volume), scaled by p(1−p).</p>
<canvas id="spectra" width="900" height="260"></canvas><table id="spectra-table"></table>

<script>
"use strict";
const DATA = __DATA__;
const P = DATA.params;
const fmt = v => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0)) ? v.toExponential(4) : v.toFixed(6);

// SPL, as in sizepenalty.losses.SizePenaltyLoss (checked against Python by the browser test).
function spl(vg, vp, tau, eps, cap) {
  const weight = Math.exp(-vg / tau);
  const rel = Math.abs(vp - vg) / (vg + eps);
  const raw = weight * rel;
  const loss = Math.min(cap, raw);
  const gradPre = weight / (vg + eps) * (vp === vg ? 0 : 1);
  return {weight, rel, loss, grad: raw < cap ? gradPre : 0, gradPre, dLdVp: raw < cap ? Math.sign(vp - vg) * gradPre : 0};
}

// ---- panel 1
const blind = document.getElementById("blind"), bctx = blind.getContext("2d");
const epochIn = document.getElementById("epoch");
function drawBlind(epoch) {
  const W = blind.width, H = blind.height, m = 40, n = DATA.blindspot.D.length - 1;
  bctx.clearRect(0, 0, W, H);
  bctx.strokeStyle = "#999"; bctx.strokeRect(m, 10, W - m - 10, H - m - 10);
  bctx.fillStyle = "#000"; bctx.font = "11px sans-serif";
  bctx.fillText("fraction of lesion predicted", 4, 10); bctx.fillText("epoch", W - 50, H - 8);
  [0, 0.5, 1].forEach(f => bctx.fillText(f.toFixed(1), 8, 10 + (1 - f) * (H - m - 10) + 4));
  const X = e => m + e / n * (W - m - 10), Y = f => 10 + (1 - f) * (H - m - 10);
  [["D", []], ["S+D", [6, 4]]].forEach(([code, dash]) => {
    DATA.sizes.forEach((size, j) => {
      bctx.setLineDash(dash); bctx.lineWidth = j === 0 ? 3 : 1.5; bctx.strokeStyle = "#000";
      bctx.beginPath();
      DATA.blindspot[code].slice(0, epoch + 1).forEach((v, e) => { const y = Y(v[j] / size); e ? bctx.lineTo(X(e), y) : bctx.moveTo(X(e), y); });
      bctx.stroke();
    });
  });
  bctx.setLineDash([]);
  document.getElementById("epoch-out").textContent = epoch;
  const rows = ["<tr><td>voxels predicted in</td><td>800-voxel lesion</td><td>50-voxel lesion</td></tr>"];
  ["D", "S+D"].forEach(code => { const v = DATA.blindspot[code][epoch], tag = code === "D" ? "d" : "sd";
    rows.push(`<tr><td>${code === "D" ? "Dice alone" : "Dice + SPL"}</td><td class="v" id="blind-${tag}-large">${v[0].toFixed(1)}</td><td class="v" id="blind-${tag}-small">${v[1].toFixed(1)}</td></tr>`); });
  document.getElementById("blind-table").innerHTML = rows.join("");
}
epochIn.addEventListener("input", () => drawBlind(+epochIn.value));
let timer = null;
document.getElementById("play").addEventListener("click", () => {
  if (timer) { clearInterval(timer); timer = null; return; }
  let e = 0; timer = setInterval(() => { drawBlind(e); epochIn.value = e; if (++e > 150) { clearInterval(timer); timer = null; } }, 30);
});
drawBlind(150);
document.getElementById("bg-voxels").textContent = DATA.background;
document.getElementById("lambda-s").textContent = P.lambda_size;
document.getElementById("tau-s").textContent = P.tau;
(function () { const last = code => DATA.blindspot[code][DATA.blindspot[code].length - 1][1];
  document.getElementById("blind-summary").textContent =
    `${last("D").toFixed(1)} of 50 voxels with Dice alone and ${last("S+D").toFixed(1)} with Dice + SPL`; })();

// ---- panel 2
const ids = ["vg", "ratio", "tau"], el = Object.fromEntries(ids.map(i => [i, document.getElementById(i)]));
function updateSliders() {
  const vg = +el.vg.value, ratio = +el.ratio.value, tau = +el.tau.value, r = spl(vg, ratio * vg, tau, P.eps, P.cap);
  document.getElementById("vg-out").textContent = vg;
  document.getElementById("ratio-out").textContent = ratio.toFixed(2);
  document.getElementById("tau-out").textContent = tau;
  const out = {"out-weight": r.weight, "out-rel": r.rel, "out-loss": r.loss, "out-grad": r.grad, "out-grad-precap": r.gradPre};
  for (const [id, v] of Object.entries(out)) { const c = document.getElementById(id); c.textContent = fmt(v); c.dataset.value = String(v); }
  const cv = document.getElementById("curve"), c = cv.getContext("2d"), W = cv.width, H = cv.height;
  c.clearRect(0, 0, W, H); c.strokeStyle = "#999"; c.strokeRect(30, 5, W - 35, H - 25);
  c.fillStyle = "#000"; c.font = "11px sans-serif"; c.fillText("loss vs V_p/V_g (0..4) at this V_g, τ", 35, H - 6);
  c.beginPath(); c.lineWidth = 2;
  for (let i = 0; i <= 200; i++) { const q = i / 50, l = spl(vg, q * vg, tau, P.eps, P.cap).loss;
    const x = 30 + q / 4 * (W - 35), y = 5 + (1 - l / P.cap) * (H - 25); i ? c.lineTo(x, y) : c.moveTo(x, y); }
  c.stroke(); c.beginPath(); c.arc(30 + ratio / 4 * (W - 35), 5 + (1 - r.loss / P.cap) * (H - 25), 4, 0, 7); c.fill();
}
ids.forEach(i => el[i].addEventListener("input", updateSliders));
updateSliders();

// ---- panel 3
const land = document.getElementById("land"), lctx = land.getContext("2d");
const LV = [Math.log10(1), Math.log10(5000)], LR = [Math.log10(0.05), Math.log10(50)];  // both axes log10
const toVg = x => 10 ** (LV[0] + x / land.width * (LV[1] - LV[0])), toR = y => 10 ** (LR[1] - y / land.height * (LR[1] - LR[0]));
const fromR = r => (LR[1] - Math.log10(Math.max(r, 1e-3))) / (LR[1] - LR[0]) * land.height, fromVg = v => (Math.log10(v) - LV[0]) / (LV[1] - LV[0]) * land.width;
const bg = lctx.createImageData(land.width, land.height);
for (let y = 0; y < land.height; y++) for (let x = 0; x < land.width; x++) {
  const l = spl(toVg(x), toR(y) * toVg(x), P.tau, P.eps, P.cap).loss, g = 255 - Math.round(255 * Math.sqrt(l / P.cap)), k = 4 * (y * land.width + x);
  bg.data[k] = bg.data[k + 1] = bg.data[k + 2] = g; bg.data[k + 3] = 255; }
let particles = [];
function drawLand() {
  lctx.putImageData(bg, 0, 0);
  lctx.strokeStyle = "#c00"; lctx.setLineDash([4, 4]); lctx.beginPath(); lctx.moveTo(0, fromR(1)); lctx.lineTo(land.width, fromR(1)); lctx.stroke(); lctx.setLineDash([]);
  particles.forEach(p => { lctx.fillStyle = "#fff"; lctx.strokeStyle = "#000"; lctx.beginPath(); lctx.arc(fromVg(p.vg), fromR(p.r), 5, 0, 7); lctx.fill(); lctx.stroke(); });
  document.getElementById("particle-count").textContent = particles.length;
}
land.addEventListener("click", ev => { const b = land.getBoundingClientRect();
  const x = (ev.clientX - b.left) * land.width / b.width, y = (ev.clientY - b.top) * land.height / b.height;
  particles.push({vg: toVg(x), r: toR(y)}); drawLand(); });
document.getElementById("clear").addEventListener("click", () => { particles = []; drawLand(); });
// Gradient descent on V_p, in ratio units: dSPL/dr = V_g * dSPL/dV_p = ±w·V_g/(V_g+ε) below the cap.
setInterval(() => { particles.forEach(p => { const s = spl(p.vg, p.r * p.vg, P.tau, P.eps, P.cap);
  const step = 0.03 * p.vg * s.dLdVp * Math.max(1, p.r); p.r = Math.abs(p.r - 1) <= Math.abs(step) ? 1 : Math.max(0.05, p.r - step); });
  if (particles.length) drawLand(); }, 40);
drawLand();

// ---- panel 4
const sp = document.getElementById("spectra"), sctx = sp.getContext("2d");
(function drawSpectra() {
  const S = DATA.spectra, n = S.D.profile.length, W = sp.width, H = sp.height, m = 50;
  const all = S.D.profile.concat(S.S.profile).filter(v => v > 0), lo = Math.log10(Math.min(...all)), hi = Math.log10(Math.max(...all));
  const Y = v => 10 + (1 - (Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo)) * (H - 40);
  sctx.strokeStyle = "#999"; sctx.strokeRect(m, 10, W - m - 5, H - 40); sctx.fillStyle = "#000"; sctx.font = "11px sans-serif";
  S.regions.forEach((r, i) => sctx.fillText(r, m + (i + 0.15) * (W - m) / 3, H - 12));
  sctx.fillText("1e" + hi.toFixed(1), 2, 18); sctx.fillText("1e" + lo.toFixed(1), 2, H - 32);
  [["D", "#000", 0], ["S", "#888", 0.45]].forEach(([code, color, off]) => { sctx.fillStyle = color;
    S[code].profile.forEach((v, i) => { const x = m + (i + off) * (W - m - 5) / n; sctx.fillRect(x, Y(v), (W - m) / n * 0.45, H - 30 - Y(v)); }); });
  const rows = ["<tr><td>mean |∂/∂logit|</td>" + S.regions.map(r => `<td>${r}</td>`).join("") + "</tr>"];
  [["D", "Dice (black)"], ["S", "SPL (gray)"]].forEach(([code, name]) => rows.push(`<tr><td>${name}</td>` + S.regions.map(r => `<td class="v">${S[code].mean[r].toExponential(2)}</td>`).join("") + "</tr>"));
  rows.push("<tr><td>summed over the region</td>" + S.regions.map(() => "<td></td>").join("") + "</tr>");
  [["D", "Dice"], ["S", "SPL"]].forEach(([code, name]) => rows.push(`<tr><td>${name}</td>` + S.regions.map(r => `<td class="v">${S[code].total[r].toExponential(2)}</td>`).join("") + "</tr>"));
  document.getElementById("spectra-table").innerHTML = rows.join("");
})();
</script></body></html>
"""
