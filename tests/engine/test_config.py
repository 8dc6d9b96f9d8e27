"""The frozen run config: JSON round trip, resume rules (recipe fields frozen and every difference listed,
runtime fields free), the continuous learning-rate schedule of an extended run, configs of older runs."""
import dataclasses
import json

import pytest

from erda_sparse.config import (
    DEFAULTS,
    POLY_POWER,
    RECIPES,
    Config,
    auto_proto_momentum,
    check_resume,
    extend_schedule,
)
from erda_sparse.errors import UsageError


def config(**changes):
    fields = {**DEFAULTS, **RECIPES["synthetic"], "data_root": "/data", "data_kind": "synthetic",
              "labels": {"protocol": "ratio", "value": 0.01, "seed": 0}, "label_file": "/run/labels.npz",
              "world_size": 1, "schedule": ((0, 1.0, 100),), "out": "/run"}
    return Config(**{**fields, **changes})


def test_round_trip_through_json_keeps_every_field_and_unknown_ones(tmp_path):
    c = config(grad_clip=10.0, extra={"from_a_newer_version": 1})
    c.save(tmp_path / "config.json")
    back = Config.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert back == c and back.extra == {"from_a_newer_version": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 1.0


def test_resume_lists_every_recipe_difference_and_lets_runtime_fields_change():
    saved = config()
    with pytest.raises(UsageError) as err:
        check_resume(saved, {"lr": 0.2, "model": "MinkUNet14B", "voxel_size": 0.05, "keep": 5})
    msg = str(err.value)
    assert "--lr 0.2 (the run has 0.1)" in msg and "--model 'MinkUNet14B' (the run has 'MinkUNet14A')" in msg
    assert "voxel" not in msg and "keep" not in msg  # same value; a runtime field
    resumed = check_resume(saved, {"keep": 5, "workers": 2, "device": "cpu", "threads": 1, "max_steps": 7,
                                   "ckpt_every": 3, "model": "MinkUNet14A"})
    assert (resumed.keep, resumed.workers, resumed.max_steps, resumed.ckpt_every) == (5, 2, 7, 3)
    assert resumed.replace(keep=3, workers=0, threads=None, max_steps=None, ckpt_every=None) == saved


def test_extend_needs_more_epochs_and_keeps_the_learning_rate_continuous():
    saved = config(epochs=20, schedule=((0, 1.0, 100),))
    with pytest.raises(UsageError, match="--epochs"):
        check_resume(saved, {"epochs": 30})
    with pytest.raises(UsageError, match="larger than the run's 20"):
        check_resume(saved, {"epochs": 10}, extend=True)
    assert check_resume(saved, {"epochs": 30}, extend=True).epochs == 20  # the trainer extends the schedule
    longer = extend_schedule(saved, 30, step=60, steps_per_epoch=5)
    assert longer.epochs == 30 and longer.schedule[-1][0] == 60 and longer.schedule[-1][2] == 150
    before = saved.lr_factor(60)
    assert before == pytest.approx((1 - 60 / 100) ** POLY_POWER)
    assert longer.lr_factor(59) == saved.lr_factor(59)  # the past is unchanged
    assert longer.lr_factor(60) == pytest.approx(before)  # continuous where it is extended
    assert longer.lr_factor(61) < before and longer.lr_factor(150) == 0.0
    assert longer.lr_factor(105) == pytest.approx(before * (1 - 45 / 90) ** POLY_POWER)


def test_auto_prototype_momentum_averages_over_a_tenth_of_the_run():
    assert auto_proto_momentum(100) == pytest.approx(0.9)  # the synthetic default: 20 epochs of 5 steps
    assert auto_proto_momentum(280) == pytest.approx(1 - 10 / 280)
    assert auto_proto_momentum(45000) == 0.999 and auto_proto_momentum(3) == 0.5


def test_config_of_an_older_run_loads_with_the_defaults_it_ran_with():
    old = {k: v for k, v in config().to_dict().items()
           if k not in ("pseudo_tau", "proto_init", "erda_warmup", "proto_momentum")}
    old.update(label_ratio=None, synthetic_rooms=12)  # flags the older trainer stored
    c = Config.from_dict(old)
    assert (c.pseudo_tau, c.proto_init, c.erda_warmup, c.proto_momentum) == (1.0, "first", 0, 0.999)
    assert c.extra == {"label_ratio": None, "synthetic_rooms": 12}
    with pytest.raises(ValueError, match="lacks model"):
        Config.from_dict({k: v for k, v in old.items() if k != "model"})
