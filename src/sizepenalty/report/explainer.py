"""The interactive SPL explainer: one offline HTML page (no CDN, no network).

Four panels, after the companion document of the thesis:

1. "Dice blindspot": two models grow their predicted volume toward an 800-voxel and a 50-voxel
   lesion over 150 epochs, one with Dice alone and one with Dice + SPL. The trajectories are real
   gradient steps through this package's losses (:func:`blindspot_trajectories`), embedded as data.
2. Sliders for V_g, V_p/V_g and τ showing the size weight, relative error, loss and gradient; the
   page re-implements the SPL formula in JavaScript and the browser test checks it against Python.
3. The loss landscape over (V_g, V_p/V_g): click to drop a particle that descends it.
4. Per-voxel gradient magnitudes of Dice vs SPL for a missed small lesion next to a large one
   (:func:`gradient_spectra`, again autograd through the package's losses).
"""

from __future__ import annotations

import json

import torch

from sizepenalty.losses import LossHyperParams, build_loss

SIZES = (800, 50)
BACKGROUND = 4000


def _toy_batch(sizes=SIZES, background=BACKGROUND) -> torch.Tensor:
    """One sample per lesion: ``n`` lesion voxels followed by background, shape (B, 1, 1, 1, M)."""
    m = max(sizes) + background
    y = torch.zeros(len(sizes), 1, 1, 1, m)
    for i, n in enumerate(sizes):
        y[i, ..., :n] = 1
    return y


def blindspot_trajectories(
    epochs: int = 150, lr: float = 3.0, lambda_size: float = 0.3, tau: float = 600.0
) -> dict[str, list[list[float]]]:
    """Predicted lesion volume (voxels inside each lesion) per epoch for Dice alone ("D") and
    Dice + SPL ("S+D").

    Each model has one logit for its lesion voxels and one for its background per sample, starting
    at p = 0.076 inside and 0.0025 outside, trained with plain gradient descent. Dice is pooled over
    the batch (``dice_batch=True``), as when both lesions share a patch: its gradient on the small
    lesion is ~16x weaker than on the large one and the 50-voxel lesion stalls; SPL is per sample and
    scale-free (d SPL / d logit ~ exp(-V_g/τ) p(1-p)), so it keeps pulling the small lesion up.
    """
    y = _toy_batch()
    out: dict[str, list[list[float]]] = {}
    for code in ("D", "S+D"):
        loss = build_loss(code, LossHyperParams(dice_batch=True, lambda_size=lambda_size, tau=tau))
        a = torch.full((len(SIZES),), -2.5, requires_grad=True)
        b = torch.full((len(SIZES),), -6.0, requires_grad=True)
        traj = []
        for epoch in range(epochs + 1):
            z = torch.where(y > 0, a.view(-1, 1, 1, 1, 1), b.view(-1, 1, 1, 1, 1))
            traj.append(
                [round(float(v), 3) for v in (torch.sigmoid(z) * y).sum(dim=(1, 2, 3, 4)).detach()]
            )
            if epoch == epochs:
                break
            total, _ = loss(z, y)
            ga, gb = torch.autograd.grad(total, (a, b))
            with torch.no_grad():
                a -= lr * ga
                b -= lr * gb
        out[code] = traj
    return out


def gradient_spectra(tau: float = 600.0, cap: float = 10.0) -> dict[str, object]:
    """|d loss / d logit| per voxel for a large lesion predicted well (p = 0.9) and a missed small
    one (p = 0.05) with background at p = 0.01, for batch-pooled Dice and for SPL. Returns a voxel
    profile (40 voxels of each region) per loss, and the mean and the total per region (the total
    is what moves a lesion's volume: Dice's on the small lesion is a few % of the large one's)."""
    y = _toy_batch()
    p = torch.where(y > 0, torch.tensor([0.9, 0.05]).view(-1, 1, 1, 1, 1), torch.tensor(0.01))
    z = torch.logit(p).clone().requires_grad_(True)
    regions = {
        "large lesion": (0, slice(0, SIZES[0])),
        "background (large)": (0, slice(SIZES[0], None)),
        "small lesion": (1, slice(0, SIZES[1])),
        "background (small)": (1, slice(SIZES[1], None)),
    }
    out: dict[str, object] = {"regions": list(regions)}
    for code, hp in (
        ("D", LossHyperParams(dice_batch=True)),
        ("S", LossHyperParams(tau=tau, cap=cap)),
    ):
        total, _ = build_loss(code, hp)(z, y)
        (g,) = torch.autograd.grad(total, z)
        g = g.abs()[:, 0, 0, 0, :]
        out[code] = {
            "profile": [float(v) for name, (i, sl) in regions.items() for v in g[i, sl][:40]],
            "mean": {name: float(g[i, sl].mean()) for name, (i, sl) in regions.items()},
            "total": {name: float(g[i, sl].sum()) for name, (i, sl) in regions.items()},
        }
    return out


def build_explainer(tau: float = 600.0, eps: float = 1e-5, cap: float = 10.0) -> str:
    """The page's HTML with its data embedded."""
    data = {
        "params": {"tau": tau, "eps": eps, "cap": cap},
        "sizes": list(SIZES),
        "blindspot": blindspot_trajectories(tau=tau),
        "spectra": gradient_spectra(tau=tau, cap=cap),
    }
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return TEMPLATE.replace("__DATA__", payload)


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
<p>Two models grow their predicted volume toward an <b>800-voxel</b> and a <b>50-voxel</b> lesion (both
in one batch, Dice pooled over it). With Dice alone the small lesion stalls; Dice + SPL pulls it up.</p>
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
<p>|∂loss/∂logit| per voxel (log scale) when a large lesion is found (p = 0.9) and a small one is
missed (p = 0.05). Summed over each lesion, batch Dice pulls the missed one ~30× less than the found
one; SPL's per-voxel push on the missed lesion is larger than on the large lesion (the size weight).</p>
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
  const rows = ["<tr><td></td><td>800 voxels</td><td>50 voxels</td></tr>"];
  ["D", "S+D"].forEach(code => { const v = DATA.blindspot[code][epoch];
    rows.push(`<tr><td>${code === "D" ? "Dice alone" : "Dice + SPL"}</td><td class="v">${v[0].toFixed(1)}</td><td class="v" id="blind-${code === "D" ? "d" : "sd"}-small">${v[1].toFixed(1)}</td></tr>`); });
  document.getElementById("blind-table").innerHTML = rows.join("");
}
epochIn.addEventListener("input", () => drawBlind(+epochIn.value));
let timer = null;
document.getElementById("play").addEventListener("click", () => {
  if (timer) { clearInterval(timer); timer = null; return; }
  let e = 0; timer = setInterval(() => { drawBlind(e); epochIn.value = e; if (++e > 150) { clearInterval(timer); timer = null; } }, 30);
});
drawBlind(150);

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
  S.regions.forEach((r, i) => sctx.fillText(r, m + (i + 0.15) * (W - m) / 4, H - 12));
  sctx.fillText("1e" + hi.toFixed(1), 2, 18); sctx.fillText("1e" + lo.toFixed(1), 2, H - 32);
  [["D", "#000", 0], ["S", "#888", 0.45]].forEach(([code, color, off]) => { sctx.fillStyle = color;
    S[code].profile.forEach((v, i) => { const x = m + (i + off) * (W - m - 5) / n; sctx.fillRect(x, Y(v), (W - m) / n * 0.45, H - 30 - Y(v)); }); });
  const rows = ["<tr><td>mean |∂/∂logit|</td>" + S.regions.map(r => `<td>${r}</td>`).join("") + "</tr>"];
  [["D", "batch Dice (black)"], ["S", "SPL (gray)"]].forEach(([code, name]) => rows.push(`<tr><td>${name}</td>` + S.regions.map(r => `<td class="v">${S[code].mean[r].toExponential(2)}</td>`).join("") + "</tr>"));
  rows.push("<tr><td>summed over the region</td>" + S.regions.map(() => "<td></td>").join("") + "</tr>");
  [["D", "batch Dice"], ["S", "SPL"]].forEach(([code, name]) => rows.push(`<tr><td>${name}</td>` + S.regions.map(r => `<td class="v">${S[code].total[r].toExponential(2)}</td>`).join("") + "</tr>"));
  document.getElementById("spectra-table").innerHTML = rows.join("");
})();
</script></body></html>
"""
