"""Operation types from installed packages (entry point group `batchsite.operation_types`): a tiny
distribution written into a directory on sys.path, found by importlib.metadata as pip would leave
it; a broken plugin is logged and left out while the others load; `batch types` names each type's
origin, in this process and in a fresh `manage.py` that loads the plugins at start-up."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.management import call_command

from jobs.optypes import origin_of, plugins
from jobs.optypes.base import all_types, find_type, unregister
from tests.conftest import run_operation

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
from typing import Annotated

from pydantic import Field

from jobs.optypes.base import operation_type


@operation_type(key="plugin.shout", label="Plugin: shout")
def shout(ctx, times: Annotated[int, Field(ge=1, le=5)] = 1) -> dict:
    return {"text": (ctx.label.upper() + "!") * times}
"""

# Registers one type, then fails: neither that type nor the module stays.
HALF = """
from jobs.optypes.base import operation_type


@operation_type(key="plugin.half", label="Plugin: half")
def half() -> None:
    return None


import batchsite_no_such_dependency  # noqa
"""


# An entry point may name an OperationType object instead of a module that registers.
OBJECT = """
from django import forms

from jobs.optypes.base import OperationType

TYPE = OperationType(key="plugin.object", label="Plugin: object", run=lambda ctx: {"ok": True}, form=forms.Form)
"""


def write_distribution(where: Path, name: str, module: str, source: str, entry_points: dict[str, str]) -> None:
    """A package and its .dist-info, as `pip install` leaves them in site-packages."""
    (where / f"{module}.py").write_text(textwrap.dedent(source))
    info = where / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "\n".join(f"{key} = {value}" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[batchsite.operation_types]\n{lines}\n")


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    write_distribution(tmp_path, "batchsite-shout", "batchsite_shout", GOOD, {"shout": "batchsite_shout"})
    write_distribution(tmp_path, "batchsite-half", "batchsite_half", HALF, {"half": "batchsite_half"})
    write_distribution(tmp_path, "batchsite-gone", "batchsite_gone", "", {"gone": "batchsite_gone:missing"})
    write_distribution(tmp_path, "batchsite-object", "batchsite_object", OBJECT, {"object": "batchsite_object:TYPE"})
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for key in ("plugin.shout", "plugin.half", "plugin.object"):
        unregister(key)
    for module in ("batchsite_shout", "batchsite_half", "batchsite_gone", "batchsite_object"):
        sys.modules.pop(module, None)
    plugins.failures.clear()


def test_an_installed_plugin_adds_its_types_and_a_broken_one_is_logged_and_left_out(plugin_dir, caplog):
    before = {t.key for t in all_types()}
    failures = plugins.load_plugin_types()
    assert {t.key for t in all_types()} - before == {"plugin.shout", "plugin.object"}
    assert origin_of("plugin.object") == "plugin batchsite-object 1.0 (object = batchsite_object:TYPE)"
    assert origin_of("plugin.shout") == "plugin batchsite-shout 1.0 (shout = batchsite_shout)"
    assert run_operation("plugin.shout", "hey", times=2) == {"text": "HEY!HEY!"}
    assert find_type("plugin.half") is None and "batchsite_half" not in sys.modules
    assert sorted(f.origin for f in failures) == [
        "plugin batchsite-gone 1.0 (gone = batchsite_gone:missing)",
        "plugin batchsite-half 1.0 (half = batchsite_half)",
    ]
    assert "batchsite_no_such_dependency" in next(f.error for f in failures if "half" in f.origin)
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("batchsite-half 1.0" in message and "left out" in message for message in logged)


def test_batch_types_lists_each_type_with_its_origin_and_the_failed_plugins(plugin_dir, capsys):
    plugins.load_plugin_types()
    call_command("batch", "types", "--json")
    listed = json.loads(capsys.readouterr().out)
    origins = {row["key"]: row["origin"] for row in listed["types"]}
    assert origins["demo.sleep"] == "built-in" and origins["plugin.shout"].startswith("plugin batchsite-shout 1.0")
    assert len(listed["plugin_failures"]) == 2
    call_command("batch", "types")
    text = capsys.readouterr().out
    assert "plugin.shout" in text and "[built-in]" in text and "Failed to load: plugin batchsite-half 1.0" in text


def test_a_fresh_process_loads_the_plugins_at_start_up_and_keeps_going_past_a_broken_one(plugin_dir):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]),
        "BATCHSITE_OPERATION_TYPES": "tests.custom_optypes",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "batch", "types"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "plugin.shout" in done.stdout and "[plugin batchsite-shout 1.0 (shout = batchsite_shout)]" in done.stdout
    assert "[setting BATCHSITE_OPERATION_TYPES (tests.custom_optypes)]" in done.stdout
    assert "plugin.half" not in done.stdout
    assert "batchsite-half 1.0" in done.stderr and "batchsite_no_such_dependency" in done.stderr
