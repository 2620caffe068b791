"""The one exception tree of flagroll.

Every error flagroll raises on purpose derives from :class:`FlagrollError`. The tree says whether
trying again can help::

    FlagrollError
    ├── PermanentError              retrying the same input gives the same error
    │   ├── PolicyError             a policy file is invalid (carries every issue found)
    │   ├── FlagFileError           the flag file is unreadable, malformed, or was edited outside
    │   │   └── FlagNotManagedError the flag exists but flagroll does not own it
    │   ├── UsageError              a command was called wrongly (bad option, unknown flag)
    │   └── NotAwaitingApprovalError  ``flagroll approve`` on a rollout that is not awaiting approval
    └── TemporaryError              the world may change: the next cycle tries again
        ├── LockTimeoutError        another writer held the lock for too long
        ├── WriteError              the flag file or decision log could not be written
        │   └── WriteConflictError  the flag store changed between read and write: read again,
        │                           decide again (a Kubernetes 409); nothing was overwritten
        ├── CycleAbandoned          shutting down: a cycle gave up waiting for the lock
        ├── LeadershipLostError     this replica no longer holds the leader Lease: it must not write
        └── QueryError              Prometheus could not answer (never raised into a decision:
                                    the client turns it into an ``error`` outcome)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FlagrollError(Exception):
    """Base of every error flagroll raises on purpose."""


class PermanentError(FlagrollError):
    """The same input will fail the same way: fix the input."""


class TemporaryError(FlagrollError):
    """The condition may clear by itself: the next cycle retries."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a policy file, located as precisely as the file allows."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    severity: str = "error"  # "error" or "warning"
    flag: str | None = None  # the flag key of the policy at fault, when it could be read

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f"{self.field}: " if self.field else ""
        label = "" if self.severity == "error" else f"{self.severity}: "
        return f"{where}: {label}{field}{self.message}"


class PolicyError(PermanentError):
    """A policy file is invalid. ``issues`` lists every problem found, each with file and line."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class FlagFileError(PermanentError):
    """The flag file cannot be read as flagd JSON, or a managed flag's state is inconsistent."""


class FlagNotManagedError(FlagFileError):
    """The flag exists in the flag file but carries no flagroll state, so flagroll leaves it alone."""


class UsageError(PermanentError):
    """A command was called with arguments that cannot work."""


class NotAwaitingApprovalError(PermanentError):
    """``flagroll approve`` named a rollout that does not wait for an approval (exit 1, not a usage
    error: the command was right, the rollout is not where its caller thought)."""


class CycleAbandoned(TemporaryError):
    """The controller is shutting down: a cycle that had not started writing gave up."""


class LockTimeoutError(TemporaryError):
    """Another writer held the flag file's lock longer than we were willing to wait."""


class WriteError(TemporaryError):
    """Writing the flag file or the decision log failed; the previous content is intact."""


class QueryError(TemporaryError):
    """Prometheus could not answer a query."""


class WriteConflictError(WriteError):
    """The flag store changed between our read and our write (a Kubernetes 409 Conflict): nothing was
    written; read again and decide again from what is there now."""


class LeadershipLostError(TemporaryError):
    """This replica no longer holds the leader Lease, so it must not write; another replica leads."""
