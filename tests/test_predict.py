"""minidetr.predict: a checkpoint's model rebuilt from its stored config, predictions that match the
evaluation path, drawn images, and the command line."""

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from minidetr.config import get_preset
from minidetr.data import CocoDetection, build_transforms
from minidetr.data.shapes import CLASS_NAMES, generate
from minidetr.evaluation import PostProcess
from minidetr.predict import draw_detections, load_model, main, predict
from minidetr.train import fit


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
