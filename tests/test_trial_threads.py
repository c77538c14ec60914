"""A CPU trial trains on its own CPUs plus its share of those no trial holds, on a one-node
cluster: the last trial of a laptop sweep is not left on one core of an idle machine."""

import pytest
import ray

from sweeps.trainable import SweepContext, idle_share, threads


@pytest.mark.parametrize(
    ("total", "available", "own", "share"),
    [
        (2, 1, 1, 1),  # alone on 2 cores: both
        (2, 0, 1, 0),  # two trials on 2 cores: one each
        (4, 2, 1, 1),  # two trials on 4 cores: two each
        (8, 2, 2, 0),  # three 2-CPU trials, 2 idle CPUs: a third each, no whole thread
        (8, 4, 2, 2),  # two 2-CPU trials, 4 idle: 2 more each
        (4, 4, 1, 0),  # nothing held (a trial not yet placed): nothing to share
    ],
)
def test_idle_cpus_are_shared_among_the_cpus_in_use(total, available, own, share):
    assert idle_share({"CPU": total}, {"CPU": available}, own) == share


def context(cpus: float, gpus: float = 0.0) -> SweepContext:
    return SweepContext({}, "sqlite:///unused.db", "0", "parent", 2, 1, cpus, gpus)


@pytest.fixture
def three_cpus():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_trial_alone_on_a_local_ray_takes_the_idle_cpus_and_a_gpu_trial_does_not(three_cpus):
    alone = ray.remote(num_cpus=1)(threads)
    assert ray.get(alone.remote(context(1))) == 3
    assert ray.get(alone.remote(context(1, gpus=0.5))) == 1  # (Ray does not check the GPU)
