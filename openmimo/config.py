"""Stage configuration: dataclasses, YAML presets, dotted overrides and validation.

Every stage has one dataclass (fields commented where they are defined).  A run is configured by
an optional YAML file plus ``key.sub=value`` overrides; the result is type-checked field by field
and each dataclass' ``check()`` method validates values, all before any work starts.  Errors
name the key and the file they came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, with the offending key and source in the message."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, src: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (building nested dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, src)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{src}: key '{key}': {value!r} matches none of {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: key '{key}' must be a mapping, got {type(value).__name__}")
        return build(tp, value, src, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{src}: key '{key}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]", src) for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: key '{key}' must be a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, key, src): _coerce(v, vt, f"{key}.{k}", src) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{src}: key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, str) and "e" in value.lower():  # YAML 1.1 reads "1e12" as a string too
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{src}: key '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{src}: key '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{src}: key '{key}' must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{src}: key '{key}' must be {_type_name(tp)}, got {value!r}")
    return value


def build(cls: type[T], data: dict, src: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        renamed = getattr(cls, "RENAMED", {})  # old key -> its new name, for a pointed error
        if unknown[0] in renamed:
            raise ConfigError(f"{src}: key '{prefix}{unknown[0]}' is now '{prefix}{renamed[unknown[0]]}'")
        raise ConfigError(f"{src}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(fields)})")
    kwargs = {k: _coerce(v, hints[k], prefix + k, src) for k, v in data.items()}
    return cls(**kwargs)


def validate(cfg: Any, src: str = "<config>", prefix: str = "") -> None:
    """Run ``check()`` on ``cfg`` and every nested dataclass; errors get the key path and source."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            validate(v, src, prefix + f.name + ".")
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if dataclasses.is_dataclass(item):
                    validate(item, src, f"{prefix}{f.name}[{i}].")
    check = getattr(cfg, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError:
            raise
        except ValueError as e:
            msg = str(e)
            if msg.startswith("key '"):
                msg = "key '" + prefix + msg[len("key '"):]
            elif prefix:
                msg = f"{prefix.rstrip('.')}: {msg}"
            raise ConfigError(f"{src}: {msg}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=3`` -> (["a", "b"], 3).  The value is parsed as YAML (numbers, bools, lists); a numeric
    key part indexes a list (``stages.0.tokens=2000000``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(d: dict, path: list[str], value: Any) -> None:
    """Set ``value`` at ``path``; a numeric part indexes a list (``stages.2.tokens=1000``)."""
    for i, p in enumerate(path):
        last = i == len(path) - 1
        if isinstance(d, list):
            if not p.lstrip("-").isdigit() or not -len(d) <= int(p) < len(d):
                raise ConfigError(f"override key '{'.'.join(path)}': '{p}' is not an index of a list of {len(d)}")
            if last:
                d[int(p)] = value
                return
            d = d[int(p)]
            continue
        if last:
            d[p] = value
            return
        nxt = d.get(p)
        if not isinstance(nxt, (dict, list)):
            nxt = {}
            d[p] = nxt
        d = nxt


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Defaults of ``cls`` <- YAML file <- overrides; then type checks and value checks."""
    data: dict = {}
    src = "<defaults>"
    if path is not None:
        p = Path(path)
        src = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise ConfigError(f"{p}:{line}: not valid UTF-8 (byte {e.start}, {raw[e.start:e.start + 1]!r})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = loaded
    # Start from the dataclass defaults so that overrides of nested keys merge with them.
    merged = _merge(to_dict(cls()), data)
    cfg = build(cls, merged, src)
    if overrides:
        merged = to_dict(cfg)
        for o in overrides:
            keys, value = parse_override(o)
            _set_path(merged, keys, value)
        cfg = build(cls, merged, f"{src} + command-line overrides")
    validate(cfg, src)
    return cfg


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and out.get(k):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def dump(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (used for every run folder and checkpoint)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---- the common command line of configured stages ------------------------------------------------

class UsageError(Exception):
    """A bad command line; reported on stderr with exit code 2."""


def config_args(parser: argparse.ArgumentParser, resume: bool = True, example: str = "") -> None:
    """Add the common ``CONFIG [key=value ...] [--resume]`` arguments.  ``example``: overrides that this stage's
    config accepts, shown in ``--help`` (and loaded by a test, so the help never shows a refused key)."""
    parser.add_argument("config", nargs="?", help="YAML preset (e.g. configs/tiny.yaml); omit for the built-in defaults")
    parser.add_argument("overrides", nargs="*", help=f"dotted overrides, e.g. {example}" if example else "dotted overrides")
    parser.set_defaults(config_example=example)
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in the run folder")
        parser.add_argument("--overwrite", action="store_true",
                            help="start fresh in a run folder that holds another run's checkpoints (they are removed)")


def load_stage_config(cls, args):
    """Resolve a stage config from ``args.config`` + ``args.overrides`` (a YAML path may be omitted)."""
    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path and not path.endswith((".yaml", ".yml")):
        overrides.insert(0, path)
        path = None
    return load(cls, path, overrides)
