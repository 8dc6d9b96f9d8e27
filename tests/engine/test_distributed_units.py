"""Fast unit tests of the pieces behind data parallelism and survival: the step-indexed sampler, the
all-reduce batch norm (its all-reduce path, in a one-process gloo group, against torch's BatchNorm1d), and
checkpoint selection (newest readable first, pruning)."""
import os

import pytest
import torch
import torch.distributed as dist

from erda_sparse import distributed as ddp
from erda_sparse.checkpoint import CheckpointError, latest, listed, prune, save, step_path


@pytest.mark.parametrize("n,b,world", [(10, 2, 2), (7, 1, 3), (5, 4, 2), (12, 3, 1)])
def test_processes_together_see_exactly_the_global_batches_of_one_process(n, b, world):
    for epoch in range(3):
        one = list(ddp.StepBatches(n, b * world, seed=5, epoch=epoch))
        ranks = [list(ddp.StepBatches(n, b, seed=5, epoch=epoch, rank=r, world=world)) for r in range(world)]
        assert all(len(r) == len(one) == -(-n // (b * world)) for r in ranks)
        for j, batch in enumerate(one):
            assert sum((r[j] for r in ranks), []) == batch  # slices of global batch j, in rank order
        seen = sorted(i for batch in one for i in batch)
        assert set(seen) == set(range(n)) and len(seen) == len(one) * b * world  # every scene, padded by wrapping
    assert list(ddp.StepBatches(n, b, 5, 1, 0, world, start=1)) == list(ddp.StepBatches(n, b, 5, 1, 0, world))[1:]
    assert list(ddp.StepBatches(n, b, 5, 0)) != list(ddp.StepBatches(n, b, 5, 1))  # a new order each epoch


@pytest.fixture
def one_process_group(tmp_path, monkeypatch):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    monkeypatch.setattr(ddp, "active", lambda: True)  # take the all-reduce path with a world of one
    yield
    dist.destroy_process_group()


def test_all_reduce_batch_norm_equals_batch_norm_in_one_process(one_process_group):
    torch.manual_seed(0)
    ref = torch.nn.BatchNorm1d(6, momentum=0.1)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
    mine = ddp.AllReduceBatchNorm(6, momentum=0.1)
    mine.load_state_dict(ref.state_dict())
    for _ in range(3):
        x = (torch.randn(50, 6) * 3 + 10).requires_grad_(True)
        x2 = x.detach().clone().requires_grad_(True)
        y, y2 = ref(x), mine(x2)
        w = torch.randn_like(y)
        (y * w).sum().backward()
        (y2 * w).sum().backward()
        torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.running_mean, ref.running_mean)
    torch.testing.assert_close(mine.running_var, ref.running_var)
    assert int(mine.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    torch.testing.assert_close(mine.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)


def test_checkpoint_selection_newest_readable_first_and_pruning(tmp_path):
    run = str(tmp_path)
    for step in (5, 40, 300):
        save({"model": {"w": torch.tensor(float(step))}, "config": {"model": "M", "voxel_size": 0.05,
                                                                      "num_classes": 20}, "step": step},
             step_path(run, step))
    assert [os.path.basename(p) for p in listed(run)] == ["ckpt-00000300.pt", "ckpt-00000040.pt",
                                                            "ckpt-00000005.pt"]  # by step, not by name length
    newest = step_path(run, 300)
    with open(newest, "r+b") as f:
        f.truncate(100)
    said = []
    path, state = latest(run, report=said.append)
    assert path == step_path(run, 40) and state["step"] == 40
    assert len(said) == 1 and newest in said[0]
    prune(run, 1)
    assert listed(run) == [newest]
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        latest(run, report=said.append)
    torch.save({"weights": 1}, step_path(run, 7))  # not one of ours: passed over like a damaged one
    with pytest.raises(CheckpointError, match=r"\(2 unreadable\)"):
        latest(run, report=said.append)
