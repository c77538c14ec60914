"""--objective and --pick: what each searches and refuses, and the Pareto front's members."""

import random

import pytest
from ray import tune

from sweeps import shapes
from sweeps.finish import non_dominated
from sweeps.spec import SpecError, parse_spec


def spec(*flags, base=shapes.BASE_CONFIG):
    return parse_spec(shapes.SEARCH_SPACE, base, list(flags))


def test_each_objective_searches_what_it_says():
    assert (spec().metric, spec().searched, spec().scheduler) == ("val_bpd", ["val_bpd"], "asha")
    calibrated = spec("--objective", "val_bpd_calibrated")
    assert calibrated.metric == calibrated.searched[0] == "val_bpd_calibrated"
    mig = spec("--objective", "val_mig")
    assert (mig.metric, mig.mode, mig.searched) == ("val_mig", "max", ["val_mig"])
    front = spec("--objective", "rate-distortion", "--pick", "max-rate=20")
    assert front.searched == ["val_kl", "val_mse"] and front.metric == "val_bpd"
    assert front.scheduler == "fifo" and front.max_rate == 20.0  # ASHA ranks on one metric


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--objective", "rate-distortion", "--scheduler", "asha"], "--scheduler asha: ASHA stops trials on one metric"),  # noqa: E501
        (["--pick", "max-rate=3"], "--pick max-rate=3: picks a member of a Pareto front; it needs --objective rate-distortion"),  # noqa: E501
        (["--objective", "rate-distortion", "--pick", "rate<3"], "--pick: got 'rate<3'; expected max-rate=R"),  # noqa: E501
        (["--objective", "rate-distortion", "--pick", "max-rate=-1"], "expected max-rate=R, R >= 0"),  # noqa: E501
    ],
)  # fmt: skip
def test_objective_flags_that_cannot_work_are_refused_by_name(flags, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        spec(*flags)


def test_the_calibrated_bound_needs_a_gaussian_decoder():
    bernoulli = {**shapes.BASE_CONFIG, "likelihood": "bernoulli"}
    with pytest.raises(SpecError, match="--objective val_bpd_calibrated: calibrates a Gaussian"):
        parse_spec(
            {"latent_dim": tune.choice([4, 8])}, bernoulli, ["--objective", "val_bpd_calibrated"]
        )


def test_a_factor_score_needs_data_with_factors():
    mnist = {"dataset": "mnist", "arch": "conv"}
    with pytest.raises(SpecError, match="--objective val_mig: scores the code against the data"):
        parse_spec({"latent_dim": tune.choice([4, 8])}, mnist, ["--objective", "val_mig"])


def test_the_front_is_every_point_no_other_beats_on_both():
    rng = random.Random(0)
    for _ in range(200):
        points = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(rng.randint(1, 12))]
        front = non_dominated(points)
        for i, p in enumerate(points):
            beaten = any(
                q[0] <= p[0] and q[1] <= p[1] and (q != p or j < i)
                for j, q in enumerate(points)
                if j != i
            )
            assert (i in front) == (not beaten), (points, i)
        assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)
