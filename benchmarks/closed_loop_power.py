"""How much logged data would the promotion rule need to see a challenger's gain? (docs/closed_loop.md section 14)

    .venv/bin/python benchmarks/closed_loop_power.py docs/closed_loop/on_3000x28_seed42_arm.json [--gain 0.10]

From the paired tests a `segone closed-loop` run recorded (`summary.promotion_tests`: challenger minus champion on the
same logged decisions, with the 95% interval the promotion rule reads), the spread of one decision's paired
difference, sigma = half-width / 1.96 x sqrt(n). A challenger that truly earns `gain` (a share of the champion's own
estimate a decision) is promoted when the lower bound of its interval is above zero; with n decisions that happens
with probability Phi(gain_value x sqrt(n) / sigma - 1.96). Printed per test: sigma, and the decisions (and ordinary
weeks of the run's own bank) needed for a 50% and an 80% chance, assuming the spread stays what it was (it scales
with 1/sqrt(n) for independent customers; decisions of one customer are clustered, so the figures are a lower
bound on what is needed)."""
from __future__ import annotations

import argparse
import json
import math
from statistics import NormalDist

Z = NormalDist().inv_cdf(0.975)


def needed(sigma: float, effect: float, power: float) -> int:
    """Decisions for P(lower bound > 0) = power when the true paired difference is `effect`."""
    return math.ceil(((Z + NormalDist().inv_cdf(power)) * sigma / effect) ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="a closed_loop.json")
    parser.add_argument("--gain", type=float, default=0.10, help="the challenger's true gain over the champion")
    args = parser.parse_args()
    doc = json.loads(open(args.report, encoding="utf-8").read())
    ope = {(o["date"], o["role"], o["estimator"]): o for o in doc["summary"]["ope"]}
    print(f"{'judged on':<25} {'est':>4} {'n':>6} {'difference':>28} {'champion':>9} {'sigma':>6} "
          f"{'power now':>9} {'n for 50%':>10} {'n for 80%':>10} {'weeks (80%)':>11}")
    for test in doc["summary"]["promotion_tests"]:
        n = int(test["n_decisions"])
        sigma = (test["ci_high"] - test["ci_low"]) / 2 / Z * math.sqrt(n)
        champion = ope.get((test["date"], "champion", test["estimator"]), {}).get("estimate")
        if not champion or champion <= 0 or sigma <= 0:
            continue
        effect = args.gain * champion
        power = NormalDist().cdf(effect * math.sqrt(n) / sigma - Z)
        n50, n80 = needed(sigma, effect, 0.5), needed(sigma, effect, 0.8)
        window = " to ".join(test["window"])
        print(f"{window:<25} {test['estimator']:>4} {n:>6} "
              f"{test['difference']:>+9.4f} [{test['ci_low']:+.4f}, {test['ci_high']:+.4f}] {champion:>9.4f} "
              f"{sigma:>6.3f} {power:>9.2f} {n50:>10,} {n80:>10,} {n80 / n:>11.1f}")


if __name__ == "__main__":
    main()
