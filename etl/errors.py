"""The exception tree. Only what stops a whole run is an exception; a bad row or a declined
capture is data (a row with a status and a reason).

    BulkCaptureError              stops the command; the CLI prints "Error: <message>", exit 1
    ├── InputError                unreadable input, unknown format, missing required column
    ├── ContractError             a validated line breaks the pandera contract: a bug, nothing sent
    ├── ConfigError               bad option or config file, missing credentials, unsafe URL
    ├── ResultsError              results path not writable, or exists without --overwrite
    ├── LedgerError               the ledger cannot be opened or is corrupt
    │   └── LedgerBusyError       another run holds the ledger
    └── RunAborted                the run started and was stopped; results are still written
        ├── AuthenticationError   the provider answered 401: credentials are wrong
        ├── TlsError              the target's TLS certificate does not verify
        ├── CircuitOpenError      too many consecutive transient failures
        └── Interrupted           SIGINT / SIGTERM

    CaptureError                  one request's failure, raised inside the client, caught by send
    ├── TransientError            429, 5xx, timeout, connection error: retry with the same key
    └── TerminalError             any other 4xx: final, never retried

The retry policy reads the class (``TransientError``), never the message.
"""

from __future__ import annotations


class BulkCaptureError(Exception):
    """Base of every error that stops a command. ``str(exc)`` is shown to the user as is."""


class InputError(BulkCaptureError):
    """The input cannot be read: unreadable file, unknown format, missing required column."""


class ContractError(BulkCaptureError):
    """A line that passed validation fails the pandera schema before sending: stop, send nothing."""


class ConfigError(BulkCaptureError):
    """A setting is wrong or missing: option, config file, credentials, target URL."""


class ResultsError(BulkCaptureError):
    """The results file cannot be written where asked."""


class LedgerError(BulkCaptureError):
    """The ledger cannot be opened, is corrupt, or is of an unknown schema version."""


class LedgerBusyError(LedgerError):
    """Another run holds the ledger's run lock."""


class RunAborted(BulkCaptureError):
    """The run was stopped after it started. Results are written for what was done."""


class AuthenticationError(RunAborted):
    """The provider answered 401: the credentials are wrong. Nothing more is sent."""


class TlsError(RunAborted):
    """The target's certificate did not verify: never retried, nothing is sent anywhere else."""


class CircuitOpenError(RunAborted):
    """Too many consecutive transient failures: the provider looks down."""


class Interrupted(RunAborted):
    """SIGINT or SIGTERM: no new captures started, those in flight finished."""


class CaptureError(Exception):
    """One request failed. Carries what the API said, for the results row."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        error_code: str | None = None,
        error_messages: tuple[str, ...] = (),
        correlation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code
        self.error_messages = error_messages
        self.correlation_id = correlation_id
        self.retry_after = retry_after


class TransientError(CaptureError):
    """Retry with the same idempotency key: 429, 5xx, timeout, connection error.

    ``outcome_unknown`` is true when the request may have reached the provider (a timeout or a
    connection dropped after sending): the capture may exist.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.outcome_unknown = outcome_unknown


class TerminalError(CaptureError):
    """A definitive 4xx: the provider refused and captured nothing. Never retried."""
