"""Counter-based noise: every random number is a pure function of (row key, site, position, feature).

Why not ``torch.randn(generator=...)``? A stateful generator hands out numbers in the order they
are asked for, so a row's noise would depend on the batch it sits in, on its place in that batch
and on how many forward calls ran before. Here each value is a hash of its coordinates instead:

* the *row key* (64 bits, derived from configuration, prompt and seed),
* the *site* (a 32-bit hash of the canonical site name),
* the token's *position in its own sequence* (left padding excluded), and
* the feature index,

so the noise a prompt receives is identical at batch size 1, 4 or 16, in any order, after a
resume, with or without the KV cache (a cached prompt token and a recomputed one get the same
draw), and on CPU or GPU (integer arithmetic is exact everywhere).

The mixer is MurmurHash3's 32-bit finaliser, evaluated in int64 with explicit 32-bit masking.
A (row, position) hash is computed once per forward and a (site, feature) table once per site,
so each value costs one more finaliser; uniforms take its top 23 bits (exact in float32, never 0
or 1) and are turned into normal or Laplace draws by inverting the CDF. During decoding the
draws of all sites of equal width are computed in one pass (see :mod:`safestress.perturb.noise`).
``tests/test_rng.py`` checks the torch implementation against a pure-Python reference and the output
against N(0,1) / Laplace with Kolmogorov–Smirnov tests.
"""

from __future__ import annotations

import functools
import hashlib
import math

import torch

MASK32 = 0xFFFFFFFF
_C1 = 0x85EBCA6B
_C2 = 0xC2B2AE35
_GOLDEN = 0x9E3779B1
_FEATURE_MUL = 0x27D4EB2F
_STREAM_MUL = 0x165667B1


def fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3 finaliser on int64 tensors holding 32-bit values (wrap-around then mask)."""
    x = x ^ (x >> 16)
    x = (x * _C1) & MASK32
    x = x ^ (x >> 13)
    x = (x * _C2) & MASK32
    return x ^ (x >> 16)


_C1_I32 = _C1 - (1 << 32)
_C2_I32 = _C2 - (1 << 32)


def to_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 tensor of 32-bit values -> int32 with the same bits (two's complement)."""
    return (x - ((x >= (1 << 31)).to(torch.int64) << 32)).to(torch.int32)


def fmix32_i32(x: torch.Tensor) -> torch.Tensor:
    """:func:`fmix32` on int32 tensors: wrapping multiplies, logical shifts by masking.

    Same bits as the int64 version (checked in the tests) at a fifth of the cost: this is the
    hot loop of every noisy forward.
    """
    return fmix32_i32_(x.clone())


def fmix32_i32_(x: torch.Tensor) -> torch.Tensor:
    """In-place :func:`fmix32_i32` with one scratch tensor: large fresh allocations cost more
    than the arithmetic (page faults), so the hot path reuses its buffers."""
    t = torch.bitwise_right_shift(x, 16).bitwise_and_(0xFFFF)
    x.bitwise_xor_(t).mul_(_C1_I32)
    torch.bitwise_right_shift(x, 13, out=t).bitwise_and_(0x7FFFF)
    x.bitwise_xor_(t).mul_(_C2_I32)
    torch.bitwise_right_shift(x, 16, out=t).bitwise_and_(0xFFFF)
    return x.bitwise_xor_(t)


def fmix32_py(x: int) -> int:
    """Pure-Python reference of :func:`fmix32` (used by the tests)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * _C1) & MASK32
    x ^= x >> 13
    x = (x * _C2) & MASK32
    return x ^ (x >> 16)


def name_hash32(name: str) -> int:
    """A stable 32-bit hash of a string (site names, salts); Python's ``hash`` is salted per process."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def key_from_text(*parts: object) -> int:
    """A 64-bit row key from any parts (configuration salt, prompt text, seed)."""
    joined = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(joined.encode()).digest()[:8], "little")


def split_keys(keys: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """64-bit keys -> ``[B, 2]`` int64 tensor of their 32-bit halves."""
    return torch.tensor([[k & MASK32, (k >> 32) & MASK32] for k in keys], dtype=torch.int64, device=device)


def row_position_hash(keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` 32-bit hashes of (row key, token position); shared by every site of a forward."""
    row = fmix32(keys[:, 0] ^ fmix32(keys[:, 1]))  # [B]
    return to_int32(fmix32((row[:, None] + positions * _GOLDEN) & MASK32))


@functools.lru_cache(maxsize=4096)
def feature_table(site: int, n_features: int, stream: int, device: str) -> torch.Tensor:
    """``[n_features]`` 32-bit hashes (as int32) of (site, stream, feature); cached, computed once per site."""
    feats = torch.arange(n_features, dtype=torch.int64, device=device)
    mixed = fmix32_py(site ^ ((stream * _STREAM_MUL) & MASK32))
    return to_int32(fmix32(((feats * _FEATURE_MUL) & MASK32) ^ mixed))


def hashed_bits(rowpos: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """32-bit hashes ``[..., B, T, F]`` of every (row, position) × (site, feature) pair.

    ``table`` may be ``[F]`` (one site) or ``[S, 1, 1, F]`` (several sites of equal width at once).
    """
    return fmix32_i32_(rowpos[..., :, :, None] ^ table)


def signed_unit(bits: torch.Tensor) -> torch.Tensor:
    """Map hashes to v = 2u − 1 in (−1, 1), u uniform on a 2^-23 grid; exact in float32.

    Consumes (overwrites) ``bits``.
    """
    # (k + 0.5)·2^-22 − 1 computed as k·2^-22 + (2^-23 − 1): one pass fewer, same bits for every k.
    return bits.bitwise_right_shift_(9).bitwise_and_(0x7FFFFF).to(torch.float32).mul_(2.0**-22).add_(2.0**-23 - 1.0)


def normal_from_signed(v: torch.Tensor) -> torch.Tensor:
    """N(0, 1) by inverting the normal CDF: √2·erfinv(2u − 1) (in place; tails reach ±5.3σ)."""
    return v.erfinv_().mul_(math.sqrt(2.0))


def laplace_from_signed(v: torch.Tensor) -> torch.Tensor:
    """Laplace with unit standard deviation (scale 1/√2) by inverting its CDF.

    Computed in float64 so that vectorised and scalar code paths of ``log1p`` (which may differ
    in the last bit) agree after rounding to float32.
    """
    d = v.double()
    return (-torch.sign(d) * torch.log1p(-d.abs()) / math.sqrt(2.0)).to(torch.float32)


def uniform_from(rowpos: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Uniform(0, 1) float32 ``[B, T, F]`` (open interval)."""
    return signed_unit(hashed_bits(rowpos, table)).add_(1.0).mul_(0.5)


def uniform(keys: torch.Tensor, site: int, positions: torch.Tensor, n_features: int, stream: int = 0) -> torch.Tensor:
    """Uniform(0, 1) ``[B, T, n_features]`` for row ``keys`` ``[B, 2]`` at ``positions`` ``[B, T]``."""
    table = feature_table(site, n_features, stream, str(keys.device))
    return uniform_from(row_position_hash(keys, positions), table)


def _signed(keys: torch.Tensor, site: int, positions: torch.Tensor, n_features: int) -> torch.Tensor:
    table = feature_table(site, n_features, 0, str(keys.device))
    return signed_unit(hashed_bits(row_position_hash(keys, positions), table))


def standard_normal(keys: torch.Tensor, site: int, positions: torch.Tensor, n_features: int) -> torch.Tensor:
    """N(0, 1) ``[B, T, n_features]``: exactly the draws the noise perturbations add (before σ)."""
    return normal_from_signed(_signed(keys, site, positions, n_features))


def standard_laplace(keys: torch.Tensor, site: int, positions: torch.Tensor, n_features: int) -> torch.Tensor:
    return laplace_from_signed(_signed(keys, site, positions, n_features))


def standard_gumbel(keys: torch.Tensor, step: torch.Tensor, n_features: int) -> torch.Tensor:
    """Gumbel(0, 1) noise ``[B, n_features]`` for seeded, batch-independent sampling (Gumbel-max)."""
    u = uniform(keys, name_hash32("sampling"), step[:, None], n_features, stream=1)[:, 0, :]
    return -torch.log(-torch.log(u))
