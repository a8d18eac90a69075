"""Grounding DINO through ``transformers`` (``GroundingDinoForObjectDetection``).

* Prompts follow seed 001 §3.2: ``"[Class 1]. [Class 2]. ... [Class K]."``, from the whole
  label space or an image's tags (§3.3).
* A label space whose prompt would exceed the text length (256 tokens) is split into as many
  prompts as needed; detections of all prompts are joined.
* Each box's class comes from the token spans of the class names in the prompt (character
  offsets of the fast tokenizer), never from decoded phrase strings.
* Output per image: ``Instances`` with XYXY boxes in original pixels, confidences, category
  ids, and ``class_scores`` (N x K over the label space given).
* An image's detections do not depend on the images beside it (padding changes what the
  backbone and the text encoder compute): a forward batches prompts of one token length, and
  either pads every image to one fixed canvas (``pad_size``; the tiny model, whose training
  batches were padded to its 160 x 160 canvas) or batches only images of one size.
* The model runs on ``runtime.device`` under its autocast; scores and boxes leave it in fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.ops import nms
from transformers import (
    BertConfig,
    BertTokenizerFast,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    SwinConfig,
)

from pseudolabel.data.instances import Instances
from pseudolabel.models.checkpoints import load_state_dict, load_weights
from pseudolabel.models.registry import Registry
from pseudolabel.runtime import CPU, Runtime

DETECTORS = Registry("detector")
BOX_THRESHOLD = 0.3  # seed 001 §4.1: confidence threshold for the none / class settings
NMS_IOU = 0.9  # seed 001 §4.1


@dataclass(frozen=True)
class TextPrompt:
    """One text prompt: its string, and for each class index in it, the name's char span."""

    text: str
    class_indices: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]


class GroundingDino:
    """Open-vocabulary box detector over a label space of class names."""

    def __init__(self, model: GroundingDinoForObjectDetection, image_processor,
                 tokenizer, *, max_text_len: int | None = None, batch_size: int = 8,
                 pad_size: tuple[int, int] | None = None, runtime: Runtime = CPU) -> None:
        self.runtime = runtime
        self.pad_size = pad_size
        self.model = model.eval().to(runtime.device)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.max_text_len = max_text_len or model.config.max_text_len
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    # -- prompts ---------------------------------------------------------------------------
    def _token_count(self, name: str) -> int:
        return len(self.tokenizer(name, add_special_tokens=False)["input_ids"])

    def build_prompts(self, names: list[str], class_indices: list[int] | None = None
                      ) -> list[TextPrompt]:
        """Pack ``names`` into ``"a. b. c."`` prompts that fit ``max_text_len`` tokens.

        Every name appears in exactly one prompt. ``class_indices`` (default ``0..K-1``)
        are carried with the spans.
        """
        indices = list(range(len(names))) if class_indices is None else list(class_indices)
        budget = self.max_text_len - 2  # [CLS] and [SEP]
        prompts, cur = [], []
        used = 0
        for idx, name in zip(indices, names, strict=True):
            cost = self._token_count(name.lower()) + 1  # the name and its "."
            if cost > budget:
                raise ValueError(f"class name {name!r} alone needs {cost} tokens, more than the "
                                 f"text length {self.max_text_len}")
            if cur and used + cost > budget:
                prompts.append(self._prompt(cur))
                cur, used = [], 0
            cur.append((idx, name))
            used += cost
        if cur:
            prompts.append(self._prompt(cur))
        return prompts

    @staticmethod
    def _prompt(items: list[tuple[int, str]]) -> TextPrompt:
        text, spans = "", []
        for _, name in items:
            if text:
                text += " "
            start = len(text)
            text += name.lower()
            spans.append((start, len(text)))
            text += "."
        return TextPrompt(text, tuple(i for i, _ in items), tuple(spans))

    def token_classes(self, prompt: TextPrompt) -> np.ndarray:
        """Class index of each token of ``prompt`` (``-1`` for specials and separators)."""
        enc = self.tokenizer(prompt.text, return_offsets_mapping=True)
        out = np.full(len(enc["input_ids"]), -1, dtype=np.int64)
        for t, (s, e) in enumerate(enc["offset_mapping"]):
            if e <= s:
                continue  # special tokens have empty spans
            for cls, (a, b) in zip(prompt.class_indices, prompt.spans, strict=True):
                if a <= s and e <= b:
                    out[t] = cls
                    break
        return out

    # -- detection -------------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, images: list[np.ndarray], prompts: list[TextPrompt], num_classes: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Boxes (Q, 4) XYXY pixels and class scores (Q, K) for each image/prompt pair."""
        pad = {"pad_size": {"height": self.pad_size[0], "width": self.pad_size[1]}} \
            if self.pad_size else {}
        pix = self.image_processor(images=images, return_tensors="pt", **pad)
        text = self.tokenizer([p.text for p in prompts], padding="longest", return_tensors="pt")
        dev = self.device
        with self.runtime.autocast():
            out = self.model(pixel_values=pix["pixel_values"].to(dev),
                             pixel_mask=pix["pixel_mask"].to(dev),
                             input_ids=text["input_ids"].to(dev),
                             attention_mask=text["attention_mask"].to(dev),
                             token_type_ids=text.get("token_type_ids", torch.zeros_like(
                                 text["input_ids"])).to(dev))
        probs = out.logits.float().sigmoid().cpu()
        pred_boxes = out.pred_boxes.float().cpu()
        results = []
        for b, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
            h, w = image.shape[:2]
            cx, cy, bw, bh = pred_boxes[b].unbind(-1)
            boxes = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h,
                                 (cx + bw / 2) * w, (cy + bh / 2) * h], dim=-1)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            tok_cls = torch.as_tensor(self.token_classes(prompt))
            valid = torch.nonzero(tok_cls >= 0).squeeze(1)
            scores = torch.zeros((probs.shape[1], num_classes))
            if len(valid):
                index = tok_cls[valid].expand(probs.shape[1], -1)
                scores.scatter_reduce_(1, index, probs[b][:, valid], reduce="amax")
            results.append((boxes.numpy(), scores.numpy()))
        return results

    def detect(self, images: list[np.ndarray], category_ids: list[int], names: list[str], *,
               image_categories: list[list[int]] | None = None,
               box_threshold: float = BOX_THRESHOLD, nms_iou: float | None = NMS_IOU,
               batch_size: int | None = None) -> list[Instances]:
        """Detect the label space (or each image's own categories) in ``images``.

        Args:
            images: ``(H, W, 3)`` uint8 RGB images.
            category_ids, names: the label space; ``class_scores`` columns follow this order.
            image_categories: per image, the category ids to prompt with (its tags, §3.3);
                ``None`` prompts every image with the whole label space (§3.2).
            box_threshold: keep boxes whose best class score is at least this.
            nms_iou: class-agnostic NMS IoU threshold; ``None`` disables NMS.
            batch_size: images per forward (default ``self.batch_size``); 1 makes every
                image's detections independent of the others to the last bit (batched
                matrix products round differently, ~1e-7 here).
        """
        col = {c: k for k, c in enumerate(category_ids)}
        per_image = []
        for i in range(len(images)):
            cats = category_ids if image_categories is None else image_categories[i]
            unknown = [c for c in cats if c not in col]
            if unknown:
                raise ValueError(f"image {i}: categories {unknown} are not in the label space")
            ks = [col[c] for c in cats]
            per_image.append(self.build_prompts([names[k] for k in ks], ks) if ks else [])
        boxes = [[] for _ in images]
        scores = [[] for _ in images]
        rounds = max((len(p) for p in per_image), default=0)
        for r in range(rounds):  # round r runs the r-th prompt of every image that has one
            todo = [i for i, p in enumerate(per_image) if len(p) > r]
            for batch in self._batches(images, [per_image[i][r] for i in todo], todo,
                                       batch_size or self.batch_size):
                outs = self._forward([images[i] for i in batch], [per_image[i][r] for i in batch],
                                     len(category_ids))
                for i, (b, sc) in zip(batch, outs, strict=True):
                    boxes[i].append(b)
                    scores[i].append(sc)
        k = len(category_ids)
        out = []
        for i, image in enumerate(images):
            if boxes[i]:
                raw = _sorted_instances(image.shape[:2], np.concatenate(boxes[i]),
                                        np.concatenate(scores[i]), category_ids)
            else:
                raw = Instances(image.shape[:2], np.zeros((0, 4)), np.zeros(0),
                                scores=np.zeros(0), class_scores=np.zeros((0, k)))
            out.append(filter_detections(raw, box_threshold, nms_iou))
        return out

    def _batches(self, images, prompts: list[TextPrompt], todo: list[int],
                 batch_size: int) -> list[list[int]]:
        """``todo`` in batches of at most ``batch_size`` images whose prompts have one token
        length, and of one size unless every image is padded to ``pad_size``, so a batch
        computes what single images would."""
        groups: dict[tuple, list[int]] = {}
        for i, prompt in zip(todo, prompts, strict=True):
            size = None if self.pad_size else images[i].shape[:2]
            key = (size, len(self.tokenizer(prompt.text)["input_ids"]))
            groups.setdefault(key, []).append(i)
        return [g[s: s + batch_size] for g in groups.values()
                for s in range(0, len(g), batch_size)]


def _sorted_instances(size, boxes: np.ndarray, scores: np.ndarray,
                      category_ids: list[int]) -> Instances:
    """Every query of every prompt, best class per box, by confidence (stable order)."""
    conf = scores.max(axis=1)
    col = scores.argmax(axis=1)
    order = np.argsort(-conf, kind="stable")
    return Instances(size, boxes[order], np.asarray(category_ids)[col[order]],
                     scores=conf[order], class_scores=scores[order])


def filter_detections(raw: Instances, box_threshold: float, nms_iou: float | None
                      ) -> Instances:
    """Seed 001 §4.1's filters on unfiltered detections (sorted by confidence): keep boxes
    whose best class score is at least ``box_threshold``, then class-agnostic NMS at
    ``nms_iou`` (``None``: no NMS). ``GroundingDino.detect`` returns exactly this, so a caller
    holding unfiltered detections can filter them for several settings."""
    keep = np.flatnonzero(raw.scores >= box_threshold)
    if nms_iou is not None and len(keep):
        kept = nms(torch.as_tensor(raw.boxes_xyxy[keep], dtype=torch.float32),
                   torch.as_tensor(raw.scores[keep], dtype=torch.float32), nms_iou)
        keep = np.sort(keep[kept.numpy()])  # back in confidence order
    return raw[keep]


# -- builders --------------------------------------------------------------------------------
class CalibratedContrastiveEmbedding(nn.Module):
    """Query-token similarity scaled by ``1/sqrt(d)`` plus a learnt bias at the focal prior.

    transformers' ``GroundingDinoContrastiveEmbedding`` returns the raw dot product. With a
    randomly initialised model its logits are O(10), the first focal loss is ~1,300 and the
    tiny model collapses within a few dozen steps. The original Grounding DINO code and
    MMDetection's port offer the same two options used here (``log_scale="auto"``,
    ``bias=True``): the bias starts at ``-log((1 - 0.01) / 0.01)`` so every token starts at
    probability 0.01, as in focal-loss detectors. Only the tiny preset uses this class;
    official checkpoints keep transformers' head.
    """

    def __init__(self, max_text_len: int, d_model: int, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.max_text_len = max_text_len
        self.scale = 1.0 / math.sqrt(d_model)
        self.bias = nn.Parameter(torch.tensor([-math.log((1 - prior_prob) / prior_prob)]))

    def forward(self, vision_hidden_state: torch.Tensor, text_hidden_state: torch.Tensor,
                text_token_mask: torch.Tensor) -> torch.Tensor:
        logits = vision_hidden_state @ text_hidden_state.transpose(-1, -2) * self.scale + self.bias
        logits = logits.masked_fill(~text_token_mask[:, None, :], float("-inf"))
        out = logits.new_full((*logits.shape[:-1], self.max_text_len), float("-inf"))
        out[..., : logits.shape[-1]] = logits  # padded to max_text_len as transformers does
        return out


def calibrate_contrastive_heads(model: GroundingDinoForObjectDetection) -> None:
    """Swap every contrastive class head (decoder layers, two-stage encoder output) in place."""
    cfg = model.config

    def make():
        return CalibratedContrastiveEmbedding(cfg.max_text_len, cfg.d_model)

    model.class_embed = nn.ModuleList([make() for _ in model.class_embed])
    if getattr(model.model, "encoder_output_class_embed", None) is not None:
        model.model.encoder_output_class_embed = make()


# transformers' Grounding DINO separates phrases with BERT's ids for [CLS], [SEP], "." and "?".
BERT_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103,
                    ".": 1012, "?": 1029}


def tiny_vocab(words: tuple[str, ...] = ()) -> list[str]:
    """A WordPiece vocabulary with BERT's special-token ids: characters, ``##``-pieces, words."""
    pieces = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces += ["##" + c for c in pieces]
    pieces += [c for c in "!\"#$%&'()*+,-/:;<=>@[\\]^_`{|}~"]
    pieces += sorted(set(words))
    size = max(1030, 104 + len(pieces) + 2)
    vocab = [f"[unused{i}]" for i in range(size)]
    for tok, i in BERT_SPECIAL_IDS.items():
        vocab[i] = tok
    free = [i for i in range(104, size) if i not in BERT_SPECIAL_IDS.values()]
    for i, tok in zip(free, pieces, strict=False):
        vocab[i] = tok
    return vocab


def tiny_tokenizer(words: tuple[str, ...] = ()) -> BertTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(tiny_vocab(words))}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True)


def tiny_config(vocab_size: int, max_text_len: int = 256) -> GroundingDinoConfig:
    """Small dimensions on the same classes: Swin 4 stages of width 32-256, d_model 64."""
    backbone = SwinConfig(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                          window_size=5, image_size=160, out_indices=[2, 3, 4])
    text = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=128, max_position_embeddings=256)
    return GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=64, num_queries=100,
        encoder_layers=2, decoder_layers=3, encoder_ffn_dim=256, decoder_ffn_dim=256,
        encoder_attention_heads=4, decoder_attention_heads=4, num_feature_levels=4,
        max_text_len=max_text_len, two_stage=True,
    )


@DETECTORS.register("tiny")
def build_grounding_dino_tiny(*, checkpoint: str | Path | None = None,
                              words: tuple[str, ...] = (), runtime: Runtime = CPU
                              ) -> GroundingDino:
    """Tiny Grounding DINO (seeded random init unless ``checkpoint``) for the synthetic world.

    ``words`` are whole-word vocabulary entries (the synthetic class names); other words are
    spelled with ``##`` character pieces.
    """
    from pseudolabel.synthetic.shapes import CLASSES

    tokenizer = tiny_tokenizer(tuple(words) or tuple(c.name for c in CLASSES))
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(tiny_config(len(tokenizer)))
    calibrate_contrastive_heads(model)
    if checkpoint is not None:
        load_weights(model, load_state_dict(checkpoint), str(checkpoint))
    processor = GroundingDinoImageProcessor(size={"shortest_edge": 160, "longest_edge": 160})
    return GroundingDino(model, processor, tokenizer, pad_size=(160, 160), runtime=runtime)


def build_grounding_dino_hf(name_or_dir: str, runtime: Runtime = CPU) -> GroundingDino:
    """Grounding DINO from a hub id (``IDEA-Research/grounding-dino-base``) or a local folder."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(name_or_dir)
        model = GroundingDinoForObjectDetection.from_pretrained(name_or_dir)
    except OSError as exc:
        raise ValueError(
            f"Grounding DINO {name_or_dir!r} could not be loaded ({str(exc).splitlines()[0]}). "
            "Offline, download the model folder elsewhere (config.json, model weights, "
            "tokenizer and preprocessor files) and pass --detector PATH."
        ) from None
    return GroundingDino(model, processor.image_processor, processor.tokenizer, runtime=runtime)


def build_detector(name: str, *, checkpoint: str | Path | None = None,
                   runtime: Runtime = CPU) -> GroundingDino:
    """``tiny`` or a hub id / local folder of a transformers Grounding DINO, on the runtime's
    device."""
    if name in DETECTORS:
        return DETECTORS.get(name)(checkpoint=checkpoint, runtime=runtime)
    return build_grounding_dino_hf(name, runtime)
