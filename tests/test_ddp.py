"""Distributed training (DistributedDataParallel, gloo, 2 CPU processes) gives the same students
as one process on the same global batch. Tiny random ViT teacher, a few iterations (seconds)."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distillad.data import Sample

PARAMS = dict(teacher="test_vit_tiny", students="both", image_size=56, resize=70, iterations=4, batch_size=4,
              dropout=0.0, seed=3, device="cpu")


def _train():
    rng = np.random.default_rng(0)
    return [Sample(rng.integers(0, 255, (60, 70, 3), dtype=np.uint8)) for _ in range(6)]


def _model():
    from distillad.models.base import create_model
    from distillad.teachers import create

    params = dict(PARAMS)
    params["teacher"] = create(params["teacher"], weights="random")
    return create_model("dual_student", **params)


def _worker(rank, world, port, out):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        m = _model().fit(_train(), progress=False)
        if rank == 0:
            torch.save(m._state_tensors(), out)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_two_processes_equal_single_process(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "ddp.pt"
    # fork: the children reuse the imported modules (spawn would re-import torch/timm in each)
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="fork")
    ddp = torch.load(out)
    single = _model().fit(_train(), progress=False)._state_tensors()
    assert set(ddp) == set(single)
    for k, v in single.items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
    # the students did move during training, so the comparison is not vacuous
    from distillad.models.dual_student import make_layout

    init = _model()
    init.teacher_ = init._make_teacher()
    torch.manual_seed(PARAMS["seed"])
    start = init._build_students(make_layout(init.teacher_, None, 2, True, True)).state_dict()
    moved = [k for k, v in single.items() if not torch.equal(start[k], v)]
    assert len(moved) > len(single) // 2
