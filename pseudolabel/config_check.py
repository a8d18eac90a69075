"""Validation of a YAML config: every key known, every value of its type and in its range.

A typo (``rundir:``, ``stpes:``) or a bad value (``steps: -5``, ``steps: twenty``) is an error
naming the file, the key and what was expected, raised before anything runs;
``pseudolabel check-config`` runs the same checks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

TOP_LEVEL = ("data", "run_dir", "runtime", "models", "teacher", "student", "generate")
PRECISIONS = ("fp32", "bf16", "fp16")

# Range rules by key name (the same name means the same thing in every section).
POSITIVE_INT = {"steps", "batch", "num_points", "size", "save_every", "eval_batch", "topk",
                "num_queries", "decoder_layers"}
NON_NEGATIVE_INT = {"seed", "train", "val"}
POSITIVE_FLOAT = {"lr", "clip_norm", "poly_power", "scale_min", "scale_max"}
NON_NEGATIVE_FLOAT = {"lr_final", "weight_decay", "backbone_lr_factor", "zoom_context"}
UNIT_INTERVAL = {"drop_at", "zoom_min_side"}  # (0, 1]
CHOICES = {"arch": ("mask2former", "condinst"), "precision": PRECISIONS,
           "style": ("target", "source")}


def _fail(path, key: str, message: str):
    raise ValueError(f"{path}: {key}: {message}")


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    if hint in (str, Path):
        return isinstance(value, str) and bool(value)
    return True


def _describe(hint) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             Path: "a path", type(None): "null"}
    args = typing.get_args(hint) or (hint,)
    return " or ".join(names.get(a, str(a)) for a in args)


def _range(path, key: str, name: str, value) -> None:
    if value is None or isinstance(value, bool):
        return
    if name in POSITIVE_INT and value <= 0:
        _fail(path, key, f"expected a positive integer, got {value}")
    if name in NON_NEGATIVE_INT and value < 0:
        _fail(path, key, f"expected an integer >= 0, got {value}")
    if name in POSITIVE_FLOAT and value <= 0:
        _fail(path, key, f"expected a number > 0, got {value}")
    if name in NON_NEGATIVE_FLOAT and value < 0:
        _fail(path, key, f"expected a number >= 0, got {value}")
    if name in UNIT_INTERVAL and not 0 < value <= 1:
        _fail(path, key, f"expected a number in (0, 1], got {value}")
    if name in CHOICES and value not in CHOICES[name]:
        _fail(path, key, f"expected one of {', '.join(CHOICES[name])}, got {value!r}")


def check_section(path, section: str, values, cls) -> None:
    """``values`` (a mapping) against the fields of dataclass ``cls``."""
    if values is None:
        return
    if not isinstance(values, dict):
        _fail(path, section, f"expected a mapping of keys, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    for name, value in values.items():
        key = f"{section}.{name}"
        if name not in fields:
            _fail(path, key, f"unknown key (known: {', '.join(fields)})")
        if not _type_ok(value, hints[name]):
            _fail(path, key, f"expected {_describe(hints[name])}, got {value!r}")
        _range(path, key, name, value)


def check_config(raw: dict, path, *, models, teacher, student, synth, generate) -> None:
    """Every key and value of a parsed config (``models`` ... ``synth``: the dataclasses of
    its sections)."""
    for name in raw:
        if name not in TOP_LEVEL:
            _fail(path, name, f"unknown top-level key (known: {', '.join(TOP_LEVEL)})")
    if "run_dir" in raw and not _type_ok(raw["run_dir"], str):
        _fail(path, "run_dir", f"expected a path, got {raw['run_dir']!r}")
    check_section(path, "models", raw.get("models"), models)
    check_section(path, "teacher", raw.get("teacher"), teacher)
    check_section(path, "student", raw.get("student"), student)
    check_section(path, "generate", raw.get("generate"), generate)
    s = raw.get("student") or {}
    if isinstance(s.get("scale_min"), (int, float)) and isinstance(s.get("scale_max"),
                                                                    (int, float)):
        if s["scale_min"] > s["scale_max"]:
            _fail(path, "student.scale_min", f"{s['scale_min']} is above scale_max "
                  f"{s['scale_max']}")
    _check_runtime(raw.get("runtime"), path)
    _check_data(raw.get("data"), path, synth)


def _check_runtime(block, path) -> None:
    if block is None:
        return
    if not isinstance(block, dict):
        _fail(path, "runtime", "expected a mapping of keys")
    for name, value in block.items():
        key = f"runtime.{name}"
        if name not in ("device", "precision"):
            _fail(path, key, "unknown key (known: device, precision)")
        if not isinstance(value, str):
            _fail(path, key, f"expected a string, got {value!r}")
        if name == "device":
            v = value.strip().lower()
            ok = v in ("auto", "cpu", "cuda") or (v.startswith("cuda:")
                                                   and v[5:].isdigit())
            if not ok:
                _fail(path, key, f"expected auto, cpu, cuda or cuda:N, got {value!r}")
        _range(path, key, name, value)


def _check_data(block, path, synth) -> None:
    if block is None:
        return
    if not isinstance(block, dict):
        _fail(path, "data", "expected a mapping of keys")
    if "synthetic" in block:
        extra = set(block) - {"synthetic", "follow_symlinks"}
        if extra:
            _fail(path, f"data.{sorted(extra)[0]}", "unknown key beside data.synthetic")
        syn = block["synthetic"]
        if not isinstance(syn, dict) or not _type_ok(syn.get("root"), str):
            _fail(path, "data.synthetic", "needs 'root' (a path) and optional 'params'")
        unknown = set(syn) - {"root", "params"}
        if unknown:
            _fail(path, f"data.synthetic.{sorted(unknown)[0]}", "unknown key (known: root, "
                  "params)")
        check_section(path, "data.synthetic.params", syn.get("params"), synth)
    else:
        for name, value in block.items():
            key = f"data.{name}"
            if name not in ("train", "val", "images", "follow_symlinks"):
                _fail(path, key, "unknown key (known: train, val, images, follow_symlinks, "
                      "or synthetic)")
            if name == "follow_symlinks":
                if not isinstance(value, bool):
                    _fail(path, key, f"expected true or false, got {value!r}")
            elif not _type_ok(value, str):
                _fail(path, key, f"expected a path, got {value!r}")
    if "follow_symlinks" in block and not isinstance(block["follow_symlinks"], bool):
        _fail(path, "data.follow_symlinks", "expected true or false")
