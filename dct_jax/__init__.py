"""dct_jax: DCT (Rong et al., ICCV 2019) in JAX/Flax.

Modules are imported explicitly (``from dct_jax import smpl``) so that importing
the package stays cheap and has no side effects.
"""

__version__ = "0.1.0"
