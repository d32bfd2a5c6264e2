"""Command-line options shared by several commands: one definition (name, choices, default and
help) per option, so that every command spells and explains it the same way. Each maps to a
field of :class:`clipsam.config.ModelConfig`, :class:`~clipsam.config.RunConfig` or
:class:`~clipsam.config.VolumeConfig` of the same name."""

from __future__ import annotations

import argparse
from pathlib import Path

from clipsam.config import DEVICES, RUNTIMES, SEGMENTERS, VOLUME_MODES, VolumeConfig
from clipsam.errors import InputError

SUBSETS = ("all", "train", "test")
"""The parts of clipsam's subject-hash split (:mod:`clipsam.io.splits`) that ``--subset``
chooses from."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, 0 to 65535, got {value}")
    return value


def add_segmenter(parser: argparse.ArgumentParser) -> None:
    """``--segmenter NAME`` (ModelConfig.segmenter)."""
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="litemedsam",
                        help="promptable segmenter (default %(default)s, shipped; the SAM and "
                             "MedSAM ViTs load their official weight files)")


def add_text_model(parser: argparse.ArgumentParser) -> None:
    """``--text-model NAME_OR_DIR`` (ModelConfig.text_model)."""
    parser.add_argument("--text-model", default="builtin", metavar="NAME_OR_DIR",
                        help="'builtin' (the shipped grounding model, default), a model folder "
                             "written by clipsam finetune or adapt, or a CLIP-family name "
                             "(clip-vit-b32, clip-vit-b16, clip-vit-l14, clip-vit-l14-336, "
                             "biomedclip)")


TRAINED_NOTE = "; what the command trains runs in PyTorch on the CPU"
"""What ``--runtime`` and ``--device`` do not change in a command that trains (finetune, adapt,
weak-train): its trainer has no other engine or device."""


def add_runtime(parser: argparse.ArgumentParser, trains: bool = False) -> None:
    """``--runtime`` (ModelConfig.runtime); ``trains``: the command trains (see TRAINED_NOTE)."""
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="engine of the segmenter and the grounding heads: onnx (ONNX "
                             "Runtime), torch, or auto (default: ONNX Runtime for LiteMedSAM "
                             "when it can run on the device, else PyTorch)"
                             + (TRAINED_NOTE if trains else ""))


def add_device(parser: argparse.ArgumentParser, trains: bool = False) -> None:
    """``--device`` (ModelConfig.device); ``trains``: the command trains (see TRAINED_NOTE)."""
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the models run: auto (default: CUDA when torch sees a CUDA "
                             "device, else the CPU), cpu, or cuda (an error without one)"
                             + (TRAINED_NOTE if trains else ""))


def add_presence(parser: argparse.ArgumentParser) -> None:
    """``--presence recall|balanced|precision``: the "not found" operating point
    (RunConfig.presence)."""
    from clipsam.config import PRESENCE_POINTS

    parser.add_argument("--presence", choices=PRESENCE_POINTS, default="recall",
                        help="operating point of 'not found', calibrated per trained target on "
                             "held-out subjects: recall (default) keeps 95%% of present "
                             "targets; balanced maximises balanced accuracy; precision answers "
                             "'not found' on at least 90%% of images without the target")


def add_decoding(parser: argparse.ArgumentParser) -> None:
    """MedCLIP-SAM's optional decoding steps: ``--tta FLIP ...`` (test-time flips of the native
    map, MedClipSamConfig.tta) and ``--mask-prompt`` (MedClipSamConfig.mask_prompt)."""
    parser.add_argument("--tta", nargs="+", choices=("hflip", "vflip"), default=(),
                        metavar="FLIP",
                        help="medclipsam only: also encode the image flipped (hflip, vflip) and "
                             "average the maps; one more encoder pass per flip")
    parser.add_argument("--mask-prompt", action="store_true",
                        help="medclipsam only: decode each box again with its first mask as a "
                             "dense prompt, keeping the output the segmenter rates best; one "
                             "more decoder pass per box")


def decoding_config(method: str, flips: tuple[str, ...] | list[str],
                    mask_prompt: bool = False) -> dict:
    """The run options of ``--tta`` and ``--mask-prompt`` for medclipsam (nothing when neither
    is given); an InputError for another method (the options would do nothing)."""
    from clipsam.errors import InputError

    options = {**({"tta": tuple(dict.fromkeys(flips))} if flips else {}),
               **({"mask_prompt": True} if mask_prompt else {})}
    if options and method != "medclipsam":
        given = " and ".join(o for o, on in (("--tta", flips), ("--mask-prompt", mask_prompt))
                             if on)
        raise InputError(f"{given} applies to medclipsam's decoding; method {method!r} has "
                         "none")
    return options


VOLUME_SETTINGS = {"smoothing": float, "hold": float, "reach": int, "margin": float,
                   "cleanup": bool, "min_component": float}
"""The :class:`~clipsam.config.VolumeConfig` fields ``--volume-setting`` may set, and their
types."""


def add_volume(parser: argparse.ArgumentParser) -> None:
    """``--volume-mode consistent|slices`` and ``--volume-setting NAME=VALUE ...``
    (VolumeConfig; read back with :func:`volume_config`)."""
    parser.add_argument("--volume-mode", choices=VOLUME_MODES, default="consistent",
                        help="volumes (NIfTI, DICOM series): decide along the slice axis with "
                             "the text model's calibrated settings (consistent: presence "
                             "smoothed over neighbouring slices, boxes propagated to weak "
                             "slices, stray 3-D components dropped) or segment each slice on "
                             "its own (slices)")
    parser.add_argument("--volume-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="consistent volumes, repeatable: a setting instead of the text "
                             "model's "
                             f"calibrated one ({', '.join(VOLUME_SETTINGS)}; e.g. "
                             "min_component=0.5 keeps only 3-D components at least half the "
                             "largest's size: fewer false slices, but the target may be "
                             "dropped where it is not the largest)")


def _setting_value(name: str, text: str) -> float | int | bool:
    kind = VOLUME_SETTINGS[name]
    if kind is bool:
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if text.lower() not in words:
            raise InputError(f"volume setting {name} is true or false, got {text!r}")
        return words[text.lower()]
    try:
        return kind(text)
    except ValueError:
        raise InputError(f"volume setting {name} is a {'whole ' if kind is int else ''}number, "
                         f"got {text!r}") from None


def volume_config(args: argparse.Namespace) -> VolumeConfig:
    """The VolumeConfig of ``--volume-mode`` and ``--volume-setting`` (checked by
    VolumeConfig itself; a setting with ``--volume-mode slices`` is an error: it would do
    nothing)."""
    settings = {}
    for item in args.volume_setting:
        name, equals, text = item.partition("=")
        if not equals or name not in VOLUME_SETTINGS:
            raise InputError(f"--volume-setting takes NAME=VALUE with NAME one of "
                             f"{', '.join(VOLUME_SETTINGS)}; got {item!r}")
        settings[name] = _setting_value(name, text)
    if settings and args.volume_mode == "slices":
        raise InputError("--volume-setting applies to --volume-mode consistent, not slices")
    return VolumeConfig(mode=args.volume_mode, **settings)


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: the models' intra-op threads (ModelConfig.threads)."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="intra-op threads of the models, and of training in the commands "
                             "that train (default: ONNX Runtime $CLIPSAM_THREADS or every core "
                             "this process may use, PyTorch its own default)")


def add_weights_dir(parser: argparse.ArgumentParser) -> None:
    """``--weights-dir DIR`` (ModelConfig.weights_dir)."""
    parser.add_argument("--weights-dir", type=Path, default=None, metavar="DIR",
                        help="look for model weight files here first (then "
                             "$CLIPSAM_WEIGHTS_DIR, then the cache; see clipsam models list)")


def add_subset(parser: argparse.ArgumentParser, help: str,
               choices: tuple[str, ...] = SUBSETS) -> None:
    """``--subset``: a part of the subject split (``help`` says what the command does with
    it)."""
    parser.add_argument("--subset", choices=choices, default="all", help=help)


def check_model_option(method: str, model: Path | None) -> None:
    """Refuse ``--model MODEL_DIR`` with a method that runs no model folder of its own (it
    would be ignored)."""
    from clipsam.errors import InputError
    from clipsam.pipelines.registry import PIPELINES

    spec = PIPELINES.get(method)
    if model is not None and not (spec is not None and spec.own_model):
        owners = " or ".join(name for name, s in PIPELINES.items() if s.own_model)
        raise InputError(f"--model only applies to --method {owners}, not {method}")
