"""Every models module, so that `Base.metadata` is complete (Alembic, the platform, backups,
tests), and the hook that writes deployments' state changes as events. It sits above the
domains: `db` itself imports none of them."""

from __future__ import annotations


def all_models() -> None:
    from devpush.audit import models as _audit  # noqa: F401
    from devpush.auth import models as _auth  # noqa: F401

    # Not a models module: the hooks that mark a transaction changing tokens or users.
    from devpush.auth import token_cache as _token_cache  # noqa: F401
    from devpush.cron import models as _cron  # noqa: F401
    from devpush.databases import models as _databases  # noqa: F401

    # Not a models module: the hook that writes deployments' state changes as events.
    from devpush.deployments import domain_events as _deployment_events  # noqa: F401
    from devpush.deployments import models as _deployments  # noqa: F401
    from devpush.domains import models as _domains  # noqa: F401
    from devpush.github import models as _github  # noqa: F401
    from devpush.logs import models as _logs  # noqa: F401
    from devpush.metrics import models as _metrics  # noqa: F401
    from devpush.notifications import models as _notifications  # noqa: F401
    from devpush.outbox import models as _outbox  # noqa: F401
    from devpush.projects import models as _projects  # noqa: F401
    from devpush.teams import models as _teams  # noqa: F401
    from devpush.upgrades import models as _upgrades  # noqa: F401
