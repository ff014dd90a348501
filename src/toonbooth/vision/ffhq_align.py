"""FFHQ face alignment, returning the aligned face *and* the transform back into the photo.

Recipe: `recreate_aligned_images` in NVlabs/ffhq-dataset `download_ffhq.py` (T. Karras, S. Laine, T. Aila,
"A Style-Based Generator Architecture for Generative Adversarial Networks", CVPR 2019), the alignment every
FFHQ-trained StyleGAN / pSp / e4e model expects; pSp's `scripts/align_all_parallel.py` uses the same quad with
`output_size = transform_size = 256`. Steps, from 68 dlib / 300-W landmarks:

1. eye centres = means of points 36-41 and 42-47; mouth centre = midpoint of corners 48 and 54;
2. `x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1]`, normalised, scaled by
   `max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)`; `y = flipud(x) * [-1, 1]`; centre
   `c = eye_avg + 0.1 * eye_to_mouth`; `quad = [c-x-y, c-x+y, c+x+y, c+x-y]`, `qsize = 2 |x|`;
3. shrink the photo by `floor(qsize / output_size * 0.5)` when that is > 1 (Lanczos);
4. crop to the quad's bounds plus a border of `max(rint(0.1 qsize), 3)`;
5. when the quad still leaves the image, reflect-pad by at least `rint(0.3 qsize)` and hide the seam: blend
   towards a Gaussian blur (sigma `0.02 qsize`) and towards the median colour by the distance to the edge;
6. `Image.transform((T, T), QUAD, (quad + 0.5).flatten(), BILINEAR)` and resize to the output size with
   Lanczos (FFHQ: T = 4096 -> 1024; Pillow >= 10 has no `ANTIALIAS`, `LANCZOS` is the same filter).

The steps above are a pure similarity transform of the photo (the quad is a rotated square), so the result
carries a 2x3 matrix that maps aligned-image pixel coordinates to photo coordinates (pixel centres at integer
coordinates), its inverse, and `paste_back`, which warps an aligned-space image (a toon, a made-up face) back
into the photo under a feathered mask and leaves every pixel outside that mask byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.ndimage
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.core.images import to_rgb_array
from toonbooth.vision.landmarks import FaceLandmarks

FFHQ_OUTPUT_SIZE = 1024
FFHQ_TRANSFORM_SIZE = 4096


@dataclass(frozen=True)
class FfhqQuad:
    """The oriented crop square of the recipe, in photo pixel coordinates."""

    quad: np.ndarray
    """(4, 2): corners that become the aligned image's top-left, bottom-left, bottom-right, top-right."""
    qsize: float
    """Side of the square (2 |x|)."""
    center: np.ndarray
    """`c = eye_avg + 0.1 * eye_to_mouth`."""


def ffhq_quad(points: np.ndarray | FaceLandmarks) -> FfhqQuad:
    """The FFHQ crop square for 68 landmarks (steps 1-2 of the recipe)."""
    lm = _points(points)
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm < 1e-6:
        raise InputError("landmarks", "eyes and mouth coincide: no face orientation can be computed", None)
    x = x / norm
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * np.array([-1.0, 1.0])
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return FfhqQuad(quad=quad, qsize=float(np.hypot(*x) * 2.0), center=c)


@dataclass(frozen=True)
class AlignTransform:
    """Similarity transform between an aligned `output_size` square and the photo it came from."""

    matrix: np.ndarray
    """2x3 float64: aligned pixel (u, v) -> photo pixel (x, y); pixel centres at integer coordinates."""
    output_size: int
    image_size: tuple[int, int]
    """(width, height) of the photo."""
    quad: np.ndarray
    """(4, 2) photo coordinates of the recipe's quad (aligned corners TL, BL, BR, TR, before the +0.5)."""

    @property
    def inverse_matrix(self) -> np.ndarray:
        """2x3: photo pixel -> aligned pixel."""
        return cv2.invertAffineTransform(self.matrix)

    @property
    def scale(self) -> float:
        """Photo pixels per aligned pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @property
    def angle_degrees(self) -> float:
        """Rotation of the aligned x axis in the photo (0 = level face), degrees, y down."""
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0])))

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) aligned-image points into the photo."""
        return _apply(self.matrix, points)

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) photo points into the aligned image."""
        return _apply(self.inverse_matrix, points)

    def resized(self, output_size: int) -> AlignTransform:
        """The same transform for the aligned image resized to `output_size` (e.g. a 256 px generator output)."""
        if output_size < 1:
            raise InputError("output_size", f"must be positive, got {output_size!r}", output_size)
        k = self.output_size / output_size
        # aligned pixel u' of the new size sits at (u' + 0.5) * k - 0.5 in the old one
        pre = np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5], [0.0, 0.0, 1.0]])
        m = np.vstack([self.matrix, [0.0, 0.0, 1.0]]) @ pre
        return AlignTransform(m[:2], output_size, self.image_size, self.quad)

    def warp_to_photo(self, aligned: np.ndarray, *, border_value: float = 0.0) -> np.ndarray:
        """An aligned-space array (H = W = any size) warped into photo space (photo-sized, bilinear)."""
        arr = np.asarray(aligned)
        if arr.shape[0] != arr.shape[1]:
            raise InputError("aligned", f"must be square, got {arr.shape[1]}x{arr.shape[0]}", arr.shape)
        t = self.resized(arr.shape[0]) if arr.shape[0] != self.output_size else self
        w, h = self.image_size
        return cv2.warpAffine(
            arr,
            t.inverse_matrix,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border_value,
        )

    def paste_back(
        self,
        aligned: Image.Image | np.ndarray,
        photo: Image.Image | np.ndarray,
        *,
        mask: np.ndarray | None = None,
        feather: float = 0.06,
    ) -> Image.Image:
        """Put an aligned-space image back into the photo.

        `mask`: optional aligned-space weights in [0, 1] (square, any size; e.g. a face-parsing mask); the
        default is the whole square. Its edge is feathered over `feather` x the aligned size (a linear ramp
        from the mask's border inwards, smoothed). Photo pixels where the warped mask is 0 are returned
        byte-identical.
        """
        src = _rgb(aligned, "aligned")
        base = _rgb(photo, "photo")
        if (base.shape[1], base.shape[0]) != self.image_size:
            raise InputError(
                "photo",
                f"is {base.shape[1]}x{base.shape[0]}, the transform was made for {self.image_size[0]}x{self.image_size[1]}",
                base.shape,
            )
        if src.shape[0] != src.shape[1]:
            raise InputError("aligned", f"must be square, got {src.shape[1]}x{src.shape[0]}", src.shape)
        if not (0.0 <= feather <= 0.5):
            raise InputError("feather", f"must be in [0, 0.5], got {feather!r}", feather)
        size = src.shape[0]
        if mask is None:
            m = np.ones((size, size), np.float32)
        else:
            m = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
            if m.ndim != 2 or m.shape[0] != m.shape[1]:
                raise InputError("mask", f"must be a square 2-D array, got shape {m.shape}", m.shape)
            if m.shape[0] != size:
                m = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
        alpha_aligned = _feather_inside(m, feather * size)
        alpha = self.warp_to_photo(alpha_aligned)
        warped = self.warp_to_photo(src.astype(np.float32))
        a = alpha[:, :, None]
        blended = base.astype(np.float32) * (1.0 - a) + warped * a
        out = np.where(a > 0.0, np.clip(np.rint(blended), 0, 255).astype(np.uint8), base)
        return Image.fromarray(out)


@dataclass(frozen=True)
class AlignedFace:
    """The aligned face, its transform, and the landmarks in aligned coordinates."""

    image: Image.Image
    transform: AlignTransform
    landmarks: np.ndarray
    """(68, 2) landmarks mapped into the aligned image."""
    padded: bool
    """Whether the recipe had to reflect-pad (the quad left the photo)."""


def align_face(
    photo: Image.Image | np.ndarray,
    landmarks: np.ndarray | FaceLandmarks,
    *,
    output_size: int = FFHQ_OUTPUT_SIZE,
    transform_size: int | None = None,
    enable_padding: bool = True,
) -> AlignedFace:
    """FFHQ-align the face with these 68 landmarks (the recipe in the module docstring, step by step).

    `transform_size`: the QUAD transform's size before the final Lanczos resize. FFHQ used 4096 for 1024;
    the default here is `4 * output_size` capped at 4096, which is exactly FFHQ's at 1024 (pSp used
    `transform_size = output_size = 256`; pass it to reproduce that).
    """
    # 1. Inputs
    if not (8 <= output_size <= 4096):
        raise InputError("output_size", f"must be in [8, 4096], got {output_size!r}", output_size)
    if transform_size is None:
        transform_size = max(output_size, min(4 * output_size, FFHQ_TRANSFORM_SIZE))
    if not (output_size <= transform_size <= 8192):
        raise InputError(
            "transform_size",
            f"must be in [output_size={output_size}, 8192], got {transform_size!r}",
            transform_size,
        )
    rgb = _rgb(photo, "photo")
    lm = _points(landmarks)
    img = Image.fromarray(rgb)
    width, height = img.size
    fq = ffhq_quad(lm)
    quad = fq.quad.copy()
    qsize = fq.qsize

    # 2. Shrink
    shrink = int(np.floor(qsize / output_size * 0.5))
    scale_xy = np.array([1.0, 1.0])
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.LANCZOS)
        quad /= shrink
        qsize /= shrink
        scale_xy = np.array([width / rsize[0], height / rsize[1]])
    quad_shrunk = quad.copy()  # photo quad in the (possibly) shrunk image, before crop and pad shifts

    # 3. Crop
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = _bounds(quad)
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, img.size[0]),
        min(crop[3] + border, img.size[1]),
    )
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # 4. Reflect-pad with a blurred, median-filled edge
    pad = _bounds(quad)
    pad = (
        max(-pad[0] + border, 0),
        max(-pad[1] + border, 0),
        max(pad[2] - img.size[0] + border, 0),
        max(pad[3] - img.size[1] + border, 0),
    )
    padded = False
    if enable_padding and max(pad) > border - 4:
        padded = True
        pad = np.maximum(pad, max(int(np.rint(qsize * 0.3)), 1))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        edge = np.maximum(
            1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
            1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]),
        )
        blur = qsize * 0.02
        arr += (scipy.ndimage.gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(
            edge * 3.0 + 1.0, 0.0, 1.0
        )
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(edge, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]

    # 5. Quad transform, resize
    out = img.transform(
        (transform_size, transform_size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR
    )
    if output_size < transform_size:
        out = out.resize((output_size, output_size), Image.LANCZOS)

    # 6. The transform: aligned pixel (u, v) -> shrunk-photo pixel -> photo pixel
    s = float(output_size)
    a = (quad_shrunk[3] - quad_shrunk[0]) / s  # per aligned pixel along u
    b = (quad_shrunk[1] - quad_shrunk[0]) / s  # per aligned pixel along v
    t = quad_shrunk[0] + 0.5 * (a + b)
    m_shr = np.array([[a[0], b[0], t[0]], [a[1], b[1], t[1]]])
    m = m_shr.copy()
    m[:, :2] *= scale_xy[:, None]
    m[:, 2] = (m_shr[:, 2] + 0.5) * scale_xy - 0.5
    transform = AlignTransform(matrix=m, output_size=output_size, image_size=(width, height), quad=fq.quad)
    return AlignedFace(image=out, transform=transform, landmarks=transform.to_aligned(lm), padded=padded)


def expected_aligned_points(points: np.ndarray | FaceLandmarks, output_size: int) -> dict[str, np.ndarray]:
    """Where the recipe puts the eye centres and the mouth centre in the aligned image (pixel centres).

    Computed straight from the quad geometry (the quad's centre goes to the image centre, |x| to half the
    side), independently of `align_face`'s matrix: a reference for tests and for checking other aligners.
    """
    lm = _points(points)
    fq = ffhq_quad(lm)
    xv = (fq.quad[3] - fq.quad[0]) / 2.0  # = x
    yv = (fq.quad[1] - fq.quad[0]) / 2.0  # = y
    half = np.hypot(*xv)

    def place(p: np.ndarray) -> np.ndarray:
        d = p - fq.center
        u = np.dot(d, xv / half) / half
        v = np.dot(d, yv / half) / half
        return np.array([(u + 1.0) * output_size / 2.0 - 0.5, (v + 1.0) * output_size / 2.0 - 0.5])

    return {
        "eye_left": place(lm[36:42].mean(axis=0)),
        "eye_right": place(lm[42:48].mean(axis=0)),
        "mouth": place((lm[48] + lm[54]) * 0.5),
    }


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def _points(points: np.ndarray | FaceLandmarks) -> np.ndarray:
    arr = points.points if isinstance(points, FaceLandmarks) else np.asarray(points, dtype=np.float64)
    if arr.shape != (68, 2) or not np.all(np.isfinite(arr)):
        raise InputError("landmarks", f"expected 68 finite (x, y) points, got shape {arr.shape}", arr.shape)
    return arr.astype(np.float64)


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    single = pts.ndim == 1
    pts = pts.reshape(-1, 2)
    out = pts @ matrix[:, :2].T + matrix[:, 2]
    return out[0] if single else out


def _rgb(image: Image.Image | np.ndarray, field: str) -> np.ndarray:
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(
            field, f"expected an RGB uint8 array (H, W, 3), got {arr.dtype} {arr.shape}", arr.shape
        )
    return arr


def _feather_inside(mask: np.ndarray, width: float) -> np.ndarray:
    """Weights that fall from the mask's value to 0 over `width` px towards its border (and the square's)."""
    if width < 1.0:
        return mask
    inside = np.pad(mask > 0.0, 1).astype(np.uint8)  # the square's edge counts as border
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5)[1:-1, 1:-1]
    ramp = np.clip(dist / width, 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep
    return (mask * ramp).astype(np.float32)
