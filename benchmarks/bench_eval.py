"""Throughput of compiled rules against a hand-written function and rule-engine.

Run: ``python benchmarks/bench_eval.py [--customers 200000]``. Prints records per
second and ratios measured in the same run, parse time per rule, and the first-call
time of a rule in a fresh process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import cohorts
from cohorts import Customer, Event
from cohorts.parser import _parse_text

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
EXAMPLE = 'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"'
SIX = (
    "customer.vehicle_year >= 2015 AND customer.status = \"active\" AND customer.subscribed = true"
    ' AND customer.city in ["Laval", "Montréal", "Québec"] AND appointment.count >= 1'
    ' AND customer.vehicle_make != "Tesla"'
)
MODELS = ["Escape", "F-150", "Civic", "Corolla", "Model 3", "Rogue", "CR-V", "Mustang", "Explorer", "RAV4"]
MAKES = ["Ford", "Honda", "Toyota", "Tesla", "Nissan"]
CITIES = ["Laval", "Montréal", "Québec", "Gatineau", "Sherbrooke", "Longueuil", "Ottawa", "Toronto"]


def make_customers(n: int, seed: int = 7) -> list[Customer]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        events = [
            Event(
                rng.choice(["repair_order.closed", "appointment", "message.sent", "invoice"]),
                NOW - dt.timedelta(days=rng.randrange(0, 1500), minutes=rng.randrange(1440)),
            )
            for _ in range(rng.randrange(0, 6))
        ]
        attributes: dict[str, Any] = {
            "vehicle_model": f"{rng.choice(MAKES)} {rng.choice(MODELS)}",
            "vehicle_make": rng.choice(MAKES),
            "vehicle_year": rng.randrange(2000, 2027),
            "status": rng.choice(["active", "active", "inactive"]),
            "subscribed": rng.random() < 0.9,
            "city": rng.choice(CITIES),
        }
        out.append(Customer(i, attributes, events))
    return out


# -- the hand-written baselines: what a developer would write for these two rules


def hand_example(threshold: dt.datetime) -> Callable[[Customer], bool]:
    def rule(c: Customer) -> bool:
        events = c.events_named("repair_order.closed")
        if not events or max(e.at for e in events) <= threshold:  # type: ignore[type-var]
            return False
        model = c.attributes.get("vehicle_model")
        return model is not None and "escape" in model.lower()

    return rule


def hand_six(c: Customer) -> bool:
    a = c.attributes
    year = a.get("vehicle_year")
    make = a.get("vehicle_make")
    city = a.get("city")
    return (
        year is not None
        and year >= 2015
        and (a.get("status") or "").lower() == "active"
        and a.get("subscribed") is True
        and city is not None
        and city.lower() in ("laval", "montréal", "québec")
        and len(c.events_named("appointment")) >= 1
        and make is not None
        and make.lower() != "tesla"
    )


def rate(fn: Callable[[], int], n: int, repeat: int = 3) -> tuple[float, int]:
    times, found = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        found = fn()
        times.append(time.perf_counter() - start)
    return n / min(times), found


def rule_engine_rates(customers: Sequence[Customer], threshold: dt.datetime) -> tuple[float, float] | None:
    try:
        import rule_engine  # type: ignore[import-not-found]
    except ImportError:
        return None
    records = []
    for c in customers:
        closed = [e.at for e in c.events_named("repair_order.closed")]
        records.append(
            {
                **c.attributes,
                "last_closed": max(closed) if closed else None,
                "appointments": len(c.events_named("appointment")),
            }
        )
    context = rule_engine.Context(default_value=None)
    example = rule_engine.Rule(
        f'last_closed != null and last_closed > d"{threshold.isoformat()}" and vehicle_model =~~ "(?i)escape"',
        context=context,
    )
    six = rule_engine.Rule(
        'vehicle_year >= 2015 and status == "active" and subscribed == true'
        ' and city in ["Laval", "Montréal", "Québec"] and appointments >= 1 and vehicle_make != "Tesla"',
        context=context,
    )

    def run(rule: Any) -> int:
        return sum(1 for r in records if rule.matches(r))

    return rate(lambda: run(example), len(records), 1)[0], rate(lambda: run(six), len(records), 1)[0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=200_000)
    args = parser.parse_args(argv)
    n = args.customers
    print(f"building {n:,} customers...", flush=True)
    customers = make_customers(n)
    threshold = NOW - dt.timedelta(days=730)

    print("\nrule                 engine             records/s    vs hand-written")
    sample = customers[: min(n, 20_000)]
    rules = (("example (2 cond.)", EXAMPLE, hand_example(threshold)), ("six conditions", SIX, hand_six))
    for label, text, hand in rules:
        predicate = cohorts.compile(text)
        hand_rate, hand_found = rate(lambda h=hand: sum(1 for c in customers if h(c)), n)
        ours_rate, ours_found = rate(lambda p=predicate: sum(1 for _ in p.select(customers, NOW)), n)
        if hand_found != ours_found:
            raise SystemExit(f"{label}: hand-written found {hand_found}, cohorts found {ours_found}")
        print(f"{label:20} {'hand-written':16} {hand_rate:12,.0f}    1.00x")
        print(f"{label:20} {'cohorts.compile':16} {ours_rate:12,.0f}    {ours_rate / hand_rate:.2f}x")
        print(f"{'':20} ({ours_found:,} matches)")
        hand_sample_rate, _ = rate(lambda h=hand: sum(1 for c in sample if h(c)), len(sample))
        re_rates = rule_engine_rates(sample, threshold)
        if re_rates is not None:
            re_rate = re_rates[0] if hand is not hand_six else re_rates[1]
            print(
                f"{label:20} {'rule-engine':16} {re_rate:12,.0f}    {re_rate / hand_sample_rate:.3f}x"
                f"  (cohorts/rule-engine: {ours_rate / re_rate:,.0f}x)"
            )

    parse_times = []
    for text in (EXAMPLE, SIX):
        for _ in range(200):
            start = time.perf_counter()
            _parse_text.__wrapped__(text)  # uncached: parse() caches by text
            parse_times.append(time.perf_counter() - start)
    print(f"\nparse time per rule (uncached): median {statistics.median(parse_times) * 1e6:,.0f} µs")

    code = (
        "import time, datetime as dt; t=time.perf_counter(); import cohorts;"
        f"p=cohorts.compile({EXAMPLE!r}); p(cohorts.Customer(1), dt.datetime(2026,1,1,tzinfo=dt.UTC));"
        "print(time.perf_counter()-t)"
    )
    first = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    print(f"first call in a fresh process (import, grammar load, parse, compile, evaluate): {first * 1e3:,.0f} ms")


if __name__ == "__main__":
    main()
