"""Persistent loader workers: the same batches as fresh workers every epoch, across the Dense O2O hand-over and
across a resume."""

import pytest
import torch
from torch.utils.data import DataLoader

from minidetr.data import MultiScaleCollate, build_dataloader, ensure_shapes, set_epoch
from minidetr.data.loader import _seed_worker
from minidetr.train.builders import build_datasets, build_policy
from minidetr.train.overrides import apply_overrides
from minidetr.train.presets import get_preset

BATCH, WORKERS = 4, 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # deim_shapes' policy with its hand-over early: mosaic and mixup from epoch 1 to 2, all off from epoch 3
    overrides = ["data.image_size=64", "data.mosaic_size=32", "data.policy_epochs=[1,3,4]", "data.mixup_epochs=[1,3]"]
    cfg = apply_overrides(get_preset("deim_shapes"), overrides)
    paths = ensure_shapes(tmp_path_factory.mktemp("shapes"), num_train=16, num_val=2, seed=0, image_size=64)
    policy = build_policy(cfg)
    assert len({str(policy.at(e)) for e in range(4)}) >= 3  # the epochs below cross two policy changes
    return cfg, paths


def _loader(cfg, paths, persistent, plain=False):
    train_set, _ = build_datasets(cfg, paths)
    collate = MultiScaleCollate(cfg.data.multiscale_sizes, cfg.data.stop_epoch, build_policy(cfg))
    if plain:  # torch's own persistent workers, nothing added: the control
        generator = torch.Generator().manual_seed(cfg.seed)
        return DataLoader(train_set, BATCH, shuffle=True, drop_last=True, num_workers=WORKERS, collate_fn=collate,
                          generator=generator, worker_init_fn=_seed_worker, persistent_workers=True)  # fmt: skip
    return build_dataloader(train_set, BATCH, True, WORKERS, cfg.seed, collate=collate, persistent_workers=persistent)


def _epochs(loader, epochs, state=None):
    if state is not None:
        loader.generator.set_state(state)
    passes, states = [], []
    for epoch in epochs:
        set_epoch(loader, epoch)
        passes.append([(images, [{k: t[k] for k in ("boxes", "labels", "image_id")} for t in targets])
                       for images, targets in loader])  # fmt: skip
        states.append(loader.generator.get_state())
    return passes, states


def _same(a, b) -> bool:
    if len(a) != len(b):
        return False
    for (images_a, targets_a), (images_b, targets_b) in zip(a, b, strict=True):
        if images_a.shape != images_b.shape or not torch.equal(images_a, images_b):
            return False
        for ta, tb in zip(targets_a, targets_b, strict=True):
            if any(not torch.equal(torch.as_tensor(ta[k]), torch.as_tensor(tb[k])) for k in ta):
                return False
    return True


def test_persistent_workers_give_fresh_workers_batches_bit_for_bit(setup):
    cfg, paths = setup
    epochs = [0, 1, 2, 3]
    fresh, fresh_states = _epochs(_loader(cfg, paths, persistent=False), epochs)
    loader = _loader(cfg, paths, persistent=True)
    kept, kept_states = _epochs(loader, epochs)
    assert loader.persistent_workers and loader._iterator is not None  # one worker pool served every pass
    for epoch, a, b in zip(epochs, fresh, kept, strict=True):
        assert _same(a, b), f"epoch {epoch}: persistent workers gave other batches than fresh ones"
    assert all(torch.equal(a, b) for a, b in zip(fresh_states, kept_states, strict=True))  # the generator too
    assert not _same(fresh[1], fresh[2])  # the passes differ from each other (the comparison can fail)

    # torch's persistent workers alone: the first pass agrees, the later ones do not (the workers' random
    # streams run on and their copies keep the first epoch's policy); what the reseeding above is for
    plain, _ = _epochs(_loader(cfg, paths, persistent=True, plain=True), epochs)
    assert _same(plain[0], fresh[0])
    assert not any(_same(plain[i], fresh[i]) for i in range(1, len(epochs)))


def test_a_resumed_persistent_loader_goes_on_exactly(setup):
    cfg, paths = setup
    kept, states = _epochs(_loader(cfg, paths, persistent=True), [0, 1, 2])
    # a new loader (a resumed run's), its generator restored from the state saved after epoch 0
    resumed, _ = _epochs(_loader(cfg, paths, persistent=True), [1, 2], state=states[0])
    assert _same(resumed[0], kept[1]) and _same(resumed[1], kept[2])


def test_persistent_wrapper_forwards_the_dataset(setup):
    cfg, paths = setup
    loader = _loader(cfg, paths, persistent=True)
    assert loader.dataset.num_classes == build_datasets(cfg, paths)[0].num_classes  # attributes reach through
    assert len(loader) == 16 // BATCH
    assert not _loader(cfg, paths, persistent=False).persistent_workers
    zero = build_dataloader(build_datasets(cfg, paths)[0], BATCH, True, 0, persistent_workers=True)
    assert not zero.persistent_workers  # with no workers there is nothing to keep


def test_the_wrapped_dataset_pickles_and_a_distributed_shuffle_still_follows_the_epoch(setup):
    import pickle

    from torch.utils.data import DistributedSampler

    from minidetr.data.loader import _PassSampler

    cfg, paths = setup
    dataset = _loader(cfg, paths, persistent=True).dataset
    copy = pickle.loads(pickle.dumps(dataset))  # what a spawned worker receives
    assert len(copy) == len(dataset) and copy.num_classes == dataset.num_classes
    reference = DistributedSampler(range(10), num_replicas=2, rank=1, shuffle=True, seed=3)
    wrapped = _PassSampler(DistributedSampler(range(10), num_replicas=2, rank=1, shuffle=True, seed=3),
                           torch.Generator())  # fmt: skip
    shards = []
    for epoch in (0, 1):
        reference.set_epoch(epoch)
        wrapped.set_epoch(epoch)
        shards.append([index for *_, index in wrapped])
        assert shards[-1] == list(reference)
    assert shards[0] != shards[1]
