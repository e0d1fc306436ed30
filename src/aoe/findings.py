"""What fsck finds: each finding (how bad, what, where, which runs), and the report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ERROR = "error"
WARNING = "warning"
INFO = "info"
@dataclass(frozen=True)
class Finding:
    """One thing fsck found: how bad, what, where, which runs it affects, what to do."""

    severity: str
    kind: str
    message: str
    object: str | None = None
    ref: str | None = None
    runs: tuple[str, ...] = ()
    """Affected runs as ``font_id/run_id``."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v not in (None, ())}


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    fonts: int = 0
    runs: int = 0
    objects: int = 0
    objects_read: int = 0
    bytes_read: int = 0
    repaired: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def clean(self) -> bool:
        return not self.errors

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.findings.append(Finding(*args, **kwargs))

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(f.severity == s for f in self.findings) for s in (ERROR, WARNING, INFO)}
        return {
            "clean": self.clean, "fonts": self.fonts, "runs": self.runs, "objects": self.objects,
            "objects_read": self.objects_read, "bytes_read": self.bytes_read, "counts": counts,
            "findings": [f.to_dict() for f in self.findings], "repaired": self.repaired,
        }



def runs_text(runs: Iterable[str]) -> str:
    """Runs named for a message: the first five, and how many more."""
    runs = list(runs)
    if not runs:
        return "no run (an orphan)"
    shown = ", ".join(runs[:5])
    return f"run{'s' if len(runs) > 1 else ''} {shown}" + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
