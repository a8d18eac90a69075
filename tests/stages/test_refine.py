"""``pseudolabel refine`` / ``refine-adapt`` with the shipped tiny SAM (seed 002)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.data.coco import load_coco
from pseudolabel.data.images import load_image, resolve_image_path
from pseudolabel.data.masks import masks_to_boxes_xyxy, rle_area, rle_to_mask, rle_to_xywh
from pseudolabel.models.predictor import ZoomSpec
from pseudolabel.samrefiner import refine_masks, to_low_res, to_low_res_crops
from pseudolabel.stages.refine import adapt_iou, load_refiner, refine_coco, refine_semantic


@pytest.fixture(scope="module")
def sam():
    return load_refiner()


def _image_masks(synth_dir, k=0):
    gt = load_coco(synth_dir / "annotations" / "val.json")
    img = [i for i in gt.images if gt.anns_by_image[i["id"]]][k]
    pixels = load_image(resolve_image_path(synth_dir / "images", img["file_name"]))
    masks = np.stack([rle_to_mask(gt.rle(a)) for a in gt.anns_by_image[img["id"]]])
    return pixels, masks


def test_batched_refinement_equals_one_mask_at_a_time(sam, synth_dir):
    pixels, masks = _image_masks(synth_dir)
    emb = sam.encode([pixels])
    together = refine_masks(sam, emb, masks)
    for i in range(len(masks)):
        alone = refine_masks(sam, emb, masks[i:i + 1])
        assert (alone.masks[0] == together.masks[i]).mean() > 0.999
        assert alone.scores[0] == pytest.approx(together.scores[i], abs=1e-4)
        assert list(alone.boxes[0]) == list(together.boxes[i])


def test_empty_masks_stay_empty_and_iterations_run(sam, synth_dir):
    pixels, masks = _image_masks(synth_dir)
    coarse = np.concatenate([masks, np.zeros_like(masks[:1])])
    out = refine_masks(sam, sam.encode([pixels]), coarse, iters=2,
                       prompts=("point", "mask"))
    assert out.masks.shape == coarse.shape
    assert not out.masks[-1].any() and out.scores[-1] == 0
    assert out.masks[:-1].reshape(len(masks), -1).any(1).all()
    with pytest.raises(ValueError, match="choose from"):
        refine_masks(sam, sam.encode([pixels]), masks, prompts=("scribble",))


def test_refine_coco_writes_each_mask_refined(sam, synth_dir, tmp_path):
    coarse = synth_dir / "annotations" / "val.json"
    out = tmp_path / "refined.json"
    s = refine_coco(coarse, synth_dir / "images", out, sam, prompts=("box",), cebox=False,
                    progress=False)
    gt = json.loads(coarse.read_text())
    data = json.loads(out.read_text())
    assert s["refined"] == len(data["annotations"]) == len(gt["annotations"])
    assert [a["id"] for a in data["annotations"]] == [a["id"] for a in gt["annotations"]]
    assert data["info"]["pseudolabel_refine"]["prompts"] == ["box"]
    for a in data["annotations"]:
        assert a["bbox"] == rle_to_xywh(a["segmentation"])
        assert a["area"] == rle_area(a["segmentation"])
        assert set(a["refine"]) == {"predicted_iou", "box", "box_expanded"}
        assert a["refine"]["box_expanded"] is False


def test_zoomed_refinement_decodes_each_mask_on_its_own_crop(sam, synth_dir):
    pixels, masks = _image_masks(synth_dir)
    zoom = ZoomSpec(3.0)
    tight = refine_masks(sam, None, masks, prompts=("box",), cebox=False, zoom=zoom,
                         image=pixels)  # no whole-image embedding needed
    d = sam.decode_zoomed(pixels, zoom, boxes_xyxy=masks_to_boxes_xyxy(masks), multimask=True,
                          best_only=True)
    kept = d.masks[:, 0].numpy().reshape(len(masks), -1).any(1)
    assert kept.all()
    np.testing.assert_array_equal(tight.masks, d.masks[:, 0].numpy())
    emb = sam.encode([pixels])
    whole = refine_masks(sam, emb, masks, prompts=("box",), cebox=False)
    assert not np.array_equal(tight.masks, whole.masks)  # the zoom changed what SAM saw
    # every prompt kind zoomed, batched as one mask at a time: each mask's Gaussian prompt
    # is cropped to its own window
    together = refine_masks(sam, emb, masks, zoom=zoom, image=pixels)
    for i in range(len(masks)):
        alone = refine_masks(sam, emb, masks[i:i + 1], zoom=zoom, image=pixels)
        assert (alone.masks[0] == together.masks[i]).mean() > 0.999
        assert alone.scores[0] == pytest.approx(together.scores[i], abs=1e-4)
    # without a box prompt there is nothing to zoom around: the whole image decodes
    points = refine_masks(sam, emb, masks, prompts=("point",), zoom=zoom, image=pixels)
    np.testing.assert_array_equal(points.masks,
                                  refine_masks(sam, emb, masks, prompts=("point",)).masks)
    with pytest.raises(ValueError, match="embedding is needed"):
        refine_masks(sam, None, masks, zoom=zoom, image=pixels)  # CEBox reads the features
    with pytest.raises(ValueError, match="pass its pixels"):
        refine_masks(sam, emb, masks, prompts=("box",), zoom=zoom)


def test_mask_prompt_crop_covering_the_image_is_the_image_frame(sam):
    maps = np.random.default_rng(0).normal(size=(2, 48, 80)).astype(np.float32)
    whole = np.array([[0, 0, 80, 48]] * 2)
    side = sam.sam.image_encoder.img_size
    torch.testing.assert_close(to_low_res_crops(maps, whole, sam, -15.0),
                               to_low_res(maps, sam, (side * 48 // 80, side), -15.0))


def test_refine_coco_zoom_encodes_whole_images_only_for_cebox(sam, synth_dir, tmp_path,
                                                              monkeypatch):
    import pseudolabel.stages.refine as stage

    seen = []

    def spy(sam_, embedding, coarse, **kw):
        seen.append(embedding is not None)
        return refine_masks(sam_, embedding, coarse, **kw)

    monkeypatch.setattr(stage, "refine_masks", spy)
    coarse = synth_dir / "annotations" / "val.json"
    zoom = ZoomSpec(3.0)
    for cebox in (False, True):
        seen.clear()
        out = tmp_path / f"refined-{cebox}.json"
        refine_coco(coarse, synth_dir / "images", out, sam, prompts=("box",), cebox=cebox,
                    zoom=zoom, progress=False)
        assert seen and set(seen) == {cebox}
        info = json.loads(out.read_text())["info"]["pseudolabel_refine"]
        assert info["zoom"] == {"context": 3.0, "min_side": 0.3}
    refine_coco(coarse, synth_dir / "images", tmp_path / "p.json", sam, prompts=("point",),
                zoom=zoom, progress=False)  # no box: not zoomed, and recorded so
    assert json.loads((tmp_path / "p.json").read_text())["info"]["pseudolabel_refine"][
        "zoom"] is None


def test_refine_semantic_resumes_and_keeps_ignore(sam, synth_dir, tmp_path):
    gt = load_coco(synth_dir / "annotations" / "val.json")
    coarse_dir = tmp_path / "coarse"
    coarse_dir.mkdir()
    made = []
    for img in gt.images[:3]:
        labels = np.zeros((img["height"], img["width"]), np.uint8)
        for a in gt.anns_by_image[img["id"]]:
            labels[rle_to_mask(gt.rle(a))] = a["category_id"]
        labels[:2, :2] = 255
        stem = img["file_name"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        Image.fromarray(labels).save(coarse_dir / f"{stem}.png")
        made.append((stem, labels))
    image_dir = synth_dir / "images" / "val"
    s = refine_semantic(coarse_dir, image_dir, tmp_path / "out", sam, progress=False)
    assert s["images"] == 3 and s["regions"] > 0
    for stem, labels in made:
        out = np.asarray(Image.open(tmp_path / "out" / f"{stem}.png"))
        assert out.shape == labels.shape
        assert set(np.unique(out)) <= set(np.unique(labels)) | {0}
        assert (out[:2, :2] == 255).all()
    again = refine_semantic(coarse_dir, image_dir, tmp_path / "out", sam, progress=False)
    assert again["skipped_existing"] == 3 and "images" not in again
    record = json.loads((tmp_path / "out" / "refine.json").read_text())
    assert record["iters"] == 1 and record["prompts"] == ["point", "box", "mask"]
    # maps refined otherwise are not passed off as this run's
    with pytest.raises(ValueError, match="3 label maps there were refined with other options: "
                       "iters 1 -> 2"):
        refine_semantic(coarse_dir, image_dir, tmp_path / "out", sam, iters=2, progress=False)
    (tmp_path / "out" / "refine.json").unlink()
    with pytest.raises(ValueError, match="carry no refine.json record"):
        refine_semantic(coarse_dir, image_dir, tmp_path / "out", sam, progress=False)


def test_adapter_changes_the_ranking_not_the_masks(synth_dir, tmp_path):
    coarse = synth_dir / "annotations" / "val.json"
    plain = load_refiner()
    s = adapt_iou(coarse, synth_dir / "images", tmp_path / "a.safetensors", load_refiner(),
                  max_images=4, batch=2, lr=0.5, progress=False)
    assert s["steps"] >= 2 and s["masks"] > 0
    adapted = load_refiner(adapter=tmp_path / "a.safetensors")
    pixels, masks = _image_masks(synth_dir)
    xy = np.array([[10.0, 10.0], [30.0, 20.0]])
    with torch.no_grad():
        a = plain.decode(plain.encode([pixels]), points_xy=xy, multimask=True)
        b = adapted.decode(adapted.encode([pixels]), points_xy=xy, multimask=True)
    assert torch.equal(a.masks, b.masks)
    assert not torch.allclose(a.iou_predictions, b.iou_predictions)


def test_cli_refine_errors(synth_dir, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["refine", "--images", str(synth_dir / "images")])
    assert r.exit_code == 2 and "exactly one of --coarse" in r.output
    r = runner.invoke(app, ["refine", "--coarse", str(synth_dir / "annotations/val.json"),
                            "--images", str(synth_dir / "images"), "--prompts", "scribble",
                            "--out", str(tmp_path / "o.json")])
    assert r.exit_code == 2 and "choose from point,box,mask" in r.output
    r = runner.invoke(app, ["refine", "--semantic", str(tmp_path), "--images",
                            str(synth_dir / "images"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no .png label maps" in r.output
