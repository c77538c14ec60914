"""Two sweeps at once into one tracking server and one registered model: their runs, Optuna
studies and trial states stay apart, and the champion alias ends on the better model."""

import shutil
import subprocess
import sys

import optuna
from conftest import REPO
from mlflow.tracking import MlflowClient
from ray import tune
from record import record
from servers import free_port, start_mlflow_server, stop


def test_two_sweeps_at_once_do_not_mix(tmp_path):
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        shutil.copy(REPO / "sweeps" / "shapes.py", tmp_path / "shapes.py")
        sweeps = {
            name: subprocess.Popen(
                [sys.executable, "shapes.py", "--smoke-test", "--name", name, "--seed", seed]
                + ["--tracking-uri", url, "--storage-path", str(tmp_path / "ray")],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, seed in (("alpha", "1"), ("beta", "2"))
        }
        for name, sweep in sweeps.items():
            out, err = sweep.communicate(timeout=900)
            assert sweep.returncode == 0, f"{name}: {err[-3000:]}"
        client = MlflowClient(url)
        runs = client.search_runs(["1"])
        parents = {
            r.data.tags["vae_sweep.sweep_name"]: r
            for r in runs
            if "vae_sweep.sweep_name" in r.data.tags
        }
        assert sorted(parents) == ["alpha", "beta"]
        wrong = duplicated = 0
        for name, parent in parents.items():
            children = [
                r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
            ]
            saved = tune.ExperimentAnalysis(str(tmp_path / "ray" / name)).trials
            ids = [r.data.tags["ray.trial_id"] for r in children]
            wrong += len(set(ids) - {t.trial_id for t in saved})
            duplicated += len(ids) - len(set(ids))
            # this sweep's runs are exactly this sweep's trials
            assert sorted(ids) == sorted(t.trial_id for t in saved)
            assert len(children) == 2 and parent.info.status == "FINISHED"
            study = optuna.load_study(
                study_name=name, storage=f"sqlite:///{tmp_path / 'ray' / name / 'optuna.db'}"
            )
            assert len(study.trials) == 2
        versions = client.search_model_versions("name = 'shapes-vae'")
        by_sweep = {v.tags["sweep_run_id"]: v for v in versions}
        assert sorted(by_sweep) == sorted(p.info.run_id for p in parents.values())
        best = min(versions, key=lambda v: float(v.tags["test_bpd"]))
        aliases = client.get_registered_model("shapes-vae").aliases
        champion_is_the_better = str(aliases["champion"]) == str(best.version)
        assert champion_is_the_better
        record(
            "two sweeps at once, one server and registered model",
            test="tests/test_concurrent_sweeps.py::test_two_sweeps_at_once_do_not_mix",
            trials=4,
            runs_in_the_wrong_sweep=wrong,
            duplicate_runs=duplicated,
            registered_versions=len(versions),
            champion_is_the_better=champion_is_the_better,
        )
    finally:
        stop(server)
