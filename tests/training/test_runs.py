"""Tests of uadlab.training.runs: the CPU copy a checkpoint is written from."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from uadlab.training.runs import host_copy


def test_host_copy_is_a_snapshot_that_later_updates_do_not_reach():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(3, 2)).sum().backward()
    optimizer.step()
    tree = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "history": [{"epoch": 1}], "epoch": 1}
    before = {key: value.clone() for key, value in model.state_dict().items()}

    copied, wait = host_copy(tree)
    wait()
    optimizer.step()  # the next epoch changes the weights and Adam's moments in place
    tree["history"].append({"epoch": 2})
    tree["history"][0]["epoch"] = 99

    assert all(torch.equal(copied["model"][key], before[key]) for key in before)
    assert not torch.equal(copied["model"]["weight"], model.weight.detach())
    assert copied["history"] == [{"epoch": 1}] and copied["epoch"] == 1
    moments = copied["optimizer"]["state"][0]["exp_avg"]
    assert moments.device.type == "cpu" and not torch.equal(moments, optimizer.state[model.weight]["exp_avg"])


def test_host_copy_keeps_a_state_dicts_type_and_metadata_and_shared_tensors():
    state = nn.BatchNorm1d(2).state_dict()
    assert isinstance(state, OrderedDict) and hasattr(state, "_metadata")
    shared = torch.ones(2)
    copied, wait = host_copy({"state": state, "pair": (shared, shared), "names": ["a"]})
    wait()
    assert type(copied["state"]) is OrderedDict and copied["state"]._metadata == state._metadata
    assert list(copied["state"]) == list(state)
    assert copied["pair"][0] is copied["pair"][1] and copied["pair"][0] is not shared
    assert isinstance(copied["pair"], tuple) and copied["names"] == ["a"]
    nn.BatchNorm1d(2).load_state_dict(copied["state"])
