"""In-memory data sets, deterministic batching and augmentation, and RST's pseudo-labeled data.

Data sets used by Wu, Xia & Wang, "Adversarial Weight Perturbation Helps Robust Generalization"
(NeurIPS 2020): CIFAR-10, CIFAR-100 and SVHN (through torchvision, downloaded only when asked),
plus scikit-learn's offline 8x8 digits for the CPU demo (1797 images, shipped with scikit-learn).

Every split lives in memory as one tensor (uint8 for the photo data sets, as the original RST
code keeps its 500K TinyImages; float32 in [0, 1] for digits). Batches are drawn by index and
augmented on the batch, vectorized, on whatever device the batch lives on (airbench style), so
there are no DataLoader workers. Order and augmentation come from a generator seeded by
(seed, epoch) only, so a resumed run sees exactly the batches an uninterrupted run would have,
and with ``world_size > 1`` the ranks' shares of a global batch add up to the single-process
batch, augmentation included.

RST (Carmon et al. 2019, "Unlabeled Data Improves Adversarial Robustness"):
:func:`iterate_mixed_batches` draws each batch as labeled images from a per-epoch
permutation plus a fraction ``unsup_fraction`` of pseudo-labeled images drawn with replacement;
:func:`pseudo_label` labels an unlabeled pool with a standard model (from a checkpoint file:
:func:`awp.loaded.pseudo_label_checkpoint`); :func:`load_unlabeled`
reads Carmon et al.'s pickle (through a restricted unpickler) or our ``.npz``.

Validation hold-out: Rice et al. ("Overfitting in adversarially robust deep learning") keep
1000 training images aside for early stopping; the split is drawn with a fixed ``split_seed``
independent of the run seed, so every run of a comparison selects on the same images.

Modules: :mod:`awp.data.images` (the containers), :mod:`awp.data.registry` (:data:`DATASETS`,
the registry of data sets, each spec with its own loader, and :func:`build_dataset`),
:mod:`awp.data.batching` (order, RST mixing, sharding), :mod:`awp.data.augment` (crop, flip,
rotation on the batch) and :mod:`awp.data.unlabeled` (RST's pseudo-labeled data). Everything
public is importable from ``awp.data``.
"""
from awp.data.augment import Augmentation, augment_batch
from awp.data.batching import iterate_batches, iterate_mixed_batches, num_batches
from awp.data.images import SPLITS, DataSplits, ImageSet
from awp.data.registry import DATASETS, DatasetSpec, build_dataset, dataset_spec, list_datasets
from awp.data.unlabeled import load_unlabeled, pseudo_label, save_unlabeled_npz

__all__ = ["DATASETS", "SPLITS", "Augmentation", "DataSplits", "DatasetSpec", "ImageSet", "augment_batch",
           "build_dataset", "dataset_spec", "iterate_batches", "iterate_mixed_batches", "list_datasets",
           "load_unlabeled", "num_batches", "pseudo_label", "save_unlabeled_npz"]
