"""Provider keys from Prefect Secret blocks: ``[providers.<name>] api_key_secret = "block"``.

The flow reads the block when a run starts and hands its value to the provider as if it were
the provider's key variable. The value never enters the process environment (agent commands
could read it there) and is registered with the redactor, so it never leaves aca.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aca_flows.errors import ConfigError
from aca_flows.session.secret_values import register_secret
from aca_flows.settings import AcaConfig

__all__ = ["KEY_VARIABLES", "provider_environ", "providers_environ", "read_secret_block"]

# The providers that take an API key, and the variable each reads it from.
KEY_VARIABLES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


def provider_environ(name: str, config: AcaConfig) -> Mapping[str, str] | None:
    """The environment to build provider ``name`` from: ``None`` (the process's own) unless
    its config names a Secret block, else the process's with the block's value as its key."""
    block = config.provider(name).api_key_secret
    if not block:
        return None
    variable = KEY_VARIABLES.get(name)
    if variable is None:
        raise ConfigError(
            f"[providers.{name}] api_key_secret: only {' and '.join(KEY_VARIABLES)} read "
            f"their key from a Prefect Secret block; remove the setting for {name}."
        )
    value = read_secret_block(block, setting=f"[providers.{name}] api_key_secret")
    return {**os.environ, variable: value}


def providers_environ(names, config: AcaConfig) -> Mapping[str, str] | None:
    """One environment holding the Secret-block keys of all of ``names`` (``None`` when none
    has one): what the readiness check of a run's providers needs."""
    merged: dict[str, str] | None = None
    for name in sorted(set(names)):
        environ = provider_environ(name, config)
        if environ is not None:
            merged = {**(merged or {}), **environ}
    return merged


def read_secret_block(block: str, *, setting: str) -> str:
    """The value of the Prefect Secret block ``block``, registered with the redactor."""
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectNotFound

    try:
        # _sync: the run is set up by synchronous code inside the flow's event loop.
        value = Secret.load(block, _sync=True).get()
    except (ValueError, ObjectNotFound):
        raise ConfigError(
            f"{setting} = {block!r}: the Prefect server has no Secret block of that name. "
            f"Create it (`prefect block create secret`, or in Python "
            f"`Secret(value=KEY).save({block!r})`) or fix the name."
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{setting} = {block!r}: the Secret block is empty; save the key in it.")
    register_secret(value)
    return value.strip()
