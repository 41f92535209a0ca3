"""A tiny style catalogue and a Hugging Face cache filled by hand in the real layout, for the weights tests.

Layout written (as huggingface_hub writes it): models--org--name/blobs/<sha256>, snapshots/<commit>/<file>
as a relative symlink to the blob, refs/main holding the commit.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

COMMIT_SD15 = "1" * 40
COMMIT_LCM = "2" * 40
COMMIT_TAESD = "3" * 40
COMMIT_MOTION = "4" * 40
COMMIT_DEPTH = "5" * 40
COMMIT_ALPHA = "6" * 40
COMMIT_LORA = "7" * 40  # what refs/main points at for the LoRA repo (the catalogue says "main")

CONTENT: dict[tuple[str, str], bytes] = {
    ("tiny/sd15", "text_encoder/config.json"): b'{"hidden_size": 32}',
    ("tiny/sd15", "unet/config.json"): b'{"sample_size": 8}',
    ("tiny/sd15", "unet/diffusion_pytorch_model.safetensors"): b"unet-weights-" * 50,
    ("tiny/lcm", "pytorch_lora_weights.safetensors"): b"lcm-lora-" * 40,
    ("tiny/taesd", "config.json"): b'{"latent_channels": 4}',
    ("tiny/taesd", "diffusion_pytorch_model.safetensors"): b"taesd-" * 30,
    ("tiny/motion", "live2diff.ckpt"): b"motion-" * 60,
    ("tiny/depth", "config.json"): b'{"model_type": "dpt"}',
    ("tiny/alpha", "alpha.safetensors"): b"alpha-checkpoint-" * 70,
    ("tiny/lora", "beta.safetensors"): b"beta-lora-" * 20,
}
COMMITS = {
    "tiny/sd15": COMMIT_SD15,
    "tiny/lcm": COMMIT_LCM,
    "tiny/taesd": COMMIT_TAESD,
    "tiny/motion": COMMIT_MOTION,
    "tiny/depth": COMMIT_DEPTH,
    "tiny/alpha": COMMIT_ALPHA,
    "tiny/lora": COMMIT_LORA,
}


def sha(repo: str, filename: str) -> str:
    return hashlib.sha256(CONTENT[(repo, filename)]).hexdigest()


def size(repo: str, filename: str) -> int:
    return len(CONTENT[(repo, filename)])


def catalogue_data() -> dict[str, Any]:
    """The TOML tables of a catalogue whose every file is in CONTENT (sha256 and sizes on some files)."""
    lcm = ("tiny/lcm", "pytorch_lora_weights.safetensors")
    motion = ("tiny/motion", "live2diff.ckpt")
    alpha = ("tiny/alpha", "alpha.safetensors")
    return {
        "schema": 1,
        "shared": {
            "sd15": {
                "title": "SD1.5 parts",
                "licence": "creativeml-openrail-m",
                "repo": "tiny/sd15",
                "revision": COMMIT_SD15,
                "files": ["text_encoder/config.json", "unet/config.json"],
                "size_mb": 0.001,
            },
            "lcm_lora": {
                "title": "LCM-LoRA",
                "licence": "openrail++",
                "repo": lcm[0],
                "revision": COMMIT_LCM,
                "files": [lcm[1]],
                "sha256": {lcm[1]: sha(*lcm)},
                "sizes": {lcm[1]: size(*lcm)},
            },
            "taesd": {
                "title": "TAESD",
                "licence": "mit",
                "repo": "tiny/taesd",
                "revision": COMMIT_TAESD,
                "files": ["config.json", "diffusion_pytorch_model.safetensors"],
            },
            "motion": {
                "title": "motion",
                "licence": "apache-2.0",
                "repo": motion[0],
                "revision": COMMIT_MOTION,
                "files": [motion[1]],
                "sha256": {motion[1]: sha(*motion)},
                "sizes": {motion[1]: size(*motion)},
            },
            "depth": {
                "title": "depth",
                "licence": "apache-2.0",
                "repo": "tiny/depth",
                "revision": COMMIT_DEPTH,
                "files": ["config.json"],
            },
        },
        "styles": {
            "alpha": {
                "title": "Alpha",
                "prompt": "alpha style",
                "t_index_list": [30, 40],
                "clip_skip": 2,
                "licence": "creativeml-openrail-m",
                "base": {
                    "format": "single_file",
                    "repo": alpha[0],
                    "revision": COMMIT_ALPHA,
                    "files": [alpha[1]],
                    "sha256": {alpha[1]: sha(*alpha)},
                    "sizes": {alpha[1]: size(*alpha)},
                },
            },
            "beta": {
                "title": "Beta",
                "prompt": "beta style",
                "t_index_list": [25, 35, 45],
                "clip_skip": 1,
                "licence": "bespoke",
                "base": {
                    "repo": "tiny/sd15",
                    "revision": COMMIT_SD15,
                    "files": ["unet/diffusion_pytorch_model.safetensors"],
                },
                "lora": {
                    "repo": "tiny/lora",
                    "revision": "main",
                    "checked": False,
                    "note": "branch only",
                    "file": "beta.safetensors",
                    "scale": 0.7,
                },
            },
            "gamma": {
                "title": "Gamma",
                "prompt": "gamma style",
                "t_index_list": [30],
                "clip_skip": 1,
                "licence": "creativeml-openrail-m",
                "base": {
                    "repo": "tiny/sd15",
                    "revision": COMMIT_SD15,
                    "files": ["unet/diffusion_pytorch_model.safetensors"],
                },
            },
        },
    }


def repo_folder(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def put(cache: Path, repo: str, filename: str, content: bytes | None = None) -> Path:
    """Write one file into the cache as huggingface_hub does; return its snapshot path."""
    data = CONTENT[(repo, filename)] if content is None else content
    folder = repo_folder(cache, repo)
    commit = COMMITS[repo]
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    pointer = folder / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return pointer


SHARED_FILES = [
    ("tiny/sd15", "text_encoder/config.json"),
    ("tiny/sd15", "unet/config.json"),
    ("tiny/lcm", "pytorch_lora_weights.safetensors"),
    ("tiny/taesd", "config.json"),
    ("tiny/taesd", "diffusion_pytorch_model.safetensors"),
    ("tiny/motion", "live2diff.ckpt"),
    ("tiny/depth", "config.json"),
]
STYLE_FILES = {
    "alpha": [("tiny/alpha", "alpha.safetensors")],
    "beta": [("tiny/sd15", "unet/diffusion_pytorch_model.safetensors"), ("tiny/lora", "beta.safetensors")],
    "gamma": [("tiny/sd15", "unet/diffusion_pytorch_model.safetensors")],
}


def fill(cache: Path, *styles: str) -> None:
    """Put the shared parts and the named styles' files into the cache."""
    for repo, filename in SHARED_FILES:
        put(cache, repo, filename)
    for style in styles:
        for repo, filename in STYLE_FILES[style]:
            put(cache, repo, filename)
