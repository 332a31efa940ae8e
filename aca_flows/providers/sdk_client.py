"""What the providers built on a vendor SDK (anthropic, openai) share: their settings, a
missing-key error that names the fix, and one SDK client per event loop."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

from aca_flows.errors import PermanentProviderError
from aca_flows.settings import ModelPrice, ProviderSection

__all__ = ["SdkProvider", "close_clients"]

# Every client handed out, with its loop: closed by ``close_clients`` before the loop ends,
# else the SDK closes it on garbage collection and logs "Event loop is closed".
_OPEN: weakref.WeakKeyDictionary[Any, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


class SdkProvider:
    """Subclasses set the class variables and ``new_client``; the rest is here."""

    name: ClassVar[str]
    default_model: ClassVar[str]
    key_variable: ClassVar[str]
    base_url_variable: ClassVar[str]
    key_help: ClassVar[str]  # how to get a key, for the missing-key error

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model: str | None = None,
        max_tokens: int = 8192,
        timeout_seconds: float = 600,
        prices: Mapping[str, ModelPrice] | None = None,
    ):
        self.api_key = api_key
        self.base_url = base_url
        self.model = model or self.default_model
        self.max_tokens = max_tokens
        self.timeout_seconds = timeout_seconds
        self.prices = dict(prices or {})
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def from_config(cls, section: ProviderSection, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        return cls(
            api_key=env.get(cls.key_variable),
            base_url=section.base_url or env.get(cls.base_url_variable),
            model=section.model,
            max_tokens=section.max_tokens,
            timeout_seconds=section.timeout_seconds,
            prices=section.prices,
        )

    def new_client(self) -> Any:
        """A new async SDK client with retries off (``max_retries=0``)."""
        raise NotImplementedError

    def _client(self) -> Any:
        if not self.api_key:
            raise PermanentProviderError(
                f"{self.name}: no API key. Set {self.key_variable} ({self.key_help})"
                " or choose another provider with --provider.",
                provider=self.name,
            )
        # An async client is tied to the event loop it first ran on, and callers (Prefect
        # task runs) may come from different loops: one client per loop, reused, since
        # building one (its TLS context) costs about 0.1 s.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self.new_client()
            _OPEN[client] = loop
        return client


async def close_clients() -> None:
    """Close the SDK clients made on the running event loop (call before it ends)."""
    loop = asyncio.get_running_loop()
    for client, client_loop in list(_OPEN.items()):
        if client_loop is loop:
            _OPEN.pop(client, None)
            await client.close()
