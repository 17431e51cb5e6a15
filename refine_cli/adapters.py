"""Refine the output of other detectors in place of their masks, without importing their libraries.

Each adapter takes a :class:`~refine_cli.api.MaskRefiner`, the image the detector saw and its
output object, reads the structure by attribute/key (duck typing) and returns a new object of
the same structure whose masks are the refined ones; the input object is left unchanged.

- torchvision detection models (Mask R-CNN): :func:`refine_torchvision`
- detectron2 ``Instances``: :func:`refine_detectron2`
- Ultralytics ``Results`` (YOLO-seg): :func:`refine_ultralytics`
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import torch

from .api import MaskRefiner


def rgb_uint8(image) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB: from (H, W, 3) uint8, or the (3, H, W) float tensor in [0, 1]
    that torchvision detection models take."""
    if isinstance(image, torch.Tensor):
        if image.is_floating_point() and image.ndim == 3 and image.shape[0] == 3:
            image = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
        image = image.detach().cpu().numpy()
    return np.ascontiguousarray(image)


def refine_torchvision(refiner: MaskRefiner, image, output: dict, mask_threshold: float = 0.5) -> dict:
    """One image's output of a torchvision detection model, masks refined.

    image: the (3, H, W) float tensor in [0, 1] the model took, or (H, W, 3) uint8 RGB.
    output: {"boxes": (N, 4) xyxy, "masks": (N, 1, H, W) float probabilities, "scores": (N,), ...};
    coarse masks are ``masks >= mask_threshold``. Returns a copy of ``output`` whose "masks" are the
    refined (N, 1, H, W) masks as 0/1 in the input's dtype and device (so the usual ``> 0.5`` holds).
    """
    masks = output["masks"]
    refined = refiner.refine(rgb_uint8(image), output["boxes"], masks[:, 0] >= mask_threshold)
    return {**output, "masks": refined[:, None].to(masks.dtype)}


def refine_detectron2(refiner: MaskRefiner, image, instances):
    """detectron2 ``Instances`` of one image (``pred_boxes.tensor`` (N, 4) xyxy, ``pred_masks``
    (N, H, W) bool, ``image_size`` (H, W)), masks refined.

    image: (H, W, 3) uint8 RGB (detectron2's predictors take BGR: pass ``image[..., ::-1]``).
    Returns new ``Instances`` with every field of the input and the refined (N, H, W) bool
    ``pred_masks`` on the input masks' device.
    """
    masks = instances.pred_masks
    if tuple(masks.shape[1:]) != tuple(instances.image_size):
        raise ValueError(f"pred_masks are {tuple(masks.shape[1:])} but image_size is {tuple(instances.image_size)}")
    refined = refiner.refine(rgb_uint8(image), instances.pred_boxes.tensor, masks)
    out = type(instances)(instances.image_size, **instances.get_fields())
    out.pred_masks = refined
    return out


def unletterbox(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, h, w) masks on an Ultralytics letterboxed input (image scaled by one gain to fit,
    centred, padded) -> (N, height, width) bool on the original image, as Ultralytics'
    ``scale_image`` maps them (crop the padding, bilinear resize, >= 0.5)."""
    n, h, w = masks.shape
    gain = min(h / height, w / width)
    pad_w, pad_h = (w - width * gain) / 2, (h - height * gain) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    bottom, right = round(h - pad_h + 0.1), round(w - pad_w + 0.1)
    out = np.zeros((n, height, width), bool)
    for i, m in enumerate(masks):
        crop = np.ascontiguousarray(m[top:bottom, left:right], dtype=np.float32)
        out[i] = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
    return out


def refine_ultralytics(refiner: MaskRefiner, results, image=None):
    """One Ultralytics ``Results`` (``boxes.xyxy`` (N, 4) in original-image pixels, ``masks.data``
    (N, h, w) at the model's letterboxed input size, ``orig_shape`` (H, W), ``orig_img`` BGR),
    masks refined.

    image: (H, W, 3) uint8 RGB [default: ``results.orig_img`` converted from BGR]. The coarse
    masks are mapped back to the image (:func:`unletterbox`). Returns a shallow copy of
    ``results`` whose ``masks`` (same type) hold the refined (N, H, W) masks at the original
    image size, as with ``retina_masks=True``, as float 0/1 on the input masks' device.
    """
    if results.masks is None:  # no detections: Ultralytics leaves masks unset
        return copy.copy(results)
    height, width = results.orig_shape[:2]
    if image is None:
        image = np.ascontiguousarray(results.orig_img[..., ::-1])
    data = results.masks.data
    coarse = unletterbox(_numpy(data), height, width)
    refined = refiner.refine(rgb_uint8(image), _numpy(results.boxes.xyxy), coarse)
    refined = torch.from_numpy(refined).to(data.device, torch.float32) if isinstance(data, torch.Tensor) \
        else refined.astype(np.float32)
    out = copy.copy(results)
    out.masks = type(results.masks)(refined, results.orig_shape)
    return out


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
