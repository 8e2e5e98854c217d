"""An HTTP answer as the Exchange Online emulation builds it (status, headers, body), so the
Entra and REST sides stay free of the server's socket handling."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol


class Headers(Protocol):
    """Request headers, looked up case-insensitively (http.server's Message, or a dict)."""

    def get(self, name: str, /) -> Any: ...


@dataclass
class Reply:
    """One HTTP response: ``status``, ``headers`` (name -> value), ``body`` bytes."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def json_reply(
    status: int, document: Any, headers: dict[str, str] | None = None,
    content_type: str = "application/json; charset=utf-8",
) -> Reply:
    """``document`` as compact UTF-8 JSON (non-ASCII kept, as the services send it)."""
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Reply(status, {"Content-Type": content_type, **(headers or {})}, body)


def text_reply(status: int, text: str, headers: dict[str, str] | None = None) -> Reply:
    """A plain-text answer (the service's concurrency refusal comes as one)."""
    return Reply(status, {"Content-Type": "text/plain; charset=utf-8", **(headers or {})},
                 text.encode("utf-8"))
