"""The Flask example of docs/embedding.md (docs/examples/flask_app.py), driven by Flask's test client."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from typing import Any

import pytest

import cohorts

flask = pytest.importorskip("flask", reason="the embedding example needs Flask (the dev extra)")

_EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "flask_app.py"
_spec = importlib.util.spec_from_file_location("cohorts_docs_flask_app", _EXAMPLE)
assert _spec is not None and _spec.loader is not None
flask_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flask_app)

NOW = dt.datetime(2026, 11, 16, 14, 0, tzinfo=dt.UTC)
ESCAPES = 'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"'


def _customers() -> list[cohorts.Customer]:
    closed = cohorts.Event
    return [
        cohorts.Customer(
            "c1", {"vehicle_model": "Ford Escape", "tags": ["VIP"]}, [closed("repair_order.closed", "2026-03-01")]
        ),
        cohorts.Customer("c2", {"vehicle_model": "ESCAPE"}, [closed("repair_order.closed", "2023-03-01")]),
        cohorts.Customer("c3", {"vehicle_model": "Civic", "tags": ["vip"]}),
        cohorts.Customer(4, {"vehicle_model": "Escape Hybrid"}, [closed("repair_order.closed", "2025-12-24")]),
    ]


@pytest.fixture
def client(make_repository: Any) -> Any:
    """A test client of the example application over a repository of each backend."""
    repository = make_repository()
    repository.upsert(_customers())
    app = flask_app.create_app(repository, clock=lambda: NOW)
    app.config["TESTING"] = True
    return app.test_client()


def test_preview_then_save_a_group(client: Any) -> None:
    preview = client.post("/rules/preview", json={"rule": ESCAPES.replace(" AND ", "  and  ")})
    assert preview.status_code == 200
    assert preview.get_json() == {"rule": ESCAPES, "count": 2, "sample": [4, "c1"]}

    saved = client.post("/groups", json={"name": "Recent Escapes", "rule": ESCAPES, "description": "service reminders"})
    assert saved.status_code == 201
    body = saved.get_json()
    assert body["name"] == "Recent Escapes" and body["rule"] == ESCAPES and body["description"] == "service reminders"
    assert body["count"] == 2
    assert body["members"] == {"4": ["rules"], "c1": ["rules"]}

    shown = client.get("/groups/recent escapes")  # names compare case-insensitively
    assert shown.status_code == 200 and shown.get_json() == body


def test_preview_of_a_rule_change_saves_nothing(client: Any) -> None:
    assert client.post("/groups", json={"name": "Escapes", "rule": ESCAPES}).status_code == 201
    wider = 'customer.vehicle_model contains "escape"'
    change = client.post("/rules/preview", json={"group": "Escapes", "rule": wider})
    assert change.status_code == 200
    data = change.get_json()
    assert (data["before"], data["after"], data["joining"], data["leaving"]) == (2, 3, 1, 0)
    assert data["joining_sample"] == ["c2"]
    assert client.get("/groups/Escapes").get_json()["count"] == 2

    updated = client.put("/groups/Escapes/rule", json={"rule": wider})
    assert updated.status_code == 200 and updated.get_json()["count"] == 3


def test_rules_may_refer_to_groups_and_come_as_json(client: Any) -> None:
    assert client.post("/groups", json={"name": "VIP", "rule": 'customer.tags contains "vip"'}).status_code == 201
    rule = 'customer in group "VIP" AND customer.vehicle_model contains "escape"'
    preview = client.post("/rules/preview", json={"rule": rule})
    assert preview.get_json()["sample"] == ["c1"]
    as_json = cohorts.to_dict(cohorts.parse('customer.vehicle_model = "civic"'))
    from_form = client.post("/rules/preview", json={"rule_json": as_json})
    assert from_form.get_json() == {"rule": 'customer.vehicle_model = "civic"', "count": 1, "sample": ["c3"]}


def test_errors_are_json_with_the_place_of_the_fault(client: Any) -> None:
    typo = client.post("/rules/preview", json={"rule": 'customer.vehicle_model contans "Escape"'})
    assert typo.status_code == 400
    error = typo.get_json()["error"]
    assert error["type"] == "RuleSyntaxError" and (error["line"], error["column"]) == (1, 24)
    assert 'did you mean "contains"?' in error["message"]

    unknown = client.post("/groups", json={"name": "X", "rule": 'customer.vehicle_modle contains "Escape"'})
    assert unknown.status_code == 400
    assert unknown.get_json()["error"]["message"].endswith("did you mean 'customer.vehicle_model'?")

    assert client.post("/groups", json={"name": "VIP"}).status_code == 201
    taken = client.post("/groups", json={"name": " vip "})
    assert taken.status_code == 409 and "exists already" in taken.get_json()["error"]["message"]
    missing = client.get("/groups/VIPs")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["message"] == "no group named 'VIPs'; did you mean 'VIP'?"
    assert client.post("/groups", json={"rule": "customer.city is known"}).status_code == 400
    assert client.post("/rules/preview", data="not json").status_code == 400
    assert client.post("/rules/preview", json={"rule": 42}).status_code == 400
    # Nothing was saved by the failed requests.
    assert client.get("/groups/X").status_code == 404
