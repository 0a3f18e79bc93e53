"""Command-line options generated from config dataclasses: name, type, default, help and choices all
come from the field (``metadata={"help": ..., "choices": ...}``), so no default is typed twice.

``add_fields(parser, PrefillConfig(), ["ks", "on_short"], ks="--tokens")`` adds ``--tokens`` (ints, nargs
"+", default the config's ``ks``) and ``--on-short``; values land on ``args.<field name>``. Defaults are
read from the instance given, so a nested config's own defaults (``PrefillConfig().sampling.repeats``)
are the options' defaults. Training options (``TrainingArguments`` subclasses) use transformers'
``HfArgumentParser`` as an argparse parent instead (:func:`dataclass_parser`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any


def _field(cls, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _unwrap(annotation) -> tuple[Any, bool]:
    """(the annotation without ``| None``, whether it was optional)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), len(args) < len(typing.get_args(annotation))
    return annotation, False


def add_field(parser, config: Any, name: str, flag: str | None = None, **overrides: Any) -> argparse.Action:
    """Add the option of field ``name`` of the dataclass instance ``config`` (default: its value there).

    bool fields become flags: ``--x`` (store True) when the default is False or None, ``--no-x`` (store
    False) when it is True; ``tuple[T, ...]`` fields take one or more T; ``T | None`` fields take a T.
    ``overrides`` are passed to ``add_argument`` (e.g. ``nargs="*"``, ``help=...``)."""
    cls = type(config)
    f = _field(cls, name)
    annotation, _ = _unwrap(typing.get_type_hints(cls)[name])
    default = getattr(config, name)
    help_text = f.metadata.get("help")
    kwargs: dict[str, Any] = {"dest": name, "default": default,
                              "help": help_text.replace("%", "%%") if help_text else None}
    if "choices" in f.metadata:
        kwargs["choices"] = list(f.metadata["choices"])
    if annotation is bool:
        if default is True:  # the option turns the field off: --no-x
            flag = flag or f"--no-{name.replace('_', '-')}"
            kwargs.update(action="store_false")
            if kwargs["help"]:
                kwargs["help"] = f"turn off: {kwargs['help'][0].lower()}{kwargs['help'][1:]}"
            default = False  # nothing to show
        else:
            kwargs.update(action="store_const", const=True)
    elif typing.get_origin(annotation) is tuple:
        kwargs.update(nargs="+", type=typing.get_args(annotation)[0])
        kwargs["default"] = list(default) if default is not None else None
    else:
        kwargs["type"] = annotation if annotation in (int, float) else str
    shown = not (default is None or default is False or default == () or default == "")
    if kwargs.get("help") and "default" not in kwargs["help"] and shown:
        kwargs["help"] = f"{kwargs['help'].rstrip('.')} (default: {_shown(default)})"
    if flag and "action" not in kwargs:  # the value's name in the usage: the option's, not the field's
        kwargs["metavar"] = flag.lstrip("-").replace("-", "_").upper()
    kwargs.update(overrides)
    return parser.add_argument(flag or f"--{name.replace('_', '-')}", **kwargs)


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple | list) else str(value).replace("%", "%%")


def add_fields(parser, config: Any, names: Sequence[str], **flags: str) -> None:
    """:func:`add_field` for each of ``names``; ``flags`` maps a field name to its option name when that
    differs from ``--field-name``."""
    for name in names:
        add_field(parser, config, name, flags.get(name))


def config_from(args: argparse.Namespace, cls, **values: Any):
    """An instance of dataclass ``cls`` from the namespace's values of its fields (``values`` win)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    found = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**found, **values})


def dataclass_parser(*classes) -> argparse.ArgumentParser:
    """A parent parser (``add_parser(..., parents=[...])``) with every field of ``classes`` as an option
    under its own name (``--learning_rate`` or ``--learning-rate``), by transformers' ``HfArgumentParser``."""
    from transformers import HfArgumentParser

    return HfArgumentParser(classes, add_help=False)
