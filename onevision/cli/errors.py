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
USER_ERRORS: tuple[type[BaseException], ...] = (CatalogError, ImageError, FileExistsError, FileNotFoundError, ValueError)


def user_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from infra.process import ServiceError

        try:
            return fn(*args, **kwargs)
        except (*USER_ERRORS, ServiceError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
