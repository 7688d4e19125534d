"""Storage failures as one line: the remote's own message, what Pivot was doing, and a hint.

"Not found" is the only answer that means absent. Any other failure (credentials, permission,
network) stops the command with a `RemoteError`; it is never taken as a reason to re-upload or to
call an object missing.
"""

from __future__ import annotations

from typing import Any

from pivot.errors import PivotError, RemoteError
from pivot.remote.storage import Storage
from pivot.remote_config import scrub

_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError")
_NETWORK = ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError",
            "ReadTimeoutError")


def _hint(storage: Storage, exc: BaseException, kind: str, text: str) -> str:
    if kind in _CREDENTIALS or "credentials" in text.lower():
        return ("; set credentials in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) "
                f"or with 'pivot remote add {storage.name} URL --force -o profile=…'")
    if isinstance(exc, PermissionError):
        return "; check that these credentials may read and write this bucket/prefix"
    if kind in _NETWORK or isinstance(exc, (ConnectionError, TimeoutError)):
        return "; check the network and the remote's endpoint_url ('pivot remote list')"
    return ""


def describe(storage: Storage, exc: BaseException, doing: str) -> RemoteError:
    """One line for a failure that is not 'not found': the remote's own message and a hint."""
    if isinstance(exc, RemoteError):
        return exc
    kind = type(exc).__name__
    text = scrub(str(exc).strip(), storage.secrets) or kind
    hint = _hint(storage, exc, kind, text)
    if kind not in text and not isinstance(exc, OSError):
        text = f"{kind}: {text}"
    return RemoteError(f"remote '{storage.name}' ({scrub(storage.url)}): {doing} failed: {text}{hint}")


class Step:
    """What a remote operation is doing, so that a storage failure becomes one RemoteError
    naming it. `passthrough`: exceptions that keep their own meaning."""

    def __init__(self, storage: Storage, doing: str,
                 passthrough: tuple[type[BaseException], ...] = (PivotError,)) -> None:
        self.storage, self.doing, self.passthrough = storage, doing, passthrough

    def __enter__(self) -> Step:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, self.passthrough):
            raise describe(self.storage, exc, self.doing) from None
