"""Adding a perturbation touches two places: its module and one registration line. Nothing else in
the flow names it: the sweep builds it at each strength (Perturbation.at_strength), labels and
hashes its conditions, and the report summarises them, as for the built-in ones."""

from __future__ import annotations

import sys
import textwrap

import pytest

TOY = '''
"""A toy perturbation: scale the activation down by ``factor`` (0 = unchanged)."""

from safestress.perturb import Params, Perturbation


class DampenParams(Params):
    factor: float = 0.0


class Dampen(Perturbation):
    name = "dampen"
    Params = DampenParams
    strength = "factor"  # what --strength sets

    def is_identity(self) -> bool:
        return self.params.factor == 0

    def site_fn(self, site, ctx):
        keep = 1.0 - self.params.factor
        return lambda x: x * keep
'''


@pytest.fixture
def toy_perturbation(tmp_path, monkeypatch):
    """The toy's module on the path, and its one registration line, undone after the test."""
    (tmp_path / "toy_dampen.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    from safestress.perturb import PERTURBATIONS

    PERTURBATIONS.register("dampen", "toy_dampen:Dampen")  # the one registration line
    yield "dampen"
    PERTURBATIONS._entries.pop("dampen", None)
    PERTURBATIONS._facts.pop("dampen", None)
    sys.modules.pop("toy_dampen", None)


def test_a_new_perturbation_sweeps_end_to_end_from_its_module_and_one_line(toy_perturbation, tiny_dir, tmp_path):
    import safestress as ss
    from safestress.report import summarize

    csv = tmp_path / "p.csv"
    csv.write_text("id,text\n" + "".join(f"{i},prompt number {i}\n" for i in range(4)))
    cfg = ss.build_config(
        models=[str(tiny_dir)],
        dataset=f"csv:{csv}:text",
        perturb=toy_perturbation,
        strengths=[0, 0.5, 0.9],
        sites=["blocks.*.resid_post"],
        max_new_tokens=4,
        store=str(tmp_path / "s.db"),
    )
    plan = ss.plan_sweep(cfg)
    labels = sorted({c.spec["label"] for c in plan.conditions})
    assert labels == ["clean", "dampen factor=0.5 @ blocks.*.resid_post", "dampen factor=0.9 @ blocks.*.resid_post"]
    assert {c.perturbation.params.factor for c in plan.conditions if not c.clean} == {0.5, 0.9}
    with ss.Store(cfg.store) as store:
        counts = ss.execute(plan, store)
        frame = ss.labelled(plan.frame(store), store)
    assert counts["generated"] == 12
    texts = frame.drop_duplicates("key").groupby("strength")["response"].apply(tuple)
    assert texts[0.9] != texts[0.0]  # the hooks ran: a 90% damped residual stream changes the output
    rates, _ = summarize(frame)
    assert [r.strength for r in rates] == [0.0, 0.5, 0.9] and rates[2].condition.startswith("dampen")


def test_strengths_is_the_setting_and_sigma_its_alias(tmp_path):
    from safestress.config import build_config
    from safestress.errors import SafestressError

    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("model: m\nsigma: [0.2, 0, 0.1]\n")
    assert build_config(yaml_file).strengths == [0.0, 0.1, 0.2]
    assert build_config(yaml_file, strengths=[0.5]).strengths == [0.5]  # the flag wins over the file's alias
    both = tmp_path / "both.yaml"
    both.write_text("model: m\nsigma: [0.1]\nstrengths: [0.2]\n")
    with pytest.raises(SafestressError, match="'strengths' or its alias 'sigma'"):
        build_config(both)
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: m\nstrenghts: [0.1]\n")
    with pytest.raises(SafestressError, match="did you mean 'strengths'"):
        build_config(typo)
