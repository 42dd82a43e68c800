"""minidetr.predict: a checkpoint's model rebuilt from its stored config, predictions that match the
evaluation path, drawn images, the command line, and official DEIM / RT-DETRv2 and DETR weights with a preset."""

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

import minidetr.predict as predict_module
from minidetr.data import CocoDetection, build_transforms
from minidetr.data.coco_names import COCO_CLASS_NAMES, COCO_ID_NAMES
from minidetr.data.shapes import CLASS_NAMES, generate
from minidetr.evaluation import PostProcess
from minidetr.models import build_model, get_model_preset
from minidetr.models.detr.convert import minidetr_to_official as detr_minidetr_to_official
from minidetr.models.rtdetr.convert import minidetr_to_official
from minidetr.predict import detr_eval_size, draw_detections, load_model, main, predict
from minidetr.train import fit, get_preset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    shapes = generate(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, seed=1, image_size=64)
    out = tmp_path_factory.mktemp("run")
    cfg = get_preset("detr_tiny")
    cfg.epochs = 1
    torch.set_num_threads(1)
    fit(cfg, out, data=shapes, progress=False)
    return shapes, out / "checkpoint.pth"


def test_load_model_rebuilds_the_trained_model(trained):
    _, ckpt = trained
    model, cfg, names = load_model(ckpt)
    assert not model.training
    assert names == list(CLASS_NAMES) and cfg.model.num_classes == len(CLASS_NAMES)
    saved = torch.load(ckpt, weights_only=True)["model"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)


def test_load_model_prefers_the_ema_weights(trained, tmp_path):
    """A run with EMA evaluated the EMA weights, so those are the ones to predict with."""
    _, ckpt = trained
    state = torch.load(ckpt, weights_only=True)
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in state["model"].items()}
    torch.save({**state, "ema": {"module": ema, "updates": 3}}, tmp_path / "with_ema.pth")
    model, _, _ = load_model(tmp_path / "with_ema.pth")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ema[k], rtol=0, atol=0)


def test_predict_matches_the_validation_path(trained):
    """Same resize as the val transforms, same post-processing: identical boxes and scores."""
    shapes, ckpt = trained
    model, cfg, _ = load_model(ckpt)
    dataset = CocoDetection(shapes.val_images, shapes.val_ann, build_transforms(False, cfg.data.image_size))
    image, target = dataset[0]
    with torch.no_grad():
        expected = PostProcess()(model(image[None]), target["orig_size"][None])[0]
    file = shapes.val_images / dataset.coco.imgs[target["image_id"]]["file_name"]
    uint8_image = pil_to_tensor(Image.open(file).convert("RGB"))
    got = predict(model, [uint8_image], cfg.data.image_size, threshold=0.0)[0]
    assert len(got["scores"]) == cfg.model.num_queries  # threshold 0 keeps every query
    for k in ("scores", "labels", "boxes"):
        torch.testing.assert_close(got[k], expected[k])


def test_threshold_filters_scores(trained):
    _, ckpt = trained
    model, cfg, _ = load_model(ckpt)
    image = torch.rand(3, 50, 70)
    everything = predict(model, [image], cfg.data.image_size, threshold=0.0)[0]
    cut = float(everything["scores"].median())
    kept = predict(model, [image], cfg.data.image_size, threshold=cut)[0]
    assert 0 < len(kept["scores"]) < len(everything["scores"])
    assert (kept["scores"] >= cut).all()
    assert predict(model, [image], cfg.data.image_size, threshold=1.01)[0]["boxes"].shape == (0, 4)


def test_draw_detections_marks_the_boxes():
    image = torch.zeros(3, 40, 60)
    det = {"boxes": torch.tensor([[5.0, 5.0, 30.0, 25.0]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}
    drawn = draw_detections(image, det, list(CLASS_NAMES))
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 40, 60)
    assert drawn[:, 5, 5:30].any() and not drawn[:, 35:, 40:].any()  # the box edge is drawn, far corners are not
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
    assert not draw_detections(image, empty, list(CLASS_NAMES)).any()


def test_cli_writes_one_drawn_image_per_input(trained, tmp_path, capsys):
    shapes, ckpt = trained
    files = sorted(shapes.val_images.iterdir())[:2]
    written = main(["--checkpoint", str(ckpt), *map(str, files), "--output", str(tmp_path), "--threshold", "0"])
    assert [p.name for p in written] == [f"{f.stem}_pred.png" for f in files]
    for src, dst in zip(files, written, strict=True):
        assert Image.open(dst).size == Image.open(src).size
    assert files[0].name in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, word",
    [
        (["--checkpoint", "missing.pth", "x.png"], "missing.pth"),
        (["--threshold", "2"], "--threshold"),
        (["not_an_image.png"], "not_an_image.png"),
    ],
)
def test_cli_errors_are_one_line(trained, tmp_path, argv, word, capsys):
    _, ckpt = trained
    if "--checkpoint" not in argv:
        argv = ["--checkpoint", str(ckpt), *(argv if argv[0].startswith("--") else [str(tmp_path / argv[0])])]
        if "--threshold" in argv:
            argv.append(str(tmp_path / "x.png"))
    with pytest.raises(SystemExit) as e:
        main(argv + ["--output", str(tmp_path)])
    assert e.value.code != 0 and word in capsys.readouterr().err


def _random_image(path, height, width):
    """A seeded noise image saved at ``path`` (returned)."""
    image = (torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A fake released checkpoint: DEIM-R50 weights under the official names, in the official file layout."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    source = build_model("deim_r50").eval()
    state = minidetr_to_official(source.state_dict())
    path = tmp_path_factory.mktemp("official") / "deim_rtdetrv2_r50vd_60e_coco.pth"
    torch.save({"model": state, "ema": {"module": state, "updates": 1}, "date": "2025-01-01"}, path)
    image_path = _random_image(path.parent / "street.png", 96, 128)
    return source, path, image_path


def test_official_weights_load_with_a_preset_and_coco_names(official):
    source, path, _ = official
    model, cfg, names = load_model(path, preset="deim_r50")
    assert not model.training and cfg.preset == "deim_r50" and cfg.data.image_size == 640
    assert names == list(COCO_CLASS_NAMES) and names[0] == "person" and len(names) == 80
    expected = source.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_predict_uses_the_sigmoid_head_of_rtdetr_models(official):
    """The official preprocessing (squash to a square, [0, 1], no mean/std) and top-k over Q*K sigmoid scores."""
    source, _, image_path = official
    image = pil_to_tensor(Image.open(image_path).convert("RGB")).float() / 255  # float: no uint8 rounding
    got = predict(source, [image], 320, threshold=0.0)[0]
    batch = torch.nn.functional.interpolate(image[None], size=(320, 320), mode="bilinear", antialias=True)
    with torch.no_grad():
        expected = PostProcess(use_focal=True)(source(batch), torch.tensor([[96, 128]]))[0]
    assert len(got["scores"]) == 100 and int(got["labels"].max()) < 80
    for k in ("scores", "labels", "boxes"):
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_cli_runs_official_weights_with_a_preset(official, tmp_path, capsys):
    _, path, image_path = official
    argv = ["--checkpoint", str(path), str(image_path), "--output", str(tmp_path), "--threshold", "0"]
    written = main([*argv, "--preset", "deim_r50", "--image-size", "320"])
    assert [p.name for p in written] == ["street_pred.png"] and Image.open(written[0]).size == (128, 96)
    out = capsys.readouterr().out
    assert "street.png: " in out and any(f" {name} 0." in out for name in COCO_CLASS_NAMES)
    with pytest.raises(SystemExit):
        main(argv)  # no preset: the model cannot be rebuilt
    assert "--preset deim_r50" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--preset", "deim_r50", "--image-size", "100"])
    assert "multiple of 32" in capsys.readouterr().err


def test_wrong_preset_for_official_weights_says_which_fits(official, tmp_path, capsys):
    _, path, image_path = official
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(path), str(image_path), "--preset", "rtdetrv2_r50", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert str(path) in err and "--preset deim_r50" in err


def test_preset_with_a_minidetr_checkpoint_is_refused(trained, tmp_path, capsys):
    shapes, ckpt = trained
    image = str(sorted(shapes.val_images.iterdir())[0])
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), image, "--preset", "deim_r50", "--output", str(tmp_path)])
    assert "drop --preset" in capsys.readouterr().err


@pytest.fixture(scope="module")
def official_detr(tmp_path_factory):
    """A fake released DETR-R50 checkpoint: minidetr weights under the official names, as ``{"model": sd}``."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = get_model_preset("detr_r50")
    cfg.num_classes = 91
    source = build_model(cfg, pretrained_backbone=False).eval()
    path = tmp_path_factory.mktemp("official_detr") / "detr-r50-e632da11.pth"
    torch.save({"model": detr_minidetr_to_official(source.state_dict())}, path)
    image_path = _random_image(path.parent / "wide.png", 96, 160)
    return source, path, image_path


def test_official_detr_weights_load_with_91_coco_id_names(official_detr):
    source, path, _ = official_detr
    model, cfg, names = load_model(path, preset="detr_r50")
    assert not model.training and cfg.model.num_classes == 91 and not cfg.model.use_focal
    assert names == list(COCO_ID_NAMES) and len(names) == 91
    assert names[0] == names[12] == "N/A" and names[1] == "person" and names[90] == "toothbrush"
    expected = source.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k


@pytest.mark.parametrize(
    "h, w, short, cap, expected",
    [
        (480, 640, 800, 1333, (800, 1066)),  # the shorter side to 800, the other truncated
        (640, 480, 800, 1333, (1066, 800)),
        (300, 500, 800, 1333, (800, 1333)),
        (200, 1000, 800, 1333, (267, 1335)),  # capped: shorter = round(1333 * 200 / 1000), longer truncated
        (800, 800, 800, 1333, (800, 800)),
        (96, 160, 320, 533, (320, 533)),
    ],
)
def test_detr_eval_size_keeps_the_aspect_ratio(h, w, short, cap, expected):
    assert detr_eval_size(h, w, short, cap) == expected


class FixedBoxes(torch.nn.Module):
    """A stand-in DETR: always the same normalised boxes; records the input sizes it was given."""

    sigmoid_head = False

    def __init__(self, boxes):
        super().__init__()
        self.boxes = torch.nn.Parameter(torch.tensor(boxes))  # [Q, 4] cxcywh
        self.inputs = []

    def forward(self, x):
        self.inputs.append(tuple(x.shape))
        logits = torch.zeros(x.shape[0], len(self.boxes), 92)
        logits[..., 1] = 5.0  # every query: "person" (COCO id 1)
        return {"pred_logits": logits, "pred_boxes": self.boxes.expand(x.shape[0], -1, -1)}


def test_official_detr_boxes_map_back_to_non_square_originals():
    """Each image runs alone at its own aspect-kept size, and a normalised box lands on the original's pixels."""
    model = FixedBoxes([[0.25, 0.5, 0.1, 0.2], [0.5, 0.5, 1.0, 1.0]])
    wide, tall = torch.rand(3, 300, 500), torch.rand(3, 500, 300)
    got = predict(model, [wide, tall], 80, threshold=0.0, max_size=133)
    assert model.inputs == [(1, 3, 80, 133), (1, 3, 133, 80)]
    torch.testing.assert_close(got[0]["boxes"], torch.tensor([[100.0, 120.0, 150.0, 180.0], [0, 0, 500, 300]]))
    torch.testing.assert_close(got[1]["boxes"], torch.tensor([[60.0, 200.0, 90.0, 300.0], [0, 0, 300, 500]]))
    assert got[0]["labels"].tolist() == [1, 1]  # softmax over the 92 logits, "no object" dropped: the COCO id
    square = predict(model, [wide], 64, threshold=0.0)[0]  # the square path maps the same way
    assert model.inputs[-1] == (1, 3, 64, 64)
    torch.testing.assert_close(square["boxes"], got[0]["boxes"])


def test_predict_runs_official_detr_like_the_official_evaluation(official_detr):
    """Aspect-kept resize (shorter side 320 here), [0, 1] input (the model normalises), softmax post-processing."""
    source, _, image_path = official_detr
    image = pil_to_tensor(Image.open(image_path).convert("RGB")).float() / 255  # float: no uint8 rounding
    got = predict(source, [image], 320, threshold=0.0, max_size=533)[0]
    batch = torch.nn.functional.interpolate(image[None], size=(320, 533), mode="bilinear", antialias=True)
    with torch.no_grad():
        expected = PostProcess(use_focal=False)(source(batch), torch.tensor([[96, 160]]))[0]
    assert len(got["scores"]) == 100 and int(got["labels"].max()) < 91
    for k in ("scores", "labels", "boxes"):
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_cli_runs_official_detr_weights_with_the_aspect_kept(official_detr, tmp_path, capsys, monkeypatch):
    _, path, image_path = official_detr
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("max_size"))
        return predict(*args, **kwargs)

    monkeypatch.setattr(predict_module, "predict", spy)
    argv = ["--checkpoint", str(path), str(image_path), "--output", str(tmp_path), "--threshold", "0"]
    written = main([*argv, "--preset", "detr_r50", "--image-size", "320"])
    assert calls == [533]  # shorter side 320, longer at most 1333 * 320 / 800
    assert [p.name for p in written] == ["wide_pred.png"] and Image.open(written[0]).size == (160, 96)
    out = capsys.readouterr().out
    assert "wide.png: " in out and any(f" {name} 0." in out for name in COCO_ID_NAMES)


def test_official_detr_and_rtdetr_checkpoints_with_the_wrong_preset(official_detr, official, tmp_path, capsys):
    _, detr_path, image_path = official_detr
    _, deim_path, _ = official
    out = ["--output", str(tmp_path), str(image_path)]
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(detr_path), "--preset", "deim_r50", *out])
    err = capsys.readouterr().err
    assert str(detr_path) in err and "official DETR checkpoint: use --preset detr_r50" in err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(deim_path), "--preset", "detr_r50", *out])
    err = capsys.readouterr().err
    assert str(deim_path) in err and "RT-DETR / DEIM" in err and "--preset deim_r50" in err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(detr_path), "--preset", "detr_shapes", *out])
    assert "--preset detr_r50" in capsys.readouterr().err


def test_cli_gives_inputs_of_the_same_name_their_own_output(trained, tmp_path, capsys):
    shapes, ckpt = trained
    source = sorted(shapes.val_images.iterdir())[:3]
    files = []
    for folder, src in zip("abc", source, strict=True):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "x.png")
        files[-1].write_bytes(src.read_bytes())
    out = tmp_path / "out"
    written = main(["--checkpoint", str(ckpt), *map(str, files), "--output", str(out), "--threshold", "0"])
    assert [p.name for p in written] == ["x_pred.png", "x_1_pred.png", "x_2_pred.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    lines = capsys.readouterr().out.splitlines()
    assert "renamed" not in lines[0] and "x_1_pred.png (renamed: an earlier input is also named x)" in lines[1]


@pytest.mark.parametrize("kind", ["existing file", "below a file"])
def test_cli_output_that_is_not_a_writable_folder_is_one_line(trained, tmp_path, capsys, kind):
    shapes, ckpt = trained
    (tmp_path / "taken").write_text("a file")
    output = tmp_path / "taken" if kind == "existing file" else tmp_path / "taken" / "sub"
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(ckpt), str(sorted(shapes.val_images.iterdir())[0]), "--output", str(output)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and str(output) in err and "--output" in err


def test_top_k_defaults_to_the_training_config_and_reaches_the_postprocess(trained, official, tmp_path, monkeypatch):
    shapes, ckpt = trained
    _, official_path, image_path = official
    seen = []
    init = PostProcess.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append(self.num_top_queries)

    monkeypatch.setattr(PostProcess, "__init__", spy)
    image = str(sorted(shapes.val_images.iterdir())[0])
    main(["--checkpoint", str(ckpt), image, "--output", str(tmp_path)])
    main(["--checkpoint", str(ckpt), image, "--output", str(tmp_path), "--top-k", "7"])
    main(["--checkpoint", str(official_path), str(image_path), "--preset", "deim_r50", "--image-size", "320",
          "--output", str(tmp_path), "--threshold", "0"])  # fmt: skip
    assert seen == [get_preset("detr_tiny").num_top_queries, 7, 300]
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), image, "--top-k", "0"])
