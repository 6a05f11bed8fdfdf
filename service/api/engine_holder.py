"""The engine a servicer answers with: none while the models load, then the loaded one.

The server listens (and answers health checks) before its models are loaded, so each servicer
starts empty and is given the engine by `attach`; until then an RPC that needs it gets
UNAVAILABLE, which tells clients to retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.errors import Unavailable

if TYPE_CHECKING:
    from service.engine.engine import Engine  # type only: service.api never loads the runtime


class EngineHolder:
    """Base of our servicers: holds the engine once attached."""

    def __init__(self) -> None:
        self._engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Start answering with `engine` (once its models are loaded)."""
        self._engine = engine

    @property
    def engine(self) -> Engine:
        """The attached engine; Unavailable while the models are still loading."""
        if self._engine is None:
            raise Unavailable("the server is still loading its models; retry shortly")
        return self._engine
