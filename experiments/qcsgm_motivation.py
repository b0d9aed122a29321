"""QCSGM §3.1 / App. A.5.1: sampling efficiency of a non-conservative s_U vs a conservative s_C.

Both fields are Eq. (A6) around p_σ = N(0, σ²I), σ = 0.1:

    s(x) = ∇log p_σ(x) + c(x) u(x),   c(x)² = 2ε μ(x) / (‖x‖² p_σ(x) + δ),

with μ = 1/10 Σ_i N([3cos(2πi/10), 3sin(2πi/10)], I), u = [−x₂, x₁] for s_U (rotational) and
u = [x₁, x₂] for s_C (radial). δ = 0 is Eq. (A6) exactly, for which Proposition 3 gives
L_ESM = ε; the official code (``gaussian_example/run_lib.py``) adds δ = 1e-8 to the denominator,
which caps c(x) where p_σ underflows — without it the sampler diverges from the starting points
(c ≈ e^192 at (−2, −2)). The deterministic sampler x ← x + α_i s(x) (Eq. 7 without noise,
α_i = α₀ e^{−i/1000}, α₀ = 0.0125, 0.01 for ε = 0, 300 steps) starts 10 points at
(−2, −2) + 0.5·N(0, I). Float64 throughout (as the official code).

    python experiments/qcsgm_motivation.py --out-md docs/results/qcsgm_motivation.md \
        --out-png docs/results/qcsgm_motivation.png
"""

from __future__ import annotations

import argparse
import math
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgm_jax import plots  # noqa: E402
from sgm_jax.metrics import asym, nasym  # noqa: E402
from sgm_jax.sampling import langevin_dynamics  # noqa: E402
from report import write_text  # noqa: E402

EPSILONS = (0.0, 0.5e-3, 0.75e-3, 1.0e-3, 1.5e-3, 1.75e-3, 2.25e-3)  # official list
OFFICIAL_FLOOR = 1e-8
TINY = 1e-200  # keeps log‖x‖² finite at the origin; c·u stays bounded there


def log_p_sigma(x, sigma):
    """log N(x; 0, σ²I) in 2-D."""
    return -jnp.sum(x**2, -1) / (2 * sigma**2) - math.log(2 * math.pi * sigma**2)


def log_mu(x, radius=3.0, n=10):
    """log μ(x), μ the ring of n unit-covariance Gaussians at the given radius (A.5.1)."""
    ang = 2 * math.pi * jnp.arange(1, n + 1) / n
    centres = radius * jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1)
    sq = jnp.sum((x[:, None, :] - centres[None]) ** 2, -1)
    return jax.scipy.special.logsumexp(-0.5 * sq, axis=1) - math.log(2 * math.pi * n)


def log_scale(x, eps, sigma, floor):
    """log c(x) of Eq. (A6) (floor δ = 0: exact), evaluated in log space."""
    log_den = jnp.log(jnp.sum(x**2, -1) + TINY) + log_p_sigma(x, sigma)
    if floor > 0:
        log_den = jnp.logaddexp(log_den, math.log(floor))
    return 0.5 * (math.log(2 * eps) + log_mu(x) - log_den)


def direction(x, kind):
    """u(x) with ‖u‖ = ‖x‖: rotational [−x₂, x₁] for 'U', radial [x₁, x₂] for 'C'."""
    return jnp.stack([-x[:, 1], x[:, 0]], -1) if kind == "U" else x


def make_score(kind, eps, sigma, floor):
    """Batched s_U / s_C of Eq. (A6): x [B, 2] -> [B, 2]."""
    def score(x):
        true = -x / sigma**2
        if eps == 0:
            return true
        return true + jnp.exp(log_scale(x, eps, sigma, floor))[:, None] * direction(x, kind)
    return score


def esm_quadrature(eps, sigma, floor, half=10.0, n=1000):
    """L_ESM = ∫ p_σ ½‖s − ∇log p_σ‖² (Eq. 2) by a midpoint rule on [−half, half]², in log space
    (½‖c u‖² = ½ c² ‖x‖² overflows float64 where p_σ underflows)."""
    h = 2 * half / n
    g = -half + h * (jnp.arange(n) + 0.5)
    x = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    log_f = log_p_sigma(x, sigma) + 2 * log_scale(x, eps, sigma, floor) + jnp.log(
        0.5 * jnp.sum(x**2, -1) + TINY)
    return float(jnp.sum(jnp.exp(log_f)) * h * h)


def esm_mc_over_p(score, sigma, key, n):
    """Naive Monte-Carlo of Eq. (2) over x ~ p_σ using the black-box score (see the report)."""
    x = sigma * jax.random.normal(key, (n, 2))
    return float(jnp.mean(0.5 * jnp.sum((score(x) + x / sigma**2) ** 2, -1)))


def weighted_metrics(score, sigma, half=8.0, n=320):
    """E_{p_σ}[Asym], E_{p_σ}[NAsym] (Eqs. 11, A2): exact J, p_σ-normalised midpoint quadrature
    on [−half σ, half σ]²; n even, so no node sits on the origin (see the report)."""
    h = 2 * half * sigma / n
    g = -half * sigma + h * (jnp.arange(n) + 0.5)
    x = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    w = jnp.exp(log_p_sigma(x, sigma))
    w = w / jnp.sum(w)
    return float(jnp.sum(w * asym(score, x))), float(jnp.sum(w * nasym(score, x)))


def official_grid_metrics(score, sigma):
    """The official weighting: Σ_grid p_σ(x)·m(x) on linspace(−3, 3, 20)² (not normalised)."""
    g = jnp.linspace(-3.0, 3.0, 20)
    x = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    w = jnp.exp(log_p_sigma(x, sigma))
    return float(jnp.sum(w * asym(score, x))), float(jnp.sum(w * nasym(score, x)))


def run_sampler(score, x0, eps, steps):
    """Deterministic Eq. (7): α_i = α₀ e^{−i/1000}; returns the trajectory [steps + 1, B, 2]."""
    alpha0 = 0.0125 if eps > 0 else 0.01
    alphas = alpha0 * jnp.exp(-jnp.arange(steps) / 1000.0)
    _, traj = langevin_dynamics(score, x0, jax.random.PRNGKey(0), alphas, steps, noise=False,
                                return_trajectory=True)
    return jnp.concatenate([x0[None], traj], 0)


def nfe_to_target(traj, radius):
    """Smallest k with every point inside ‖x‖ ≤ radius after k updates (None if never), and
    whether all points then stay inside for the remaining steps. 'diverged' if non-finite."""
    if not bool(jnp.all(jnp.isfinite(traj))):
        return "diverged", False
    inside = np.asarray(jnp.all(jnp.linalg.norm(traj, axis=-1) <= radius, axis=1))
    hits = np.flatnonzero(inside)
    if hits.size == 0:
        return None, False
    return int(hits[0]), bool(inside[hits[0]:].all())


def plot_trajectories(path, trajs, scores, eps, radius, show):
    """Fig. 1 analogue: normalised field and the first ``show`` steps of each trajectory."""
    g = jnp.linspace(-3.0, 3.0, 20)
    grid = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, kind in zip(axes, ("C", "U")):
        v = np.asarray(scores[kind](grid))
        v = v / np.linalg.norm(v, axis=1).max()
        ax.quiver(grid[:, 0], grid[:, 1], v[:, 0], v[:, 1], color="0.5")
        t = np.asarray(trajs[kind][: show + 1])
        for j in range(t.shape[1]):
            ax.plot(t[:, j, 0], t[:, j, 1], "x-", lw=1.2, ms=4)
        ax.add_patch(plt.Circle((0, 0), radius, fill=False, color="red", ls="--"))
        ax.set(xlim=(-3, 3), ylim=(-3, 3), aspect="equal",
               title=f"s_{kind} (ε = {eps:g}), first {show} steps")
    plots.save_figure(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-md", default="docs/results/qcsgm_motivation.md")
    p.add_argument("--out-png", default="docs/results/qcsgm_motivation.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sigma", type=float, default=0.1)
    p.add_argument("--num-points", type=int, default=10)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--floor", type=float, default=OFFICIAL_FLOOR, help="δ of the sampled field")
    p.add_argument("--mc-samples", type=int, default=200000)
    p.add_argument("--plot-eps", type=float, default=1e-3)
    args = p.parse_args(argv)
    start, sigma = time.time(), args.sigma
    radius = sigma * math.sqrt(2 * math.log(1 / (2 * math.pi * sigma**2)))  # p_σ(x) ≥ 1 inside
    x0 = -2.0 + 0.5 * jax.random.normal(jax.random.PRNGKey(args.seed), (args.num_points, 2))
    rows, esm_rows = [], []
    for i, eps in enumerate(EPSILONS):
        row = {"eps": eps}
        for kind in ("U", "C"):
            sampled = make_score(kind, eps, sigma, args.floor)
            nfe, stays = nfe_to_target(run_sampler(sampled, x0, eps, args.steps), radius)
            exact_nfe, _ = nfe_to_target(run_sampler(make_score(kind, eps, sigma, 0.0), x0, eps,
                                                     args.steps), radius)
            a, na = weighted_metrics(sampled, sigma)
            ga, gna = official_grid_metrics(sampled, sigma)
            row.update({f"nfe_{kind}": nfe, f"stays_{kind}": stays, f"exact_nfe_{kind}": exact_nfe,
                        f"asym_{kind}": a, f"nasym_{kind}": na, f"gasym_{kind}": ga,
                        f"gnasym_{kind}": gna})
        if eps > 0:
            key = jax.random.PRNGKey(args.seed + 1 + i)
            esm_rows.append((eps, esm_quadrature(eps, sigma, 0.0),
                             esm_mc_over_p(make_score("U", eps, sigma, 0.0), sigma, key,
                                           args.mc_samples),
                             esm_quadrature(eps, sigma, args.floor)))
        rows.append(row)
    trajs = {k: run_sampler(make_score(k, args.plot_eps, sigma, args.floor), x0, args.plot_eps,
                            args.steps) for k in ("U", "C")}
    scores = {k: make_score(k, args.plot_eps, sigma, args.floor) for k in ("U", "C")}
    shown = max(nfe_to_target(t, radius)[0] or args.steps for t in trajs.values())
    plot_trajectories(args.out_png, trajs, scores, args.plot_eps, radius,
                      min(shown + 2, args.steps))
    text = report(rows, esm_rows, args, radius, time.time() - start)
    print(text)
    write_text(args.out_md, text)


def report(rows, esm_rows, args, radius, seconds):
    """Markdown tables (printed and written to --out-md)."""
    e = lambda v: f"{v:.3g}"  # noqa: E731
    nfe = lambda r, k: "—" if r[f"nfe_{k}"] is None else str(r[f"nfe_{k}"])  # noqa: E731
    out = [f"# QCSGM §3.1 motivational example (Eq. A6, Fig. 1)\n\nCommand (runtime "
           f"{seconds:.0f} s "
           "on a busy 2-core CPU):\n\n    python experiments/qcsgm_motivation.py --seed "
           f"{args.seed} --floor {args.floor:g} --steps {args.steps} --num-points {args.num_points}"
           f" --out-md {args.out_md} --out-png {args.out_png}\n",
           f"σ = {args.sigma}, {args.num_points} start points (−2, −2) + 0.5·N(0, I) (seed "
           f"{args.seed}), {args.steps} deterministic steps, sampled field with "
           f"δ = {args.floor:g}. "
           f"Target: ‖x‖ ≤ r* = σ·sqrt(2 ln(1/(2πσ²))) = {radius:.4f}, the disc where p_σ(x) ≥ 1 "
           "(93.7 % of p_σ's mass), a per-point version of the official stopping rule (mean over "
           "points "
           "of max(−log p_σ, 0) < 1e-3). NFE = number of score evaluations (steps of "
           "`sgm_jax.sampling.langevin_dynamics(noise=False)`) until every point is inside.\n",
           "| ε | L_ESM, Eq. A6 exact | L_ESM as sampled (δ) | NFE s_U | NFE s_C | Asym s_U | "
           "Asym s_C | NAsym s_U | NAsym s_C |", "|---" * 9 + "|"]
    esm = {r[0]: r for r in esm_rows}
    for r in rows:
        q = esm.get(r["eps"], (0, 0.0, 0.0, 0.0))
        out.append(f"| {r['eps']:g} | {e(q[1])} | {e(q[3])} | {nfe(r, 'U')} | {nfe(r, 'C')} | "
                   f"{e(r['asym_U'])} | {e(r['asym_C'])} | {e(r['nasym_U'])} | {e(r['nasym_C'])} |")
    stays = all(r[f"stays_{k}"] for r in rows for k in "UC")
    exact = sorted({str(r[f"exact_nfe_{k}"]) for r in rows if r["eps"] > 0 for k in "UC"})
    out += ["", "Asym = E_pσ[½‖J − Jᵀ‖²_F], NAsym = E_pσ[‖J − Jᵀ‖²_F/(4‖J‖²_F)] (Eqs. 11, A2): "
            "exact Jacobians (`sgm_jax.metrics.asym/nasym`, key=None) of the sampled field, "
            "averaged with the *normalised* density p_σ by a midpoint rule on [−0.8, 0.8]² "
            "(320², spacing 0.005, no node at the origin). For s_U the integrand has a 1/r "
            "singularity at the origin (c·u → a point vortex of strength sqrt(2εμ(0)/p_σ(0))), so "
            "E_pσ[Asym_U] diverges logarithmically; halving the spacing adds ≈ 1.5e-5·(ε/1e-3) "
            "(< 0.5 %). s_C is not exactly conservative (μ is not radial) but its ten-fold "
            "symmetry "
            "makes the skew part vanish to round-off near the origin. For the exact field (δ = 0), "
            "p_σ·Asym_U ∝ εμ‖x‖²/σ⁴ far out, so E_pσ[Asym_U] would be dominated by μ's ring where "
            "p_σ ≈ e^-450 — not a local measure; hence the sampled field is reported.",
            f"Points stay inside the target after first reaching it: {stays}. With Eq. A6 exact "
            f"(δ = 0) the sampler gives {', '.join(exact)} for every ε > 0 and both fields: at "
            "(−2, −2) c(x) ≈ e^192, so the first step throws the points beyond ‖x‖ ≈ 1e80.",
            "", "## L_ESM check (Proposition 3)", "",
            "| ε | quadrature, δ = 0 | naive MC over p_σ, δ = 0 | quadrature, δ as sampled | "
            "ratio sampled/ε |", "|---|---|---|---|---|"]
    out += [f"| {q[0]:g} | {q[1]:.6g} | {q[2]:.3g} | {q[3]:.4g} | {q[3] / q[0]:.4f} |"
            for q in esm_rows]
    out += ["", f"Quadrature: ∫p_σ·½‖s − ∇log p_σ‖² by a 1000² midpoint rule on [−10, 10]² in log "
            "space (the integrand is ε·μ for δ = 0, so it checks Proposition 3 up to the μ-mass "
            f"outside the box). Naive MC: {args.mc_samples} draws x ~ p_σ of the black-box "
            "½‖s(x) + x/σ²‖²; its integrand ε·μ/p_σ has infinite variance under p_σ and the draws "
            "never reach μ's ring, so it is off by orders of magnitude — Monte Carlo over p_σ "
            "cannot verify L_ESM here. With the official floor δ = 1e-8 the field actually sampled "
            "has L_ESM ≈ 0.3 % of the nominal ε (c is capped wherever ‖x‖²p_σ < δ, i.e. "
            "‖x‖ ≳ 0.64, where almost all of μ lies); s_U and s_C still share the same L_ESM "
            "(|c u| is identical), so the comparison remains at equal error.",
            "", "## Official weighting (for comparability)", "",
            "Σ over the 20×20 grid linspace(−3, 3)² of p_σ(x)·m(x), not normalised (the official "
            "code; its value is dominated by the four nodes at (±0.158, ±0.158)).", "",
            "| ε | Asym s_U | Asym s_C | NAsym s_U | NAsym s_C |", "|---|---|---|---|---|"]
    out += [f"| {r['eps']:g} | {e(r['gasym_U'])} | {e(r['gasym_C'])} | {e(r['gnasym_U'])} | "
            f"{e(r['gnasym_C'])} |" for r in rows]
    out += ["", "## Comparison with the paper", "", PAPER_NOTE,
            "", f"![trajectories](qcsgm_motivation.png) — ε = {args.plot_eps:g}, s_C (left) and "
            "s_U (right); arrows: field normalised by its maximum norm; dashed: target disc.", ""]
    return "\n".join(out)


PAPER_NOTE = (
    "The numbers of the paper's Fig. 1 table are not in the available text "
    "(`shared/papers/qcsgm_paper.md` and the poster keep only the caption), so no digit-for-digit"
    " comparison is possible. The paper's claims are reproduced qualitatively: at the same ε the "
    "rotational s_U needs more NFE than the radial s_C at every ε > 0, and the gap widens with ε;"
    " Asym and NAsym are > 0 and grow ∝ ε for s_U and are ≈ 0 for s_C. Mechanism (per step, where"
    " c ≫ 0): s_C scales x by |1 − α/σ² + αc| while s_U scales ‖x‖ by sqrt((1 − α/σ²)² + (αc)²), "
    "never smaller while α_i/σ² > 1 (the first 223 steps). Near μ's ring the capped c = "
    "sqrt(2εμ/δ) ≈ 45–100 (ε = 0.5–2.25e-3) makes the s_U factor 0.6–1.3, so for large ε its "
    "points circle at radius 2–4 until α decays. The exact NFE depends on the start points, the "
    "floor δ and the target radius, none of which the paper states (δ and the start distribution "
    "come from the official code, see the module docstring).")


if __name__ == "__main__":
    main()
