"""aca's Prefect block: the settings of ``aca.toml``, kept on the Prefect server.

A run given ``config_block="<name>"`` (a flow parameter) reads its configuration from the
``AcaConfigBlock`` document of that name instead of a file, and its provider keys from the
Prefect Secret blocks the configuration names, so a worker needs nothing on its disk
(docs/configuration.md, "Settings in a Prefect block"). Registered with
``prefect block register -m aca_flows``.
"""

from __future__ import annotations

import tomllib
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, ValidationError, field_validator, model_validator

from aca_flows.errors import ConfigError
from aca_flows.settings import AcaConfig

__all__ = ["AcaConfigBlock", "load_config_block"]

# Where the block's page in the UI links to: its section of docs/configuration.md.
DOCUMENTATION_URL = (
    "https://github.com/aca-flows/aca/blob/main/docs/configuration.md#settings-in-a-prefect-block"
)


class AcaConfigBlock(Block):
    """aca's settings, as in an aca.toml file, and the Secret blocks holding provider keys.

    A run given this block's name as its `config_block` parameter needs no config file and
    no key on the worker.

    Example:
        ```python
        from aca_flows import AcaConfigBlock

        aca_config_block = AcaConfigBlock.load("BLOCK_NAME")
        ```
    """

    _block_type_name: ClassVar[str] = "Aca Config"
    _documentation_url: ClassVar[str] = DOCUMENTATION_URL

    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="The settings, shaped like aca.toml: one table per section "
        '(e.g. {"session": {"provider": "anthropic"}}); anything left out has its default.',
    )
    api_key_secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Provider name to the name of the Prefect Secret block holding its key "
        '(e.g. {"anthropic": "anthropic-key"}); the same as [providers.<name>] api_key_secret.',
    )

    @field_validator("settings")
    @classmethod
    def _valid_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        # Validated by the same model as aca.toml: a bad block is refused when saved.
        try:
            AcaConfig.model_validate(settings)
        except ValidationError as exc:
            problems = "; ".join(
                f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"invalid aca settings: {problems}") from None
        return settings

    @model_validator(mode="after")
    def _one_place_per_key(self) -> AcaConfigBlock:
        providers = self.settings.get("providers", {})
        both = [n for n in self.api_key_secrets if "api_key_secret" in providers.get(n, {})]
        if both:
            raise ValueError(
                f"the key of {', '.join(both)} is named twice, in api_key_secrets and in "
                "settings' providers table: keep one"
            )
        return self

    @classmethod
    def from_toml(cls, text: str, **fields: Any) -> AcaConfigBlock:
        """A block holding the settings of an aca.toml file's ``text``."""
        return cls(settings=tomllib.loads(text), **fields)

    def config_data(self) -> dict[str, Any]:
        """The settings with ``api_key_secrets`` in their place: what ``load_config`` takes
        instead of a file."""
        data = {**self.settings, "providers": dict(self.settings.get("providers", {}))}
        for name, secret in self.api_key_secrets.items():
            data["providers"][name] = {**data["providers"].get(name, {}), "api_key_secret": secret}
        return data


def load_config_block(name: str) -> dict[str, Any]:
    """The settings of the ``AcaConfigBlock`` named ``name`` on the Prefect server, or a
    ``ConfigError`` naming the fix."""
    from prefect.exceptions import ObjectNotFound

    try:
        # _sync: the run is set up by synchronous code inside the flow's event loop.
        block = AcaConfigBlock.load(name, _sync=True)
    except (ValueError, ObjectNotFound):
        raise ConfigError(
            f"config_block {name!r}: the Prefect server has no Aca Config block of that name. "
            "Register the type (`prefect block register -m aca_flows`) and save one "
            f"(`AcaConfigBlock.from_toml(text).save({name!r})`), or fix the name."
        ) from None
    except ValidationError as exc:
        raise ConfigError(
            f"config_block {name!r}: the block's settings are invalid ({exc.error_count()} "
            "problem(s)); edit the block and correct them."
        ) from None
    return block.config_data()
