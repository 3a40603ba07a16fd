"""The cron job: :func:`run_campaigns` runs every eligible campaign's actions once per customer.

For each campaign it evaluates the audience, enrolls the new customers in the
ledger, then claims each due (customer, action) row of the ledger in turn: the
claim holds while the handler runs and records its outcome (done, failed and
retried later, suppressed, deferred) before the next one starts. The ledger
itself is :mod:`cohorts.ledger`; who is in the audience, :mod:`cohorts.campaign.audience`.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized

import attrs

from ..errors import CohortsError, HostWriteError
from ..ledger import ActionSpec, Ledger, RunnerLocks
from ..model import Customer, CustomerId
from ..progress import Progress, ProgressCallback
from ..repository import Repository, read_only_reason, require
from .audience import GroupsLike, audience, sorted_ids
from .context import Handler, RunContext, Suppressed, idempotency_key, running
from .eligibility import eligibility, gate
from .handlers import writes_customers
from .model import Action, Campaign, CampaignError, Policy, RunnerBusyError, aware_now
from .report import MAX_FAILURES, CampaignReport, Failure, RunReport

__all__ = ["Removal", "remove_from_campaign", "run_campaigns"]


@attrs.define
class _Tally:
    name: str
    done: int = 0
    failed: int = 0
    suppressed: int = 0
    deferred: int = 0
    busy: int = 0
    stopped: int = 0
    left: int = 0
    reasons: dict[str, int] = attrs.field(factory=dict)
    failures: list[Failure] = attrs.field(factory=list)

    def suppress(self, reason: str) -> None:
        self.suppressed += 1
        head = reason.split(":", 1)[0]
        self.reasons[head] = self.reasons.get(head, 0) + 1


@attrs.define
class _Budget:
    """How many more actions this run may process, and until when (None: no limit)."""

    actions: int | None
    deadline: float | None

    @classmethod
    def of(cls, max_actions: int | None, max_seconds: float | None) -> _Budget:
        if max_actions is not None and (isinstance(max_actions, bool) or not isinstance(max_actions, int)
                                        or max_actions < 1):
            raise CampaignError(f"max_actions is a whole number >= 1 or None, not {max_actions!r}")
        if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, int | float)
                                        or not max_seconds > 0):
            raise CampaignError(f"max_seconds is a number of seconds > 0 or None, not {max_seconds!r}")
        return cls(max_actions, None if max_seconds is None else time.monotonic() + max_seconds)

    def take(self) -> bool:
        """Spend one action; False (nothing spent) when the budget is gone."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        if self.actions is None:
            return True
        if self.actions <= 0:
            return False
        self.actions -= 1
        return True


def _check(campaigns: Sequence[Campaign], handlers: Mapping[str, Handler], repository: object) -> None:
    refused = read_only_reason(repository)
    names: set[str] = set()
    for campaign in campaigns:
        if not isinstance(campaign, Campaign):
            raise TypeError(f"run_campaigns() takes Campaign values, not {campaign!r}")
        if campaign.name in names:
            raise CampaignError(f"two campaigns are named {campaign.name!r}; the ledger keys on the name")
        names.add(campaign.name)
        for action in campaign.actions:
            if not callable(handlers.get(action.kind)):
                raise CampaignError(
                    f"campaign {campaign.name!r} has a {action.kind!r} action but no handler for it"
                    f" (handlers: {', '.join(sorted(handlers)) or 'none'})"
                )
            if refused is not None and writes_customers(handlers[action.kind]):
                raise HostWriteError(
                    f"campaign {campaign.name!r} has a {action.kind!r} action, which writes to customers: {refused}"
                )


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def _run_one(
    campaign: Campaign,
    repository: Repository,
    groups: GroupsLike | None,
    handlers: Mapping[str, Handler],
    moment: dt.datetime,
    policy: Policy,
    ledger: Ledger,
    budget: _Budget,
    progress: ProgressCallback | None = None,
) -> CampaignReport:
    started = time.perf_counter()
    verdict = eligibility(campaign, moment)
    if not verdict.ok:
        return CampaignReport(campaign.name, False, verdict.reasons, seconds=time.perf_counter() - started)
    try:
        members = audience(campaign, repository, groups, moment)
    except CohortsError as exc:  # a deleted group, a rule that no longer compiles: the other campaigns still run
        return CampaignReport(campaign.name, True, seconds=time.perf_counter() - started,
                              error=f"audience not evaluated: {exc}")
    keys = campaign.action_keys()
    by_key = dict(zip(keys, campaign.actions, strict=True))
    specs = [ActionSpec(key, action.kind) for key, action in by_key.items()]
    added = ledger.enroll(campaign.name, members.ids, specs, moment)
    tally = _Tally(campaign.name)
    order = {key: i for i, key in enumerate(keys)}
    work: dict[CustomerId, list[str]] = {}
    for customer_id, key in ledger.due(campaign.name, keys, policy.retries):
        work.setdefault(customer_id, []).append(key)
    stage = f"campaign {campaign.name}"
    stop = campaign.on_leave == "stop"
    pending = sum(map(len, work.values()))
    for done, (customer_id, customer) in enumerate(_load(repository, work)):
        if progress is not None and done % 100 == 0:
            progress(Progress(done, done / len(work), what="customers", stage=stage))
        for key in sorted(work[customer_id], key=order.__getitem__):
            if not budget.take():
                tally.left = pending
                break
            pending -= 1
            if stop and customer is not None and customer_id not in members.ids:
                _stop_action(campaign, customer_id, key, moment, policy, ledger, tally)
            else:
                _run_action(campaign, customer_id, customer, key, by_key[key], handlers, moment, policy, ledger, tally)
        if tally.left:
            break
    if progress is not None and work and not tally.left:
        progress(Progress(len(work), 1.0, what="customers", stage=stage))
    return CampaignReport(
        campaign.name, True, (), len(members), added, tally.done, tally.failed, tally.suppressed, tally.deferred,
        tally.busy, time.perf_counter() - started, dict(tally.reasons), tuple(tally.failures),
        stopped=tally.stopped, left=tally.left,
    )


STOPPED = "stopped: the customer left the audience (on_leave='stop')"


def _stop_action(
    campaign: Campaign,
    customer_id: CustomerId,
    key: str,
    moment: dt.datetime,
    policy: Policy,
    ledger: Ledger,
    tally: _Tally,
) -> None:
    """Record an action owed to a customer who left the audience as skipped, never to run."""
    with ledger.claim(campaign.name, customer_id, key, policy.retries) as claim:
        if claim is None:
            tally.busy += 1
            return
        claim.skip(STOPPED, moment)
        tally.stopped += 1


def _load(
    repository: Repository, wanted: Mapping[CustomerId, object]
) -> Iterator[tuple[CustomerId, Customer | None]]:
    """The wanted customers (None for those deleted): one scan when they are many, else one get() each."""
    total = len(repository) if isinstance(repository, Sized) else None
    if total is not None and isinstance(repository, Iterable) and len(wanted) * 4 >= total > 1000:
        seen = set()
        for customer in repository:
            if customer.id in wanted:
                seen.add(customer.id)
                yield customer.id, customer
        for customer_id in sorted_ids(set(wanted) - seen):
            yield customer_id, repository.get(customer_id)
        return
    for customer_id in sorted_ids(wanted):
        yield customer_id, repository.get(customer_id)


class _Undo(Exception):
    """Rolls back a claim whose handler raised, with the handler's repository writes."""

    def __init__(self, cause: Exception) -> None:
        self.cause = cause


def _run_action(
    campaign: Campaign,
    customer_id: CustomerId,
    customer: Customer | None,
    key: str,
    action: Action,
    handlers: Mapping[str, Handler],
    moment: dt.datetime,
    policy: Policy,
    ledger: Ledger,
    tally: _Tally,
) -> None:
    try:
        with ledger.claim(campaign.name, customer_id, key, policy.retries) as claim:
            if claim is None:
                tally.busy += 1
                return
            if customer is None:
                claim.skip("customer no longer exists", moment)
                tally.suppress("deleted: customer no longer exists")
                return
            marketing = policy.is_marketing(action)
            if marketing and action.kind in policy.caps:
                claim.lock_customer()
            held = gate(action, customer, policy, moment, functools.partial(ledger.sent, customer_id))
            if held is not None:
                if held.outcome == "deferred":
                    claim.defer(held.reason, moment)
                    tally.deferred += 1
                else:
                    claim.suppress(held.reason, moment)
                    tally.suppress(held.reason)
                return
            ikey = idempotency_key(campaign.name, customer_id, key)
            with running(RunContext(moment, campaign.name, customer_id, key, claim.attempts + 1, ikey)):
                try:
                    handlers[action.kind](customer, action, campaign)
                except Exception as exc:
                    raise _Undo(exc) from exc
            claim.done(moment, action.kind if marketing else None)
            tally.done += 1
    except _Undo as undo:
        # The claim's transaction is rolled back, undoing what the handler wrote in the repository;
        # the outcome is recorded under a new claim (unless another runner took the row meanwhile).
        _record_failure(campaign, customer_id, key, undo.cause, moment, policy, ledger, tally)


def _record_failure(
    campaign: Campaign,
    customer_id: CustomerId,
    key: str,
    cause: Exception,
    moment: dt.datetime,
    policy: Policy,
    ledger: Ledger,
    tally: _Tally,
) -> None:
    with ledger.claim(campaign.name, customer_id, key, policy.retries) as claim:
        if claim is None:
            tally.busy += 1
            return
        if isinstance(cause, Suppressed):
            claim.suppress(cause.reason, moment)
            tally.suppress(cause.reason)
            return
        attempt = claim.attempts + 1
        error = _error_text(cause)
        claim.fail(error, moment)
        tally.failed += 1
        if len(tally.failures) < MAX_FAILURES:
            tally.failures.append(Failure(customer_id, key, attempt, error, attempt > policy.retries))


def run_campaigns(
    campaigns: Iterable[Campaign],
    repository: Repository,
    groups: GroupsLike | None,
    handlers: Mapping[str, Handler],
    now: dt.datetime | None = None,
    *,
    policy: Policy | None = None,
    ledger: Ledger | None = None,
    progress: ProgressCallback | None = None,
    max_actions: int | None = None,
    max_seconds: float | None = None,
    exclusive: bool = False,
    wait: bool = False,
) -> RunReport:
    """The cron job: run every eligible campaign's actions once per customer of its audience.

    For each eligible campaign: evaluate the audience, enroll the customers not
    seen before in the campaign's ledger, then run each action that is still due
    for each enrolled customer (new ones, deferred or suppressed ones, failed ones
    within ``policy.retries``). ``handlers`` maps an action kind to
    ``handler(customer, action, campaign)``; an exception marks that action
    failed for that customer (recorded with its error, retried on a later run).

    Each action is claimed in the repository's ledger, in a transaction that
    holds the claim while the handler runs and records its outcome before the
    next one starts: a rerun, two runners at once on one PostgreSQL database or a
    crash between two actions never runs an action twice, and an interrupted
    claim is rolled back, so the next run picks it up. See docs/campaigns.md.
    ``progress``, when given, is called with a :class:`cohorts.Progress` (customers
    done, and the share of the campaign's due work) as each campaign runs.

    ``max_actions`` and ``max_seconds`` bound the run (over all its campaigns):
    once that many due actions were processed, or that many seconds passed, the
    run stops before the next action; the rest stays due for the next run, and
    each campaign's report says how many it left (``left``). An action already
    started is finished first.

    Runs may overlap safely (each action is claimed). ``exclusive=True`` makes
    this run the only one on the database: it holds the repository's runner lock
    (:class:`cohorts.ledger.RunnerLocks`) for its whole length, and when another
    run holds it raises :class:`cohorts.campaigns.RunnerBusyError` at once, having
    done nothing, or with ``wait=True`` waits for it.

    Example:
        >>> import datetime as dt
        >>> from cohorts.repository import MemoryRepository
        >>> repo = MemoryRepository([Customer(1), Customer(2)])
        >>> seen = []
        >>> spring = Campaign("Spring", actions=[Action("track")])
        >>> now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
        >>> report = run_campaigns([spring], repo, None, {"track": lambda c, a, k: seen.append(c.id)}, now)
        >>> report["Spring"].done, sorted(seen)
        (2, [1, 2])
        >>> run_campaigns([spring], repo, None, {"track": lambda c, a, k: seen.append(c.id)}, now)["Spring"].done
        0

    .. versionadded:: 0.1
    """
    started = time.perf_counter()
    moment = aware_now(now)
    chosen = list(campaigns)
    _check(chosen, handlers, repository)
    require(repository, Repository, "run_campaigns")
    rules = (policy if policy is not None else Policy()).in_zone(repository.tz)
    store = ledger if ledger is not None else repository.ledger()
    budget = _Budget.of(max_actions, max_seconds)

    def run() -> RunReport:
        reports = tuple(_run_one(c, repository, groups, handlers, moment, rules, store, budget, progress)
                        for c in chosen)
        return RunReport(moment, reports, time.perf_counter() - started)

    if not exclusive:
        return run()
    if not isinstance(repository, RunnerLocks):
        raise CampaignError(f"{type(repository).__name__} keeps no runner lock: an exclusive run needs one")
    with repository.runner_lock(wait=wait) as got:
        if not got:
            raise RunnerBusyError(
                "another campaign run holds this database's runner lock: this run did nothing"
                " (wait=True, or --wait, waits for it)"
            )
        return run()


@attrs.frozen
class Removal:
    """What :func:`remove_from_campaign` did: the keys of the actions it stopped (none: nothing was left to run)."""

    campaign: str
    customer_id: CustomerId
    stopped: tuple[str, ...]


def remove_from_campaign(
    campaign: Campaign,
    customer_id: CustomerId,
    repository: Repository,
    now: dt.datetime | None = None,
    *,
    reason: str = "removed by hand",
    ledger: Ledger | None = None,
) -> Removal:
    """Take one customer out of a campaign for good: its actions not done yet never run.

    Every action of the campaign still to run for the customer (pending,
    deferred, suppressed or failed) is recorded as *skipped* with ``reason``;
    what was done stays in the ledger as it was. A customer the campaign has not
    enrolled yet is enrolled with every action skipped, so later runs leave it
    out even while it is in the audience. An action another runner is running at
    that very moment is left to finish (it is not in ``stopped``).

    Example:
        >>> import datetime as dt
        >>> from cohorts.repository import MemoryRepository
        >>> repo = MemoryRepository([Customer(1), Customer(2)])
        >>> now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
        >>> spring = Campaign("Spring", actions=[Action("track")])
        >>> remove_from_campaign(spring, 2, repo, now).stopped
        ('track-1',)
        >>> seen = []
        >>> _ = run_campaigns([spring], repo, None, {"track": lambda c, a, k: seen.append(c.id)}, now)
        >>> seen
        [1]

    .. versionadded:: 0.3
    """
    if not isinstance(campaign, Campaign):
        raise TypeError(f"remove_from_campaign() takes a Campaign, not {type(campaign).__name__}")
    if not isinstance(reason, str) or not reason.strip():
        raise CampaignError(f"the reason for a removal is a non-blank text, not {reason!r}")
    moment = aware_now(now)
    require(repository, Repository, "remove_from_campaign")
    store = ledger if ledger is not None else repository.ledger()
    keys = campaign.action_keys()
    specs = [ActionSpec(key, action.kind) for key, action in zip(keys, campaign.actions, strict=True)]
    store.enroll(campaign.name, [customer_id], specs, moment)
    stopped = []
    every_failure = 2**31 - 1  # failed rows are stopped too, retries left or not
    for key in keys:
        with store.claim(campaign.name, customer_id, key, every_failure) as claim:
            if claim is not None:
                claim.skip(f"removed: {reason.strip()}", moment)
                stopped.append(key)
    return Removal(campaign.name, customer_id, tuple(stopped))
