"""Hand-written convolution, pooling and normalisation layers, checked against `jax.lax`."""
from cnnjax.layers.batch_norm import BatchNorm, batch_norm_train
from cnnjax.layers.conv import IMPLS, conv_general_dilated
from cnnjax.layers.modules import LRN, AvgPool, Conv, MaxPool
from cnnjax.layers.norm import local_response_norm
from cnnjax.layers.pool import avg_pool, global_avg_pool, global_max_pool, max_pool

__all__ = ["BatchNorm", "batch_norm_train", "IMPLS", "conv_general_dilated", "Conv", "MaxPool", "AvgPool", "LRN", "local_response_norm",
           "max_pool", "avg_pool", "global_avg_pool", "global_max_pool"]
