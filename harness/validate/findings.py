"""What validation reports: one ``Finding`` per problem (file:line:col, severity, code, message) and the
``ValidationReport`` of a file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from harness.sanitize import clean_text

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    path: str
    line: int  # 1-based
    col: int  # 1-based
    severity: str  # "error" | "warning"
    code: str  # short stable id, e.g. "forbidden-import"
    message: str  # what is wrong and what to do about it

    def format(self) -> str:
        """One line for a terminal: the path and message are the submitter's text, cleaned of control
        characters (harness.sanitize); to_dict() keeps them exact."""
        return clean_text(f"{self.path}:{self.line}:{self.col}: {self.severity} {self.code}: {self.message}")


@dataclass
class ValidationReport:
    path: str
    sha256: str | None
    size: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "ok": self.ok,
            "error_count": len(self.errors),
            "warning_count": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }
