"""The one exception type meant for users.

Anything raised as ``UserError`` is rendered by the CLI as a single line (``error: ...``) with exit code 2;
every other exception is a bug and keeps its traceback. The runtime raises it too, so a bad dataset row
found inside a container reads the same as a bad key found on a laptop.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: bad config, missing file, unreachable host."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message.strip()
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text} ({' '.join(self.hint.split())})"
        return text


class ConfigError(UserError):
    """One or more problems in a config file; each problem is its own line in ``problems``."""

    def __init__(self, problems: list[str], *, warnings: list[str] | None = None, summary: str = "") -> None:
        self.problems = problems
        self.warnings = list(warnings or [])  # found before the problems; the CLI prints them too
        self.summary = summary                # "N keys used, K unsupported" when the names were checked
        super().__init__("; ".join(problems) if len(problems) == 1 else f"{len(problems)} config problems")

    def lines(self) -> list[str]:
        return list(self.problems)
