"""--resume refuses a base config other than the one the sweep started with, through the
sweep's own entry point, before anything is written: no run reopened, no Ray started."""

import pytest
import ray
from conftest import migrated_store
from mlflow.tracking import MlflowClient

from sweeps import engine, shapes
from sweeps.lifecycle import SweepRuns
from sweeps.spec import parse_spec


def test_a_resume_with_another_base_config_exits_before_anything_is_written(tmp_path, capsys):
    uri = migrated_store(tmp_path / "mlflow.db")
    where = ["--tracking-uri", uri, "--storage-path", str(tmp_path / "ray")]
    started = parse_spec(
        shapes.SEARCH_SPACE, shapes.BASE_CONFIG, ["--name", "s", *where], shapes.DEFAULTS
    )
    runs = SweepRuns(uri, started.experiment, "s")  # the parent run, as the engine opens it
    runs.look_up(False)
    parent = runs.open({}, {}, started.kept())
    runs.end("KILLED")  # interrupted: waiting for --resume

    with pytest.raises(SystemExit) as exited:
        engine.main(
            shapes.SEARCH_SPACE,
            shapes.BASE_CONFIG,
            defaults=shapes.DEFAULTS,
            argv=["--resume", "--name", "s", "--set", "lr=0.01", *where],
        )
    assert exited.value.code == 2
    said = capsys.readouterr().err
    assert "error: base config train.lr: got 0.01, but sweep s was started with 0.001" in said
    assert "leave --set lr out" in said
    client = MlflowClient(uri)
    assert client.get_run(parent).info.status == "KILLED"  # not reopened
    assert [r.info.run_id for r in client.search_runs([runs.experiment_id])] == [parent]
    assert not ray.is_initialized() and not (tmp_path / "ray").exists()
