"""Hand-written convolution, pooling and normalisation layers, checked against `jax.lax`, numpy and PyTorch."""
from cnnjax.layers.batch_norm import BatchNorm, batch_norm_train, frozen_statistics
from cnnjax.layers.conv import IMPLS, conv_general_dilated, convolve
from cnnjax.layers.impl_plan import describe as describe_conv_impls
from cnnjax.layers.impl_plan import logs_conv_impls, recording as record_conv_impls, resolve_impl
from cnnjax.layers.impl_plan import workdir_record as conv_impls_record
from cnnjax.layers.modules import LRN, AvgPool, Conv, MaxPool
from cnnjax.layers.norm import local_response_norm
from cnnjax.layers.pool import avg_pool, global_avg_pool, global_max_pool, lp_pool, max_pool

__all__ = ["BatchNorm", "batch_norm_train", "frozen_statistics", "IMPLS", "conv_general_dilated", "convolve",
           "resolve_impl", "record_conv_impls", "describe_conv_impls", "conv_impls_record", "logs_conv_impls", "Conv",
           "MaxPool", "AvgPool", "LRN", "local_response_norm", "max_pool", "avg_pool", "lp_pool", "global_avg_pool",
           "global_max_pool"]
