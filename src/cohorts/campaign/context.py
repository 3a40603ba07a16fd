"""The handler contract: what a handler is, what it may raise and what it knows while it runs.

A handler is ``handler(customer, action, campaign)``: it returns when the action
is done, raises to fail it (retried on a later run) or raises :class:`Suppressed`
to hold it with a reason. While :func:`~cohorts.campaigns.run_campaigns` runs it,
:func:`current_run` gives the :class:`RunContext`: the run's ``now``, the attempt
and the action's :func:`idempotency_key`, the same on every retry.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import attrs

from ..errors import CohortsError
from ..model import Customer, CustomerId
from .model import Action, Campaign

__all__ = ["Handler", "RunContext", "Suppressed", "current_run", "idempotency_key", "running"]


class Suppressed(CohortsError):
    """Raised by a handler to suppress its action for this customer with a reason (reconsidered next run).

    The standard senders raise it when a customer has no address for the channel.

    Attributes:
        reason: why the action did not run.
    """

    __module__ = "cohorts.campaigns"  # its public home: tracebacks and pickles name cohorts.campaigns.Suppressed

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


Handler: TypeAlias = Callable[[Customer, Action, Campaign], Any]


@attrs.frozen
class RunContext:
    """What the cron job knows while a handler runs; read it with :func:`current_run`."""

    now: dt.datetime
    campaign: str
    customer_id: CustomerId
    action_key: str
    attempt: int
    idempotency_key: str


_CURRENT: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("cohorts_run", default=None)


def current_run() -> RunContext | None:
    """The :class:`RunContext` of the handler being run, or None outside :func:`run_campaigns`."""
    return _CURRENT.get()


@contextlib.contextmanager
def running(context: RunContext) -> Iterator[RunContext]:
    """Make ``context`` the :func:`current_run` for the block: the runner calls a handler inside it.

    Example:
        >>> import datetime as dt
        >>> now = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
        >>> with running(RunContext(now, "Spring", 42, "email-1", 1, "cohorts:Spring:42:email-1")):
        ...     current_run().attempt
        1
        >>> current_run() is None
        True
    """
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def idempotency_key(campaign: str, customer_id: CustomerId, action_key: str) -> str:
    """The key that names one action for one customer in one campaign, the same on every retry.

    Example:
        >>> idempotency_key("Spring", 42, "email-1"), idempotency_key("Spring", "42", "email-1")
        ('cohorts:Spring:42:email-1', 'cohorts:Spring:~42:email-1')
    """
    text = str(customer_id)
    if isinstance(customer_id, str) and text.lstrip("-").isdigit():
        text = "~" + text  # the text id "42" and the number 42 are different customers
    return f"cohorts:{campaign}:{text}:{action_key}"
