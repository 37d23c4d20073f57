"""The tree's layers stay apart (issue #18): the unit tests load neither the emulator (`tools/`)
nor anything of `integration_tests/`, and the PostHog layer (`source_posthog/api/`) never imports
the CDK. Checked in a fresh interpreter, on what is really loaded, not on import lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LOAD_EVERY_UNIT_TEST_MODULE = """
import importlib, json, pathlib, sys
root = pathlib.Path(sys.argv[1])
for path in sorted((root / "unit_tests").rglob("*.py")):
    importlib.import_module(".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"))
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(code: str) -> list:
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_given_every_unit_test_module_loaded_then_no_emulator_or_integration_tests_module_is_loaded() -> None:
    modules = loaded_modules(LOAD_EVERY_UNIT_TEST_MODULE)

    assert any(name.startswith("unit_tests.integration.") for name in modules), "the unit test modules were not loaded"
    strays = [name for name in modules if name.split(".")[0] in ("tools", "integration_tests")]
    assert not strays, f"unit tests load {strays}"


def test_given_the_posthog_layer_loaded_alone_then_the_cdk_is_not_loaded() -> None:
    modules = loaded_modules(
        "import importlib, json, pkgutil, sys\n"
        "import source_posthog.api as api\n"
        "[importlib.import_module(f'source_posthog.api.{m.name}') for m in pkgutil.iter_modules(api.__path__)]\n"
        "print(json.dumps(sorted(sys.modules)))"
    )

    assert "source_posthog.api.events_plan" in modules
    assert not [name for name in modules if name.startswith("airbyte_cdk")], "source_posthog.api loads airbyte_cdk"
