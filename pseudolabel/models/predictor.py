"""Batched prompting of SAM: encode an image once, decode any number of its prompts in one call.

Coordinates follow SAM's convention (``SamPredictor``): points and XYXY boxes in the
original image's pixels, resized to the model input by resizing the longest side (a
427x640 image maps (320, 240) to (512.0, 383.89) at 1024 px). SAM treats a coordinate as a
pixel index and adds 0.5 itself; callers holding pixel-centre coordinates (the weak-label
format's ``c + 0.5``) subtract 0.5 first (``pixel_centre_to_sam``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.amg import calculate_stability_score
from segment_anything.utils.transforms import ResizeLongestSide

from pseudolabel.models.class_aware import ClassAwarePromptEncoder
from pseudolabel.runtime import CPU, Runtime


def pixel_centre_to_sam(points_xy: np.ndarray) -> np.ndarray:
    """Points in continuous pixel coordinates (pixel centre at ``c + 0.5``) -> SAM's indices."""
    return np.asarray(points_xy, dtype=np.float64) - 0.5


@dataclass
class ImageEmbeddings:
    """Encoder output for a batch of images, reusable across decode calls (and cacheable).

    ``embeddings``: ``(B, C, h, w)`` float; ``original_sizes`` / ``input_sizes``: ``(H, W)`` of
    each image before and after the longest-side resize.
    """

    embeddings: torch.Tensor
    original_sizes: list[tuple[int, int]]
    input_sizes: list[tuple[int, int]]

    def __getitem__(self, i: int) -> ImageEmbeddings:
        return ImageEmbeddings(self.embeddings[i : i + 1], [self.original_sizes[i]],
                               [self.input_sizes[i]])


@dataclass
class Decoded:
    """Decoder output for N prompts of one image, M masks each (M = 3 multimask, else 1).

    ``masks``: ``(N, M, H, W)`` bool at the original resolution; ``iou_predictions``:
    ``(N, M)``; ``low_res_logits``: ``(N, M, 4h, 4w)`` mask logits (256x256 for official SAM),
    usable as mask prompts; ``logits``: the mask logits at the original resolution, kept when
    asked for (what ``masks`` thresholds).
    """

    masks: torch.Tensor
    iou_predictions: torch.Tensor
    low_res_logits: torch.Tensor
    logits: torch.Tensor | None = None  # (N, M, H, W) float, with ``decode(keep_logits=True)``
    stability: torch.Tensor | None = None  # (N, M), with ``decode(stability_offset=...)``

    def cpu(self) -> Decoded:
        """Every field on the host, moved in one go (once per image, not per prompt)."""
        return Decoded(self.masks.cpu(), self.iou_predictions.cpu(), self.low_res_logits.cpu(),
                       None if self.logits is None else self.logits.cpu(),
                       None if self.stability is None else self.stability.cpu())

    def best(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask with the highest predicted IoU per prompt: ``(N, H, W)`` and ``(N,)``."""
        idx = self.iou_predictions.argmax(dim=1)
        rows = torch.arange(len(idx), device=idx.device)
        return self.masks[rows, idx], self.iou_predictions[rows, idx]


# SAM's decoder copies the image embedding once per prompt and updates every copy (two-way
# attention), so its cost grows linearly with the prompts and, on a CPU, is bound by memory
# traffic: one call with 20 vit_b prompts (84 MB of copies) ran 1.7x slower than 20 single
# calls here. Calls of about this many bytes of copies were fastest (benchmarks/decode.py).
CPU_DECODE_CHUNK_BYTES = 12 * 2**20
# The encoder's global-attention blocks hold a (heads, tokens, tokens) matrix plus SAM's
# decomposed relative-position terms per image: at 1024 px (4,096 tokens) eight ViT-B images
# in one forward took 20 GB here. On a CPU, images are encoded in groups whose token count
# stays under this cap (one 1024-px image, ten 160-px tiny-SAM images); a lone image is never
# split. On a GPU the caller's batch goes through in one forward.
ENCODE_CHUNK_TOKENS = 64 * 64
# Full-resolution logits of a chunk of prompts are held at once (to threshold them): cap the
# prompts per chunk so that they stay under this many bytes (a 4,096-px image: 3 prompts).
OUTPUT_CHUNK_BYTES = 256 * 2**20


def encoder_tokens(sam: Sam) -> int:
    """Tokens per image of the encoder's attention blocks (its patch grid)."""
    enc = sam.image_encoder
    tokens = getattr(enc, "attention_tokens", None)
    if tokens is not None:
        return int(tokens)
    stride = enc.patch_embed.proj.stride[0]
    return (enc.img_size // stride) ** 2


@dataclass
class PreparedImage:
    """An image resized for SAM on the host (loader threads do this ahead of the model):
    ``pixels`` ``(3, h, w)`` float32, longest side ``img_size``, not normalised or padded."""

    pixels: torch.Tensor
    original_size: tuple[int, int]


def prepare_image(image: np.ndarray, target_length: int, pin_memory: bool = False
                  ) -> PreparedImage:
    """``(H, W, 3)`` uint8 RGB -> :class:`PreparedImage` (bilinear, antialiased, as SAM)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    # Not ResizeLongestSide.apply_image_torch: segment_anything 1.0 sizes its output from
    # shape[0], shape[1] of the BCHW tensor (batch, channels), not (H, W).
    size = ResizeLongestSide.get_preprocess_shape(image.shape[0], image.shape[1], target_length)
    x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)[0]
    return PreparedImage(x.pin_memory() if pin_memory else x, tuple(image.shape[:2]))


# Crops decoded per encoder forward by ``decode_zoomed`` on a GPU (a CPU uses encode_chunk):
# every prompt has its own crop, so a crowded COCO image would otherwise be one huge batch.
ZOOM_GPU_CHUNK = 8


@dataclass(frozen=True)
class ZoomSpec:
    """Decode a box prompt on a square crop around it, resized to the encoder's input.

    The crop's side is ``context`` times the box's longer side, at least ``min_side`` times
    the image's longer side, centred on the box and clipped to the image. Ours, not seed
    001's: SAM's encoder sees small objects at a few patches (the shipped tiny SAM: an
    object of 15 px covers 2 x 2 of its 8-px patches), and a zoomed crop gives the box the
    encoder's resolution, as SAM's automatic mask generator does with its ``crop_n_layers``
    crops for small objects. ``context=0`` turns it off.
    """

    context: float = 0.0
    min_side: float = 0.3

    def __post_init__(self) -> None:
        if self.context < 0 or not 0 < self.min_side <= 1:
            raise ValueError(f"zoom: context must be >= 0 and min_side in (0, 1], got "
                             f"{self.context} and {self.min_side}")

    @property
    def on(self) -> bool:
        return self.context > 0

    def record(self) -> dict | None:
        """The spec as written to manifests and results; ``None`` when off."""
        return {"context": self.context, "min_side": self.min_side} if self.on else None

    def windows(self, boxes_xyxy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``(N, 4)`` integer crop windows ``x0, y0, x1, y1`` (end exclusive) in the image."""
        h, w = size
        b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        side = np.maximum(self.context * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]),
                          self.min_side * max(h, w))
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        x0 = np.clip(np.floor(cx - side / 2), 0, w - 1)
        y0 = np.clip(np.floor(cy - side / 2), 0, h - 1)
        x1 = np.clip(np.ceil(cx + side / 2), x0 + 1, w)
        y1 = np.clip(np.ceil(cy + side / 2), y0 + 1, h)
        return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


class PromptedSam:
    """SAM with an optional class-aware prompt encoder (seed 001 §3.1).

    ``class_embeddings`` is a ``(K, D)`` table of text embeddings; ``class_ids`` passed to
    ``decode`` index its rows. Without a class-aware encoder, class ids are an error.
    The models are moved to ``runtime.device`` once, here; forwards run under the runtime's
    autocast and return fp32. ``decode_chunk`` caps the prompts per decoder call (default:
    sized to ``CPU_DECODE_CHUNK_BYTES`` on a CPU, unlimited on a GPU); ``encode_chunk`` caps
    the images per encoder forward (default: ``ENCODE_CHUNK_TOKENS`` worth of patch tokens on
    a CPU, unlimited on a GPU, where the caller's batch is the forward's).
    """

    def __init__(self, sam: Sam, class_encoder: ClassAwarePromptEncoder | None = None,
                 class_embeddings: torch.Tensor | None = None,
                 decode_chunk: int | None = None, encode_chunk: int | None = None,
                 runtime: Runtime = CPU) -> None:
        self.runtime = runtime
        self.sam = sam.to(runtime.device)
        self.class_encoder = class_encoder.to(runtime.device) if class_encoder else None
        self.class_embeddings = (class_embeddings.to(runtime.device)
                                 if class_embeddings is not None else None)
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        on_cpu = runtime.device.type == "cpu"
        if decode_chunk is None and on_cpu:
            c = sam.prompt_encoder.embed_dim
            h, w = sam.prompt_encoder.image_embedding_size
            decode_chunk = max(1, CPU_DECODE_CHUNK_BYTES // (4 * c * h * w))
        self.decode_chunk = decode_chunk
        if encode_chunk is None and on_cpu:
            encode_chunk = max(1, ENCODE_CHUNK_TOKENS // encoder_tokens(sam))
        self.encode_chunk = encode_chunk

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def low_res_size(self) -> int:
        return 4 * self.sam.prompt_encoder.image_embedding_size[0]

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """Host-side resize of one image (thread-safe; loader threads call it)."""
        return prepare_image(image, self.transform.target_length,
                             pin_memory=self.device.type == "cuda")

    def preprocess(self, images: list) -> tuple[torch.Tensor, list, list]:
        """Images (``(H, W, 3)`` uint8 arrays or :class:`PreparedImage`) -> ``(B, 3, S, S)``
        normalised, padded input on the device."""
        batch, originals, inputs = [], [], []
        for image in images:
            prepared = image if isinstance(image, PreparedImage) else self.prepare(image)
            x = prepared.pixels.to(self.device, non_blocking=True)
            originals.append(prepared.original_size)
            inputs.append(tuple(x.shape[-2:]))
            batch.append(self.sam.preprocess(x))
        return torch.stack(batch), originals, inputs

    def encode_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """The image encoder on a preprocessed batch, under autocast; fp32 out."""
        chunk = self.encode_chunk or len(x)
        with self.runtime.autocast():
            out = [self.sam.image_encoder(x[s: s + chunk]) for s in range(0, len(x), chunk)]
        return torch.cat(out).float()

    @torch.no_grad()
    def encode(self, images: list) -> ImageEmbeddings:
        """Run the image encoder once on a batch of images (in ``encode_chunk`` groups)."""
        x, originals, inputs = self.preprocess(images)
        return ImageEmbeddings(self.encode_tensors(x), originals, inputs)

    def prompt_tensors(self, original_size, points_xy=None, point_labels=None, boxes_xyxy=None):
        """Resize prompt coordinates to the model input; returns torch tensors or None."""
        points = boxes = None
        if points_xy is not None:
            pts = np.asarray(points_xy, dtype=np.float64)
            if pts.ndim == 2:  # one point per prompt
                pts = pts[:, None, :]
            labels = (np.ones(pts.shape[:2]) if point_labels is None
                      else np.asarray(point_labels).reshape(pts.shape[:2]))
            pts = self.transform.apply_coords(pts, original_size)
            points = (torch.as_tensor(pts, dtype=torch.float32, device=self.device),
                      torch.as_tensor(labels, dtype=torch.int64, device=self.device))
        if boxes_xyxy is not None:
            b = self.transform.apply_boxes(np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4),
                                           original_size)
            boxes = torch.as_tensor(b, dtype=torch.float32, device=self.device)
        return points, boxes

    def decode_tensors(self, embedding: torch.Tensor, points, boxes, mask_logits, class_ids,
                       multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable decode of N prompts -> low-res logits and IoU predictions (fp32).

        ``embedding`` is ``(1, C, h, w)`` (N prompts of one image) or ``(N, C, h, w)`` (one
        embedding per prompt). The prompt encoder and mask decoder run under the runtime's
        autocast.
        """
        with self.runtime.autocast():
            logits, iou = self._decode_autocast(embedding, points, boxes, mask_logits,
                                                class_ids, multimask)
        return logits.float(), iou.float()

    def _decode_autocast(self, embedding, points, boxes, mask_logits, class_ids, multimask):
        if class_ids is not None:
            if self.class_encoder is None or self.class_embeddings is None:
                raise ValueError("class_ids need a class-aware prompt encoder and class "
                                 "embeddings")
            text = self.class_embeddings[torch.as_tensor(class_ids, device=self.device)]
            sparse, dense = self.class_encoder(points, boxes, mask_logits, text)
        else:
            encoder = self.class_encoder.locked if self.class_encoder else self.sam.prompt_encoder
            sparse, dense = encoder(points=points, boxes=boxes, masks=mask_logits)
        if embedding.shape[0] == 1:
            return self.sam.mask_decoder(
                image_embeddings=embedding,
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        return self._decode_per_prompt(embedding, sparse, dense, multimask)

    def _decode_per_prompt(self, embeddings: torch.Tensor, sparse: torch.Tensor,
                           dense: torch.Tensor, multimask: bool):
        """SAM's mask decoder with one image embedding per prompt (prompts of many images).

        ``MaskDecoder.predict_masks`` repeats a single image's embedding for every prompt;
        here row i of ``embeddings`` already belongs to prompt i, so a training step decodes
        the prompts of all its images in one call. Same weights, same arithmetic.
        """
        dec = self.sam.mask_decoder
        if embeddings.shape[0] != sparse.shape[0]:
            raise ValueError(f"{embeddings.shape[0]} embeddings for {sparse.shape[0]} prompts")
        out = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([out.expand(sparse.shape[0], -1, -1), sparse], dim=1)
        src = embeddings + dense
        pos = self.sam.prompt_encoder.get_dense_pe().expand(src.shape[0], -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = dec.transformer(src, pos, tokens)
        up = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(hs[:, 1 + i]) for i, mlp in
                             enumerate(dec.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ up.flatten(2)).view(b, -1, *up.shape[-2:])
        iou = dec.iou_prediction_head(hs[:, 0])
        keep = slice(1, None) if multimask else slice(0, 1)
        return masks[:, keep], iou[:, keep]

    @torch.no_grad()
    def decode(self, embeddings: ImageEmbeddings, *, points_xy=None, point_labels=None,
               boxes_xyxy=None, mask_logits=None, class_ids=None,
               multimask: bool = False, keep_logits: bool = False, best_only: bool = False,
               stability_offset: float | None = None) -> Decoded:
        """Decode N prompts of the single image in ``embeddings`` in one batched call.

        Args:
            points_xy: ``(N, 2)`` or ``(N, P, 2)`` points in original pixels (SAM convention).
            point_labels: ``(N,)`` or ``(N, P)``: 1 positive, 0 negative (default all 1).
            boxes_xyxy: ``(N, 4)`` boxes in original pixels.
            mask_logits: ``(N, 1, L, L)`` low-res mask logits (``L = low_res_size``).
            class_ids: ``(N,)`` rows of ``class_embeddings``.
            keep_logits: also return the full-resolution logits (``Decoded.logits``).
            best_only: keep only the output with the highest predicted IoU per prompt
                (M = 1), chosen before upsampling, so only it is brought to full size.
            stability_offset: also compute SAM's stability score of every kept output (IoU
                of the masks at logit thresholds +- offset), from the full-size logits.
        """
        if len(embeddings.original_sizes) != 1:
            raise ValueError("decode takes the embeddings of one image; index the batch first")
        original, input_size = embeddings.original_sizes[0], embeddings.input_sizes[0]
        points, boxes = self.prompt_tensors(original, points_xy, point_labels, boxes_xyxy)
        n = _num_prompts(points, boxes, mask_logits, class_ids)
        if mask_logits is not None:
            mask_logits = torch.as_tensor(mask_logits, dtype=torch.float32, device=self.device)
        if n == 0:
            h, w = original
            m, low, dev = 3 if multimask else 1, self.low_res_size, self.device
            return Decoded(torch.zeros((0, m, h, w), dtype=torch.bool, device=dev),
                           torch.zeros((0, m), device=dev),
                           torch.zeros((0, m, low, low), device=dev),
                           torch.zeros((0, m, h, w), device=dev) if keep_logits else None)
        m_out = 1 if best_only or not multimask else 3
        by_output = max(1, OUTPUT_CHUNK_BYTES // (4 * m_out * original[0] * original[1]))
        chunk = min(self.decode_chunk or n, by_output)
        image = embeddings.embeddings.to(self.device)
        parts = []
        for s in range(0, n, chunk):
            sl = slice(s, s + chunk)
            low_res, iou = self.decode_tensors(
                image,
                None if points is None else (points[0][sl], points[1][sl]),
                None if boxes is None else boxes[sl],
                None if mask_logits is None else mask_logits[sl],
                None if class_ids is None else np.asarray(class_ids)[sl],
                multimask)
            if best_only:
                rows = torch.arange(len(iou), device=iou.device)
                best = iou.argmax(dim=1)
                low_res, iou = low_res[rows, best][:, None], iou[rows, best][:, None]
            # fp32 from here: upsampling and the threshold never see reduced precision
            logits = self.sam.postprocess_masks(low_res, input_size, original)
            stable = None if stability_offset is None else calculate_stability_score(
                logits, self.sam.mask_threshold, stability_offset)
            parts.append((logits > self.sam.mask_threshold, iou, low_res,
                          logits if keep_logits else None, stable))
        masks, iou, low_res, logits, stable = zip(*parts, strict=True)
        return Decoded(torch.cat(masks), torch.cat(iou), torch.cat(low_res),
                       torch.cat(logits) if keep_logits else None,
                       None if stability_offset is None else torch.cat(stable))


    @torch.no_grad()
    def decode_zoomed(self, image: np.ndarray, zoom: ZoomSpec, *, boxes_xyxy,
                      points_xy=None, point_labels=None, mask_logits=None, class_ids=None,
                      multimask: bool = False, best_only: bool = False,
                      stability_offset: float | None = None) -> Decoded:
        """Decode each box prompt on its own zoomed crop of ``image`` (see :class:`ZoomSpec`).

        Same prompts and output as :meth:`decode` (masks and logits in ``image``'s frame,
        zero / ``-inf`` outside the crop), except ``low_res_logits``, which are in each
        prompt's crop frame, as ``mask_logits`` (``(N, 1, L, L)``, the crop of
        ``zoom.windows(boxes_xyxy, image size)[i]`` resized and padded like an image) must
        be. Every prompt costs an encoder pass over its crop, so this pays where objects are
        small against the encoder's input, as on the synthetic world.
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        h, w = image.shape[:2]
        m_out = 1 if best_only or not multimask else 3
        if n == 0:
            low = self.low_res_size
            return Decoded(torch.zeros((0, m_out, h, w), dtype=torch.bool),
                           torch.zeros((0, m_out)), torch.zeros((0, m_out, low, low)),
                           stability=None if stability_offset is None else torch.zeros((0, m_out)))
        windows = zoom.windows(boxes, (h, w))
        offsets = windows[:, [0, 1, 0, 1]].astype(np.float64)
        pts = None if points_xy is None else np.asarray(points_xy, dtype=np.float64)
        masks = torch.zeros((n, m_out, h, w), dtype=torch.bool)
        ious, lows, stables = [], [], []
        chunk = self.encode_chunk or ZOOM_GPU_CHUNK
        for s in range(0, n, chunk):
            idx = range(s, min(n, s + chunk))
            crops = [np.ascontiguousarray(image[y0:y1, x0:x1])
                     for x0, y0, x1, y1 in windows[s: s + chunk]]
            emb = self.encode(crops)
            point_t, box_t = [], []
            for k, i in enumerate(idx):  # prompts in the crop's frame, resized to the input
                size = emb.original_sizes[k]
                p, b = self.prompt_tensors(
                    size, None if pts is None else pts[i: i + 1] - offsets[i, :2],
                    None if point_labels is None else np.asarray(point_labels)[i: i + 1],
                    boxes[i: i + 1] - offsets[i])
                point_t.append(p)
                box_t.append(b)
            points = None if pts is None else (torch.cat([p[0] for p in point_t]),
                                               torch.cat([p[1] for p in point_t]))
            masks_in = None if mask_logits is None else torch.as_tensor(
                mask_logits[s: s + chunk], dtype=torch.float32, device=self.device)
            low_res, iou = self.decode_tensors(
                emb.embeddings.to(self.device), points, torch.cat(box_t), masks_in,
                None if class_ids is None else np.asarray(class_ids)[list(idx)], multimask)
            if best_only:
                rows = torch.arange(len(iou), device=iou.device)
                best = iou.argmax(dim=1)
                low_res, iou = low_res[rows, best][:, None], iou[rows, best][:, None]
            for k, i in enumerate(idx):
                x0, y0, x1, y1 = windows[i]
                logits = self.sam.postprocess_masks(low_res[k: k + 1], emb.input_sizes[k],
                                                    emb.original_sizes[k])[0]
                masks[i, :, y0:y1, x0:x1] = (logits > self.sam.mask_threshold).cpu()
                if stability_offset is not None:
                    stables.append(calculate_stability_score(
                        logits, self.sam.mask_threshold, stability_offset).cpu())
            ious.append(iou.cpu())
            lows.append(low_res.cpu())
        return Decoded(masks, torch.cat(ious), torch.cat(lows),
                       stability=None if stability_offset is None else torch.stack(stables))


def _num_prompts(points, boxes, mask_logits, class_ids) -> int:
    counts = {len(x) for x in (points[0] if points else None, boxes, mask_logits, class_ids)
              if x is not None}
    if not counts:
        raise ValueError("give at least one prompt: points, boxes or mask logits")
    if len(counts) > 1:
        raise ValueError(f"prompt arrays disagree on the number of prompts: {sorted(counts)}")
    return counts.pop()


def resize_logits(logits: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(N, 1, h, w)`` mask logits to ``size x size`` (bilinear)."""
    return F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
