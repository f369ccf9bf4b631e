"""The package's build. Pure Python unless OTEL_S3_BRIDGE_COMPILE=1 asks for the decode core
(otel_s3_bridge/compiled.py's CORE_MODULES) to be compiled with mypyc as well: that needs mypy and
a C compiler, which a plain install does not. The compiled modules sit beside their sources, with
core_build.json saying which sources they were built from (stale ones are not used)."""

import importlib.util
import json
import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_compiled", HERE / "otel_s3_bridge" / "compiled.py")
compiled = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compiled)


def ext_modules():
    if os.environ.get("OTEL_S3_BRIDGE_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit("OTEL_S3_BRIDGE_COMPILE=1 needs mypy (pip install mypy==1.19.1) and a C compiler") from None
    sources = [f"otel_s3_bridge/{name}.py" for name in compiled.CORE_MODULES]
    modules = mypycify(sources, opt_level="3", group_name="otel_s3_bridge_core")
    (HERE / "otel_s3_bridge" / compiled.BUILT_FROM).write_text(
        json.dumps(compiled.source_digests(HERE / "otel_s3_bridge"), indent=1) + "\n")
    return modules


extensions = ext_modules()
setup(ext_modules=extensions, package_data={"otel_s3_bridge": [compiled.BUILT_FROM]} if extensions else {})
