"""Turn the errors a user can fix into one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import typer

from onevision.catalog.format import CatalogError
from onevision.images import ImageError

F = TypeVar("F", bound=Callable)

# errors whose message is meant for the user; anything else is a bug and keeps its traceback
USER_ERRORS: tuple[type[BaseException], ...] = (CatalogError, ImageError, FileExistsError, FileNotFoundError,
                                                ValueError)


def user_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from infra.process import ServiceError

        try:
            return fn(*args, **kwargs)
        except (*USER_ERRORS, ServiceError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            message = _service_unreachable(exc)
            if message is None:
                raise
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _service_unreachable(exc: Exception) -> str | None:
    """A one-line message when the broker or Redis does not answer (None for anything else)."""
    from infra.settings import load_settings

    name = type(exc).__name__
    if name == "NoBrokersAvailable":
        where = load_settings().kafka.bootstrap_servers
        return f"no Kafka broker answers at {where} (start the embedded one: onevision infra up)"
    if type(exc).__module__.startswith("redis") and name in ("ConnectionError", "TimeoutError"):
        return f"Redis does not answer at {load_settings().redis.safe_url} (start the embedded one: onevision infra up)"
    return None
