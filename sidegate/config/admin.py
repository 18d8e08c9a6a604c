"""The admin API's own settings: admin roles' sign-in and the audit log."""

from __future__ import annotations

from sidegate.config.base import StrictModel


class AdminConfig(StrictModel):
    pass
