"""The counter-based noise generator: exact integer hashing and the right distributions."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from safestress.perturb import rng


def test_torch_hash_matches_python_reference():
    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF]
    got = rng.fmix32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [rng.fmix32_py(v) for v in values]


def test_int32_hash_has_the_same_bits_as_the_int64_one():
    values = torch.randint(0, 2**32, (3, 7, 1001), generator=torch.Generator().manual_seed(0))
    expected = rng.fmix32(values)
    got = rng.fmix32_i32(rng.to_int32(values)).to(torch.int64) & rng.MASK32
    assert torch.equal(got, expected)


def test_signed_unit_is_exact_on_every_23_bit_value():
    k = torch.arange(2**23, dtype=torch.int32)
    v = rng.signed_unit(k << 9)
    expected = (k.double() + 0.5) * 2.0**-22 - 1.0
    assert torch.equal(v.double(), expected) and v.abs().max() < 1


def _draws(kind, n_rows=64, n_feats=512):
    keys = rng.split_keys([rng.key_from_text("k", i) for i in range(n_rows)])
    pos = torch.arange(3).expand(n_rows, 3)
    fn = rng.standard_normal if kind == "normal" else rng.standard_laplace
    return fn(keys, rng.name_hash32("blocks.0.resid_post"), pos, n_feats)


def test_normal_draws_are_standard_normal():
    z = _draws("normal").flatten().double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01


def test_laplace_draws_have_unit_std():
    z = _draws("laplace").flatten().double().numpy()
    assert stats.kstest(z, "laplace", args=(0, 1 / np.sqrt(2))).pvalue > 1e-3


def test_neighbouring_features_positions_and_sites_are_uncorrelated():
    keys = rng.split_keys([7, 8])
    pos = torch.arange(64).expand(2, 64)
    a = rng.standard_normal(keys, 1, pos, 256)
    b = rng.standard_normal(keys, 2, pos, 256)
    for x, y in [(a[..., :-1], a[..., 1:]), (a[:, :-1], a[:, 1:]), (a, b), (a[0], a[1])]:
        r = np.corrcoef(x.flatten().numpy(), y.flatten().numpy())[0, 1]
        assert abs(r) < 0.03


def test_a_rows_noise_does_not_depend_on_its_batch():
    key = rng.key_from_text("row", "prompt", 0)
    others = [rng.key_from_text("x", i) for i in range(5)]
    alone = rng.standard_normal(rng.split_keys([key]), 3, torch.tensor([[4, 5]]), 32)
    batch = rng.standard_normal(
        rng.split_keys([*others[:2], key, *others[2:]]), 3, torch.tensor([[0, 1]] * 2 + [[4, 5]] + [[9, 10]] * 3), 32
    )
    assert torch.equal(alone[0], batch[2])
