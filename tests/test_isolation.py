"""vae_core must import and train with ray, optuna and mlflow impossible to import."""

import subprocess
import sys

from conftest import REPO

SCRIPT = r"""
import importlib, importlib.abc, pkgutil, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "optuna", "mlflow"}:
            raise ImportError(f"{name} is blocked: vae_core must not import it")
        return None

sys.meta_path.insert(0, Block())
import vae_core
for info in pkgutil.walk_packages(vae_core.__path__, "vae_core."):
    importlib.import_module(info.name)

import tempfile, torch
from vae_core import Config, Split, Splits, fit, load_model
from vae_core import viz
images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
data = Splits(Split(images[:24], None), Split(images[24:32], None), Split(images[32:], None))
state = fit(Config.from_dict({"arch": "mlp", "hidden_dims": [16], "latent_dim": 2,
                              "epochs": 1, "device": "cpu"}), data)
with tempfile.TemporaryDirectory() as tmp:
    state.save(tmp + "/c.safetensors")
    viz.write_all(load_model(tmp + "/c.safetensors"), data, tmp)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"ray", "optuna", "mlflow"})
print("blocked modules loaded:", loaded)
"""


def test_vae_core_works_with_ray_optuna_and_mlflow_blocked():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "blocked modules loaded: []" in result.stdout


def test_the_blocker_really_blocks():
    probe = SCRIPT.split("import vae_core")[0] + "import mlflow\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "mlflow is blocked" in result.stderr
