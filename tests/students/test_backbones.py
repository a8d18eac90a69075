"""ImageNet ResNet weights into both students: torchvision files, transformers folders."""

import pytest
import torch
from torchvision.models import resnet18, resnet50

from pseudolabel.stages.train_student import StudentConfig, build_student
from pseudolabel.students.backbones import hf_to_torchvision, torchvision_to_hf


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory):
    """A torchvision ResNet-50 state dict (random weights), as resnet50-11ad3fa6.pth is."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("bb") / "resnet50-test.pth"
    torch.save(resnet50().state_dict(), path)
    return path


@pytest.mark.parametrize("arch", ["condinst", "mask2former"])
def test_a_torchvision_resnet50_file_loads_strictly_into_the_student(arch, r50_file):
    ref = torch.load(r50_file, weights_only=True)
    cfg = StudentConfig(arch=arch, preset="r50", num_queries=5, backbone_checkpoint=str(r50_file))
    model = build_student(cfg, 3)
    if arch == "condinst":
        got = model.body.state_dict()
        torch.testing.assert_close(got["layer3.5.conv2.weight"], ref["layer3.5.conv2.weight"])
        # the loaded statistics are frozen (detectron2's FrozenBN for ImageNet backbones)
        assert type(model.body.bn1).__name__ == "FrozenBatchNorm2d"
        torch.testing.assert_close(got["bn1.running_var"], ref["bn1.running_var"])
    else:
        enc = model.model.pixel_level_module.encoder.state_dict()
        torch.testing.assert_close(enc["encoder.stages.2.layers.5.layer.1.convolution.weight"],
                                   ref["layer3.5.conv2.weight"])
        torch.testing.assert_close(enc["encoder.stages.0.layers.0.shortcut.normalization.bias"],
                                   ref["layer1.0.downsample.1.bias"])
    names = [n for n, p in model.named_parameters()]  # frozen BN holds no parameters
    assert not any(n.endswith("bn1.weight") for n in names if n.startswith("body."))


@pytest.mark.parametrize("arch", ["condinst", "mask2former"])
def test_a_file_of_another_architecture_names_its_keys(arch, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)  # basic blocks: conv1/conv2, no conv3
    cfg = StudentConfig(arch=arch, preset="r50", num_queries=5, backbone_checkpoint=str(path))
    with pytest.raises(ValueError, match="resnet18.pth: weights do not fit .*missing keys "
                                         "\\[.*conv3.*unexpected keys|missing keys"):
        build_student(cfg, 3)


def test_a_transformers_folder_loads_too(tmp_path, r50_file):
    from safetensors.torch import save_file

    ref = torch.load(r50_file, weights_only=True)
    hf = {"resnet." + k: v.contiguous() for k, v in torchvision_to_hf(
        {k: v for k, v in ref.items() if not k.startswith("fc.")}).items()}
    hf["classifier.1.weight"] = torch.zeros(1000, 2048)
    (tmp_path / "resnet-50").mkdir()
    save_file(hf, str(tmp_path / "resnet-50" / "model.safetensors"))
    model = build_student(StudentConfig(arch="condinst", preset="r50",
                                        backbone_checkpoint=str(tmp_path / "resnet-50")), 3)
    torch.testing.assert_close(model.body.state_dict()["layer4.2.conv3.weight"],
                               ref["layer4.2.conv3.weight"])


def test_name_maps_invert_each_other():
    state = {k: v for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}
    assert hf_to_torchvision(torchvision_to_hf(state)).keys() == state.keys()


def test_backbone_lr_factor_only_with_a_pretrained_backbone(r50_file):
    from pseudolabel.stages.train_student import _optimizer

    scratch = StudentConfig(arch="condinst", backbone_lr_factor=0.1)
    opt = _optimizer(build_student(scratch, 3), scratch)
    assert [g["lr_factor"] for g in opt.param_groups] == [1.0, 1.0]
    pre = StudentConfig(arch="condinst", preset="r50", backbone_lr_factor=0.1,
                        backbone_checkpoint=str(r50_file))
    opt = _optimizer(build_student(pre, 3), pre)
    assert [g["lr_factor"] for g in opt.param_groups] == [0.1, 1.0]


@pytest.mark.parametrize("arch", ["condinst", "mask2former"])
def test_the_student_seed_sets_its_random_init(arch):
    """``student.seed`` reaches the weights, so seeds give independent runs (it once fixed
    only the data order: both students were built from seed 0)."""
    def weights(seed):
        torch.manual_seed(123)  # whatever the caller's generator holds
        cfg = StudentConfig(arch=arch, preset="tiny", num_queries=5, decoder_layers=2, seed=seed)
        return torch.cat([p.detach().flatten() for p in build_student(cfg, 3).parameters()])

    a = weights(0)
    assert torch.equal(a, weights(0))
    assert not torch.equal(a, weights(1))
