"""SSL Playground core: data, augmentations, models, losses, one training engine, evaluation.

Never imports gradio: the app, the CLI and the tests all drive this package the same way.
"""

__version__ = "0.1.0"

TASKS = ("rotation", "siamese", "simclr")
TASK_TITLES = {
    "rotation": "rotation prediction (RotNet)",
    "siamese": "Siamese contrastive (pairs from labels)",
    "simclr": "SimCLR (no labels)",
}
DATASETS = ("digits", "cifar10", "folder")
DATASET_TITLES = {"cifar10": "CIFAR-10", "digits": "digits", "tiny-imagenet": "Tiny ImageNet"}  # a data set as people write it; folders keep their name


def dataset_title(dataset: str) -> str:
    """`cifar10` -> `CIFAR-10`: how captions, pickers and cards name a data set."""
    return DATASET_TITLES.get(dataset, dataset)
