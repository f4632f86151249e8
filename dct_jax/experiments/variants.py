"""How an experiment's cell differs from its Table 3 cell: the variant part of a cell's name.

A cell is ``INPUT-SUPERVISION[-VARIANT]`` (``runner.Cell``); the variant changes the
Table 3 cell's config (``configs/default.py:apply_protocol``) in one respect:

  ``3d_F``              the in-the-wild 3D labels on a fixed fraction F of the records
                        (by record id), e.g. ``3d_0.5`` (the paper's Figure 4);
  ``pose_only``         the in-the-wild SMPL label supervises the pose alone (its betas term 0),
  ``shape_only``        or the shape alone (its pose term 0) (Table 4);
  ``uv_noise_S``        Gaussian noise of std S (0-255) on the U, V of the dense keypoints'
                        source, fixed per record (Figure 5);
  ``dense_keep_F``      a fixed fraction F of each record's dense keypoints kept (Figure 6);
  ``predicted_iuv``     every IUV map made DensePose-like (``dct_jax.iuv_errors.DENSEPOSE_LIKE``),
                        refined (Sec. 3.2), and the dense keypoints sampled from it; on real
                        data (UP-3D, Human3.6M) the maps are DensePose's predictions already,
                        so they are only refined and sampled, as in the paper;
  ``predicted_iuv_raw`` the same without the refinement;
  ``exact_iuv``         dense keypoints sampled from the exact IUV map (refined, a no-op on
                        exact maps) instead of the records' dense annotations (generated
                        data only: real data has no exact maps).
"""

from __future__ import annotations

import dataclasses
import re

import ml_collections

_PATTERNS = {
    "3d": re.compile(r"3d_(?P<value>[0-9.]+)"),
    "uv_noise": re.compile(r"uv_noise_(?P<value>[0-9.]+)"),
    "dense_keep": re.compile(r"dense_keep_(?P<value>[0-9.]+)"),
}
NAMED = ("pose_only", "shape_only", "predicted_iuv", "predicted_iuv_raw", "exact_iuv")
GENERATED_ONLY = ("exact_iuv",)  # variants that need the generated datasets' exact IUV maps


def _wild_source(config: ml_collections.ConfigDict, variant: str, **changes) -> None:
    """Replaces the in-the-wild (first) source of ``config.train_mixture`` with ``changes`` applied."""
    from dct_jax.data import pipeline  # noqa: PLC0415

    sources = pipeline.parse_sources(config.train_mixture, config.train_split)
    if "3d" not in (sources[0].labels or ()):
        raise ValueError(f"variant {variant!r} changes the in-the-wild 3D labels, but supervision "
                         f"{config.supervision!r} has none (use 3d, 3d_dense or 3d20_dense)")
    sources[0] = dataclasses.replace(sources[0], **changes)
    config.train_mixture = ",".join(map(str, sources))


def _rendered_iuv(config: ml_collections.ConfigDict) -> bool:
    """Whether every dataset ``config`` reads has exact (rendered) IUV maps: the generated ones (synthetic,
    studio) do; a real one's (UP-3D, Human3.6M, built with ``--iuv_dir``) are DensePose's predictions.
    ValueError for a mixture of both, whose maps no single variant describes."""
    from dct_jax import train  # noqa: PLC0415

    names = {config.dataset, *(e.name for e in train.mixture_sources(config))}
    generated = set(train.generated_datasets(config))
    if generated and generated != names:
        raise ValueError(f"the cell reads generated ({', '.join(sorted(generated))}) and real "
                         f"({', '.join(sorted(names - generated))}) datasets at once: their IUV maps are exact "
                         "renderings and DensePose predictions, which no one IUV variant describes")
    return bool(generated)


def _fraction(variant: str, value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"variant {variant!r}: {value} is not a fraction in [0, 1]")
    return number


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> None:
    """Changes a Table 3 cell's ``config`` as ``variant`` says ("" changes nothing); ValueError for an unknown one."""
    if not variant:
        return
    if variant in ("pose_only", "shape_only"):
        _wild_source(config, variant, smpl_terms=variant.split("_")[0])
        return
    if variant in ("predicted_iuv", "predicted_iuv_raw", "exact_iuv"):
        if config.loss.dense <= 0:
            raise ValueError(f"variant {variant!r} changes where the dense keypoints come from, but supervision "
                             f"{config.supervision!r} has no dense loss")
        rendered = _rendered_iuv(config)
        if variant == "exact_iuv" and not rendered:
            raise ValueError(f"variant {variant!r} needs exact IUV maps, which only the generated datasets have; "
                             "a real dataset's IUV maps are DensePose's predictions (use predicted_iuv or "
                             "predicted_iuv_raw)")
        config.data.dense_source = "iuv"
        config.data.refine_iuv = variant != "predicted_iuv_raw"
        if variant != "exact_iuv" and rendered:  # a real dataset's maps are predictions already
            from dct_jax import iuv_errors  # noqa: PLC0415

            config.data.iuv_errors.update(dataclasses.asdict(iuv_errors.DENSEPOSE_LIKE))
        return
    for kind, pattern in _PATTERNS.items():
        match = pattern.fullmatch(variant)
        if not match:
            continue
        value = match.group("value")
        if kind == "3d":
            _wild_source(config, variant, fraction_3d=_fraction(variant, value))
        elif kind == "dense_keep":
            config.data.dense_keep = _fraction(variant, value)
        else:
            config.data.dense_uv_noise = float(value)
        if kind != "3d" and config.loss.dense <= 0:
            raise ValueError(f"variant {variant!r} changes the dense keypoints, but supervision "
                             f"{config.supervision!r} has no dense loss")
        return
    raise ValueError(f"unknown cell variant {variant!r}; expected 3d_F, uv_noise_S, dense_keep_F or one of "
                     f"{list(NAMED)}")
