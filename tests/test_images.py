"""load_image: colour order, channel/depth conversions, EXIF orientation, error messages."""

import struct

import cv2
import numpy as np
import pytest

from refine_cli.images import ImageReadError, load_image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def write_png(path, array):
    """Write an array with OpenCV (BGR(A) order for colour arrays) as PNG."""
    ok, buf = cv2.imencode(".png", array)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def exif_app1(orientation):
    """A JPEG APP1 segment holding a minimal big-endian EXIF IFD0 with only the Orientation tag."""
    ifd_entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # tag, SHORT, count 1, value, padding
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + ifd_entry + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def marked_rgb(height=40, width=60):
    """(H, W, 3) RGB image: red block at the top-left corner, blue block at the bottom-left corner."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:10, :10] = RED
    image[-10:, :10] = BLUE
    return image


def test_png_keeps_rgb_order(tmp_path):
    rgb = marked_rgb()
    path = write_png(tmp_path / "a.png", rgb[..., ::-1].copy())
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (40, 60, 3)
    np.testing.assert_array_equal(image, rgb)
    assert tuple(image[0, 0]) == RED


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(50 * 30, dtype=np.uint32).reshape(50, 30).astype(np.uint8)
    image = load_image(write_png(tmp_path / "gray.png", gray))
    assert image.shape == (50, 30, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_rgba_drops_alpha_without_blending(tmp_path):
    bgra = np.zeros((8, 9, 4), np.uint8)
    bgra[..., 2] = 200  # red
    bgra[..., 1] = 100  # green
    bgra[..., 3] = np.arange(9, dtype=np.uint8) * 30  # varying alpha must not change the colour
    image = load_image(write_png(tmp_path / "rgba.png", bgra))
    assert image.shape == (8, 9, 3)
    assert (image == np.array([200, 100, 0], np.uint8)).all()


def test_16bit_is_scaled_not_truncated_or_clipped(tmp_path):
    # A full 0..65535 gradient; values like 256 separate // 257 (-> 0) from >> 8 (-> 1),
    # and anything above 255 would show clipping.
    values = np.arange(65536, dtype=np.uint32).reshape(256, 256).astype(np.uint16)
    bgr16 = np.dstack([values // 3, values // 2, values])  # B, G, R
    image = load_image(write_png(tmp_path / "deep.png", bgr16))
    assert image.dtype == np.uint8 and image.shape == (256, 256, 3)
    np.testing.assert_array_equal(image[..., 0], (values // 257).astype(np.uint8))
    np.testing.assert_array_equal(image[..., 1], (values // 2 // 257).astype(np.uint8))
    np.testing.assert_array_equal(image[..., 2], (values // 3 // 257).astype(np.uint8))
    assert image[..., 0].max() == 255 and image[..., 0].min() == 0
    assert image.reshape(-1, 3)[256, 0] == 0  # 256 // 257, where >> 8 would give 1


def test_16bit_grayscale(tmp_path):
    values = np.array([[0, 257, 65535, 1000]], np.uint16)
    image = load_image(write_png(tmp_path / "gray16.png", values))
    assert image.shape == (1, 4, 3)
    assert image[0, :, 0].tolist() == [0, 1, 255, 3]


def test_palette_png(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rgb = marked_rgb()
    path = tmp_path / "palette.png"
    pil.fromarray(rgb).quantize(colors=4).save(path)
    assert pil.open(path).mode == "P"
    np.testing.assert_array_equal(load_image(path), rgb)


def exif_rotated_jpeg(tmp_path, orientation):
    rgb = marked_rgb()
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = buf.tobytes()
    path = tmp_path / f"exif{orientation}.jpg"
    path.write_bytes(data[:2] + exif_app1(orientation) + data[2:])  # right after SOI, as cameras do
    return path


def colour_near(pixel, colour, tolerance=40):
    return np.abs(pixel.astype(int) - colour).max() <= tolerance


def test_exif_orientation_6_rotates_90_clockwise(tmp_path):
    image = load_image(exif_rotated_jpeg(tmp_path, 6))
    # Stored 40x60 landscape; displayed after a 90 degree clockwise turn as 60x40 portrait:
    # stored top-left (red) -> top-right, stored bottom-left (blue) -> top-left.
    assert image.shape == (60, 40, 3)
    assert colour_near(image[2, -3], RED)
    assert colour_near(image[2, 2], BLUE)
    assert colour_near(image[-3, -3], (0, 0, 0)) and colour_near(image[-3, 2], (0, 0, 0))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil_exif_transpose(tmp_path, orientation):
    pil_image = pytest.importorskip("PIL.Image")
    pil_ops = pytest.importorskip("PIL.ImageOps")
    path = exif_rotated_jpeg(tmp_path, orientation)
    expected = np.asarray(pil_ops.exif_transpose(pil_image.open(path)).convert("RGB"))
    image = load_image(path)
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected).max() <= 2  # both use libjpeg; allow IDCT differences


def test_non_ascii_path(tmp_path):
    rgb = marked_rgb()
    path = write_png(tmp_path / "bild_ä_画像.png", rgb[..., ::-1].copy())
    np.testing.assert_array_equal(load_image(path), rgb)


def test_missing_file_names_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageReadError, match=r"nope\.jpg: file not found"):
        load_image(path)


def test_empty_file_names_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: empty file"):
        load_image(path)


@pytest.mark.parametrize("content", [b"not an image at all" * 20, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_file_names_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=r"broken\.png: cannot decode image"):
        load_image(path)


def test_directory_is_an_error(tmp_path):
    with pytest.raises(ImageReadError, match=str(tmp_path.name)):
        load_image(tmp_path)
