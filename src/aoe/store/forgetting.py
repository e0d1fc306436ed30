"""Forgetting runs by a retention policy (restic's ``forget``: see :mod:`aoe.retention`),
given or stored per font and applied after each save, so a trainer's store stays bounded
without a cron job. Forgotten runs go to the trash: restorable until a gc."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError, InvalidInputError, NotFoundError, StoreError
from ..layout import retention_key
from ..limits import parse_json
from ..names import format_time, parse_digest, utc_now
from ..retention import Decisions, RetentionPolicy, decide
from ..runinfo import RunInfo
from .history import History
from .reading import Reading


@dataclass
class ForgetReport:
    """What ``forget`` did (or, ``dry_run``, would do): why each run is kept, which were
    forgotten, and those it left because they changed meanwhile (amended, aliased)."""

    font_id: str
    policy: RetentionPolicy
    dry_run: bool
    kept: dict[str, list[str]] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"font_id": self.font_id, "policy": self.policy.to_dict(), "dry_run": self.dry_run,
                "kept": self.kept, "forgotten": self.forgotten, "left": self.left}


class Forgetting(History, Reading):
    """Retention policies, stored per font, and ``forget``."""

    def set_retention(self, font_id: str, policy: RetentionPolicy | Mapping[str, Any] | None) -> RetentionPolicy | None:
        """Store the font's retention policy (None: remove it), applied after every save
        into the font by any process of this aoe; returns it."""
        self._require_font(font_id)
        if policy is None:
            self.backend.delete(retention_key(font_id))
            return None
        checked = policy if isinstance(policy, RetentionPolicy) else RetentionPolicy.from_dict(policy)
        if checked.empty:
            raise InvalidInputError("a retention policy needs at least one --keep rule (none would keep only the "
                                    "newest run); remove it with --clear")
        self.backend.write(retention_key(font_id), [(json.dumps(checked.to_dict(), sort_keys=True) + "\n").encode()],
                           exclusive=False)
        return checked

    def retention(self, font_id: str) -> RetentionPolicy | None:
        """The font's stored retention policy, if any; FormatError if it cannot be read."""
        self._require_font(font_id)
        return self._stored_policy(font_id)

    def _stored_policy(self, font_id: str) -> RetentionPolicy | None:
        key = retention_key(font_id)
        try:
            data = self.backend.read(key)
        except NotFoundError:
            return None
        try:
            fields = parse_json(data)
            if not isinstance(fields, dict):
                raise InvalidInputError("not a JSON object")
            return RetentionPolicy.from_dict(fields)
        except (ValueError, TypeError) as exc:  # InvalidInputError is a ValueError
            raise FormatError(f"the retention policy {key} cannot be read ({exc}); set it again with "
                              f"`aoe store policy {font_id} ...` or remove it with --clear") from None

    def forget(self, font_id: str, policy: RetentionPolicy | Mapping[str, Any] | None = None, *,
               dry_run: bool = False) -> ForgetReport:
        """Move to the trash every run of the font that no rule of ``policy`` (default: the
        font's stored one) keeps; see :mod:`aoe.retention`. Runs saved meanwhile are not
        seen, so never forgotten; a run amended or aliased meanwhile is left."""
        self._require_font(font_id)
        if policy is None:
            policy = self._stored_policy(font_id)
            if policy is None:
                raise InvalidInputError(f"no retention rule given and {font_id} has no stored policy: give --keep-... "
                                        f"rules, or store them with `aoe store policy {font_id} ...`")
        checked = policy if isinstance(policy, RetentionPolicy) else RetentionPolicy.from_dict(policy)
        if checked.empty:
            raise InvalidInputError("give at least one --keep rule: without one, every run but the newest would go")
        runs = self.list_runs(font_id)
        decisions = decide(runs, checked, self.protected_runs(font_id))
        report = ForgetReport(font_id, checked, dry_run, {r: why for r, why in decisions.reasons.items() if why})
        if dry_run or not decisions.forgotten:
            report.forgotten = decisions.forgotten
            return report
        report.forgotten, report.left = self._trash(font_id, runs, decisions)
        return report

    def _trash(self, font_id: str, runs: list[RunInfo], decisions: Decisions) -> tuple[list[str], list[str]]:
        """Trash the runs decided, as the index listed them (a ref that moved meanwhile is
        left); then bring back any an alias was moved to meanwhile."""
        manifests = {info.run_id: parse_digest(info.manifest) for info in runs}
        chosen = decisions.forgotten
        trashed = self.refs.trash_runs(font_id, [(r, manifests[r]) for r in chosen], format_time(utc_now()))
        aliased = set(self.protected_runs(font_id)) & set(trashed)
        for run_id in sorted(aliased):  # an alias moved to it while it was being forgotten: it stays
            self.restore_run(font_id, run_id)
        gone = [r for r in trashed if r not in aliased]
        return gone, [r for r in chosen if r not in gone]

    def apply_retention(self, font_id: str) -> ForgetReport | None:
        """Forget by the font's stored policy, if it has one: what a save does after
        publishing. A policy that cannot be applied now is a warning, never a failed save
        (the run is saved)."""
        try:
            policy = self._stored_policy(font_id)
            return None if policy is None else self.forget(font_id, policy)
        except StoreError as exc:
            warnings.warn(f"the retention policy of {font_id} was not applied after this save: {exc}", stacklevel=3)
            return None
