import numpy as np
import torch
from PIL import Image

from pseudolabel.models.predictor import PromptedSam
from pseudolabel.models.sam import build_sam
from pseudolabel.teacher.cache import EmbeddingCache, file_key


def test_cache_round_trip_keys_and_growth(tmp_path):
    predictor = PromptedSam(build_sam("tiny"))
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (60, 80, 3), np.uint8)).save(p)
        paths.append(p)
    items = [(f"{i}-{file_key(p)}", p) for i, p in enumerate(paths)]
    cache = EmbeddingCache(tmp_path / "c", "tiny-abc", 2, (64, 20, 20))
    assert cache.fill(items[:2], predictor, progress=False) == 2
    again = EmbeddingCache(tmp_path / "c", "tiny-abc", 3, (64, 20, 20))  # reopen, grow
    assert again.fill(items, predictor, progress=False) == 1  # only the new image is encoded
    emb = again.get(items[0][0])
    direct = predictor.encode([np.array(Image.open(paths[0]))])
    torch.testing.assert_close(emb.embeddings, direct.embeddings, atol=2e-2, rtol=1e-2)
    assert emb.original_sizes == [(60, 80)] and emb.input_sizes == direct.input_sizes
    # another encoder gets another folder; a changed image gets another key
    other = EmbeddingCache(tmp_path / "c", "tiny-def", 3, (64, 20, 20))
    assert items[0][0] not in other
    Image.new("RGB", (80, 60)).save(paths[0])
    assert f"0-{file_key(paths[0])}" not in again
