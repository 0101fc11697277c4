"""``neurolearn check-locality``: every built-in rule and credit method, checked, as a table.

Each entry is a factory ``sizes -> Checkable`` so Hypothesis draws (and shrinks) the network sizes,
and the verdict the design expects (DESIGN.md section 4): backprop through two layers is non-local
(weight transport), and so is the mini-batch homeostasis of the self-defined target (a batch mean:
batch statistics), whose sequential mode is local under a contract declaring the batch a sequence; the kWTA
Hebbian rule, the delta rule, the contrastive Hebbian rule,
equilibrium propagation and the self-defined target with the delta rule (winners delivered by the KWTA circuit) are local.
Then the whole training steps of :mod:`neurolearn.locality.reference_steps`, written from the papers'
equations with the hidden errors computed inside the checked function: feedback alignment (two and three
layers), direct feedback alignment and difference target propagation are local; sign-symmetric feedback
and backprop are weight transport. A row is as expected when the verdict is and every expected
violation kind is named.
"""

from __future__ import annotations

import argparse
import time

from .checker import Report, check


def builtin_checks() -> list:
    """``(factory, n_populations, expected_local, expected_kinds)`` for every built-in rule, credit method and
    reference whole step (:func:`neurolearn.locality.reference_steps.builtin_steps`), then every check a
    module registered (:func:`neurolearn.locality.catalog.register_check`)."""
    from ..credit import Backprop, EquilibriumProp
    from ..objectives import self_defined_delta_checkable
    from ..circuits import homeostasis_checkable
    from ..plasticity import ContrastiveHebbian, Delta, KWTAHebbian
    from .catalog import catalog
    from .reference_steps import builtin_steps

    return [
        (lambda s: homeostasis_checkable(s[0], "batch"), 1, False, {"batch statistics"}),
        (lambda s: homeostasis_checkable(s[0], "sequential"), 1, True, set()),
        (lambda s: KWTAHebbian().checkable(s[0], s[1]), 2, True, set()),
        (lambda s: Delta().checkable(s[0], s[1]), 2, True, set()),
        (lambda s: ContrastiveHebbian().checkable(s[0], s[1]), 2, True, set()),
        (lambda s: self_defined_delta_checkable(s[0], s[1], k=1), 2, True, set()),
        (lambda s: Backprop().checkable(s), 2, True, set()),
        (lambda s: Backprop().checkable(s), 3, False, {"weight transport"}),
        (lambda s: EquilibriumProp().checkable(s), 2, True, set()),
        (lambda s: EquilibriumProp().checkable(s), 3, True, set()),
    ] + builtin_steps() + [e.as_tuple() for e in catalog()]


#: the shrink budget of each check the command runs (smaller than ``check``'s default: the table is the point)
SHRINK_CALLS = 150


def run_builtin_checks(seed: int = 0, max_examples: int = 20, max_shrink_calls: int = SHRINK_CALLS) -> list[tuple[Report, bool]]:
    """Check every built-in; returns ``(report, expected_local)`` pairs, ``report.expected_kinds`` set on each."""
    out = []
    for f, n, expected, kinds in builtin_checks():
        report = check(f, n_populations=n, seed=seed, max_examples=max_examples, max_shrink_calls=max_shrink_calls)
        report.expected_kinds = set(kinds)
        out.append((report, expected))
    return out


def as_expected(report: Report, expected_local: bool) -> bool:
    """The verdict is ``expected_local`` and every kind in ``report.expected_kinds`` is named."""
    return report.local == expected_local and set(getattr(report, "expected_kinds", ())) <= report.kinds


def format_table(results) -> str:
    """Rule, contract, verdict (and whether it is the expected one), violations, time."""
    head = f"{'rule':<38}{'contract':<44}{'verdict':<11}{'expected':<10}{'time':>7}  violations"
    lines = [head, "-" * (len(head) + 20)]
    for report, expected in results:
        contract = "; ".join(sorted({c.describe() for c in report.contracts.values()}))
        verdict = "local" if report.local else "NON-LOCAL"
        ok = "yes" if as_expected(report, expected) else "NO"
        kinds = ", ".join(sorted(report.kinds)) or "-"
        lines.append(f"{report.name:<38}{contract[:43]:<44}{verdict:<11}{ok:<10}{report.seconds:>6.1f}s  {kinds}")
    return "\n".join(lines)


def main_check_locality(argv) -> int:
    """CLI: print the table (and the violations in full); exit 1 if a verdict is not the expected one."""
    ap = argparse.ArgumentParser(prog="neurolearn check-locality", description=__doc__.split("\n\n")[0])
    def at_least(low):
        def f(v):
            try:
                n = int(v)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {v!r}") from None
            if n < low:
                raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {v}")
            return n
        return f

    ap.add_argument("--seed", type=at_least(0), default=0, help="seed of the drawn states (>= 0)")
    ap.add_argument("--max-examples", type=at_least(1), default=20, help="states drawn per check (>= 1)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the checked states are tiny: more threads only add synchronisation
    t0 = time.perf_counter()
    results = run_builtin_checks(args.seed, args.max_examples)
    print(format_table(results))
    for report, _ in results:
        if not report.local:
            print()
            print(report)
    print(f"\n{len(results)} checks in {time.perf_counter() - t0:.1f} s")
    if args.json:
        from ..runs import write_json

        write_json(args.json, [{"rule": r.name, "local": r.local, "expected_local": e, "seconds": r.seconds,
                                "expected_kinds": sorted(r.expected_kinds), "as_expected": as_expected(r, e),
                                "violations": [str(v) for v in r.violations]} for r, e in results])
    return 0 if all(as_expected(r, e) for r, e in results) else 1
