"""awp: adversarial training with Adversarial Weight Perturbation (Wu, Xia, Wang, NeurIPS 2020).

Submodules: data, models, attacks, methods, perturbation (AWP), train, checkpoint, evaluate.
"""
__version__ = "0.1.0"
