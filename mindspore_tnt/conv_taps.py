"""The pixel embedding's convolution as a gather: where each kernel tap reads (``impl='cpu'``)."""
import numpy as np

from tnt_common.architecture import word_side


def conv_tap_index(grid_size, patch_size, stride, kernel_size, per_patch):
    """Flat pixel index of every (word, kernel tap) of the pixel embedding's convolution.

    Rows run over the words in the model's order (patch row, patch column, word row, word
    column), columns over the taps (ky, kx). A tap in the zero padding points one past the
    last pixel. ``per_patch``: zero padding at every patch border, else at the image border.
    """
    words, pad = word_side(patch_size, stride), kernel_size // 2

    def taps(n_patches):
        """Input coordinate of each (output, tap) along one axis, and whether it is a pixel."""
        out = np.arange(n_patches * words)[:, None]
        # per patch, each patch's outputs start again at its own first pixel
        start = patch_size * (out // words) + stride * (out % words) if per_patch else stride * out
        pos = start + np.arange(kernel_size) - pad
        lo = patch_size * (out // words) if per_patch else 0
        hi = lo + patch_size if per_patch else n_patches * patch_size
        return pos, (pos >= lo) & (pos < hi)

    (ys, y_ok), (xs, x_ok) = taps(grid_size[0]), taps(grid_size[1])
    width = grid_size[1] * patch_size
    index = np.where(y_ok[:, :, None, None] & x_ok[None, None], ys[:, :, None, None] * width + xs[None, None],
                     grid_size[0] * patch_size * width)
    index = index.reshape(grid_size[0], words, kernel_size, grid_size[1], words, kernel_size)
    return index.transpose(0, 3, 1, 4, 2, 5).reshape(-1).astype(np.int32)


def image_tap_index(height, width, stride, kernel_size):
    """Flat pixel index of every (output pixel, kernel tap) of a convolution over a whole
    ``height`` x ``width`` image, zero-padded by ``kernel_size // 2``, as ``nn.Conv2d``.

    Rows run over the output pixels (row-major), columns over the taps (ky, kx); a tap in
    the padding points one past the last pixel.
    """
    pad = kernel_size // 2

    def taps(size):
        out = np.arange((size + 2 * pad - kernel_size) // stride + 1)[:, None]
        pos = stride * out + np.arange(kernel_size) - pad
        return pos, (pos >= 0) & (pos < size)

    (ys, y_ok), (xs, x_ok) = taps(height), taps(width)
    index = np.where(y_ok[:, None, :, None] & x_ok[None, :, None, :], ys[:, None, :, None] * width + xs[None, :, None, :],
                     height * width)
    return index.reshape(-1).astype(np.int32)
