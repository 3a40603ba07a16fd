"""The parts of :mod:`cohorts.campaigns`, one job each; import the public names from ``cohorts.campaigns``.

- :mod:`~cohorts.campaign.model`: what a campaign is (:class:`Campaign`, :class:`Action`, :class:`Policy`,
  :class:`FrequencyCap`, :class:`Hours`) and the checks of their fields;
- :mod:`~cohorts.campaign.eligibility`: when a campaign runs (:func:`eligibility`) and when one of its
  marketing actions may go out to a customer (:func:`gate`);
- :mod:`~cohorts.campaign.audience`: who a campaign reaches (:func:`audience`): its group, the status
  filter, the customers suppressed for marketing;
- :mod:`~cohorts.campaign.context`: the handler contract: ``handler(customer, action, campaign)``,
  :class:`Suppressed`, and what :func:`current_run` tells a handler (its idempotency key);
- :mod:`~cohorts.campaign.handlers`: the shipped handlers (points, stage, track, and email/SMS through
  a :class:`Sender`);
- :mod:`~cohorts.campaign.report`: what a run did (:class:`RunReport`, :class:`CampaignReport`) as text,
  rows, JSON and HTML;
- :mod:`~cohorts.campaign.runner`: the cron job (:func:`run_campaigns`): enrolment, claims on the ledger's
  rows, retries and progress.

Imports flow one way: ``model`` first; ``eligibility``, ``audience``, ``context`` and ``report`` over it;
``handlers`` over ``context``; ``runner`` over all but ``handlers``. The ledger itself is
:mod:`cohorts.ledger` (and :mod:`cohorts.sql.ledger`).
"""
