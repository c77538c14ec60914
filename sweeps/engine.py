"""Run a sweep: Optuna proposes, ASHA stops, Ray Tune schedules, MLflow records, the registry
keeps the best.

Each sweep script (sweeps/celeba.py, ...) holds a literal search space and base config and
calls `main`. The script may be a copy made by `ray submit` (only the file travels): all it
needs is the installed package.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.sample import Categorical, Domain, Float, Integer

from sweeps import preflight, tracking
from sweeps.plots import log_sweep_plots
from sweeps.registry import log_and_register
from sweeps.searcher import make_searcher
from sweeps.trainable import REPORTED, SweepContext, train_trial
from vae_core import Config, ConfigError, load_splits, read_checkpoint
from vae_core.checkpoint import CHECKPOINT_NAME, load_model
from vae_core.data.arrow import PrepareError
from vae_core.data.sources import resolve_data_root
from vae_core.metrics import final_metrics

METRIC = "val_bpd"  # the selection metric; the training loss never picks a winner
SMOKE = {"num_samples": 2, "max_epochs": 2, "limit": 256, "image_every": 1, "iwae": 4}


def build_parser(description: str, defaults: dict[str, Any]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = {
        "num_samples": 16,
        "max_epochs": 10,
        "gpus_per_trial": None,
        "cpus_per_trial": 1.0,
        "grace_period": 1,
        "image_every": 5,
        **defaults,
    }
    p.add_argument(
        "--num-samples",
        type=int,
        help=f"trials to run (default {d['num_samples']}; 2 with --smoke-test)",
    )
    p.add_argument(
        "--max-epochs",
        type=int,
        help=f"epochs of a trial that ASHA never stops (default {d['max_epochs']}; "
        "2 with --smoke-test)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=d["gpus_per_trial"],
        help="GPUs per trial; 0.25 packs four trials on a GPU (default: 1 when the "
        "cluster has GPUs, else 0)",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=float,
        default=d["cpus_per_trial"],
        help="CPUs per trial, also its torch threads (default %(default)s)",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="trials running at once (default: as many as resources allow)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop starting and running trials after this long",
    )
    p.add_argument(
        "--epoch-budget",
        type=int,
        default=None,
        metavar="EPOCHS",
        help="stop the sweep once its trials have trained this many epochs in all "
        "(a compute budget, e.g. to compare searches on equal terms); the trials running "
        "then stop too",
    )
    p.add_argument(
        "--grace-period",
        type=int,
        default=d["grace_period"],
        help="epochs before ASHA may stop a trial (default %(default)s)",
    )
    p.add_argument(
        "--search",
        choices=("tpe", "random"),
        default="tpe",
        help="tpe: Optuna's TPE proposes each trial from the results so far (default); "
        "random: Tune samples the space at random (tune.grid_search entries are walked "
        "in full, num-samples times), e.g. as a baseline",
    )
    p.add_argument(
        "--scheduler",
        choices=("asha", "fifo"),
        default="asha",
        help="asha: stop unpromising trials early (default); fifo: every trial runs --max-epochs",
    )
    p.add_argument(
        "--image-every",
        type=int,
        default=d["image_every"],
        help="log image grids every N epochs and at the end (default %(default)s)",
    )
    p.add_argument("--data-root", help="where the dataset is (default $VAE_DATA_ROOT, ./data)")
    p.add_argument("--data-path", help="a `vae-data prepare` file, path or s3:// URI")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)",
    )
    p.add_argument("--experiment", help="MLflow experiment (default vae-sweep/<dataset>)")
    p.add_argument("--registry-name", help="registered model name (default <dataset>-vae)")
    p.add_argument(
        "--storage-path",
        default="ray_results",
        help="where Tune keeps trials and checkpoints: a path, or s3://... shared "
        "by all nodes of a cluster (default ./ray_results)",
    )
    p.add_argument("--name", help="sweep name (default <dataset>-<date>-<time>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep --name from --storage-path after an interruption",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds Optuna and every trial")
    p.add_argument(
        "--fresh-workers",
        action="store_true",
        help="start every trial in a new worker process (slower: each imports torch again) "
        "instead of reusing the worker of a finished trial",
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="2 trials x 2 epochs on 256 images: checks the set-up in a minute",
    )
    p.set_defaults(default_num_samples=d["num_samples"], default_max_epochs=d["max_epochs"])
    return p


class EpochBudget(tune.stopper.Stopper):
    """Stops the whole sweep once its trials have reported `epochs` epochs in all."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.spent = epochs, 0

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.spent += 1  # every result is one epoch of one trial
        return False

    def stop_all(self) -> bool:
        return self.spent >= self.epochs


class SweepInterrupted(RuntimeError):
    """Ctrl+C (or SIGUSR1) stopped the sweep; Tune saved its state for --resume."""


@dataclass
class Outcome:
    name: str
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    test_metrics: dict[str, float]
    registered: Any
    parent_run_id: str
    tracking_uri: str
    logs: dict[str, int] = field(default_factory=dict)  # late / dropped / pending log calls


def main(
    search_space: dict[str, Any],
    base_config: dict[str, Any],
    description: str = "",
    defaults: dict[str, Any] | None = None,
    argv: list[str] | None = None,
) -> Outcome:
    parser = build_parser(description, defaults or {})
    args = parser.parse_args(argv)
    try:
        return run_sweep(search_space, base_config, args)
    except SweepInterrupted as err:
        parser.exit(130, f"{parser.prog}: {err}\n")
    except (ConfigError, ValueError, FileNotFoundError, PrepareError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")


def resolve_base(base_config: dict[str, Any], args: argparse.Namespace) -> Config:
    """The base config with the flags applied and every path absolute (Tune moves the cwd)."""
    config = Config.from_dict(base_config)
    changes: dict[str, Any] = {"seed": args.seed}
    d = config.data
    if d.dataset != "shapes":
        changes["data_root"] = str(resolve_data_root(args.data_root or d.data_root))
    data_path = args.data_path or d.data_path
    if data_path:
        changes["data_path"] = data_path if "://" in data_path else str(Path(data_path).resolve())
    if d.cache_dir:
        changes["cache_dir"] = str(Path(d.cache_dir).resolve())
    if args.smoke_test:
        changes.update(limit=SMOKE["limit"], iwae_samples=SMOKE["iwae"])
    return config.replace(**changes)


def check_flags(args: argparse.Namespace) -> None:
    """Flag values that cannot work, named before anything starts."""
    rules = [
        ("num_samples", 1),
        ("max_epochs", 1),
        ("grace_period", 1),
        ("image_every", 1),
        ("max_concurrent", 1),
        ("epoch_budget", 1),
    ]
    for flag, low in rules:
        value = getattr(args, flag)
        if value is not None and value < low:
            raise ValueError(f"--{flag.replace('_', '-')}: got {value}; expected >= {low}")
    if args.cpus_per_trial <= 0:
        raise ValueError(f"--cpus-per-trial: got {args.cpus_per_trial}; expected > 0")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise ValueError(
            f"--gpus-per-trial: got {args.gpus_per_trial}; expected >= 0 "
            "(0.25 packs four trials on a GPU)"
        )
    if args.time_budget is not None and args.time_budget <= 0:
        raise ValueError(f"--time-budget: got {args.time_budget}; expected seconds > 0")


def check_space(space: dict[str, Any], base: Config) -> None:
    """Build the config at every corner of the search space: a bad bound or an unknown field
    fails here, naming it, before any trial starts."""
    for key, domain in space.items():
        if isinstance(domain, dict) and list(domain) == ["grid_search"]:
            values = list(domain["grid_search"])
        elif isinstance(domain, str | int | float | bool):
            values = [domain]  # a constant
        elif not isinstance(domain, Domain):
            raise ValueError(
                f"search space '{key}': expected a tune domain (tune.choice, "
                f"tune.loguniform, tune.grid_search, ...), got {domain!r}"
            )
        elif isinstance(domain, Categorical):
            values = list(domain.categories)
        elif isinstance(domain, Float | Integer):
            values = [domain.lower, domain.upper - (1 if isinstance(domain, Integer) else 0)]
        else:
            values = []
        for value in values:
            try:
                base.replace(**{key: value})
            except ConfigError as err:
                raise ConfigError(f"search space '{key}' = {value!r}: {err}") from None


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("vae-sweep", "ray", "optuna", "mlflow", "torch", "pyarrow"):
        try:
            found[f"version.{package}"] = version(package)
        except PackageNotFoundError:
            found[f"version.{package}"] = "not installed"
    return found


def _resources(args: argparse.Namespace) -> dict[str, float]:
    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return {"cpu": args.cpus_per_trial, "gpu": gpus}


def _connected(started_ray: bool) -> bool:
    """True when this driver joined a running cluster (`ray submit`, RAY_ADDRESS), whose
    autoscaler may add nodes, rather than starting a local Ray of its own. ray.init() joins a
    cluster started on this machine without saying so; its node object tells (private API)."""
    node = getattr(ray._private.worker, "_global_node", None)
    return not (started_ray and getattr(node, "head", False))


def run_sweep(
    search_space: dict[str, Any], base_config: dict[str, Any], args: argparse.Namespace
) -> Outcome:
    if args.smoke_test:
        args.image_every = SMOKE["image_every"]
    for flag in ("num_samples", "max_epochs"):
        if getattr(args, flag) is None:
            default = SMOKE[flag] if args.smoke_test else getattr(args, f"default_{flag}")
            setattr(args, flag, default)
    check_flags(args)
    base = resolve_base(base_config, args)
    check_space(search_space, base)
    grids = [k for k, v in search_space.items() if isinstance(v, dict) and "grid_search" in v]
    if grids and args.search == "tpe":
        raise ValueError(
            f"search space '{grids[0]}': tune.grid_search is walked by --search random, "
            "not proposed by TPE; pass --search random or use tune.choice"
        )
    dataset = base.data.dataset
    if args.resume and not args.name:
        raise ValueError("--resume needs --name: the sweep to continue")
    name = args.name or f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = (
        args.storage_path if "://" in args.storage_path else str(Path(args.storage_path).resolve())
    )
    tracking_uri = tracking.absolute_tracking_uri(
        args.tracking_uri or tracking.default_tracking_uri()
    )
    registry_name = args.registry_name or f"{dataset}-vae"
    print(f"vae-sweep: preparing {dataset} (once per node)", file=sys.stderr)
    load_splits(base)  # readable here, and decoded into the node cache before any trial
    if not args.resume:
        preflight.check_storage(storage, args.num_samples, base)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(log_to_driver=True, include_dashboard=False)
    resources = _resources(args)
    preflight.check_resources(resources["cpu"], resources["gpu"], _connected(started_ray))
    preflight.check_data_on_nodes(base)

    client = MlflowClient(tracking_uri)
    experiment_id = tracking.get_or_create_experiment(
        client, args.experiment or f"vae-sweep/{dataset}", tracking_uri, create=not args.resume
    )
    parent = tracking.start_sweep_run(
        client,
        experiment_id,
        name,
        params={
            **{f"space.{k}": repr(v) for k, v in search_space.items()},
            **{f"base.{k}": v for k, v in base.flat().items()},
            "num_samples": args.num_samples,
            "max_epochs": args.max_epochs,
            "grace_period": args.grace_period,
            "seed": args.seed,
            "metric": METRIC,
        },
        tags={"dataset": dataset, "git_sha": _git_sha(), **_versions()},
        resume=args.resume,
    )
    study_db = _optuna_storage(storage, name) if args.search == "tpe" else None
    try:
        results = _tune(
            search_space,
            base,
            args,
            resources,
            name,
            storage,
            study_db,
            tracking_uri,
            experiment_id,
            parent,
        )
        _check_complete(results, client, parent, name, args)
        logs = _settle(results, client, parent, study_db, name, args.max_epochs)
        outcome = _finish(results, client, tracking_uri, parent, registry_name, name, study_db)
        outcome.logs = logs
        client.set_tag(parent, "vae_sweep.log_calls", json.dumps(logs))
    except SweepInterrupted:
        raise  # the runs are ended KILLED, waiting for --resume
    except BaseException as err:
        tracking.end_if_running(
            client, parent, "FAILED", {tracking.ERROR: f"{type(err).__name__}: {err}"[:5000]}
        )
        raise
    client.set_terminated(parent, "FINISHED")
    _print_summary(outcome, registry_name)
    return outcome


def _tune(
    search_space,
    base: Config,
    args,
    resources: dict[str, float],
    name: str,
    storage: str,
    study_db: str | None,
    tracking_uri: str,
    experiment_id: str,
    parent: str,
):
    if resources["gpu"] == 0:
        base = base.replace(device="cpu")
    context = SweepContext(
        base_config=base.to_dict(),
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent,
        max_epochs=args.max_epochs,
        image_every=args.image_every,
        cpus_per_trial=args.cpus_per_trial,
    )
    trainable = tune.with_resources(tune.with_parameters(train_trial, context=context), resources)
    if args.resume:
        path = f"{storage.rstrip('/')}/{name}"
        if not tune.Tuner.can_restore(path):
            raise ValueError(f"--resume: no sweep '{name}' to continue in {storage}")
        preflight.check_own_state(path)
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_errored=True, param_space=search_space
        )
        return tuner.fit()
    if study_db is not None:
        searcher = make_searcher(name, study_db, args.seed, args.max_epochs, METRIC)
        if args.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=args.max_concurrent)
    else:
        searcher = BasicVariantGenerator(
            random_state=args.seed, max_concurrent=args.max_concurrent or 0
        )
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=args.max_epochs,
            grace_period=min(args.grace_period, args.max_epochs),
            reduction_factor=3,
        )
        if args.scheduler == "asha"
        else FIFOScheduler()
    )
    budget = EpochBudget(args.epoch_budget) if args.epoch_budget else None
    tuner = tune.Tuner(
        trainable,
        param_space=search_space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=args.num_samples,
            time_budget_s=args.time_budget,
            # A finished trial's worker process takes the next trial: torch, Ray and MLflow
            # are imported once per slot, not once per trial.
            reuse_actors=not args.fresh_workers,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            verbose=1,
            stop=budget,
            callbacks=[tracking.CloseTrialRuns(tracking_uri, args.max_epochs, budget)],
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order="min"
            ),  # the best epoch, and always the latest
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )
    return tuner.fit()


def _check_complete(results, client: MlflowClient, parent: str, name: str, args) -> None:
    """After Ctrl+C, Tune returns normally. The experiment state it saved for --resume says
    what is unfinished: trials still PENDING there, or fewer trials than asked for. End their
    runs and the sweep's KILLED (none is left RUNNING) and say how to resume."""
    saved = tune.ExperimentAnalysis(results.experiment_path).trials
    unfinished = [t for t in saved if t.status not in ("TERMINATED", "ERROR")]
    budgeted = args.time_budget is not None or args.epoch_budget is not None
    missing = 0 if budgeted else args.num_samples - len(saved)
    if not unfinished and missing <= 0:
        return
    resume = f"{Path(sys.argv[0]).name} --resume --name {name} (same --storage-path)"
    note = {tracking.STOP_REASON: f"interrupted; continue with {resume}"}
    run_ids = [(t.last_result or {}).get("mlflow_run_id") for t in unfinished]
    tracking.end_runs(client, [r for r in run_ids if r], "KILLED", note)
    tracking.end_if_running(client, parent, "KILLED", note)
    raise SweepInterrupted(
        f"sweep {name} interrupted with {len(unfinished) + max(missing, 0)} of "
        f"{args.num_samples} trials unfinished; its state is saved: continue with {resume}"
    )


def _settle(
    results, client: MlflowClient, parent: str, study_db: str | None, name: str, max_epochs: int
) -> dict[str, int]:
    """Leave nothing RUNNING and nothing undelivered once every trial has ended, whatever
    happened on the way: the tracking server away (it is waited for, then each trial's
    outbox is delivered), or a driver killed with SIGKILL between a trial's end and its run's.
    A run whose trial is not in the saved sweep (it started after the driver last saved its
    state, and was proposed again on --resume) ends KILLED. Optuna trials left RUNNING by a
    dead driver are told FAIL. Returns the sweep's late / dropped / pending log calls."""
    tracking.patiently("ending the sweep's trials", client.get_run, parent)
    trials = {t.trial_id: t for t in tune.ExperimentAnalysis(results.experiment_path).trials}
    totals = dict.fromkeys(("mlflow_late", "mlflow_dropped", "mlflow_pending"), 0)
    for trial in trials.values():
        status, tags = tracking.trial_outcome(trial, max_epochs)
        counters = tracking.patiently(
            f"settling {trial}", tracking.settle_trial, client, trial, status, tags
        )
        for key, value in (counters or {}).items():
            totals[key] += value
    running = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        f"tags.`{tracking.PARENT}` = '{parent}' and attributes.status = 'RUNNING'",
    )
    for run in running:  # runs of trials that never reported
        trial = trials.get(run.data.tags.get(tracking.TRIAL_ID))
        if trial is None:
            status, tags = "KILLED", {tracking.STOP_REASON: "lost with the driver; proposed again"}
        else:
            status, tags = tracking.trial_outcome(trial, max_epochs)
        tracking.end_if_running(client, run.info.run_id, status, tags)
    if study_db is not None:
        study = optuna.load_study(study_name=name, storage=study_db)
        for trial in study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
            study.tell(trial.number, state=TrialState.FAIL)
    return totals


def _optuna_storage(storage: str, name: str) -> str:
    """An SQLite file for the Optuna study: beside the trials when the storage is local, in
    the user's cache when it is remote (the study lives on the driver)."""
    folder = (
        Path(storage) / name
        if "://" not in storage
        else Path.home() / ".cache" / "vae-sweep" / "optuna"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def _finish(
    results,
    client: MlflowClient,
    tracking_uri: str,
    parent: str,
    registry_name: str,
    name: str,
    study_db: str | None,
) -> Outcome:
    finished = [r for r in results if r.metrics and math.isfinite(r.metrics.get(METRIC, math.nan))]
    if not finished:
        errors = "; ".join(str(r.error).splitlines()[-1] for r in results if r.error)[:2000]
        raise RuntimeError(f"no trial of sweep {name} reported {METRIC}: {errors or 'none ran'}")
    best = results.get_best_result(metric=METRIC, mode="min", scope="all")
    checkpoint = best.get_best_checkpoint(METRIC, "min")
    with checkpoint.as_directory() as folder:
        path = Path(folder) / CHECKPOINT_NAME
        ckpt = read_checkpoint(path)
        model = load_model(path)
        data = load_splits(ckpt.config, progress=False)
        test = final_metrics(model, data.test.images, k=ckpt.config.train.iwae_samples)
        best_record = min(ckpt.history, key=lambda r: r[METRIC])
        run_id = best.metrics["mlflow_run_id"]
        tags = {
            "dataset": ckpt.config.data.dataset,
            "image_size": str(ckpt.config.image_size),
            "test_bpd": f"{test['test_bpd']:.6f}",
            "test_iwae_nll": f"{test['test_iwae_nll']:.4f}",
            "iwae_k": str(test["iwae_k"]),
            "val_bpd": f"{best_record[METRIC]:.6f}",
            "epoch": str(ckpt.epoch),
            "sweep_run_id": parent,
            "trial_run_id": run_id,
            "git_sha": _git_sha(),
        }
        registered = log_and_register(tracking_uri, parent, path, registry_name, tags)
    now = int(time.time() * 1000)
    client.log_batch(
        parent,
        metrics=[
            Metric(k, float(v), now, 0) for k, v in {**test, METRIC: best_record[METRIC]}.items()
        ],
        tags=[
            RunTag("best_trial_run_id", run_id),
            RunTag("registered_model", f"{registry_name}/{registered.version}"),
            RunTag("registered_alias", registered.alias),
        ],
    )
    log_sweep_plots(client, parent, results, name, study_db, best)
    return Outcome(
        name,
        dict(best.config),
        {k: best_record[k] for k in REPORTED if k in best_record},
        test,
        registered,
        parent,
        tracking_uri,
    )


def _log_summary(logs: dict[str, int]) -> list[str]:
    """A line on log calls that waited for the tracking server, if any did."""
    late, dropped = logs.get("mlflow_late", 0), logs.get("mlflow_dropped", 0)
    pending = logs.get("mlflow_pending", 0)
    if not (late or dropped or pending):
        return []
    return [
        f"  tracking     {late} log calls delivered late (server unreachable), {dropped} "
        f"refused and dropped, {pending} undelivered"
    ]


def _print_summary(outcome: Outcome, registry_name: str) -> None:
    r, test = outcome.registered, outcome.test_metrics
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in outcome.best_params.items()
    )
    store = outcome.tracking_uri
    browse = (
        f"mlflow ui --backend-store-uri {store}" if store.startswith("sqlite") else f"open {store}"
    )
    print(
        "\n".join(
            [
                f"\nvae-sweep: sweep {outcome.name} done",
                f"  best trial   {params}",
                f"  val_bpd      {outcome.best_metrics[METRIC]:.4f}   test_bpd "
                f"{outcome.test_metrics['test_bpd']:.4f}   test_iwae_nll "
                f"{test['test_iwae_nll']:.2f} nats (k={test['iwae_k']})",
                f"  registered   {registry_name} version {r.version} as @{r.alias}"
                + (
                    f" (champion stays version {r.previous_champion})"
                    if r.alias != "champion"
                    else ""
                ),
                f"  use it       vae-sweep sample {registry_name}@{r.alias} -n 64 --out s.png",
                f"  browse       {browse}",
                *_log_summary(outcome.logs),
            ]
        )
    )
