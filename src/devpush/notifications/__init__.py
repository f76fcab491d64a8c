"""Notifications: a team's channels (generic webhook, Slack, Discord, email) told about the
domain events they chose. The subscriber records one delivery per matching channel and event;
a job sends it, retrying with backoff, so that a receiver that is down holds back only itself.
"""
