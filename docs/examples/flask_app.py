"""Customer groups in a Flask application: preview a rule, then save it as a group.

This file is the example of docs/embedding.md; tests/test_embedding.py imports it
and drives it with Flask's test client. It uses only the public API (``import cohorts``).

Routes (JSON in, JSON out):

* ``POST /rules/preview`` with ``{"rule": "..."}`` (or ``{"rule_json": {...}}``, the rule
  editor's JSON form): the canonical rule, how many customers it matches now, and a sample.
  A group name (``"group": "VIP"``) previews a change of that group's rule instead:
  who would join and who would leave.
* ``POST /groups`` with ``{"name": ..., "rule": ..., "description": ...}``: saves a group
  (201), or says why not (400 for a wrong rule, 409 for a name that exists).
* ``PUT /groups/<name>/rule`` with ``{"rule": ...}``: changes a group's rule.
* ``GET /groups/<name>``: the group, its members and why each is in it.

Rule errors come back as ``{"error": {"type", "message", "line", "column"}}`` so a rule
editor can put the caret where the fault is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, NoReturn

import flask

import cohorts

SAMPLE_SIZE = 10
"""How many customer ids a preview shows."""


def create_app(
    repository: cohorts.Repository,
    *,
    schema: cohorts.Schema | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> flask.Flask:
    """A Flask application serving the groups of ``repository``.

    Args:
        repository: where the customers and the groups live; in production a
            ``cohorts.SQLRepository`` (one per process; it is safe to share between threads).
        schema: the attributes rules may use (default: ``cohorts.default_schema()``);
            a wrong attribute name is then refused with the nearest right one.
        clock: the current time (tests pass a fixed one).
    """
    app = flask.Flask(__name__)
    groups = cohorts.Groups(repository)
    rule_schema = schema or cohorts.default_schema()

    def now() -> dt.datetime:
        return clock() if clock is not None else dt.datetime.now(dt.UTC)

    def read_rule(body: dict[str, Any]) -> cohorts.Rule | None:
        """The rule of a request, checked against the schema (None: a group without rule)."""
        if body.get("rule_json") is not None:
            return cohorts.validate(cohorts.from_json(body["rule_json"]), rule_schema)
        text = body.get("rule")
        if text is None:
            return None
        if not isinstance(text, str):
            bad_request("a rule is text")
        return cohorts.validate(text, rule_schema)

    def bad_request(message: str) -> NoReturn:
        flask.abort(flask.make_response({"error": {"type": "BadRequest", "message": message}}, 400))

    def body_of() -> dict[str, Any]:
        body = flask.request.get_json(silent=True)
        if not isinstance(body, dict):
            bad_request("send a JSON object")
        return body

    @app.errorhandler(cohorts.RuleError)
    def rule_error(error: cohorts.RuleError) -> tuple[dict[str, Any], int]:
        detail: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
        if isinstance(error, cohorts.RuleSyntaxError):
            detail.update(line=error.line, column=error.column)
        return {"error": detail}, 400

    @app.errorhandler(cohorts.UnknownGroupError)
    def unknown_group(error: cohorts.UnknownGroupError) -> tuple[dict[str, Any], int]:
        return {"error": {"type": "UnknownGroupError", "message": str(error)}}, 404

    @app.errorhandler(cohorts.GroupError)
    def group_error(error: cohorts.GroupError) -> tuple[dict[str, Any], int]:
        return {"error": {"type": type(error).__name__, "message": str(error)}}, 409

    @app.post("/rules/preview")
    def preview() -> dict[str, Any]:
        body = body_of()
        rule = read_rule(body)
        moment = now()
        if body.get("group"):
            change = groups.preview(body["group"], rule, moment, sample=SAMPLE_SIZE)
            return {
                "group": change.group,
                "rule": change.rule,
                "before": change.before,
                "after": change.after,
                "joining": change.joining,
                "leaving": change.leaving,
                "joining_sample": list(change.joining_sample),
                "leaving_sample": list(change.leaving_sample),
            }
        if rule is None:
            return {"rule": None, "count": 0, "sample": []}
        # Rules may refer to groups ("customer in group ..."): read their members at the same moment.
        matching = repository.select(rule, moment, groups=lambda name: groups.members(name, moment))
        return {"rule": str(rule), "count": len(matching), "sample": sorted(matching, key=str)[:SAMPLE_SIZE]}

    @app.post("/groups")
    def create_group() -> tuple[dict[str, Any], int]:
        body = body_of()
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            bad_request("a group needs a name")
        rule = read_rule(body)
        groups.create(name, rule, description=str(body.get("description", "")))
        return describe(name), 201

    @app.put("/groups/<name>/rule")
    def set_rule(name: str) -> dict[str, Any]:
        groups.set_rule(name, read_rule(body_of()))
        return describe(name)

    @app.get("/groups/<name>")
    def show_group(name: str) -> dict[str, Any]:
        return describe(name)

    def describe(name: str) -> dict[str, Any]:
        moment = now()
        definition = groups.definition(name)
        members = groups.members(name, moment)
        return {
            "name": definition.name,
            "rule": definition.rule,
            "description": definition.description,
            "count": len(members),
            "members": {
                str(customer_id): sorted(origin.value for origin in origins)
                for customer_id, origins in sorted(members.items(), key=lambda item: str(item[0]))
            },
        }

    return app
