"""Activation approximations checked against their definitions on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import safestress as ss
from safestress.approx import polynomial as poly
from safestress.approx.calibrate import site_stats
from safestress.approx.quantize import GAMMAS, fake_quant, step_size, weight_absmax
from safestress.perturb import make_perturbation
from safestress.sites import capture, site_hooks
from safestress.sites.adapters import consumers, input_columns

from .test_cli import cli

SILU = poly.numpy_fn(torch.nn.SiLU())


def test_remez_reproduces_known_minimax_polynomials():
    # best linear fit of x² on [−1, 1] is 1/2 (error 1/2); best quadratic fit of |x| is x² + 1/8
    x = np.linspace(-1, 1, 20001)
    line = np.polynomial.chebyshev.chebval(x, poly.fit_minimax(lambda x: x**2, -1, 1, 1))
    assert np.allclose(line, 0.5, atol=1e-9)
    quad = np.polynomial.chebyshev.chebval(x, poly.fit_minimax(np.abs, -1, 1, 2))
    assert np.allclose(quad, x**2 + 0.125, atol=1e-6)
    # degree-3 minimax error of exp on [−1, 1] is 0.005529 (a classic table value)
    err = np.abs(np.exp(x) - np.polynomial.chebyshev.chebval(x, poly.fit_minimax(np.exp, -1, 1, 3))).max()
    assert err == pytest.approx(0.005529, abs=2e-6)


@pytest.mark.parametrize("degree", [2, 4, 6])
def test_minimax_beats_least_squares_and_equioscillates(degree):
    x = np.linspace(-3, 3, 100001)
    t = x / 3
    lsq = np.abs(SILU(x) - np.polynomial.chebyshev.chebval(t, poly.fit_lsq(SILU, -3, 3, degree)))
    err = SILU(x) - np.polynomial.chebyshev.chebval(t, poly.fit_minimax(SILU, -3, 3, degree))
    assert np.abs(err).max() < lsq.max()
    # the error reaches its maximum, with alternating signs, at least degree + 2 times
    peaks = [i for i in poly._alternating_extrema(err) if abs(err[i]) > 0.999 * np.abs(err).max()]
    assert len(peaks) >= degree + 2


def test_presets_max_error_on_their_intervals():
    act = torch.nn.SiLU()
    fitted = poly.approximation(poly.PolyParams(preset="bumblebee"), act)
    pieces = fitted.piece_errors(SILU)
    assert [(lo, hi, d) for lo, hi, d, _ in pieces] == [(-5.0, -1.97, 3), (-1.97, 3.0, 6)]
    for lo, hi, _deg, err in pieces:  # the error each piece reports is its true max error on its interval
        x = np.linspace(lo, hi, 300001)[:-1]  # at hi the next piece takes over
        direct = np.abs(fitted(torch.from_numpy(x)).numpy() - SILU(x)).max()
        assert err == pytest.approx(direct, rel=1e-3) and err < 5e-3
    # tails: 0 on the left, identity on the right, exactly
    x = torch.tensor([-9.0, -5.5, 3.5, 12.0])
    assert torch.equal(fitted(x), torch.tensor([0.0, 0.0, 3.5, 12.0]))
    quad = poly.approximation(poly.PolyParams(preset="mpcformer-quad"), act)
    assert torch.allclose(quad(torch.tensor([0.0, 2.0])), torch.tensor([0.5, 1.5]))


def test_custom_layout_and_bad_params():
    fitted = poly.approximation(poly.PolyParams(preset="custom", segments="-4,0,4", degrees="2,3"), torch.nn.SiLU())
    assert [p[2] for p in fitted.piece_errors(SILU)] == [2, 3]
    for bad in ({"preset": "custom"}, {"preset": "custom", "segments": "0,1", "degrees": "2,2"}, {"segments": "1,2"}):
        with pytest.raises(ss.SafestressError):
            make_perturbation("polynomial", **bad)


def test_polynomial_hook_replaces_the_activation_and_is_removed(tiny_llama):
    model = tiny_llama.model
    ids = torch.tensor([[5, 9, 30, 41, 77, 12]])
    act = model.model.layers[1].mlp.act_fn
    seen = {}
    with torch.no_grad():
        clean = model(ids).logits
        pert = make_perturbation("polynomial", preset="bolt")
        with ss.perturbed(tiny_llama, pert, "blocks.1.mlp.act"):
            handle = act.register_forward_hook(lambda _m, args, out: seen.update(x=args[0], y=out))
            try:
                changed = model(ids).logits
            finally:
                handle.remove()
        expected = poly.approximation(pert.params, torch.nn.SiLU())(seen["x"])
        assert torch.allclose(seen["y"], expected)  # the polynomial's output is what the model used
        assert not torch.allclose(seen["y"], torch.nn.functional.silu(seen["x"]))
        assert not torch.allclose(clean, changed)
        assert torch.equal(model(ids).logits, clean)  # removed on exit
    with (
        pytest.raises(ss.SafestressError, match=r"mlp\.act"),
        ss.perturbed(tiny_llama, make_perturbation("polynomial"), "blocks.0.resid_post"),
    ):
        pass


@pytest.fixture(scope="module")
def calib_prompts(tiny_llama):
    from safestress.approx.calibrate import calibration_prompts

    return calibration_prompts(tiny_llama, "harmless-val", 16)


def _encode(lm, prompts):
    return [lm.tokenizer(p, return_tensors="pt", add_special_tokens=False)["input_ids"] for p in prompts]


def test_calibration_is_cached_and_never_repeated(tiny_llama, monkeypatch):
    calls = []
    handle = tiny_llama.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        first = site_stats(tiny_llama, ["blocks.0.ln1.out", "blocks.1.mlp.act"], n=8)
        n_first = len(calls)
        again = make_perturbation("teal", sparsity=0.25, calib_n=8)
        again.prepare(tiny_llama, ["blocks.0.ln1.out", "blocks.1.mlp.act"])  # same sites, data, n
        assert n_first == 8 and len(calls) == n_first
        assert torch.equal(again.stats["blocks.1.mlp.act"].rows, first["blocks.1.mlp.act"].rows)
        site_stats(tiny_llama, ["blocks.0.ln1.out", "blocks.1.attn.z"], n=8)  # one new site: one pass
        assert len(calls) == n_first + 8
        site_stats(tiny_llama, ["blocks.0.ln1.out"], n=9)  # other data: measured again
        assert len(calls) == n_first + 17
    finally:
        handle.remove()


@pytest.mark.parametrize("target", [0.1, 0.25, 0.5, 0.9])
def test_teal_reaches_its_target_sparsity(tiny_llama, calib_prompts, target):
    """Each site's calibrated threshold zeroes the target share of its entries (±1 point).

    Sites are sparsified one at a time: with all of them at once, later sites see inputs that
    earlier sparsification has shifted, so their realised sparsity drifts from the target.
    """
    sites = tiny_llama.sites("blocks.*.ln1.out,blocks.*.attn.z,blocks.*.ln2.out,blocks.*.mlp.act")
    encoded = _encode(tiny_llama, calib_prompts)
    for site in sites:
        pert = make_perturbation("teal", sparsity=target, calib_n=16)
        with ss.perturbed(tiny_llama, pert, [site]), capture(tiny_llama.model, [site]) as seen, torch.no_grad():
            for ids in encoded:
                tiny_llama.model(ids)
        x = torch.cat([t[0] for t in seen[site]])
        assert abs(float((x == 0).float().mean()) - target) <= 0.01, site


def test_cats_thresholds_the_gate_activation(tiny_llama, calib_prompts):
    pert = make_perturbation("cats", sparsity=0.5, calib_n=16)
    act = tiny_llama.model.model.layers[0].mlp.act_fn
    outs = []
    with ss.perturbed(tiny_llama, pert, "blocks.*.mlp.act"), torch.no_grad():
        handle = act.register_forward_hook(lambda _m, _a, out: outs.append(out[0]))
        try:
            for ids in _encode(tiny_llama, calib_prompts):
                tiny_llama.model(ids)
        finally:
            handle.remove()
    share = float((torch.cat(outs) == 0).float().mean())
    assert abs(share - 0.5) <= 0.01


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantization_error_is_bounded_by_the_step(bits, symmetric):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(64, 256, generator=g) * torch.rand(64, 1, generator=g) * 5
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    q = fake_quant(x, lo, hi, bits, symmetric)
    step = step_size(lo, hi, bits, symmetric)
    err = (q - x).abs()
    bound = step / 2 if symmetric else step  # asymmetric: the rounded zero point can cost half a step more
    assert bool((err <= bound * (1 + 1e-5)).all())
    levels = ((q - q.amin(-1, keepdim=True)) / step).round()
    assert int(levels.max()) <= 2**bits - 1


def test_per_token_quant_hook_on_the_model(tiny_llama):
    ids = torch.tensor([[5, 9, 30, 41, 77, 12, 3, 8]])
    seen = []
    pert = make_perturbation("quant", bits=4)
    with (
        ss.perturbed(tiny_llama, pert, "blocks.0.mlp.act"),
        torch.no_grad(),
        site_hooks(tiny_llama.model, {"blocks.0.mlp.act": lambda x: seen.append(x.clone())}),
    ):
        tiny_llama.model(ids)
    for row in seen[0][0]:
        assert row.unique().numel() <= 2**4 - 1  # symmetric 4-bit: 15 levels


def test_smoothquant_folding_leaves_the_unquantized_output_unchanged(tiny_llama):
    """SmoothQuant rewrites W·x as (W·diag(s))·(x/s): without quantization the output is unchanged,
    and with it the hook's s ⊙ Q(x/s) equals the folded model's (W·diag(s))·Q(x/s)."""
    model = tiny_llama.model
    sites = tiny_llama.sites("blocks.*.ln1.out,blocks.*.attn.z,blocks.*.ln2.out,blocks.*.mlp.act")
    sq = make_perturbation("smoothquant", bits=4, alpha=0.5, calib_n=8)
    sq.prepare(tiny_llama, sites)
    scales = {s: sq.scales(model, s) for s in sites}
    assert all(bool((sc > 0).all()) and not torch.allclose(sc, torch.ones_like(sc)) for sc in scales.values())
    ids = torch.tensor([[5, 9, 30, 41, 77, 12, 3, 8]])
    originals = {id(m): m.weight.detach().clone() for s in sites for m in consumers(model, s)}

    quantizers = {s: sq.site_quantizer(model, s) for s in sites}  # before any weight is folded

    def folded(quantize: bool) -> torch.Tensor:
        for s in sites:
            for m in consumers(model, s):
                input_columns(m).data.mul_(scales[s])
        fns = {}
        for s in sites:
            if quantize:
                fns[s] = lambda x, s=s: quantizers[s](x) / scales[s]  # = Q(x/s): the folded model's input
            else:
                fns[s] = lambda x, s=s: x / scales[s]
        try:
            with site_hooks(model, fns), torch.no_grad():
                return model(ids).logits
        finally:
            for s in sites:
                for m in consumers(model, s):
                    m.weight.data.copy_(originals[id(m)])

    with torch.no_grad():
        clean = model(ids).logits
        with ss.perturbed(tiny_llama, sq, sites):
            hooked = model(ids).logits
    assert torch.allclose(folded(False), clean, atol=1e-5)
    assert torch.allclose(folded(True), hooked, atol=1e-4)
    assert not torch.allclose(hooked, clean, atol=1e-3)
    assert torch.equal(model(ids).logits, clean)  # weights untouched, hooks gone
    qkv = torch.cat([input_columns(m).detach() for m in consumers(model, sites[0])])  # ln1.out feeds q, k and v
    assert qkv.shape[0] > 64 and torch.allclose(weight_absmax(model, sites[0]), qkv.abs().amax(0))


def test_omniquant_clipping_lowers_the_output_error(tiny_llama):
    sites = tiny_llama.sites("blocks.*.mlp.act")
    ids = torch.tensor([[5, 9, 30, 41, 77, 12, 3, 8, 20, 90]])
    with torch.no_grad():
        clean = tiny_llama.model(ids).logits
        errors = {}
        for name in ("quant", "omniquant"):
            pert = make_perturbation(name, bits=4, granularity="per-tensor", calib_n=16)
            with ss.perturbed(tiny_llama, pert, sites):
                errors[name] = float((tiny_llama.model(ids).logits - clean).pow(2).mean())
    assert set(pert.gamma) == set(sites) and all(g in GAMMAS for g in pert.gamma.values())
    assert min(pert.gamma.values()) < 1.0  # 4-bit ranges are worth clipping
    assert errors["omniquant"] < errors["quant"]


def test_calibrating_perturbation_needs_a_loaded_model(tiny_llama):
    with (
        pytest.raises(ss.SafestressError, match="loaded model"),
        ss.perturbed(tiny_llama.model, make_perturbation("teal", sparsity=0.5), "blocks.0.mlp.act"),
    ):
        pass


def test_run_sweeps_a_strength_that_is_not_a_row_parameter(tiny_dir, prompts_csv, tmp_path):
    db = tmp_path / "r.db"
    args = ["run", "--model", str(tiny_dir), "--dataset", f"csv:{prompts_csv}:text", "--perturb", "teal"]
    args += ["--strength", "0,0.5", "--sites", "blocks.*.mlp.act", "--param", "calib_n=4", "--max-new-tokens", "4"]
    res = cli(*args, "--store", str(db))
    assert res.returncode == 0, res.stderr
    import sqlite3

    labels = {r[0] for r in sqlite3.connect(db).execute("SELECT json_extract(spec, '$.label') FROM configs")}
    assert labels == {"clean", "teal sparsity=0.5 @ blocks.*.mlp.act"}
    again = cli(*args, "--store", str(db))
    assert again.returncode == 0 and "0 rows generated" in again.stderr
