"""The events integrations subscribe to, and the internal one the live views also get."""

from __future__ import annotations

DEPLOYMENT_EVENTS = (
    "deployment.created",
    "deployment.building",
    "deployment.live",
    "deployment.failed",
    "deployment.crashed",
    "deployment.canceled",
    "deployment.rolled_back",
    "deployment.promoted",
)
DOMAIN_EVENTS = ("domain.verified", "domain.certificate_failed")
# A cron run that failed or timed out (cron/runner.py); data: job, run_id, environment_id,
# status, exit_code, error.
CRON_EVENTS = ("cron.failed",)
PUBLIC_EVENTS = DEPLOYMENT_EVENTS + DOMAIN_EVENTS + CRON_EVENTS
# Status moves no integration reports (deploying, finalizing, restarting, healthy again): the
# dashboard's live views show them.
STATUS = "deployment.status"
