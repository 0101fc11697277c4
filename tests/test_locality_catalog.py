"""The check-locality catalogue: modules register their own checks (registration, not a list to edit)."""

import pytest

from neurolearn._validate import ParameterError
from neurolearn.locality import catalog as cat
from neurolearn.locality.report import builtin_checks


def test_a_registered_check_is_run_by_check_locality():
    def factory(s):
        raise AssertionError("not called here")

    n_before = len(builtin_checks())
    entry = cat.register_check(factory, 2, False, {"weight transport"}, label="test entry")
    try:
        rows = builtin_checks()
        assert len(rows) == n_before + 1
        assert any(f is factory and n == 2 and not local and kinds == {"weight transport"} for f, n, local, kinds in rows)
    finally:
        cat._CATALOG.remove(entry)
    assert all(f is not factory for f, *_ in builtin_checks())  # removed again: the opposite case


@pytest.mark.parametrize("args, match", [(("x", 2, True), "factory"), ((len, 0, True), "n_populations"),
                                         ((len, 2, True, {"weight transport"}), "expected_kinds")])
def test_register_check_rejects_bad_entries(args, match):
    with pytest.raises(ParameterError, match=match):
        cat.register_check(*args)
