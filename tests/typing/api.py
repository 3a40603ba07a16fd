"""Type-checked by mypy, never run: the public API as a host application uses it."""

import datetime as dt

import cohorts

rule: cohorts.Rule = cohorts.parse('customer.city = "Laval"')
predicate: cohorts.Predicate = cohorts.compile(rule, schema=cohorts.default_schema(), tz="America/Montreal")
ok: bool = predicate(cohorts.Customer(1, {"city": "Laval"}), now=dt.datetime.now(dt.UTC))
why: cohorts.Explanation = cohorts.explain(rule, cohorts.Customer(1))
