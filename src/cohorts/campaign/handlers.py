"""The shipped handlers: points, stage and track record in the repository; email and SMS go through a Sender.

A :class:`Sender` is the host's email/SMS provider: it is given a :class:`Message`
that carries the action's idempotency key, and must deliver once per key.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ..model import Customer, CustomerId, Event
from ..repository import Repository
from ..values import fold_text, to_number
from .context import Handler, RunContext, Suppressed, current_run, idempotency_key
from .model import ADDRESS_ATTRIBUTES, Action, Campaign, CampaignError

__all__ = ["Message", "Sender", "standard_handlers", "writes_customers"]

_WRITING: weakref.WeakSet[Handler] = weakref.WeakSet()  # the shipped handlers that write to the repository


def writes_customers(handler: Handler) -> bool:
    """Whether ``handler`` is a shipped handler that writes to customers (points, stage, track)."""
    try:
        return handler in _WRITING
    except TypeError:  # not weakly referenceable: not one of ours
        return False


def _writing(handler: Handler) -> Handler:
    _WRITING.add(handler)
    return handler


@attrs.frozen
class Message:
    """A marketing message for a :class:`Sender`: the channel, recipient and content, plus its idempotency key."""

    channel: str
    to: str
    customer_id: CustomerId
    campaign: str
    subject: str
    body: str
    idempotency_key: str
    settings: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class Sender(Protocol):
    """The host's email/SMS provider. ``send`` must deliver a message once per ``message.idempotency_key``.

    Raise to mark the action failed (it is retried with the same key on a later run).
    """

    def send(self, message: Message) -> None: ...




def _context(customer: Customer, action: Action, campaign: Campaign) -> RunContext:
    ctx = current_run()
    if ctx is not None:
        return ctx
    key = campaign.key_of(action)
    now = dt.datetime.now(dt.UTC)
    return RunContext(now, campaign.name, customer.id, key, 1, idempotency_key(campaign.name, customer.id, key))


def _send_handler(sender: Sender, channel: str) -> Handler:
    fields = ADDRESS_ATTRIBUTES.get(channel, (channel,))

    def send(customer: Customer, action: Action, campaign: Campaign) -> None:
        ctx = _context(customer, action, campaign)
        field = action.settings.get("to_attribute")
        candidates = (field,) if isinstance(field, str) else fields
        values = customer.attributes
        to = next((str(values[f]).strip() for f in candidates if fold_text(values.get(f))), None)
        if to is None:
            raise Suppressed(f"no address: customer has no {' or '.join(candidates)} for {channel}")
        settings = action.settings
        message = Message(
            channel, to, customer.id, campaign.name, str(settings.get("subject", "")),
            str(settings.get("body", settings.get("text", ""))), ctx.idempotency_key, dict(settings),
        )
        sender.send(message)

    return send


def _points_handler(repository: Repository) -> Handler:
    def points(customer: Customer, action: Action, campaign: Campaign) -> None:
        amount = to_number(action.settings.get("points"))
        if amount is None:
            raise CampaignError(f"a points action needs a number in settings['points'], not {action.settings!r}")
        ctx = _context(customer, action, campaign)
        current = repository.get(customer.id) or customer
        balance = to_number(current.attributes.get("points")) or 0
        repository.upsert([current.with_attributes(points=balance + amount)])
        repository.add_events(
            customer.id, [Event("campaign.points", ctx.now, {"campaign": campaign.name, "points": amount})]
        )

    return _writing(points)


def _stage_handler(repository: Repository) -> Handler:
    def stage(customer: Customer, action: Action, campaign: Campaign) -> None:
        value = action.settings.get("stage")
        if not isinstance(value, str) or not value.strip():
            raise CampaignError(f"a stage action needs a text in settings['stage'], not {action.settings!r}")
        ctx = _context(customer, action, campaign)
        current = repository.get(customer.id) or customer
        repository.upsert([current.with_attributes(stage=value.strip())])
        event = Event("campaign.stage", ctx.now, {"campaign": campaign.name, "stage": value})
        repository.add_events(customer.id, [event])

    return _writing(stage)


def _track_handler(repository: Repository) -> Handler:
    def track(customer: Customer, action: Action, campaign: Campaign) -> None:
        ctx = _context(customer, action, campaign)
        name = str(action.settings.get("event", "campaign.engagement"))
        fields = {k: v for k, v in action.settings.items() if k != "event"}
        repository.add_events(customer.id, [Event(name, ctx.now, {"campaign": campaign.name, **fields})])

    return _writing(track)


def standard_handlers(repository: Repository, sender: Sender | None = None) -> dict[str, Handler]:
    """The shipped handlers: ``points``, ``stage`` and ``track`` record in ``repository``; ``email`` and
    ``sms`` go through ``sender`` (left out without one).

    ``points`` adds ``settings["points"]`` to the ``points`` attribute, ``stage``
    sets the ``stage`` attribute, ``track`` adds a ``settings["event"]`` event
    (default ``campaign.engagement``); each records a ``campaign.*`` event. Messages
    go to the ``email`` attribute, or ``mobile_phone``/``phone`` for SMS
    (``settings["to_attribute"]`` overrides), with ``subject`` and ``body`` from settings.

    Example:
        >>> from cohorts.repository import MemoryRepository
        >>> sorted(standard_handlers(MemoryRepository()))
        ['points', 'stage', 'track']
    """
    handlers: dict[str, Handler] = {
        "points": _points_handler(repository),
        "stage": _stage_handler(repository),
        "track": _track_handler(repository),
    }
    if sender is not None:
        if not isinstance(sender, Sender):
            raise TypeError(f"a sender has a send(message) method; {sender!r} does not")
        handlers["email"] = _send_handler(sender, "email")
        handlers["sms"] = _send_handler(sender, "sms")
    return handlers
