"""Prediction over data sets on Dask (LANGUAGE.md §13).

    y = cnnc.predict("model.cnnc", x)     # x: dask.array (N, C, H, W) -> dask.array

`cnnc predict` (run.py) does the same over files: inputs.py plans the shards,
outdir.py keeps OUTDIR consistent, worker.py is what runs in the Dask workers.
Nothing here imports Dask until it is used: `import cnnc` stays light.
"""

from __future__ import annotations

from ..errors import CnncInputError


def predict(model, x, *, batch: int = 64, network: str | None = None):
    """The network's outputs for a dask.array `x` of (N, C, H, W), as a dask.array.

    `model` is a .cnnc or .cnn path or a compiled Network. Blocks are mapped through
    the network independently (one block per chunk of N; the other axes are made one
    chunk each), `batch` images at a time. The model reaches the tasks as the bytes of
    its artifact, loaded once per worker process; no Network is pickled.
    """
    from .run import require
    require("dask")
    import dask
    import dask.array as da
    import numpy as np

    from .model import open_model
    from .worker import predict_block
    m = open_model(model, network=network)
    if batch < 1:
        raise CnncInputError(f"batch must be at least 1, got {batch}")
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[1:] != m.input_shape:
        raise CnncInputError(f"input has shape {shape}, but network '{m.net.name}' expects "
                             f"(N, {', '.join(map(str, m.input_shape))})")
    x = x.rechunk({1: -1, 2: -1, 3: -1})
    out = m.output_shape
    blob = dask.delayed(m.blob, pure=True, name=f"cnnc-model-{m.digest}")
    return x.map_blocks(predict_block, blob, m.digest, batch, dtype=np.float32,
                        chunks=(x.chunks[0], *((d,) for d in out)),
                        drop_axis=list(range(1 + len(out), 4)) or None,
                        meta=np.empty((0,) * (1 + len(out)), np.float32))


__all__ = ["predict"]
