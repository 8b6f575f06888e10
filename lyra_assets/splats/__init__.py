"""3D Gaussian splats: the data (gaussians.py), the 3DGS PLY format (ply.py), alignment to our camera path
(align.py), and rendering to RGB-D (render.py).

A generator that reconstructs its walkthrough as Gaussian splats (Lyra 2.0) hands them here; rendering them
at every walkthrough camera gives the depth the mesh stages fuse, so those stages run unchanged.

Conventions kept here:
- PLY layout (3DGS, as Lyra 2.0's reconstruction writes it): one `vertex` element with float properties
  x y z, nx ny nz (unused, written as 0), f_dc_0..2 (degree-0 spherical-harmonic coefficients: colour =
  0.5 + SH_C0 * f_dc), opacity (a logit), scale_0..2 (logs of the standard deviations along the Gaussian's
  axes), rot_0..3 (a quaternion w, x, y, z, not necessarily unit). Higher SH bands (f_rest_*) are ignored:
  the walkthrough needs one colour per Gaussian, and we never write them.
- Rendering follows gsplat's classic 3DGS rasterizer so the CUDA path and the CPU fallback agree: EWA
  projection with the Jacobian's view direction clamped to 1.3x the field of view, a 0.3 px^2 blur on the
  2D covariance, alpha = min(0.999, opacity * exp(-sigma)) skipping alpha < 1/255, front-to-back in 16x16
  pixel tiles sorted by camera depth, a pixel finished once its transmittance would fall to 1e-4, pixel
  (col, row) sampled at its centre (col + 0.5, row + 0.5), black background. Depth is the expected camera z
  (sum of weight * z of each Gaussian's centre, over the accumulated alpha), kept where reliable.
- torch (and gsplat, for CUDA) are imported only when rendering: reading, writing and aligning splats need
  numpy alone."""
from .align import Alignment, Similarity, fit_cameras, umeyama
from .gaussians import SH_C0, GaussianSplats, prune
from .ply import read_ply, write_ply
from .render import Rendered, observed_from_first_view, render_path

__all__ = ["Alignment", "GaussianSplats", "Rendered", "SH_C0", "Similarity", "fit_cameras", "observed_from_first_view",
           "prune", "read_ply", "render_path", "umeyama", "write_ply"]
