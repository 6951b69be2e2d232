"""Nested dataclass configs from YAML presets plus ``key=value`` overrides.

A recipe's arguments are a dataclass of dataclasses (``model``, ``data``, ``train``, ...).
A YAML preset fills some of them, ``section.key=value`` overrides on the command line win
over the preset, and the resolved config is saved next to every checkpoint and result so
that a run can be repeated from its output folder alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
import warnings
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llavac.durable import write_atomic

C = TypeVar("C")


class ConfigKeyError(ValueError):
    """A bad config value; ``key`` is its ``section.key``, so a command line can name the flag
    that set it."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _field_types(cls) -> dict[str, Any]:
    """The dataclass fields of ``cls`` and their types (class variables are not config)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


# Keys renamed since 0.1 that still read, with a warning saying the new name. A saved run
# folder's config.yaml is read the same way, so a 0.2 run still loads, predicts and resumes.
DEPRECATED_KEYS = {
    "lora.method": "train.tuning",  # 0.1
    "train.method": "train.tuning",  # 0.2: --method now means score | generate everywhere
    "experiment.method": "experiment.methods",  # one method before 0.2; now a list
    "predict.out": "predict.output",  # 0.2: one name for an output across commands
}


def current_key(dotted: str) -> str:
    new = DEPRECATED_KEYS.get(dotted)
    if new is None:
        return dotted
    warnings.warn(f"config key {dotted!r} is deprecated: use {new!r}", FutureWarning,
                  stacklevel=3)
    return new


def renamed_keys(values: dict) -> dict:
    """A nested config mapping with deprecated keys moved to their new place."""
    values = {section: dict(v) if isinstance(v, dict) else v for section, v in values.items()}
    for old in DEPRECATED_KEYS:
        section, key = old.split(".")
        if isinstance(values.get(section), dict) and key in values[section]:
            new_section, new_key = current_key(old).split(".")
            value = values[section].pop(key)
            values.setdefault(new_section, {}).setdefault(new_key, value)
    return values


def from_dict(cls: type[C], values: dict, where: str = "") -> C:
    """Build ``cls`` from a nested dict, every value checked against its field's type; an
    unknown key or a wrong type is an error that names the key."""
    if not isinstance(values, dict):
        raise ValueError(f"config section {where.rstrip('.') or 'root'!r} must be a mapping, "
                         f"not {values!r}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in types_:
            known = ", ".join(types_)
            raise ValueError(f"unknown config key {where + key!r} (known here: {known})")
        tp = types_[key]
        if _is_dataclass_type(tp):
            kwargs[key] = from_dict(tp, value or {}, where=f"{where}{key}.")
        else:
            kwargs[key] = convert(value, tp, where + key)
    return cls(**kwargs)


def convert(value: Any, tp, key: str) -> Any:
    """``value`` as field type ``tp`` (``int``, ``float``, ``bool``, ``str``, ``list[...]``,
    ``X | None``), or a ``ValueError`` naming ``key``. An int is a float where a float is
    expected, a scalar a one-item list where a list is (``experiment.seeds=1``), and a
    ``1e-4`` string a float (YAML 1.1 reads exponents without a dot as strings)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return convert(value, option, key)
                except ValueError:
                    continue
    elif typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):  # procedures=qmf,cheema10
            value = [part.strip() for part in value.split(",")]
        return [convert(v, item, key) for v in (value if isinstance(value, list) else [value])]
    elif tp is bool and isinstance(value, bool):
        return value
    elif tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif tp is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif tp is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)  # a model or folder named "7"
    name = getattr(tp, "__name__", str(tp))
    raise ConfigKeyError(key, f"config key {key!r} expects {name}, got {value!r}")


def _parse(text: str, tp) -> Any:
    """An override's text as YAML (``1e-4``, ``true``, ``null``, ``[0, 1]``), kept verbatim
    where the field takes a string, so ``model.name=007`` stays ``"007"``."""
    value = yaml.safe_load(text)
    is_union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    options = typing.get_args(tp) if is_union else (tp,)
    return text if str in options and value is not None else value


def apply_overrides(config: C, overrides: list[str]) -> C:
    """Return a copy of ``config`` with ``section.key=value`` overrides applied (a later one
    wins over an earlier one for the same key).

    Every value is converted to its field's type one by one, then each section is rebuilt once
    with all of its new values, so the section's checks see them together: a check between
    two keys (``serve.max_queue >= serve.max_batch_items``) holds or fails the same whatever
    the order in which they were given.
    """
    changes: dict[tuple[str, ...], dict[str, Any]] = {}
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"override {override!r} is not of the form section.key=value")
        dotted, text = override.split("=", 1)
        dotted = current_key(dotted)
        *sections, key = dotted.split(".")
        tp = _key_type(type(config), sections, key, dotted)
        changes.setdefault(tuple(sections), {})[key] = convert(_parse(text, tp), tp, dotted)
    return _with_changes(config, (), changes)


def _key_type(cls, sections: list[str], key: str, dotted: str):
    """The type of ``section.key`` in ``cls``; an unknown name is an error naming it."""
    for name in [*sections, key]:
        types_ = _field_types(cls)
        if name not in types_:
            raise ValueError(f"unknown config key {dotted!r} (known here: {', '.join(types_)})")
        cls = types_[name]
    return cls


def _with_changes(node, path: tuple[str, ...], changes: dict):
    """``node`` rebuilt once with its own changed values and its changed sub-sections."""
    children = {name: _with_changes(getattr(node, name), (*path, name), changes)
                for name in {p[len(path)] for p in changes if len(p) > len(path)
                             and p[:len(path)] == path}}
    own = changes.get(path, {})
    return dataclasses.replace(node, **own, **children) if own or children else node


PRESETS = Path(__file__).parent / "configs"


def preset_path(name: str | Path) -> Path:
    """A YAML file, or the name of a preset shipped in ``llavac/configs`` (``tiny_synthetic``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = PRESETS / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
    raise FileNotFoundError(f"{name}: no such config file or preset (presets: {names})")


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = ()) -> C:
    """Defaults of ``cls``, then the YAML preset at ``path``, then ``overrides``."""
    values = {}
    if path is not None:
        path = preset_path(path)
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config file must hold a mapping of sections")
    return apply_overrides(from_dict(cls, renamed_keys(values)), list(overrides))


# How a command treats its output folder (refuse, continue or replace what is there): config
# keys, so a preset or an override can set them, but not settings of a result. to_dict
# leaves them out, so config.yaml, results hashes and settings comparisons never see them.
FOLDER_KEYS = ("resume", "overwrite")


def to_dict(config) -> dict:
    """``config`` as nested dicts, without the output-folder keys (``FOLDER_KEYS``)."""
    return {name: {key: v for key, v in value.items() if key not in FOLDER_KEYS}
            if isinstance(value, dict) else value
            for name, value in dataclasses.asdict(config).items()}


def save_config(config, path: Path) -> None:
    """``config`` as YAML at ``path``, written whole or not at all (it is often a run's only
    record of its settings)."""
    write_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def config_hash(*configs) -> str:
    """A short, stable hash of configs (dataclasses or dicts), to match experiment runs."""
    dicts = [c if isinstance(c, dict) else to_dict(c) for c in configs]
    blob = json.dumps(dicts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def key_type_and_default(cls, dotted: str) -> tuple[Any, Any]:
    """The type of ``section.key`` in config class ``cls`` and its default."""
    node_cls, node = cls, cls()
    *sections, key = dotted.split(".")
    for section in sections:
        node_cls, node = _field_types(node_cls)[section], getattr(node, section)
    return _field_types(node_cls)[key], getattr(node, key)


def config_keys(cls, prefix: str = "") -> list[tuple[str, Any]]:
    """Every ``section.key`` of ``cls`` with its default, in declaration order."""
    keys = []
    instance = cls()
    for name, tp in _field_types(cls).items():
        if _is_dataclass_type(tp):
            keys += [(f"{name}.{k}", v) for k, v in config_keys(tp)]
        else:
            keys.append((prefix + name, getattr(instance, name)))
    return keys
