"""The CRM example (docs/examples/crm_app.py): its own ORM models, cohorts over them, on SQLite and PostgreSQL.

A group by rule, its members page by page, the CRM's writes followed by the group without any
refresh, a campaign cycle that writes points through the CRM's writer exactly once, a report.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

flask = pytest.importorskip("flask", reason="the CRM example needs Flask (the dev extra)")
sa = pytest.importorskip("sqlalchemy")

_EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "crm_app.py"
_spec = importlib.util.spec_from_file_location("cohorts_docs_crm_app", _EXAMPLE)
assert _spec is not None and _spec.loader is not None
crm_app = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = crm_app  # the ORM resolves the models' annotations in their module
_spec.loader.exec_module(crm_app)

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
TOWNS = ["Laval", "Lévis", "Québec"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The CRM's test client, with 25 clients, over a SQLite file or PostgreSQL."""
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    else:
        engine = request.getfixturevalue("postgres_engine")
    app = crm_app.create_app(engine, clock=lambda: NOW)
    app.config["TESTING"] = True
    test_client = app.test_client()
    for i in range(1, 26):
        body = {"client_no": i, "name": f"Client {26 - i:02d}", "town": TOWNS[i % 3], "car": "Ford Escape"}
        assert test_client.post("/clients", json=body).status_code == 201
        if i % 2:
            order = {"closed_at": (NOW - dt.timedelta(days=30 * i)).isoformat(), "total": 100 + i}
            assert test_client.post(f"/clients/{i}/repair_orders", json=order).status_code == 201
    yield test_client
    engine.dispose()


def _members(client: Any, name: str, size: int = 4) -> list[int]:
    found: list[int] = []
    page = 1
    while True:
        body = client.get(f"/groups/{name}/members?page={page}&size={size}").get_json()
        if not body["clients"]:
            return found
        names = [c["name"] for c in body["clients"]]
        assert names == sorted(names)
        found += [c["client_no"] for c in body["clients"]]
        page += 1


def test_a_group_follows_the_crm(client: Any) -> None:
    rule = 'customer.city = "laval" and repair_order.closed.last_time within last 365 days'
    created = client.post("/groups", json={"name": "Recent Laval", "rule": rule})
    assert created.status_code == 201
    expected = sorted((i for i in range(1, 26) if i % 3 == 0 and i % 2 and 30 * i <= 365), key=lambda i: -i)
    assert expected == [9, 3]
    assert _members(client, "Recent Laval") == expected
    # The CRM's own writes: no refresh anywhere.
    client.post("/clients/6/repair_orders", json={"closed_at": (NOW - dt.timedelta(days=3)).isoformat(), "total": 50})
    client.patch("/clients/9", json={"town": "Montréal"})
    client.delete("/clients/3")
    assert _members(client, "Recent Laval") == [6]
    assert client.get("/groups/Recent Laval/members").get_json()["count"] == 1


def test_a_campaign_cycle_writes_points_once(client: Any) -> None:
    client.post("/groups", json={"name": "Laval", "rule": 'customer.city = "laval"'})
    client.post("/groups", json={"name": "Loyal", "rule": "customer.points >= 100"})
    laval = _members(client, "Laval")
    assert len(laval) == 8
    first = client.post("/campaigns/run", json={"name": "Bonus", "group": "Laval", "points": 100}).get_json()
    assert first == {"done": 8, "failed": 0, "error": None}
    again = client.post("/campaigns/run", json={"name": "Bonus", "group": "Laval", "points": 100}).get_json()
    assert again["done"] == 0
    pages = client.get("/groups/Loyal/members?size=50").get_json()
    assert sorted(c["client_no"] for c in pages["clients"]) == sorted(laval)
    assert {c["points"] for c in pages["clients"]} == {100}
    rows = client.get("/report").get_json()["rows"]
    assert rows == [{"group": "Laval", "customers": 8}, {"group": "Loyal", "customers": 8}]


def test_rule_errors_come_back_as_400(client: Any) -> None:
    response = client.post("/groups", json={"name": "Bad", "rule": 'customer.email = "x"'})
    assert response.status_code == 400
    assert "customer.email is not mapped to a column of clients" in response.get_json()["error"]["message"]
