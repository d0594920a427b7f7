import io

import pytest
from PIL import Image

from onevision.images import ImageError, load_rgb


def _jpeg(size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def test_good_image_decodes_to_rgb():
    img = load_rgb(_jpeg())
    assert img.mode == "RGB" and img.size == (32, 32)


@pytest.mark.parametrize(
    "data, reason",
    [(b"", "empty"), (b"hello, not an image", "not an image"), (_jpeg()[:200], "could not be decoded")],
)
def test_bad_input_raises_with_a_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        load_rgb(data)


def test_decompression_bomb_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buf, format="PNG")
    with pytest.raises(ImageError, match="more than the limit"):
        load_rgb(buf.getvalue(), max_pixels=1_000_000)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_rgb(tmp_path / "nope.jpg")
