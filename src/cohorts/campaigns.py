"""Campaigns targeted at customer groups and statuses, run by a cron job exactly once per customer.

A :class:`Campaign` names its audience (every customer, or one group's members
of every origin), a status filter, a schedule and a workflow of
:class:`Action` steps. :func:`run_campaigns` is the cron job: for each
eligible campaign it evaluates the audience, enrolls the customers it has not
seen before in that campaign's ledger, and runs each action once per customer.

The pieces are plain functions of their arguments (:func:`eligibility`,
:func:`gate`, :func:`audience`); the only state is the ledger, which lives in
the repository (see :mod:`cohorts.ledger`). Marketing actions (email, SMS)
respect unsubscriptions, frequency caps and sending hours; transactional
actions (points, stage, track) are never capped or deferred.

This module is the public face; the code lives in :mod:`cohorts.campaign`, one
module per job (the campaign model, eligibility, the audience, the handler
contract, the shipped handlers, the report, the runner). Besides ``__all__``, the
constants (``STATUSES``, ``STATUS_ATTRIBUTE``, ``SUBSCRIBED_ATTRIBUTE``, ``MAX_FAILURES`` ...),
``GroupsLike``, ``JoinHistory`` (what ``trigger="joined"`` reads of groups) and
``unsubscribed`` are importable from here as they always were.
"""

from __future__ import annotations

from .campaign.audience import Audience, AudienceMember, audience
from .campaign.audience import GroupsLike as GroupsLike
from .campaign.audience import JoinHistory as JoinHistory
from .campaign.context import Handler, RunContext, Suppressed, current_run, idempotency_key
from .campaign.eligibility import Eligibility, Gate, eligibility, gate
from .campaign.eligibility import unsubscribed as unsubscribed
from .campaign.handlers import Message, Sender, standard_handlers
from .campaign.model import AUDIENCES as AUDIENCES
from .campaign.model import ON_LEAVE as ON_LEAVE
from .campaign.model import SEND_TO as SEND_TO
from .campaign.model import STATUS_ATTRIBUTE as STATUS_ATTRIBUTE
from .campaign.model import STATUSES as STATUSES
from .campaign.model import SUBSCRIBED_ATTRIBUTE as SUBSCRIBED_ATTRIBUTE
from .campaign.model import TRIGGERS as TRIGGERS
from .campaign.model import Action, Campaign, CampaignError, FrequencyCap, Hours, Policy, RunnerBusyError
from .campaign.report import MAX_FAILURES as MAX_FAILURES
from .campaign.report import CampaignReport, Failure, RunReport
from .campaign.runner import Removal, remove_from_campaign, run_campaigns

__all__ = [
    "Action",
    "Audience",
    "AudienceMember",
    "Campaign",
    "CampaignError",
    "CampaignReport",
    "Eligibility",
    "Failure",
    "FrequencyCap",
    "Gate",
    "Handler",
    "Hours",
    "Message",
    "Policy",
    "Removal",
    "RunContext",
    "RunReport",
    "RunnerBusyError",
    "Sender",
    "Suppressed",
    "audience",
    "current_run",
    "eligibility",
    "gate",
    "idempotency_key",
    "remove_from_campaign",
    "run_campaigns",
    "standard_handlers",
]
