"""Typed errors. Each message says what happened and what to do about it.

Errors a user can cause derive from `TriageError` and are reported without a traceback (the CLI exits 2 on them).
Errors a tool can raise are classified by `ToolError.kind` so that retries and fallbacks are chosen by class:
transient errors are retried, permanent ones fail the step, policy errors are refused before any I/O.
"""

from __future__ import annotations

from typing import Literal

ToolErrorKind = Literal["transient", "permanent", "policy"]


class TriageError(Exception):
    """Base class for every error triage raises on purpose."""


class InvalidTicketError(TriageError):
    """The ticket is malformed: missing or empty fields, wrong types, over the size limit, or bad JSON."""


class UnknownCustomerError(InvalidTicketError):
    """The ticket names a customer id that the helpdesk does not know."""


class InvalidReleaseError(TriageError):
    """A release to follow up is malformed: a version that is not a version, no fixes, a malformed key."""


class UnknownConversationError(InvalidTicketError):
    """The ticket continues a conversation that does not exist, or belongs to another customer."""


class ConversationBusyError(TriageError):
    """A follow-up arrived while the conversation's last turn is still running (or died mid-run)."""


class ThreadNotFoundError(TriageError):
    """No run with that thread id exists in the checkpoint store."""

    @classmethod
    def named(cls, thread_id: str) -> ThreadNotFoundError:
        """The error for `thread_id`, saying where the existing ones are listed."""
        return cls(f"no thread {thread_id!r}; `triage threads` lists the existing ones")


class PolicyFileError(TriageError):
    """A policy file is missing or invalid; the message names the file, the field and the fix."""


class ToolError(TriageError):
    """A tool call failed; `kind` says whether to retry (transient), give up (permanent) or refuse (policy)."""

    kind: ToolErrorKind = "permanent"

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool


class TransientToolError(ToolError):
    """A failure that may pass on retry (a locked database, a dropped connection)."""

    kind: ToolErrorKind = "transient"


class PermanentToolError(ToolError):
    """A failure that a retry will not fix (a missing row, a violated constraint)."""

    kind: ToolErrorKind = "permanent"


class ScopeDeniedError(ToolError):
    """A node called a tool outside its granted scopes; refused before any I/O."""

    kind: ToolErrorKind = "policy"

    def __init__(self, tool: str, caller: str, scope: str) -> None:
        super().__init__(tool, f"'{caller}' is not granted scope '{scope}'; grant it in the permissions policy")
        self.caller = caller
        self.scope = scope


class InvalidDecisionError(TriageError):
    """An approval decision is malformed (unknown kind, an edit without arguments, a rejection without reason)."""


class NotAwaitingApprovalError(TriageError):
    """The thread is not paused on an approval (it finished, failed, or never needed one)."""


class StaleApprovalError(TriageError):
    """The decision answers an approval that is no longer the pending one."""


class ApprovalRefusedError(TriageError):
    """The approver may not give this approval (unknown, not senior enough, or already approved it)."""


class StoreError(TriageError):
    """A store cannot be opened: the home is not a writable folder, or a store file cannot be read or written."""


class DamagedStoreError(StoreError):
    """A store file exists but is empty, truncated, not an SQLite database, or not a triage store; nothing was written.

    The message names the file, what is wrong with it and how to restore it.
    """

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(
            f"{path} {problem}. Nothing was written: restore it from a backup, or move the home's store files aside "
            "to start afresh (triage creates and seeds stores only in a new home)"
        )
        self.path = path
        self.problem = problem


class ApprovalConflictError(TriageError):
    """Another decision on the same approval won; this one was not applied.

    `winner` names who decided and how, e.g. "alice (approve)".
    """

    def __init__(self, message: str, *, approval_id: str, winner: str) -> None:
        super().__init__(message)
        self.approval_id = approval_id
        self.winner = winner


class StoreUnavailableError(TriageError):
    """A store (the helpdesk or the checkpoint store) could not be used.

    `thread_id` is None when the run could not start (nothing was written), and the run's thread when it started
    and then lost its store: `triage recover <thread_id>` continues it once the store is back.
    """

    def __init__(self, message: str, *, thread_id: str | None = None) -> None:
        super().__init__(message)
        self.thread_id = thread_id


class HoldLostError(StoreUnavailableError):
    """A thread's hold ran out and another process took it: this process's work on the thread stopped.

    Raised at the next wait of the work, or by the checkpoint store when the work tried to save: nothing more of it
    was saved (`triage.leases`).
    """


class CheckpointStoreError(TriageError):
    """A checkpoint write or read failed after retries; `kind` says whether trying again later may help."""

    def __init__(self, message: str, *, kind: ToolErrorKind) -> None:
        super().__init__(message)
        self.kind = kind


class WorkerError(TriageError):
    """The resident `triage worker` could not start, or stopped while it ran a ticket; the message says what next."""


class ReportedError(TriageError):
    """A `TriageError` the resident worker raised for this command, carried by its type name and message.

    The command reports it as it would have reported the error raised in its own process: the same type name in
    `--json` output, the same line on stderr, exit 2.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
