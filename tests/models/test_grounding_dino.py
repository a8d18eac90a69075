import numpy as np
import pytest

from pseudolabel.models.grounding_dino import DETECTORS, build_detector

COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]
ADJECTIVES = ["red", "small", "old", "wooden", "striped", "metal", "wild", "plastic", "round",
              "tall", "electric", "frozen", "paper", "glass", "spotted", "green", "folding",
              "toy", "giant", "pink", "rusty", "baby", "golden", "soft", "broken", "flying",
              "rolling", "silver", "striped sea", "dark", "leather", "fresh", "empty", "heavy",
              "long", "square", "hollow", "bright", "quiet", "woolen"]
NOUNS = ["box", "lamp", "chair", "boat", "drum", "kite", "fan", "cup", "shoe", "hat", "bell",
         "cart", "fish", "bird", "ladder", "clock", "bowl", "sign", "wheel", "brush", "tent",
         "table", "plate", "rope", "basket", "helmet", "candle", "bucket", "anchor", "mirror"]
LARGE = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]  # 1,200 distinct names


@pytest.fixture(scope="module")
def gd():
    return build_detector("tiny")


@pytest.mark.parametrize("names", [COCO_NAMES, LARGE], ids=["coco80", "lvis-like-1200"])
def test_label_space_split_into_prompts_that_fit(gd, names):
    assert len(set(names)) == len(names)
    prompts = gd.build_prompts(names)
    seen = [i for p in prompts for i in p.class_indices]
    assert sorted(seen) == list(range(len(names)))  # every class exactly once
    for p in prompts:
        assert len(gd.tokenizer(p.text)["input_ids"]) <= gd.max_text_len == 256
        for i, (a, b) in zip(p.class_indices, p.spans, strict=True):
            assert p.text[a:b] == names[i]
    if names is LARGE:
        assert len(prompts) > 1


def test_token_spans_keep_neighbouring_names_apart(gd):
    # "car . taxi" and multi-token names: each token belongs to exactly its own class.
    prompt = gd.build_prompts(["car", "taxi", "traffic light"])[0]
    tokens = gd.tokenizer.convert_ids_to_tokens(gd.tokenizer(prompt.text)["input_ids"])
    classes = gd.token_classes(prompt)
    spelled = {k: "".join(t.removeprefix("##") for t, c in zip(tokens, classes, strict=True)
                          if c == k) for k in range(3)}
    assert spelled == {0: "car", 1: "taxi", 2: "trafficlight"}
    specials = ("[CLS]", "[SEP]", ".")
    assert all(c == -1 for t, c in zip(tokens, classes, strict=True) if t in specials)


def test_detections_map_to_prompted_classes_in_original_pixels(gd):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8),
              rng.integers(0, 255, (160, 100, 3), dtype=np.uint8),
              rng.integers(0, 255, (90, 90, 3), dtype=np.uint8)]
    ids = [3, 5, 8, 13]
    names = ["flower", "tree", "traffic light", "kite"]
    tags = [[5], [3, 13], []]
    dets = gd.detect(images, ids, names, image_categories=tags, box_threshold=0.0, nms_iou=None)
    for image, det, allowed in zip(images, dets, tags, strict=True):
        h, w = image.shape[:2]
        assert set(det.labels.tolist()) <= set(allowed)
        assert det.class_scores.shape == (len(det), 4)
        assert (det.boxes_xyxy[:, [0, 2]] <= w).all() and (det.boxes_xyxy[:, [1, 3]] <= h).all()
        assert (det.boxes_xyxy >= 0).all()
        off = [k for k, c in enumerate(ids) if c not in allowed]
        assert (det.class_scores[:, off] == 0).all()
    assert len(dets[0]) == gd.model.config.num_queries and len(dets[2]) == 0


def test_whole_label_space_with_paper_filters(gd):
    image = np.random.default_rng(1).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    names = COCO_NAMES
    gd_small = build_detector("tiny")
    gd_small.max_text_len = 64  # force several prompts for one image
    det_all = gd_small.detect([image], list(range(1, 81)), names, box_threshold=0.0,
                              nms_iou=None)[0]
    assert len(det_all) == len(gd_small.build_prompts(names)) * gd.model.config.num_queries
    det = gd_small.detect([image], list(range(1, 81)), names, box_threshold=0.05, nms_iou=0.5)[0]
    assert (det.scores >= 0.05).all() and len(det) <= len(det_all)
    assert (np.diff(det.scores) <= 0).all()  # sorted by confidence
    np.testing.assert_allclose(det.scores, det.class_scores.max(1))


def test_unknown_tags_and_registry(gd):
    with pytest.raises(ValueError, match="not in the label space"):
        gd.detect([np.zeros((8, 8, 3), np.uint8)], [1], ["cat"], image_categories=[[2]])
    assert "tiny" in DETECTORS.names()


def test_offline_hub_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="--detector PATH"):
        build_detector(str(tmp_path / "no-such-model-dir"))
