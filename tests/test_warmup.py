"""`lyra-assets warm-up` compiles every kernel into an empty cache folder, so a user's first build compiles
nothing: checked across processes, as after a real set-up (a fresh cache folder, then a new process)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import lyra_assets

# A new process after the warm-up: a build of the example and `mesh` on its saved walkthrough (arrays read
# back from disk) must only load kernels. Prints the ones it had to compile.
FIRST_BUILD = """
import json, sys
from numba.core import event
import lyra_assets
from lyra_assets import build, mesh

compiled = []

class Compiles(event.Listener):
    def on_start(self, ev):
        function = ev.data["dispatcher"].py_func
        if function.__module__.startswith("lyra_assets"):
            compiled.append(function.__qualname__)

    def on_end(self, ev):
        pass

event.register("numba:compile", Compiles())
out = sys.argv[2]
options = {"path": {"frames": 5}, "camera": {"width": 208, "height": 120}, "assets": {"texture_size": 512}}
stages = set()
result = build(sys.argv[1], "walk_forward", out + "/built", options=options, progress=lambda *e: stages.add(e[0]))
mesh(result.walkthrough_dir, out + "/meshed", options={"assets": {"texture_size": 512}})
print(json.dumps({"compiled": compiled, "stages": sorted(stages)}))
"""


def test_warm_up_fills_an_empty_cache_and_the_first_build_compiles_nothing(example_image, tmp_path):
    beside_code = set(Path(lyra_assets.__file__).parent.rglob("*.nbi"))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}  # as on a machine that never ran it
    warm = subprocess.run([sys.executable, "-m", "lyra_assets", "--json-progress", "warm-up"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert warm.returncode == 0, warm.stderr
    done = json.loads(warm.stdout.splitlines()[-1])
    assert done["event"] == "done" and done["outputs"]["cache"] == str(tmp_path / "cache")
    compiled = {name.rsplit(".", 1)[-1] for name in done["outputs"]["compiled"]}
    # every kernel of every stage: fusion, bake, closest points, open-scene rendering, the depth memory
    assert {"_integrate", "_mark_band", "_gather", "_grid_closest", "_shade", "_splat"} <= compiled
    assert list((tmp_path / "cache").rglob("*.nbi")), "nothing went into the cache folder"

    first = subprocess.run([sys.executable, "-c", FIRST_BUILD, str(example_image), str(tmp_path / "out")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    built = json.loads(first.stdout.splitlines()[-1])
    assert built["compiled"] == []  # loaded from the cache, none compiled
    assert "bake" in built["stages"] and "compile" not in built["stages"]  # so no compile progress either
    # and nothing was written next to the package's code (a read-only install stays untouched)
    assert set(Path(lyra_assets.__file__).parent.rglob("*.nbi")) == beside_code

    again = subprocess.run([sys.executable, "-m", "lyra_assets", "--json-progress", "warm-up"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert json.loads(again.stdout.splitlines()[-1])["outputs"]["compiled"] == []
