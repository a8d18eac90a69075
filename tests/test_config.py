from pathlib import Path

import pytest

from pseudolabel.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_default_is_the_synthetic_world_and_configs_file_matches():
    default = load_config(None)
    spelled = load_config(REPO / "configs" / "synthetic.yaml")
    assert default.synthetic == spelled.synthetic and default.data == spelled.data
    assert default.run_dir == spelled.run_dir and default.models == spelled.models


def test_real_data_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: t.json, val: v.json, images: imgs}\nrun_dir: r\n")
    cfg = load_config(path)
    assert cfg.synthetic is None and cfg.data.images == Path("imgs") and cfg.run_dir == Path("r")


@pytest.mark.parametrize("text, message", [
    ("data: {train: t.json}", "needs keys \\['val', 'images'\\]"),
    ("- a list", "mapping"),
    ("data: [unclosed", "not valid YAML"),
])
def test_bad_configs(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)
    with pytest.raises(ValueError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
