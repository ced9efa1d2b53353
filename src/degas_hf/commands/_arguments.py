"""Argument types shared by the commands, so that a flag reads the same way in every command (standard library only:
`--help` and argument errors must not wait for torch)."""

from __future__ import annotations

import argparse


def int_at_least(minimum: int):
    """An argparse `type` for an integer >= `minimum`, with an error that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def band_name_list(values) -> list[str] | None:
    """`--band-names` as given: space-separated (`B02 B03`), comma-separated (`B02,B03`) or both."""
    if values is None:
        return None
    return [name.strip() for value in values for name in str(value).split(",") if name.strip()]
