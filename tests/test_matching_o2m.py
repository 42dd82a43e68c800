"""One-to-many assignment (minidetr.matching_o2m) against brute-force references written with plain loops, the
criteria with it (normalisation by pairs), and class-aware NMS in PostProcess against torchvision directly."""

import math

import numpy as np
import pytest
import torch
from torchvision import ops

from minidetr.boxes import batched_box_iou, box_cxcywh_to_xyxy
from minidetr.criterion import SetCriterion
from minidetr.criterion_rtdetr import RTDETRCriterion
from minidetr.evaluation import PostProcess
from minidetr.matching import HungarianMatcher
from minidetr.matching_o2m import OneToManyMatcher, simota_assign, topk_assign


def topk_reference(iou, k, min_iou=0.0):
    """Each target ranks the queries by (-IoU, index) and claims the first k above the floor; a query claimed by
    several targets keeps the one of highest IoU, the lowest index on ties."""
    num_q, num_t = iou.shape
    claims: dict[int, list[int]] = {}
    for t in range(num_t):
        for q in sorted(range(num_q), key=lambda i: (-iou[i, t], i))[:k]:
            if iou[q, t] >= min_iou:
                claims.setdefault(q, []).append(t)
    return sorted((q, max(ts, key=lambda t: (iou[q, t], -t))) for q, ts in claims.items())


def simota_reference(iou, cls, q=10, w=3.0, min_iou=0.0):
    num_q, num_t = iou.shape
    cost = [[cls[i, t] + w * -math.log(max(iou[i, t], 1e-8)) for t in range(num_t)] for i in range(num_q)]
    claims: dict[int, list[int]] = {}
    for t in range(num_t):
        k_t = max(1, math.floor(sum(sorted(iou[:, t].tolist(), reverse=True)[:q])))
        for i in sorted(range(num_q), key=lambda i: (cost[i][t], i))[:k_t]:
            if iou[i, t] >= min_iou:
                claims.setdefault(i, []).append(t)
    return sorted((i, min(ts, key=lambda t: (cost[i][t], t))) for i, ts in claims.items())


def pairs(result):
    rows, cols = result
    assert len(set(rows.tolist())) == len(rows), "a query answers at most one target"
    assert list(rows) == sorted(rows)
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


CASES = [(q, t, seed) for q in (1, 3, 8) for t in (0, 1, 4, 10) for seed in range(3)]  # t > q included


@pytest.mark.parametrize(("num_q", "num_t", "seed"), CASES)
@pytest.mark.parametrize("k", [1, 3])
def test_topk_matches_the_brute_force_reference(num_q, num_t, seed, k):
    rng = np.random.default_rng(seed)
    iou = rng.random((num_q, num_t)) * (rng.random((num_q, num_t)) > 0.3)  # some zero overlaps
    assert pairs(topk_assign(iou, k)) == topk_reference(iou, k)
    assert pairs(topk_assign(iou, k, min_iou=0.4)) == topk_reference(iou, k, 0.4)
    found = pairs(topk_assign(iou, k))
    for t in range(num_t):  # never more than k per target
        assert sum(1 for _, j in found if j == t) <= k


@pytest.mark.parametrize(("num_q", "num_t", "seed"), CASES)
def test_simota_matches_the_brute_force_reference(num_q, num_t, seed):
    rng = np.random.default_rng(seed)
    iou = rng.random((num_q, num_t)) ** 2
    cls = rng.normal(size=(num_q, num_t))
    assert pairs(simota_assign(iou, cls, q=4)) == simota_reference(iou, cls, q=4)
    assert pairs(simota_assign(iou, cls, q=10, min_iou=0.2)) == simota_reference(iou, cls, q=10, min_iou=0.2)


def test_ties_empty_targets_and_more_targets_than_queries():
    tied = np.full((6, 2), 0.3)  # every IoU equal: the lower query index first, then the lower target index
    assert pairs(topk_assign(tied, 2)) == [(0, 0), (1, 0)] == topk_reference(tied, 2)
    assert pairs(simota_assign(tied, np.zeros((6, 2)), q=6)) == [(0, 0)] == simota_reference(tied, np.zeros((6, 2)), 6)
    empty = np.zeros((5, 0))
    assert pairs(topk_assign(empty, 3)) == [] and pairs(simota_assign(empty, empty)) == []
    crowded = np.random.default_rng(0).random((2, 7))  # 7 targets for 2 queries: each query still once
    assert len(pairs(topk_assign(crowded, 3))) == 2
    # SimOTA's dynamic k: a target overlapped 0.6 by five queries has floor(3.0) = 3 positives
    iou = np.array([[0.6], [0.6], [0.6], [0.6], [0.6], [0.1]])
    assert len(pairs(simota_assign(iou, np.zeros((6, 1)), q=5))) == 3


def random_batch(batch=3, num_q=12, k=4, sizes=(3, 0, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(batch, num_q, k, generator=g),
        "pred_boxes": torch.rand(batch, num_q, 4, generator=g) * 0.5 + 0.25,
    }
    targets = [
        {"labels": torch.randint(0, k, (n,), generator=g), "boxes": torch.rand(n, 4, generator=g) * 0.4 + 0.3}
        for n in sizes
    ]
    return outputs, targets


def test_batched_box_iou_is_torchvisions_per_image():
    a, b = torch.rand(3, 7, 4), torch.rand(3, 5, 4)
    a, b = box_cxcywh_to_xyxy(a * 0.5 + 0.25), box_cxcywh_to_xyxy(b * 0.5 + 0.25)
    expected = torch.stack([ops.box_iou(x, y) for x, y in zip(a, b, strict=True)])
    torch.testing.assert_close(batched_box_iou(a, b), expected)


@pytest.mark.parametrize("mode", ["topk", "simota"])
def test_matcher_follows_the_hungarian_contract(mode):
    outputs, targets = random_batch()
    matcher = OneToManyMatcher(mode, k=3)
    result = matcher(outputs, targets)
    assert len(result) == 3 and result[1][0].numel() == 0  # the image without targets
    class_cost = HungarianMatcher(1, 0, 0, use_focal=True).cost_matrix(outputs, targets)
    for b, (q, t) in enumerate(result):
        assert q.dtype == t.dtype == torch.int64 and q.device.type == "cpu"
        n = len(targets[b]["labels"])
        iou = ops.box_iou(box_cxcywh_to_xyxy(outputs["pred_boxes"][b]), box_cxcywh_to_xyxy(targets[b]["boxes"]))
        if mode == "topk":
            expected = topk_reference(iou.double().numpy(), 3)
        else:
            expected = simota_reference(iou.double().numpy(), class_cost[b, :, :n].double().numpy(), q=3)
        assert pairs((q.numpy(), t.numpy())) == expected
    aux = {k: v.flip(1) for k, v in outputs.items()}
    many = matcher.match_many([outputs, aux], targets)  # one host copy, same answers as one call each
    for got, want in zip(many, [result, matcher(aux, targets)], strict=True):
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want, strict=True))


def test_matcher_refuses_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        OneToManyMatcher("hungarian")
    with pytest.raises(ValueError, match="k must be"):
        OneToManyMatcher("topk", k=0)
    with pytest.raises(ValueError, match="min_iou"):
        OneToManyMatcher("topk", min_iou=1.5)


def test_set_criterion_divides_by_the_number_of_pairs_and_trains():
    outputs, targets = random_batch()
    matcher = OneToManyMatcher("topk", k=3)
    criterion = SetCriterion(4, matcher=matcher, loss_class="mal")
    losses = criterion(outputs, targets)
    indices = matcher(outputs, targets)
    n_pairs = sum(len(q) for q, _ in indices)
    assert criterion.last_positives == n_pairs and n_pairs > sum(len(t["labels"]) for t in targets)
    src = torch.cat([outputs["pred_boxes"][b, q] for b, (q, _) in enumerate(indices)])
    tgt = torch.cat([targets[b]["boxes"][t] for b, (_, t) in enumerate(indices)])
    torch.testing.assert_close(losses["loss_bbox"], (src - tgt).abs().sum() / n_pairs)
    o2o = SetCriterion(4, loss_class="mal")
    o2o(outputs, targets)
    assert o2o.last_positives == 8  # Hungarian: one per target (3 + 0 + 5)
    params = {k: torch.nn.Parameter(v.clone()) for k, v in outputs.items()}
    opt = torch.optim.Adam(params.values(), lr=0.02)
    first = None
    for _ in range(40):
        boxes = params["pred_boxes"].clamp(0.01, 0.99)
        loss = criterion.total(criterion({"pred_logits": params["pred_logits"], "pred_boxes": boxes}, targets))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_rtdetr_criterion_with_a_one_to_many_matcher():
    outputs, targets = random_batch()
    aux, enc = random_batch(seed=1)[0], random_batch(seed=2)[0]
    full = {**outputs, "aux_outputs": [aux], "enc_aux_outputs": [enc]}
    criterion = RTDETRCriterion(4, matcher=OneToManyMatcher("simota", k=4), num_dec_layers=2)
    losses = criterion(full, targets)
    assert {"loss_mal", "loss_bbox_aux_0", "loss_giou_enc_0"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and torch.isfinite(criterion.total(losses))
    assert criterion.last_positives == sum(len(q) for q, _ in OneToManyMatcher("simota", k=4)(outputs, targets))


@pytest.mark.parametrize("use_focal", [True, False])
def test_postprocess_nms_is_torchvisions_batched_nms(use_focal):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 30, 4 + (0 if use_focal else 1), generator=g)
    centres = torch.rand(2, 30, 2, generator=g) * 0.2 + 0.4  # crowded: many overlaps
    boxes = torch.cat([centres, torch.rand(2, 30, 2, generator=g) * 0.2 + 0.2], -1)
    sizes = torch.tensor([[100, 120], [80, 60]])
    plain = PostProcess(use_focal, 50)({"pred_logits": logits, "pred_boxes": boxes}, sizes)
    nms = PostProcess(use_focal, 50, nms_iou=0.5)({"pred_logits": logits, "pred_boxes": boxes}, sizes)
    for p, n in zip(plain, nms, strict=True):
        keep = ops.batched_nms(p["boxes"], p["scores"], p["labels"], 0.5)
        assert 0 < len(keep) < len(p["scores"])
        for key in ("scores", "labels", "boxes"):
            torch.testing.assert_close(n[key], p[key][keep])
    with pytest.raises(ValueError, match="nms_iou"):
        PostProcess(True, nms_iou=0.0)
