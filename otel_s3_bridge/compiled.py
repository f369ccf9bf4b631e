"""Which build of the decode core runs: compiled with mypyc, or the pure-Python modules it is built from.

`CORE_MODULES` is the one list of what `setup.py` compiles when asked (OTEL_S3_BRIDGE_COMPILE=1:
parse, decode, price, key, encode, place in the lake, and the spool's entries, queue and batch
files' members — the per-span path). The compiled build is an option, never a requirement: a plain
install is pure Python, and the same sources are the fallback wherever the compiled modules cannot
be used. Python prefers an extension module to a source file of the same
name, so this module chooses before any core module is imported (`choose_build`, from the package's
`__init__`): the pure sources run when OTEL_S3_BRIDGE_PURE=1 asks for them (the tests run the core
both ways) and when the compiled modules were built from other sources than the ones beside them
(an edited checkout: running stale machine code would silently ignore the edit). Must not import
anything of the bridge.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
from pathlib import Path

PACKAGE = "otel_s3_bridge"
CORE_MODULES = (
    "values", "memo",
    "decode/spans", "decode/otlp_json", "decode/otlp_protobuf", "decode/otlp_wire", "decode/messages", "decode/records",
    "decode/prepare",
    "decode/conventions/__init__", "decode/conventions/base", "decode/conventions/gen_ai",
    "decode/conventions/langfuse", "decode/conventions/openinference", "decode/conventions/openllmetry",
    "decode/conventions/openrouter", "decode/conventions/vercel_ai",
    "enrich/pricing", "lake/keys", "lake/encode", "lake/partitions",
    "deliver/spool_format", "deliver/spool_queue", "deliver/batch_members",
)
# Written by setup.py beside the compiled modules: the SHA-256 of each source they were built from.
BUILT_FROM = "core_build.json"
PURE_VARIABLE = "OTEL_S3_BRIDGE_PURE"

_HERE = Path(__file__).resolve().parent
_chosen: list[str] = []


def source_digests(root: Path = _HERE) -> dict[str, str]:
    return {name: hashlib.sha256((root / f"{name}.py").read_bytes()).hexdigest() for name in CORE_MODULES}


def module_name(name: str) -> str:
    return ".".join((PACKAGE, *name.removesuffix("/__init__").split("/")))


def _compiled_matches_sources() -> bool | None:
    """True when compiled modules are here and were built from these sources; False when they are
    stale; None when there is no compiled build."""
    try:
        built_from = json.loads((_HERE / BUILT_FROM).read_text())
    except (OSError, ValueError):
        return None
    try:
        return built_from == source_digests()
    except OSError:
        return False


class _SourcesOnly:
    """A meta path finder that loads the package's modules from their .py files, never from an
    extension module of the same name."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if not fullname.startswith(PACKAGE + ".") or not path:
            return None
        for folder in path:
            finder = importlib.machinery.FileFinder(
                folder, (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES))
            spec = finder.find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


def choose_build() -> str:
    """Install the choice (once per process) and say it: "compiled", "pure", "pure (asked)" or
    "pure (compiled build is stale)"."""
    if _chosen:
        return _chosen[0]
    matches = _compiled_matches_sources()
    if os.environ.get(PURE_VARIABLE) == "1":
        choice = "pure (asked)"
    elif matches is None:
        choice = "pure"
    elif matches is False:
        choice = "pure (compiled build is stale)"
    else:
        choice = "compiled"
    if choice != "compiled":
        sys.meta_path.insert(0, _SourcesOnly)
    _chosen.append(choice)
    return choice


def running_build() -> dict[str, str]:
    """Each core module as imported now: "compiled" or "pure" (after importing all of them)."""
    import importlib
    found = {}
    for name in CORE_MODULES:
        module = importlib.import_module(module_name(name))
        found[name] = "pure" if (module.__file__ or "").endswith(".py") else "compiled"
    return found
