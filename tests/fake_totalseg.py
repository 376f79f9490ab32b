"""Randomly initialised nnU-Net v2 model folders in TotalSegmentator's on-disk layout.

``<weights>/<DatasetXXX_name>/<trainer>__nnUNetPlans__3d_fullres/`` with
``dataset.json``, ``plans.json`` and ``fold_0/checkpoint_final.pth``: what
``totalseg_download_weights`` unpacks, with a tiny PlainConvUNet so that the
real TotalSegmentator + nnU-Net inference code runs on CPU in seconds. The
networks are untrained: tests built on them check plumbing (grid, dtype,
label names), never accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path

CT_INTENSITY = {"max": 3071.0, "mean": 60.0, "median": 50.0, "min": -1024.0,
                "percentile_00_5": -1000.0, "percentile_99_5": 1500.0, "std": 300.0}


def plans_for(dataset_name: str, spacing_mm: list[float], patch: list[int]) -> dict:
    n_stages = 3
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [4, 8, 16],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n_stages,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [1] * n_stages,
            "n_conv_per_stage_decoder": [1] * (n_stages - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing_mm,
        "original_median_shape_after_transp": [128, 128, 128],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": patch,
            "median_image_size_in_voxels": [128, 128, 128],
            "spacing": spacing_mm,
            "normalization_schemes": ["CTNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": resample,
            "resampling_fn_seg_kwargs": {**resample, "is_seg": True, "order": 1},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {**resample, "order": 1},
            "architecture": arch,
            "batch_dice": False,
        }},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": CT_INTENSITY},
    }


def write_model(weights_root: Path, model_id: int, trainer: str, class_names: dict[int, str],
                spacing_mm: list[float], patch: list[int] = (32, 32, 32), seed: int = 0,
                bias: dict[int, float] | None = None) -> Path:
    """Write one model folder; ``bias`` adds a constant to chosen output logits
    (to make a crop model cover the scan with one organ, for instance)."""
    import torch
    import totalsegmentator.nnunet as ts_nnunet
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS

    folder_name = TASK_ID_WEIGHTS_CONFIGS[model_id]["foldername"]
    model_dir = Path(weights_root) / folder_name / f"{trainer}__nnUNetPlans__3d_fullres"
    (model_dir / "fold_0").mkdir(parents=True, exist_ok=True)
    dataset = {"channel_names": {"0": "CT"},
               "labels": {"background": 0, **{n: i for i, n in sorted(class_names.items())}},
               "numTraining": 1, "file_ending": ".nii.gz"}
    plans = plans_for(folder_name, list(spacing_mm), list(patch))
    (model_dir / "dataset.json").write_text(json.dumps(dataset, indent=1))
    (model_dir / "plans.json").write_text(json.dumps(plans, indent=1))
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    trainer_cls = ts_nnunet.custom_trainers.get(trainer)
    if trainer_cls is None:
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as trainer_cls
    torch.manual_seed(seed)
    net = trainer_cls.build_network_architecture(
        pm, cm, 1, len(class_names) + 1, enable_deep_supervision=False)
    state = net.state_dict()
    if bias:
        last = [k for k in state if k.endswith(".bias") and state[k].shape[0] == len(class_names) + 1][-1]
        for cls_id, b in bias.items():
            state[last][cls_id] += b
    torch.save({"network_weights": state, "trainer_name": trainer,
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0,
                              "dataset_json": dataset, "device": "cpu"},
                "inference_allowed_mirroring_axes": None},
               model_dir / "fold_0" / "checkpoint_final.pth")
    return model_dir
