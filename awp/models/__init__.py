"""Architectures used by "Adversarial Weight Perturbation Helps Robust Generalization".

Wu, Xia & Wang (NeurIPS 2020) train PreActResNet-18 (He et al. 2016, "Identity Mappings in Deep
Residual Networks") exactly as Rice, Wong & Kolter (ICML 2020, "Overfitting in adversarially
robust deep learning") do, and WideResNet-34-10 / WideResNet-28-10 (Zagoruyko & Komodakis 2016)
in the variant of the TRADES (Zhang et al. 2019), MART (Wang et al. 2020) and RST (Carmon et al.
2019) official code. ``smallcnn`` is ours: a three-stage conv net for the offline 8x8 digits.
One module per architecture (:mod:`~awp.models.smallcnn`, :mod:`~awp.models.preactresnet`,
:mod:`~awp.models.wideresnet`), each registering itself in :data:`MODELS`
(:mod:`~awp.models.registry`) with its own arguments and their checks.

Every model takes images in [0, 1] and normalizes them in its first layer (:class:`Normalize`),
whose mean/std are non-persistent buffers: the state dict holds only the network, and the
mean/std come back from ``arch_kwargs``, which checkpoints store next to it. Attacks then work in
pixel space with no normalization to forget.

    model = build_model("preactresnet18", num_classes=10, mean=[0.49, 0.48, 0.45], std=[0.2] * 3)
    same = build_model(model.arch, **model.arch_kwargs)   # how checkpoints rebuild a model
"""
from awp.models.normalize import Normalize
from awp.models.preactresnet import PreActBlock, PreActResNet18
from awp.models.registry import MODELS, Kwarg, ModelSpec, build_model, list_models
from awp.models.smallcnn import SmallCNN
from awp.models.wideresnet import BasicBlock, NetworkBlock, WideResNet

__all__ = [
    "MODELS",
    "BasicBlock",
    "Kwarg",
    "ModelSpec",
    "NetworkBlock",
    "Normalize",
    "PreActBlock",
    "PreActResNet18",
    "SmallCNN",
    "WideResNet",
    "build_model",
    "list_models",
]
