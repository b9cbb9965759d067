"""Harmful-cluster drift: do harmful prompts' activations move toward the benign cluster?

The activation-approximation analysis found that under approximation errors the last-token
states of harmful prompts drift into the benign cluster, so the model no longer "sees" the
request as harmful. This measures it at one layer: the last-token residual stream
(``blocks.L.resid_post``) of harmful and benign prompts, clean and perturbed, and reports

- the distance between the harmful and benign centroids (Euclidean, clean vs perturbed),
- the share of harmful prompts that a logistic-regression probe fitted on the *clean*
  activations calls benign (clean vs perturbed) — the drift metric — with its test: the same
  prompts paired, exact McNemar and the Newcombe interval of the change,
- a 2-D PCA picture (axes fitted on the clean points).

Every prompt is its own forward with its own noise key (the one generation would use for seed
0), so the perturbation a prompt sees does not depend on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from safestress.perturb import rng
from safestress.perturb.base import Perturbation, perturbed
from safestress.sites import capture
from safestress.stats.paired import discordant, mcnemar_exact, newcombe_paired_ci


def last_token_states(
    lm: Any, prompts: list[str], layer: int, perturbation: Perturbation, sites: list[str]
) -> torch.Tensor:
    """[n, d] last-token ``blocks.{layer}.resid_post`` of each chat-formatted prompt."""
    from safestress.generation import row_key

    model = lm.ensure_weights()
    site = f"blocks.{layer}.resid_post"
    out = []
    device = next(model.parameters()).device
    with perturbed(lm, perturbation, sites) as state, torch.no_grad():
        for prompt in prompts:
            ids = lm.tokenizer(lm.format(prompt), return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
            state.ctx.reset(rng.split_keys([row_key(prompt, 0)], device))
            with capture(model, [site]) as seen:
                model(input_ids=ids, attention_mask=torch.ones_like(ids))
            out.append(seen[site][0][0, -1].float().cpu())
    return torch.stack(out)


def fit_probe(
    x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, steps: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression on standardised features (L-BFGS); returns (w, b) for raw x."""
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y.float()) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = (w / sd).detach()
    return w_raw, (b - (mu * w_raw).sum()).detach()


@dataclass
class DriftResult:
    layer: int
    n_harmful: int
    n_benign: int
    centroid_distance_clean: float
    centroid_distance_perturbed: float
    harmful_called_benign_clean: float  # share of harmful prompts the clean probe calls benign
    harmful_called_benign_perturbed: float
    benign_called_harmful_perturbed: float
    probe_train_accuracy: float
    # the test of the drift: the same harmful prompts called benign clean vs perturbed (paired),
    # exact McNemar and the Newcombe interval of the change in share
    drift_p: float = float("nan")
    drift_ci: tuple[float, float] = (float("nan"), float("nan"))


def drift(
    harmful_clean: torch.Tensor,
    benign_clean: torch.Tensor,
    harmful_pert: torch.Tensor,
    benign_pert: torch.Tensor,
    layer: int,
) -> DriftResult:
    """The drift metrics from clean and perturbed states (probe: harmful = 1)."""
    x = torch.cat([harmful_clean, benign_clean])
    y = torch.cat([torch.ones(len(harmful_clean)), torch.zeros(len(benign_clean))])
    w, b = fit_probe(x, y)

    def harmful(v: torch.Tensor) -> torch.Tensor:
        return (v @ w + b) > 0

    acc = float((harmful(x) == y.bool()).float().mean())
    before = [bool(v) for v in ~harmful(harmful_clean)]
    after = [bool(v) for v in ~harmful(harmful_pert)]
    return DriftResult(
        layer=layer,
        n_harmful=len(harmful_clean),
        n_benign=len(benign_clean),
        centroid_distance_clean=float((harmful_clean.mean(0) - benign_clean.mean(0)).norm()),
        centroid_distance_perturbed=float((harmful_pert.mean(0) - benign_pert.mean(0)).norm()),
        harmful_called_benign_clean=float((~harmful(harmful_clean)).float().mean()),
        harmful_called_benign_perturbed=float((~harmful(harmful_pert)).float().mean()),
        benign_called_harmful_perturbed=float(harmful(benign_pert).float().mean()),
        probe_train_accuracy=acc,
        drift_p=mcnemar_exact(*discordant(before, after)),
        drift_ci=newcombe_paired_ci(before, after),
    )


def change_text(result: DriftResult) -> str:
    """The change in the share of harmful prompts called benign, in points with its paired
    interval, e.g. ``+12.5 [+3.1, +21.0]``."""
    change = result.harmful_called_benign_perturbed - result.harmful_called_benign_clean
    lo, hi = result.drift_ci
    return f"{100 * change:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def measure_drift(
    lm: Any, perturbation: Perturbation, sites: list[str], layer: int, harmful: list[str], benign: list[str]
) -> tuple[DriftResult, dict[str, torch.Tensor]]:
    """Drift at ``layer`` (negative: from the last) of ``perturbation`` at ``sites``, with the four
    sets of states (harmful/benign × clean/perturbed) the picture is drawn from."""
    from safestress.perturb import Identity

    layer = layer % lm.n_layers
    states = {}
    for kind, prompts in (("harmful", harmful), ("benign", benign)):
        states[f"{kind} clean"] = last_token_states(lm, prompts, layer, Identity(), [])
        states[f"{kind} perturbed"] = last_token_states(lm, prompts, layer, perturbation, sites)
    result = drift(
        states["harmful clean"], states["benign clean"], states["harmful perturbed"], states["benign perturbed"], layer
    )
    return result, states


def pca_2d(fit_on: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Project ``fit_on`` and ``others`` on the top two principal axes of ``fit_on``."""
    mu = fit_on.mean(0)
    _, _, v = torch.pca_lowrank(fit_on - mu, q=2, center=False)
    return [(t - mu) @ v[:, :2] for t in (fit_on, *others)]


def plot_drift(result: DriftResult, states: dict[str, torch.Tensor], path: Any, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = torch.cat([states["harmful clean"], states["benign clean"]])
    names = list(states)
    projected = pca_2d(clean, *[states[n] for n in names])[1:]
    styles = {
        "harmful clean": ("tab:red", "o"),
        "benign clean": ("tab:blue", "o"),
        "harmful perturbed": ("tab:orange", "x"),
        "benign perturbed": ("tab:cyan", "x"),
    }
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, pts in zip(names, projected):
        color, marker = styles.get(name, ("gray", "."))
        ax.scatter(pts[:, 0], pts[:, 1], s=14, c=color, marker=marker, label=name, alpha=0.8)
    ax.set_xlabel("PC 1 (clean)")
    ax.set_ylabel("PC 2 (clean)")
    ax.set_title(
        f"{title}\nlayer {result.layer}: harmful called benign {100 * result.harmful_called_benign_clean:.0f}% → "
        f"{100 * result.harmful_called_benign_perturbed:.0f}%",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
