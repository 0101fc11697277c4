"""docs/locality.md's STDP (time axis) and convolution (weight sharing) examples run as written, and its
whole-step table lists the reference steps check-locality runs, with the verdicts they get."""

from pathlib import Path

import pytest

from neurolearn.locality import check
from neurolearn.locality.reference_steps import builtin_steps

DOC = (Path(__file__).resolve().parents[1] / "docs" / "locality.md").read_text()


def _example(marker: str) -> str:
    start = DOC.index(marker)
    return DOC[start:DOC.index("```", start)]


@pytest.mark.parametrize("marker", ["# STDP over a time axis", "# A convolution with a shared kernel"])
def test_documented_examples_run(marker):
    exec(_example(marker), {})  # noqa: S102 - the documented example, run as written (its asserts are the test)


def test_documented_whole_step_table_matches_check_locality():
    table = _example("rule                                  contract")
    for factory, n, local, _ in builtin_steps():
        name = check(factory, n_populations=n, max_examples=1).name
        row = next(line for line in table.splitlines() if line.startswith(name))
        assert ("local " in row and "NON-LOCAL" not in row) == local, row
