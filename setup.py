"""kitpkg: shards, streaming loader and K-fold training for Kaggle/Colab image competitions."""
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', Path("kitpkg/_version.py").read_text()).group(1)

# Ranges only: Colab and Kaggle ship torch already; a pin would force a multi-GB reinstall. Only what kitpkg/ imports
# (tests/test_packaging.py checks it): every extra package here is one more that can clash with a platform's own.
install_requires = [
    "torch>=2.1",
    # 2.5: resuming from a checkpoint saved on an epoch's last batch is exact from 2.5.0 on; 2.2.5-2.4.0 re-run a
    # batch there (tests/test_loader_resume.py, measured with each version)
    "pytorch-lightning>=2.5,<3",
    "timm>=0.9.12",
    "torchmetrics>=1.0",
    "opencv-python-headless>=4.5",  # cv2: decode fallback and resize
    "gdown>=4.7",
    "simplejpeg>=1.7",
    "crc32c>=2.3",
    "protobuf>=4.22",  # message_factory.GetMessageClass (3.20 and 4.21 lack it); any newer one the platform has
    "numpy>=1.23",
    "pillow>=9.0",
    "pyyaml>=6.0",
    "tqdm>=4.64",
    "matplotlib>=3.6",
    "pandas>=1.5",
    "fsspec>=2023.1",
    # data.aug.cpu: A.from_dict and Compose.set_random_seed (2.x; Colab and Kaggle ship 2.0.8)
    "albumentations>=2.0",
]

# No `tf` extra: tensorflow-cpu beside Colab's/Kaggle's tensorflow shares its module folder and upgrades protobuf,
# breaking preinstalled packages; kitpkg never imports TensorFlow (its TFRecord codec is its own).
extras_require = {
    "test": [
        "pytest>=7.4",
        "pytest-timeout>=2.1",
        "timm>=1.0.11",  # the tests' tiny test_resnet model (the kit itself runs on 0.9.12: `kitpkg demo` checked)
        "tensorflow-cpu>=2.13",  # interop only; never imported by the torch path
        "webdataset>=0.2.86",  # interop: tars written by webdataset's TarWriter, and the loader benchmark's peer
        "tfrecord>=1.14",  # benchmark peer
        "scikit-learn>=1.2",  # the benchmarks' photo-like source images
        "psutil>=5.9",  # the loader benchmark's RSS figures
        "nbclient>=0.9",
        "nbformat>=5.9",
        "ipykernel>=6.25",
        "lightgbm>=4",  # `kitpkg stack`'s default level-2 model (tests/test_stack.py)
        "tensorboard>=2.14",  # train.logger: tensorboard (tests/test_loggers.py)
        "wandb>=0.16",  # train.logger: wandb, run offline in tests/test_loggers.py
    ],
    # `kitpkg stack`: LightGBM (the default level-2 model; Colab and Kaggle ship it), scikit-learn (--model linear)
    "stack": ["lightgbm>=4", "scikit-learn>=1.2"],
}

setup(
    name="kitpkg",
    version=version,
    description="Notebook-portable kit for image-classification competitions: shards, loader, K-fold CV on Lightning + timm",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["kitpkg", "kitpkg.*"]),
    python_requires=">=3.9",
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={"console_scripts": ["kitpkg=kitpkg.cli:main"]},
    include_package_data=True,
    # the templates `kitpkg init --from NAME` writes out; the augmentation presets `data.aug.preset: NAME` names
    package_data={"kitpkg.configs": ["*.yaml"], "kitpkg.augment.presets": ["*.yaml"]},
)
