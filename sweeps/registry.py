"""The best model in the MLflow model registry, and back out of it by name.

A registered version holds `checkpoint.safetensors` (weights + config, no pickle: our loader
executes no code from the artifact) and `config.yaml`, packaged as an MLflow pyfunc model
whose code is sweeps/serving.py, so `mlflow.pyfunc.load_model(uri).predict(images)` works too.

Aliases, not stages (deprecated in MLflow 3). The rules, also in README:
- `champion` moves to a new version only if that version was registered after the alias last
  moved and beats the champion on its validation metric (the model's `vae_sweep.promoted_on`
  tag: val_bpd unless the first sweep's objective said otherwise); else the new version is
  `challenger`, never better than the champion.
- A hand (`vae-sweep promote`) or `--pick` choice stands until such a newer version beats it:
  versions it passed over are not compared again. Each move records on the champion the
  newest version number at that moment (tag `vae_sweep.champion_since`).
- Only versions of the model's comparability key (sweeps.comparable, tag `vae_sweep.key`)
  compete, and a sweep of another key is refused before it starts; test_bpd and the IWAE
  bound are recorded on every version and never compared: the test split reports, it does
  not select.
`models:/NAME@champion` or `NAME@champion` (or `NAME/3`) find a version.

A version records the sha256 of its weights file (tag `vae_sweep.weights_sha256`, in the
tracking store, apart from the artifact store that holds the file): `download`, so `vae-sweep
pull`, `load_model` and every command that loads a model, refuse weights changed after
registration, naming the version and both hashes; the pyfunc form (sweeps/serving.py) checks
the same hash, saved in its MLmodel. A version registered before the tag existed loads with a
warning that its weights are not verified.

Registration is idempotent per sweep (a version tagged with the sweep's run id is reused, so a
sweep resumed after its driver died never registers twice), and the champion settles on the
best of the current champion and every version registered since it became champion, checked
again after each move, so two sweeps registering into one model at once end with the better
one. The rules are proven by a Hypothesis state machine (tests/test_registry_rules.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
import yaml
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from vae_core.checkpoint import CHECKPOINT_NAME, file_sha256, read_checkpoint
from vae_core.checkpoint import load_model as load_checkpoint_model
from vae_core.model import VAE

CHAMPION, CHALLENGER = "champion", "challenger"
KEY, PROMOTED_ON = "vae_sweep.key", "vae_sweep.promoted_on"  # tags of model and versions
PROMOTED_MODE = "vae_sweep.promoted_mode"  # min, or max for a score
WEIGHTS_SHA256 = "vae_sweep.weights_sha256"  # on a version: the sha256 of its checkpoint file
# On a version: the newest version number when it last became champion; only versions after
# it may take the alias from it.
CHAMPION_SINCE = "vae_sweep.champion_since"
PICKED = "vae_sweep.picked"  # on a version a front's --pick made champion: how
PROMOTED = "vae_sweep.promoted"  # on a version moved to champion by hand: why, who, when
SERVING_CODE = Path(__file__).with_name("serving.py")


class ModelNotFoundError(LookupError):
    """A registered name, version or alias that does not exist; the message lists what does."""


class WeightsChangedError(ValueError):
    """A version's weights file is not the one registered; the message names the version and
    both hashes."""


@dataclass
class Registered:
    name: str
    version: str
    alias: str  # champion or challenger
    previous_champion: str | None


# The fluent tracking URI is the process's (an environment variable): one user at a time.
_FLUENT = threading.RLock()


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (log_model needs it) on `uri`, then the previous URI again:
    mlflow.set_tracking_uri also sets $MLFLOW_TRACKING_URI, which would leak into every
    process started afterwards. Held by one thread at a time: two interleaved would restore
    each other's URI (found by tests/test_registry_rules.py, whose leaked URI sent a later
    test's sweep to its store)."""
    with _FLUENT:
        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before)  # None unsets the variable again


def signature_for(channels: int, size: int) -> ModelSignature:
    """uint8 images of any 3- or 4-d shape: MLflow checks the type, sweeps/serving.py the
    layout ((N, C, H, W) or (N, H, W, C) at the model's size), with a one-line error that
    says what to pass instead of MLflow's schema dump. No output schema: a latent (N, Z) or
    images, as params.output asks."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1))]),
        params=ParamSchema([ParamSpec("output", "string", "latent")]),
    )


def log_and_register(
    tracking_uri: str,
    run_id: str,
    checkpoint: Path,
    name: str,
    tags: dict[str, str],
    metric: str = "val_bpd",
    mode: str = "min",
    description: Callable[[str], str] | None = None,
) -> Registered:
    """Log the checkpoint as a pyfunc model under `run_id` (the trial's run that trained it:
    the version's source run), register it as a new version of `name` (or find the one this
    sweep, tags["sweep_run_id"], registered already), and give it the champion or challenger
    alias. `tags` hold the version's key (tags[KEY]) and its validation metrics; a new
    registered model is promoted on `metric` (`mode` min or max); `description` makes the
    version's description from its number. The run stays as it was: only its owner ends it."""
    client = MlflowClient(tracking_uri)
    _ensure_registered_model(client, name, tags[KEY], metric, mode)
    same = f"name = '{name}' and tags.sweep_run_id = '{tags['sweep_run_id']}'"
    if "trial_run_id" in tags:  # a front registers one version per member trial
        same += f" and tags.trial_run_id = '{tags['trial_run_id']}'"
    earlier = client.search_model_versions(same)
    if earlier:
        return _settle_aliases(client, name, str(earlier[0].version))
    weights = file_sha256(checkpoint)
    tags = {**tags, WEIGHTS_SHA256: weights}
    model_id = _log_model(client, run_id, checkpoint, weights)
    with using_tracking_uri(tracking_uri):  # the SQL registry looks the logged model up
        version = client.create_model_version(  # through the global tracking URI
            name,
            f"models:/{model_id}",
            run_id=run_id,
            tags=tags,
            model_id=model_id,
        )
    if description is not None:
        client.update_model_version(name, version.version, description(str(version.version)))
    # What mlflow.register_model also does: the logged model's page then says "registered"
    client.set_logged_model_tags(
        model_id,
        {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": name, "version": str(version.version)}])},
    )
    return _settle_aliases(client, name, str(version.version))


def make_champion(
    tracking_uri: str, name: str, version: str, why: str, tag: str = PICKED
) -> Registered:
    """`version` becomes champion by the user's choice (a front's member picked with --pick, or
    `vae-sweep promote`), `why` kept on the version as `tag`. The choice stands until a
    version registered after it beats it; a challenger better than the new champion loses
    its alias (it did not lose to this one)."""
    client = MlflowClient(tracking_uri)
    model = client.get_registered_model(name)
    chosen = client.get_model_version(name, version)
    if KEY in model.tags and chosen.tags.get(KEY) != model.tags[KEY]:
        raise ValueError(
            f"{name} version {version} holds a model of {chosen.tags.get(KEY, 'no known key')}, "
            f"and {name}'s champion is chosen among models of {model.tags[KEY]}: bits per "
            "dimension over different data do not compare; promote a version of that key"
        )
    before = _alias_version(client, name, CHAMPION)
    client.set_model_version_tag(name, version, tag, why)
    _move_champion(client, name, version, _newest(client, name))
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is not None and (
        str(challenger.version) == version
        or _beats(challenger, chosen, model.tags, model.tags.get(KEY))
    ):
        client.delete_registered_model_alias(name, CHALLENGER)
    previous = str(before.version) if before and str(before.version) != version else None
    return Registered(name, version, CHAMPION, previous)


def delete_version(tracking_uri: str, name: str, version: str) -> str | None:
    """Delete a version; if it was champion, the best remaining version of the model's key
    becomes champion (None: no version of the key is left). Returns the champion after."""
    client = MlflowClient(tracking_uri)
    was = _alias_version(client, name, CHAMPION)
    client.delete_model_version(name, version)  # its aliases go with it
    if was is not None and str(was.version) != version:
        return str(was.version)
    rule = client.get_registered_model(name).tags
    left = client.search_model_versions(f"name = '{name}'")
    ours = sorted(
        (v for v in left if v.tags.get(KEY) == rule.get(KEY)), key=lambda v: int(v.version)
    )
    if not ours:
        return None
    best = str(_best(ours, rule).version)
    _move_champion(client, name, best, max(int(v.version) for v in left))
    _drop_challenger(client, name, best)
    return best


def _log_model(client: MlflowClient, run_id: str, checkpoint: Path, weights: str) -> str:
    """The checkpoint (+ its config) as a pyfunc logged model of `run_id`, its sha256
    `weights` in the MLmodel for the pyfunc to check; its id. Through the client alone:
    MLflow's fluent log_model needs an active run, and leaving `mlflow.start_run(run_id=...)`
    ends that run FINISHED, whatever its owner meant."""
    config = read_checkpoint(checkpoint).config
    run = client.get_run(run_id)
    model = client.create_logged_model(
        run.info.experiment_id, name="model", source_run_id=run_id, params=run.data.params
    )
    try:
        with tempfile.TemporaryDirectory() as folder:
            staged = Path(folder) / CHECKPOINT_NAME
            shutil.copyfile(checkpoint, staged)
            config_file = Path(folder) / "config.yaml"
            config_file.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            local = Path(folder) / "model"
            shape = (config.channels, config.image_size, config.image_size)
            mlflow.pyfunc.save_model(
                str(local),
                mlflow_model=Model(
                    artifact_path=model.artifact_location,
                    model_uuid=model.model_id,
                    run_id=run_id,
                    model_id=model.model_id,
                ),
                python_model=str(SERVING_CODE),
                artifacts={"checkpoint": str(staged), "config": str(config_file)},
                model_config={"weights_sha256": weights},
                signature=signature_for(*shape[:2]),
                input_example=np.zeros((1, *shape), dtype=np.uint8),
                pip_requirements=["vae-sweep"],
            )
            client.log_model_artifacts(model.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def _settle_aliases(client: MlflowClient, name: str, version: str) -> Registered:
    """Champion: the best on validation of the current champion and the versions of its key
    registered since it became champion, re-checked until it stands (another sweep may
    register meanwhile); `version` is challenger if it did not win."""
    rule = client.get_registered_model(name).tags
    first = _alias_version(client, name, CHAMPION)
    for _ in range(5):
        champion = _alias_version(client, name, CHAMPION)
        versions = client.search_model_versions(f"name = '{name}'")
        if not (contenders := _contenders(versions, champion, rule[KEY])):
            # only versions of another key: none of them may be champion
            _racing(client.set_registered_model_alias, name, CHALLENGER, version)
            return Registered(name, version, CHALLENGER, None)
        best = _best(contenders, rule)
        if champion is not None and best.version == champion.version:
            break
        newest = max(int(v.version) for v in versions)
        _move_champion(client, name, str(best.version), newest)
    champion = _alias_version(client, name, CHAMPION)
    if str(champion.version) == version:
        _drop_challenger(client, name, version)
        previous = str(first.version) if first and str(first.version) != version else None
        return Registered(name, version, CHAMPION, previous)
    _racing(client.set_registered_model_alias, name, CHALLENGER, version)
    return Registered(name, version, CHALLENGER, str(champion.version))


def _contenders(versions: list, champion, key: str) -> list:
    """The champion and the versions of `key` registered since it last became champion (its
    tag CHAMPION_SINCE; its own number when moved without the tag, e.g. in MLflow's UI); every
    version of `key` when there is no champion, or it is of no key (registered before keys
    were)."""
    if champion is not None and champion.tags.get(KEY) != key:
        champion = None
    since = int(champion.tags.get(CHAMPION_SINCE, champion.version)) if champion else 0
    rivals = [v for v in versions if int(v.version) > since and v.tags.get(KEY) == key]
    return [*([champion] if champion else []), *sorted(rivals, key=lambda v: int(v.version))]


def _best(versions: list, rule: dict[str, str]):
    """The version with the best promotion metric (lowest, or highest for mode max); the first
    of equals (the champion, then the oldest); one without the metric never wins."""
    return min(versions, key=lambda v: _score(v, rule))


def _score(version, rule: dict[str, str]) -> float:
    sign = -1.0 if rule.get(PROMOTED_MODE, "min") == "max" else 1.0
    return sign * float(version.tags.get(rule.get(PROMOTED_ON, "val_bpd"), sign * math.inf))


def _beats(a, b, rule: dict[str, str], key: str | None) -> bool:
    """Version `a` is strictly better than `b` on the model's metric, both of `key`."""
    same = a.tags.get(KEY) == key == b.tags.get(KEY)
    return same and _score(a, rule) < _score(b, rule)


def _move_champion(client: MlflowClient, name: str, version: str, newest: int) -> None:
    """`version` becomes champion, the versions up to `newest` passed over. The tag first: a
    reader who sees the alias sees the tag of this move (or of an earlier move to the same
    version, with a smaller number: the safe side)."""
    _racing(client.set_model_version_tag, name, version, CHAMPION_SINCE, str(newest))
    _racing(client.set_registered_model_alias, name, CHAMPION, version)


def _racing(write: Callable, *args) -> None:
    """A tag or alias written while another sweep writes the same one: MLflow's SQL store
    looks the row up, then inserts it, and the slower insert fails on the unique key (found
    by tests/test_registry_rules.py). The row exists then: the next try updates it."""
    for attempt in range(3):
        try:
            write(*args)
            return
        except MlflowException as err:
            said = str(err)
            if attempt == 2 or not ("UNIQUE constraint" in said or "duplicate key" in said):
                raise


def _drop_challenger(client: MlflowClient, name: str, version: str) -> None:
    """The challenger alias off `version`, which is champion now."""
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def _newest(client: MlflowClient, name: str) -> int:
    return max(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def _ensure_registered_model(
    client: MlflowClient, name: str, key: str, metric: str, mode: str = "min"
) -> None:
    """Create the registered model unless it exists. Create first and take 'already exists'
    as done: a look-then-create would race with another sweep registering at the same time."""
    try:
        client.create_registered_model(
            name,
            tags={KEY: key, PROMOTED_ON: metric, PROMOTED_MODE: mode},
            description=(
                f"VAEs found by vae-sweep on {key}. Alias champion = the "
                f"{'highest' if mode == 'max' else 'lowest'} {metric} on the "
                "validation split; each version also records test_bpd and the IWAE bound on "
                "the test split, which are reported and never compared."
            ),
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        if KEY not in client.get_registered_model(name).tags:  # registered before keys were
            for tag, value in {KEY: key, PROMOTED_ON: metric, PROMOTED_MODE: mode}.items():
                client.set_registered_model_tag(name, tag, value)


def check_name(tracking_uri: str, name: str, key: str) -> None:
    """Refuse, before any compute, a sweep whose models would not compare with the ones
    registered under `name` (another comparability key)."""
    client = MlflowClient(tracking_uri)
    try:
        held = client.get_registered_model(name).tags.get(KEY)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return
        raise
    if held is not None and held != key:  # (none: registered before keys, adopted)
        raise ValueError(
            f"registered model {name} holds models of {held}, this sweep's are of {key}, and "
            "bits per dimension over different data do not compare; pass --registry-name with "
            "another name (or leave it out: each key has a default name of its own)"
        )


def _alias_version(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def parse_ref(ref: str) -> tuple[str, str]:
    """'NAME', 'NAME@ALIAS', 'NAME/VERSION' or 'models:/...' -> (name, alias-or-version);
    the alias defaults to champion."""
    ref = ref.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, version
    return ref, CHAMPION


def resolve(client: MlflowClient, ref: str):
    """The ModelVersion a reference names; ModelNotFoundError listing what exists."""
    name, which = parse_ref(ref)
    try:
        model = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # e.g. refused credentials: not a missing model
        names = sorted(m.name for m in client.search_registered_models())
        raise ModelNotFoundError(
            f"no registered model '{name}'; registered models: "
            f"{', '.join(names) if names else 'none yet (run a sweep first)'}"
        ) from None
    versions = client.search_model_versions(f"name = '{name}'")
    numbers = sorted((str(v.version) for v in versions), key=int)
    aliases = ", ".join(f"{a}->{v}" for a, v in sorted(model.aliases.items())) or "none"
    available = f"versions {', '.join(numbers)}; aliases {aliases}"
    if which.isdigit():
        found = [v for v in versions if str(v.version) == which]
        if not found:
            raise ModelNotFoundError(f"{name} has no version {which}: {available}")
        return found[0]
    if which not in model.aliases:
        raise ModelNotFoundError(f"{name} has no alias '{which}': {available}")
    return client.get_model_version(name, model.aliases[which])


def download(tracking_uri: str, ref: str, out: Path) -> Path:
    """Download a registered version's files into `out`; returns the checkpoint path."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    version = resolve(client, ref)
    out.mkdir(parents=True, exist_ok=True)
    # The version's own artifact location, not a models:/ URI: MLflow resolves those through
    # the process-global registry URI, whatever tracking_uri says.
    source = client.get_model_version_download_uri(version.name, str(version.version))
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(out), tracking_uri=tracking_uri
        )
    )
    found = sorted(local.rglob(CHECKPOINT_NAME))
    if not found:
        raise ModelNotFoundError(
            f"{version.name}/{version.version} holds no {CHECKPOINT_NAME}: not a vae-sweep model"
        )
    verify_weights(version, found[0])
    return found[0]


def verify_weights(version, path: Path) -> None:
    """Refuse a version's weights unless they are a safetensors checkpoint (nothing in it is
    run) whose sha256 is the one registered; warn for a version registered before hashes
    were."""
    read_checkpoint(path)  # CheckpointError naming the file for a pickle or a cut-short file
    ref = f"{version.name}/{version.version}"
    expected = version.tags.get(WEIGHTS_SHA256)
    if expected is None:
        print(
            f"vae-sweep: warning: {ref} was registered before vae-sweep recorded a hash of the "
            f"weights (tag {WEIGHTS_SHA256}): they are loaded unverified",
            file=sys.stderr,
        )
        return
    found = file_sha256(path)
    if found != expected:
        raise WeightsChangedError(
            f"{ref}: its weights file {CHECKPOINT_NAME} has sha256 {found}, the version was "
            f"registered with sha256 {expected} (tag {WEIGHTS_SHA256}): the weights were "
            "changed after registration, refused. Restore the file in the artifact store, or "
            f"make another version champion (vae-sweep promote {version.name} VERSION --reason "
            "...)"
        )


def load_model(
    ref: str, device: str | torch.device = "cpu", tracking_uri: str | None = None
) -> VAE:
    """The registered VAE `ref` ('celeba-vae@champion', 'celeba-vae/3'), in eval mode.

    Only the safetensors checkpoint is read: no code from the artifact runs.
    """
    from sweeps.tracking import default_tracking_uri

    with tempfile.TemporaryDirectory() as folder:
        path = download(tracking_uri or default_tracking_uri(), ref, Path(folder))
        return load_checkpoint_model(path, device)
