import os

import pytest
import torch

from pseudolabel.models.checkpoints import load_state_dict, load_weights, save_safetensors
from pseudolabel.models.sam import build_sam


class _Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_planted_malicious_checkpoint_is_refused_and_does_not_run(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "x": _Payload(sentinel)}, path)
    with pytest.raises(ValueError, match="evil.pth: refused: .*would run code"):
        load_state_dict(path)
    with pytest.raises(ValueError, match="refused"):
        build_sam("tiny", checkpoint=path)
    assert not sentinel.exists()


def test_safetensors_and_plain_state_dict_round_trip(tmp_path):
    sam = build_sam("tiny")
    state = sam.state_dict()
    save_safetensors(tmp_path / "w.safetensors", state)
    torch.save(state, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        again = build_sam("tiny", checkpoint=tmp_path / name)
        for k, v in again.state_dict().items():
            assert torch.equal(v, state[k]), k


def test_strict_loading_lists_missing_and_unexpected_keys(tmp_path):
    sam = build_sam("tiny")
    state = dict(sam.state_dict())
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \[mask_decoder.iou_token.weight\], "
                                         r"unexpected keys \[extra.weight\]"):
        load_weights(sam, state, "test")


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable PyTorch checkpoint"),       # empty file
    (b"garbage bytes", "not a readable|refused"),      # not a pickle/zip
])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_state_dict(path)
    with pytest.raises(ValueError, match="checkpoint file not found"):
        load_state_dict(tmp_path / "absent.safetensors")
