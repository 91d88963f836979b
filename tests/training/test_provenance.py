"""What a manifest records of its training: the args as they applied, the code and machine, the held-out patients."""

import numpy as np
import torch

from service.runtime.manifest import Manifest
from tests.conftest import DEFAULT_STORE, DEFAULT_VERSION, REPO
from training.defaults import PREPROCESSING
from training.export import main as export_main
from training.model import ResMTNet, ResMTNetConfig
from training.provenance import applied_args, environment, git_commit, patients_digest


def test_an_option_that_did_not_reach_the_network_is_recorded_as_not_applied():
    args = {"dropout": 0.3, "widths": [4, 8], "seed": 7}
    config = {"dropout": 0.1, "widths": [4, 8], "patch_size": 32}
    assert applied_args(args, config) == {
        "args": {"dropout": 0.1, "widths": [4, 8], "seed": 7},
        "args_not_applied": {"dropout": 0.3},
    }
    assert applied_args({"dropout": 0.1}, config) == {"args": {"dropout": 0.1}}


def test_the_committed_manifest_records_the_hyperparameters_the_network_has():
    training = Manifest.read(DEFAULT_STORE / "res_mtnet" / DEFAULT_VERSION).training
    config, args = training["config"], training["args"]
    shared = set(config) & set(args)
    assert "dropout" in shared
    assert {k: args[k] for k in shared} == {k: config[k] for k in shared}


def test_patients_digest_ignores_order_and_repeats():
    a = patients_digest(np.array(["LIDC-0002", "LIDC-0001", "LIDC-0001"]))
    assert a == patients_digest(np.array(["LIDC-0001", "LIDC-0002"])) and a["count"] == 2
    assert a["sha256"] != patients_digest(np.array(["LIDC-0001", "LIDC-0003"]))["sha256"]


def test_export_records_the_applied_args_and_where_training_ran(tmp_path):
    torch.manual_seed(0)
    model = ResMTNet(ResMTNetConfig(widths=[4, 8, 8], blocks=[1, 1, 1], head_hidden=8, dropout=0.1))
    provenance = {**environment(), "lidc_held_out_patients": patients_digest(np.array(["p1", "p2"]))}
    torch.save(
        {
            "config": model.config.to_dict(),
            "model": model.state_dict(),
            "epoch": 0,
            "args": {"dropout": 0.3, "seed": 7},
            "preprocessing": PREPROCESSING.model_dump(),
            "provenance": provenance,
        },
        tmp_path / "last.pt",
    )
    export_main(["--checkpoint", str(tmp_path / "last.pt"), "--version", "0.0.4", "--store", str(tmp_path)])
    training = Manifest.read(tmp_path / "res_mtnet" / "0.0.4").training
    assert training["args"]["dropout"] == 0.1 and training["args_not_applied"] == {"dropout": 0.3}
    recorded = training["provenance"]
    assert recorded["cpu"] and recorded["torch_threads"] >= 1 and recorded["lidc_held_out_patients"]["count"] == 2
    assert recorded["git_commit"] == git_commit(REPO)
