"""The package imports and evaluates the reference example."""

import datetime as dt

import cohorts


def test_reference_example() -> None:
    """The articles' Escape rule matches a recent repair and an Escape."""
    customer = cohorts.Customer(
        "c1",
        {"vehicle_model": "Ford Escape"},
        [cohorts.Event("repair_order.closed", dt.datetime(2026, 3, 1, 10))],
    )
    rule = 'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"'
    assert cohorts.matches(rule, customer, now=dt.datetime(2026, 11, 22, tzinfo=dt.UTC))
    assert not cohorts.matches(rule, customer, now=dt.datetime(2029, 1, 1, tzinfo=dt.UTC))
