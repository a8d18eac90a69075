from urllib.error import URLError

import numpy as np
import pytest
import torch

from pseudolabel.models.class_aware import ClassAwarePromptEncoder
from pseudolabel.models.predictor import PromptedSam, ZoomSpec, pixel_centre_to_sam
from pseudolabel.models.sam import SAM_MODELS, build_sam


@pytest.mark.parametrize("name", SAM_MODELS.names())
def test_every_builder_runs_a_forward_pass(name):
    torch.manual_seed(0)
    sam = build_sam(name, pretrained=False)
    predictor = PromptedSam(sam)
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    emb = predictor.encode([image])
    # official SAMs: 16-px patches; tiny: 8-px; tiny_hr: the 8-px grid doubled (4 px)
    s = sam.image_encoder.img_size // {"tiny": 8, "tiny_hr": 4}.get(name, 16)
    assert emb.embeddings.shape == (1, sam.prompt_encoder.embed_dim, s, s)
    out = predictor.decode(emb, boxes_xyxy=[[5, 5, 40, 30]], multimask=True)
    assert out.masks.shape == (1, 3, 60, 80) and out.iou_predictions.shape == (1, 3)
    assert out.low_res_logits.shape[-1] == predictor.low_res_size


def test_tiny_hr_warm_start_equals_the_upsampled_plain_sam():
    """The detail path starts at zero, so a warm-started tiny_hr encodes the plain SAM's
    embedding, bilinearly upsampled to the finer grid."""
    import torch.nn.functional as F

    from pseudolabel.models.sam import warm_start_from_plain

    plain = build_sam("tiny")
    hr = build_sam("tiny_hr")
    warm_start_from_plain(hr, plain.state_dict())
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        want = F.interpolate(plain.image_encoder(x), scale_factor=2, mode="bilinear",
                             align_corners=False)
        torch.testing.assert_close(hr.image_encoder(x), want)
    assert hr.prompt_encoder.image_embedding_size == (40, 40)
    with pytest.raises(ValueError, match="warm start"):
        warm_start_from_plain(hr, {**plain.state_dict(), "extra.weight": torch.zeros(1)})


def test_warm_start_continues_the_same_model_exactly_and_lifts_a_plain_one():
    from pseudolabel.models.sam import warm_start

    trained, fresh = build_sam("tiny_hr"), build_sam("tiny_hr")  # same seeded init
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    assert warm_start(fresh, trained.state_dict()) == "continue"
    for k, v in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert warm_start(build_sam("tiny_hr"), build_sam("tiny").state_dict()) == "plain"


@pytest.fixture(scope="module")
def tiny():
    return PromptedSam(build_sam("tiny"))


@pytest.mark.parametrize("size, point, expected", [
    ((427, 640), (320, 240), (512.0, 383.89)),   # the example, at 1024
    ((640, 427), (240, 320), (383.89, 512.0)),   # portrait
    ((100, 100), (50, 50), (512.0, 512.0)),      # square upscaled
])
def test_resize_longest_side_maps_points(size, point, expected):
    sam = build_sam("vit_b", pretrained=False)
    points, _ = PromptedSam(sam).prompt_tensors(size, points_xy=[point])
    np.testing.assert_allclose(points[0][0, 0].numpy(), expected, atol=0.01)


@pytest.mark.parametrize("shape, expected", [((120, 160), (120, 160)), ((427, 640), (107, 160)),
                                             ((160, 90), (160, 90))])
def test_images_resized_like_prompts(tiny, shape, expected):
    # The image must land where its prompts land: resize by the longest side, pad bottom/right.
    image = np.zeros((*shape, 3), np.uint8)
    image[: shape[0] // 2] = 255  # top half white
    x, originals, inputs = tiny.preprocess([image])
    assert originals == [shape] and inputs == [expected]
    rows = x[0, 0, :, 0]
    bright = (rows > 0).nonzero().squeeze(1)
    assert abs(int(bright.max()) + 1 - expected[0] / 2) <= 1


def test_boxes_resized_like_points(tiny):
    pts, boxes = tiny.prompt_tensors((120, 160), points_xy=[[80, 60]],
                                     boxes_xyxy=[[0, 0, 160, 120]])
    np.testing.assert_allclose(pts[0][0, 0].numpy(), [80, 60])
    np.testing.assert_allclose(boxes[0].numpy(), [0, 0, 160, 120])


def test_pixel_centre_convention():
    np.testing.assert_allclose(pixel_centre_to_sam([[10.5, 3.5]]), [[10, 3]])


def test_batched_decode_equals_single_decodes(tiny):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    emb = tiny.encode([image])
    x0 = rng.uniform(0, 80, 20)
    y0 = rng.uniform(0, 60, 20)
    boxes = np.stack([x0, y0, x0 + rng.uniform(5, 40, 20), y0 + rng.uniform(5, 30, 20)], 1)
    batched = tiny.decode(emb, boxes_xyxy=boxes, multimask=True)
    for i in range(20):
        single = tiny.decode(emb, boxes_xyxy=boxes[i : i + 1], multimask=True)
        torch.testing.assert_close(single.low_res_logits[0], batched.low_res_logits[i],
                                   atol=1e-4, rtol=1e-4)
        assert torch.equal(single.masks[0], batched.masks[i])


def test_per_prompt_embeddings_decode_like_one_image_at_a_time(tiny):
    """Prompts of several images in one decode call (a training step) match per-image calls."""
    rng = np.random.default_rng(1)
    emb = tiny.encode([rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(2)])
    boxes = [[4.0, 5.0, 40.0, 50.0], [10.0, 0.0, 70.0, 30.0], [0.0, 20.0, 30.0, 60.0]]
    owner = [0, 1, 1]
    _, bx = tiny.prompt_tensors((64, 80), boxes_xyxy=boxes)
    rows = emb.embeddings[owner]
    with torch.no_grad():
        joint, joint_iou = tiny.decode_tensors(rows, None, bx, None, None, True)
        for i, image in enumerate(owner):
            alone, alone_iou = tiny.decode_tensors(emb.embeddings[image: image + 1], None,
                                                   bx[i: i + 1], None, None, True)
            torch.testing.assert_close(joint[i: i + 1], alone, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(joint_iou[i: i + 1], alone_iou, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="2 embeddings for 3 prompts"):
        tiny.decode_tensors(rows[:2], None, bx, None, None, True)


def test_points_masks_and_embeddings_reuse(tiny):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8),
              rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)]
    batch = tiny.encode(images)
    alone = tiny.encode(images[1:])
    torch.testing.assert_close(batch.embeddings[1:], alone.embeddings, atol=1e-4, rtol=1e-4)
    first = tiny.decode(batch[0], points_xy=[[10, 10], [40, 30]], point_labels=[1, 1])
    assert first.masks.shape == (2, 1, 64, 96)
    # low-res logits fed back as mask prompts, with several points per prompt
    again = tiny.decode(batch[0], points_xy=[[[10, 10], [12, 40]], [[40, 30], [5, 5]]],
                        point_labels=[[1, 0], [1, 0]], mask_logits=first.low_res_logits)
    assert again.masks.shape == (2, 1, 64, 96)
    best, iou = tiny.decode(batch[0], boxes_xyxy=[[0, 0, 50, 50]], multimask=True).best()
    assert best.shape == (1, 64, 96) and iou.shape == (1,)
    empty = tiny.decode(batch[0], boxes_xyxy=np.zeros((0, 4)))
    assert empty.masks.shape == (0, 1, 64, 96)


def test_encoder_groups_images_by_token_count():
    """A 1024-px SAM encodes one image per forward (memory); the result is the same."""
    assert PromptedSam(build_sam("vit_b", pretrained=False)).encode_chunk == 1
    sam = build_sam("tiny")
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    whole = PromptedSam(sam, encode_chunk=8).encode(images)
    grouped = PromptedSam(sam, encode_chunk=2).encode(images)
    assert PromptedSam(sam).encode_chunk == 10
    assert grouped.input_sizes == whole.input_sizes and len(grouped.original_sizes) == 5
    torch.testing.assert_close(grouped.embeddings, whole.embeddings, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "at least one prompt"),
    (dict(points_xy=[[1, 1]], boxes_xyxy=[[0, 0, 5, 5], [1, 1, 6, 6]]), "disagree"),
    (dict(boxes_xyxy=[[0, 0, 5, 5]], class_ids=[0]), "class-aware"),
])
def test_bad_prompts(tiny, kwargs, message):
    emb = tiny.encode([np.zeros((32, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match=message):
        tiny.decode(emb, **kwargs)


def test_class_aware_encoder_equals_plain_encoder_at_init():
    sam = build_sam("tiny")
    plain = sam.prompt_encoder
    encoder = ClassAwarePromptEncoder(plain, text_dim=64)
    torch.manual_seed(3)
    points = (torch.rand(5, 1, 2) * 256, torch.ones(5, 1, dtype=torch.int64))
    boxes = torch.rand(5, 4) * 128
    boxes[:, 2:] += 128
    text = torch.randn(5, 64)
    for p, b in ((points, None), (None, boxes), (points, boxes)):
        s_ref, d_ref = plain(points=p, boxes=b, masks=None)
        s, d = encoder(p, b, None, text)
        assert torch.equal(s, s_ref) and torch.equal(d, d_ref)
    # Once G_zero has learnt something, the class changes the prompt.
    torch.nn.init.normal_(encoder.g_zero.weight)
    s1, _ = encoder(None, boxes, None, text)
    s2, _ = encoder(None, boxes, None, text.roll(1, 0))
    assert not torch.allclose(s1, s2)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(not n.startswith("locked.") for n in trainable)


def test_class_ids_select_text_embeddings():
    sam = build_sam("tiny")
    encoder = ClassAwarePromptEncoder(sam.prompt_encoder, text_dim=8)
    torch.nn.init.normal_(encoder.g_zero.weight)
    predictor = PromptedSam(sam, encoder, class_embeddings=torch.randn(3, 8))
    emb = predictor.encode([np.full((40, 40, 3), 128, np.uint8)])
    a = predictor.decode(emb, boxes_xyxy=[[5, 5, 30, 30]] * 2, class_ids=[0, 2])
    assert not torch.allclose(a.low_res_logits[0], a.low_res_logits[1])


def test_offline_message_names_file_and_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(url, dst, progress=True):
        raise URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ValueError) as e:
        build_sam("vit_b")
    msg = str(e.value)
    assert "sam_vit_b_01ec64.pth" in msg and "--sam-checkpoint" in msg and str(tmp_path) in msg
    with pytest.raises(ValueError, match="nothere.pth: SAM checkpoint not found"):
        build_sam("vit_h", checkpoint=tmp_path / "nothere.pth")


def test_zoom_windows_scale_with_the_box_and_stay_in_the_image():
    zoom = ZoomSpec(context=3.0, min_side=0.25)
    w = zoom.windows(np.array([[70.0, 40.0, 90.0, 50.0],   # 20 x 10 box: a 60-px square
                               [10.0, 10.0, 12.0, 12.0],   # tiny box: min side 0.25 x 160
                               [150.0, 2.0, 159.0, 9.0]]), (120, 160))
    assert w[0].tolist() == [50, 15, 110, 75]
    assert w[1].tolist() == [0, 0, 31, 31]
    assert w[2].tolist() == [134, 0, 160, 26]  # clipped at the right and top edges
    assert not ZoomSpec().on and ZoomSpec(3.0).on
    with pytest.raises(ValueError, match="zoom"):
        ZoomSpec(-1.0)
    with pytest.raises(ValueError, match="zoom"):
        ZoomSpec(3.0, min_side=0.0)


def test_zoom_on_the_whole_image_decodes_as_the_plain_path(tiny):
    """A crop that is the whole image (an image of the encoder's input size) is the plain
    decode: same masks, IoU predictions and stability, in the image's frame."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
    boxes = np.array([[20.0, 30.0, 90.0, 100.0], [60.0, 10.0, 150.0, 70.0]])
    points = np.array([[50.0, 60.0], [100.0, 40.0]])
    plain = tiny.decode(tiny.encode([image]), boxes_xyxy=boxes, points_xy=points,
                        multimask=True, best_only=True, stability_offset=1.0)
    zoomed = tiny.decode_zoomed(image, ZoomSpec(context=10.0), boxes_xyxy=boxes,
                                points_xy=points, multimask=True, best_only=True,
                                stability_offset=1.0)
    torch.testing.assert_close(zoomed.iou_predictions, plain.iou_predictions, atol=1e-5,
                               rtol=1e-4)
    torch.testing.assert_close(zoomed.stability, plain.stability, atol=1e-4, rtol=1e-4)
    assert (zoomed.masks != plain.masks).float().mean() < 1e-3


def test_zoomed_masks_stay_in_their_crop(tiny):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 255, (120, 150, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 10.0, 20.0, 24.0], [100.0, 80.0, 130.0, 100.0],
                      [60.0, 0.0, 66.0, 5.0]])
    zoom = ZoomSpec(context=2.0, min_side=0.2)
    out = tiny.decode_zoomed(image, zoom, boxes_xyxy=boxes, multimask=True)
    assert out.masks.shape == (3, 3, 120, 150) and out.iou_predictions.shape == (3, 3)
    for (x0, y0, x1, y1), m in zip(zoom.windows(boxes, (120, 150)), out.masks, strict=True):
        inside = torch.zeros(120, 150, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert not (m & ~inside).any()
    empty = tiny.decode_zoomed(image, zoom, boxes_xyxy=np.zeros((0, 4)), best_only=True)
    assert empty.masks.shape == (0, 1, 120, 150)
