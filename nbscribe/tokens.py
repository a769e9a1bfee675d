"""Temporary streaming tokens, so a long-lived notebook or a browser need not hold the API key."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from .errors import ConfigError, ConnectError, describe_code, refused
from .service import resolve_api_key

__all__ = ["create_temporary_token"]

TOKEN_URL = "https://streaming.assemblyai.com/v3/token"


def create_temporary_token(
    api_key: str | None = None,
    expires_in_seconds: int = 600,
    max_session_duration_seconds: int | None = None,
    url: str = TOKEN_URL,
    timeout: float = 10.0,
) -> str:
    """Mint a single-use temporary token for one streaming session.

    Parameters
    ----------
    api_key : str, optional
        Default ``$ASSEMBLYAI_API_KEY``.
    expires_in_seconds : int
        1-600: the session must be opened within this time.
    max_session_duration_seconds : int, optional
        60-10800: the longest the session may last (default 3 hours).
    url : str
        The token endpoint (AssemblyAI's, or a compatible server's ``/v3/token``).
    timeout : float
        Seconds to wait for the answer.

    Returns
    -------
    str
        The token; pass it as ``token=`` to `Transcriber` or `StreamingClient`.
    """
    key = resolve_api_key(api_key)
    if not key:
        raise ConfigError("creating a token needs an API key: pass api_key= or set "
                          "ASSEMBLYAI_API_KEY")
    if not 1 <= expires_in_seconds <= 600:
        raise ConfigError(f"expires_in_seconds must be 1-600, got {expires_in_seconds}")
    query = {"expires_in_seconds": expires_in_seconds}
    if max_session_duration_seconds is not None:
        if not 60 <= max_session_duration_seconds <= 10800:
            raise ConfigError("max_session_duration_seconds must be 60-10800, got "
                              f"{max_session_duration_seconds}")
        query["max_session_duration_seconds"] = max_session_duration_seconds
    request = urllib.request.Request(
        f"{url}?{urllib.parse.urlencode(query)}", headers={"Authorization": key}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise refused(f"the token endpoint refused: {describe_code(exc.code)}", exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConnectError(f"cannot get a token from {url}: {exc}") from None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise ConnectError(f"the token endpoint {url} answered without a token")
    return token
