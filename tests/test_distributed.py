"""Data-parallel training on 2 CPU processes (gloo, launched with torchrun as a user would): replicas start
from rank 0's weights and stay identical after steps on different data, a rank whose batch has no targets
does not hang the others, collectives average, and the sampler reshuffles per epoch. Single-process
fallbacks are checked in-process."""

import subprocess
import sys
import textwrap

import torch
from torch import nn

from minidetr import distributed as D
from minidetr.models import build_model

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from torch.utils.data import DataLoader, DistributedSampler
    torch.set_num_threads(1)
    from minidetr.data import set_epoch
    from minidetr import distributed as D
    from minidetr.criterion_rtdetr import RTDETRCriterion
    from minidetr.models import build_model

    out = Path(sys.argv[1])
    info = D.init_distributed("cpu")
    rank = info.rank
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = build_model("deim_shapes")
    ddp = D.wrap_model(model, torch.device("cpu"))
    criterion = RTDETRCriterion(4, loss_class="mal", num_dec_layers=model.cfg.dec_layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    losses_seen = []
    for step in range(2):
        images = torch.rand(2, 3, 64, 64, generator=g)
        if rank == 1 and step == 0:  # no targets: denoising is skipped on this rank only
            targets = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
        else:
            targets = [
                {"labels": torch.randint(0, 4, (n,), generator=g),
                 "boxes": torch.cat([torch.rand(n, 2, generator=g) * 0.5 + 0.25, torch.full((n, 2), 0.2)], 1)}
                for n in (1, 3)
            ]
        outputs = ddp(images, targets)
        loss = D.touch_all_parameters(criterion.total(criterion(outputs, targets)), ddp)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses_seen.append(loss.item())
    sampler = DistributedSampler(list(range(10)), shuffle=True, seed=0)
    loader = DataLoader(list(range(10)), sampler=sampler)
    orders = []
    for epoch in (0, 1):
        set_epoch(loader, epoch)
        orders.append(list(sampler))
    torch.save(
        {
            "state": model.state_dict(),
            "params": [n for n, _ in model.named_parameters()],
            "info": (info.distributed, info.rank, info.world_size),
            "mean": D.all_reduce_mean(torch.tensor([2.0 * rank])),
            "reduced": D.reduce_dict({"a": torch.tensor(float(rank)), "b": torch.tensor(1.0)}),
            "orders": orders,
            "main": D.is_main_process(),
        },
        out / f"rank{rank}.pt",
    )
    D.barrier()
    D.cleanup()
    """
)


def torchrun(script, *args, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_two_process_gloo_training_steps(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    torchrun(script, str(tmp_path))  # without touch_all_parameters: DDP error or hang (DN embedding unused on rank 1)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["info"] == (True, 0, 2) and r1["info"] == (True, 1, 2)
    assert r0["main"] and not r1["main"]
    # Bit-identical parameters. (BatchNorm running statistics are per rank after the last forward: DDP
    # re-broadcasts rank 0's at the next forward, and rank 0's are the ones saved; SyncBN is for CUDA.)
    for k in r0["params"]:
        torch.testing.assert_close(r1["state"][k], r0["state"][k], rtol=0, atol=0, msg=k)
    torch.manual_seed(0)

    fresh = build_model("deim_shapes").state_dict()
    assert not torch.equal(fresh["decoder.enc_score_head.weight"], r0["state"]["decoder.enc_score_head.weight"])
    assert r0["mean"].item() == 1.0 and r1["mean"].item() == 1.0
    assert r0["reduced"] == {"a": 0.5, "b": 1.0} == r1["reduced"]
    o0, o1 = r0["orders"], r1["orders"]
    assert sorted(o0[0] + o1[0]) == list(range(10))  # the two shards cover the data once
    assert o0[0] != o0[1]  # set_epoch reshuffles


def test_single_process_fallbacks(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert D.init_distributed() == D.DistInfo(False)
    assert not D.is_distributed() and D.is_main_process() and D.get_world_size() == 1
    x = torch.tensor([3.0])
    assert D.all_reduce_mean(x) is x
    assert D.reduce_dict({"a": torch.tensor(1.5), "b": torch.tensor(2)}) == {"a": 1.5, "b": 2.0}
    model = nn.Linear(2, 2)
    assert D.wrap_model(model, torch.device("cpu")) is model
    loss = torch.tensor(2.0)
    assert D.touch_all_parameters(loss, model) is loss
    D.barrier()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert D.init_distributed() == D.DistInfo(False, 0, 0, 1)  # torchrun with one process: plain training


NAN_WORKER = textwrap.dedent(
    """
    import gc
    import sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from minidetr import distributed as D
    from minidetr.train import engine
    from minidetr.criterion_rtdetr import RTDETRCriterion
    from minidetr.models import build_model

    out = Path(sys.argv[1])
    rank = D.init_distributed("cpu").rank
    torch.manual_seed(0)
    model = build_model("deim_shapes")
    ddp = D.wrap_model(model, torch.device("cpu"))
    criterion = RTDETRCriterion(4, loss_class="mal", num_dec_layers=model.cfg.dec_layers)
    real = criterion.forward
    calls = []
    def poisoned(outputs, targets):  # rank 1's second step: a NaN in one term
        losses = real(outputs, targets)
        calls.append(1)
        if rank == 1 and len(calls) == 2:
            losses["loss_giou"] = losses["loss_giou"] * float("nan")
        return losses
    criterion.forward = poisoned
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    target = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    batches = [(torch.rand(1, 3, 64, 64), [target])] * 3
    try:
        engine.train_one_epoch(ddp, criterion, batches, optimizer, scheduler, "cpu", 0, progress=False)
        (out / f"rank{rank}.txt").write_text("no error")
    except engine.NonFiniteLossError as e:
        (out / f"rank{rank}.txt").write_text(f"{e.step} {e}")
    # Let go of DDP (it holds the process group) before exiting: left to the interpreter's own teardown, gloo's
    # threads were destroyed after Python had finished and a rank aborted ("terminate called without an active
    # exception", 1 run in 15-40 here); with the del, 0 in 80.
    del ddp, model, criterion, optimizer, scheduler
    gc.collect()
    D.cleanup()
    """
)


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    """Rank 1's loss turns NaN: both ranks raise before backward (a rank left in DDP's all-reduce would hang)."""
    script = tmp_path / "worker.py"
    script.write_text(NAN_WORKER)
    torchrun(script, str(tmp_path), timeout=180)
    for rank in (0, 1):
        text = (tmp_path / f"rank{rank}.txt").read_text()
        assert text.startswith("1 non-finite loss at epoch 0, step 1 in "), (rank, text)
        assert "loss_giou" in text.split("(")[0], (rank, text)  # names the bad term, on both ranks


def test_sync_batchnorm_conversion_keeps_checkpoints_and_frozen_statistics():
    """``sync_bn`` (deim_r50 on CUDA) swaps every trainable BatchNorm for SyncBatchNorm: same state-dict keys, so
    checkpoints load either way; the backbone's frozen statistics (RT-DETRv2's FrozenBatchNorm2d) stay frozen."""
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(0)
    model = build_model("rtdetrv2_r50")
    keys = {k: v.shape for k, v in model.state_dict().items()}
    frozen = sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    trainable = sum(type(m) is nn.BatchNorm2d for m in model.modules())
    assert frozen == 55 and trainable == 42
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == trainable
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in synced.modules()) == frozen
    assert {k: v.shape for k, v in synced.state_dict().items()} == keys


MOSAIC_WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from minidetr import distributed as D
    from minidetr.data import AugmentationPolicy, CocoDetection, Mosaic, build_dataloader, build_transforms, set_epoch
    from minidetr.train.builders import seed_everything

    class Recording(Mosaic):
        drawn = []
        def partners(self, n):
            out = super().partners(n)
            self.drawn.extend(out)
            return out

    out, images, ann = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    info = D.init_distributed("cpu")
    mosaic = Recording(32)
    tf = build_transforms(True, 64, policy=AugmentationPolicy((0, 2, 2), (), 1.0, 0.0), mosaic=mosaic)
    ds = CocoDetection(images, ann, tf)
    seed_everything(0 + info.rank)  # as fit(): the same seed, then each process its own random stream
    loader = build_dataloader(ds, 2, True, num_workers=0, seed=0, distributed=True)
    set_epoch(loader, 1)
    kept = removed = 0
    for _, targets in loader:
        kept += sum(len(t["labels"]) for t in targets)
        removed += sum(t["boxes_removed"] for t in targets)
    shard = list(loader.sampler)
    record = {"partners": mosaic.drawn, "shard": shard, "kept": kept, "removed": removed}
    torch.save(record, out / f"rank{info.rank}.pt")
    D.barrier()
    D.cleanup()
    """
)


def test_two_process_mosaic_draws_partners_per_rank_from_the_whole_dataset(tmp_path):
    """Under DDP each rank reads its shard, but its mosaic partners come from its own random stream and from every
    image of the dataset (DEIM's mosaic samples the whole dataset)."""
    from minidetr.data import ensure_shapes

    paths = ensure_shapes(num_train=16, num_val=4, seed=0, image_size=64, root=tmp_path / "cache")
    script = tmp_path / "worker.py"
    script.write_text(MOSAIC_WORKER)
    torchrun(script, str(tmp_path), str(paths.train_images), str(paths.train_ann), timeout=180)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert sorted(r0["shard"] + r1["shard"]) == list(range(16))  # the shards split the data
    assert len(r0["partners"]) == len(r1["partners"]) == 3 * 8  # a mosaic for every sample, 3 partners each
    assert r0["partners"] != r1["partners"]  # each rank its own draws
    for r in (r0, r1):
        assert set(r["partners"]) - set(r["shard"])  # partners from outside the rank's shard: the whole dataset
        assert r["kept"] > 16 and r["removed"] >= 0
