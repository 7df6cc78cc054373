"""The shared base config: every field the training loop reads, with the defaults of flax's examples.

It lives in the library because the library reads it (a workdir written before a field existed resumes as if
that field had its default); experiment configs reach it as `configs/default.py`, which re-exports it, so
this file is the one place for defaults.

Not run on its own: `python -m experiments.main --config configs/resnet.py --workdir runs/resnet` runs the
default experiment on top of it. The fields: docs/guide/running.md.

Experiment configs import this and change a few fields. Durations: `num_train_steps` wins when > 0, else
`num_epochs` x steps per epoch. Cadences (`*_every_steps`) of -1 mean once per epoch.
"""
import ml_collections
from ml_collections import config_dict


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 128                 # global, over all devices and processes
  c.eval_batch_size = 256
  c.num_epochs = 10
  c.num_train_steps = -1             # -1: num_epochs x steps per epoch
  # Optimizer and schedule (cnnjax/train/optim.py).
  c.optimizer = "sgd"                # 'sgd' | 'adamw' | 'adadelta'
  c.learning_rate = 0.1
  c.lr_schedule = "cosine"           # 'constant' | 'cosine' | 'step'
  c.lr_boundaries_epochs = (30, 60, 80)
  c.lr_decay_factor = 0.1
  c.warmup_epochs = 0.0
  c.momentum = 0.9
  c.nesterov = True
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adadelta_rho = 0.95              # Kim (2014)'s Adadelta
  c.adadelta_eps = 1e-6
  c.max_norm = 0.0                   # > 0: l2 max-norm of the columns of the kernels matching max_norm_pattern
  c.max_norm_pattern = "output/kernel"   # regex over '/'-joined parameter paths (re.search: cnnjax/param_paths.py)
  c.weight_decay = 1e-4
  c.weight_decay_norm_and_bias = False
  c.grad_clip_norm = 0.0             # 0: no clipping
  # Model selection (what Kim 2014 calls early stopping; training is not stopped): also evaluate `split` at every
  # eval, and report in final_metrics.json ('selected') the eval split's metrics at the step of the best `metric`
  # on it (ties: later).
  c.model_selection = ml_collections.ConfigDict()
  c.model_selection.split = ""       # '' off; e.g. 'dev'
  c.model_selection.metric = "top1"  # 'top1' (highest) or 'loss' (lowest)
  # The old name of model_selection, kept so that configs and --config.early_stopping.x=v still work: values set
  # here move to model_selection with a deprecation warning when the config is validated (cnnjax/config.py).
  c.early_stopping = ml_collections.ConfigDict({"split": config_dict.placeholder(str),
                                                "metric": config_dict.placeholder(str)})
  # Transfer (cnnjax/train/transfer.py): start from other weights, train part of the network.
  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""             # a workdir or a `python -m cnnjax.pretrained` directory; '' = from scratch
  c.init.step = -1                   # its checkpoint step; -1 = the newest
  c.init.dont_load = ()              # regexes over 'params/...' paths that keep their fresh values (a new head)
  c.init.load_batch_stats = True
  c.init.preprocessing = True        # a converted checkpoint: its pretrained.json's mean, std, input size, RGB
  c.init.ema = False                 # a workdir with ema.decay > 0: load its moving average, not its raw weights
  c.frozen = ""                      # regex: parameters that get no update, weight decay or optimizer state
  c.lr_mults = ()                    # ((regex, multiplier), ...): scaled updates, first match wins
  # Linear probe (cnnjax/train/probe.py): fit the head on the frozen features of the training set by L-BFGS
  # (multinomial logistic regression) instead of training; the run then takes no step (num_epochs is unused).
  c.linear_probe = ml_collections.ConfigDict()
  c.linear_probe.enabled = False
  c.linear_probe.head = "head"       # the top-level Dense layer whose input are the features
  c.linear_probe.l2 = 1e-4           # mean cross-entropy + l2/2 ||kernel||^2: scikit-learn's C = 1 / (l2 n)
  c.linear_probe.max_iters = 1000    # L-BFGS iterations at most
  c.linear_probe.tol = 1e-5          # ... stopping once the gradient's l2 norm is below
  c.label_smoothing = 0.0
  # Exponential moving average of the weights and batch-norm statistics (cnnjax/train/steps.py), kept in the
  # train state and checkpointed; evaluated beside the raw weights (metrics split 'eval_ema'). 0: none (the
  # state and checkpoints are then exactly those of a run without it).
  c.ema = ml_collections.ConfigDict()
  c.ema.decay = 0.0                  # in [0, 1): average = decay * average + (1 - decay) * weights, each update
  c.ema.start_step = 0               # before this update the average is set to the weights (a warm-up)
  # Mixup / CutMix per batch in the train step (cnnjax/train/mix.py, torchvision.transforms.v2's definitions).
  c.mixup = ml_collections.ConfigDict()
  c.mixup.alpha = 0.0                # > 0: Mixup with lam ~ Beta(alpha, alpha); 0 off
  c.mixup.prob = 1.0                 # probability that a batch is mixed (Mixup or CutMix) at all
  c.mixup.switch_prob = 0.5          # with both alphas > 0: probability of CutMix rather than Mixup
  c.cutmix = ml_collections.ConfigDict()
  c.cutmix.alpha = 0.0               # > 0: CutMix with lam ~ Beta(alpha, alpha); 0 off
  c.aux_loss_weight = 0.3            # GoogLeNet's auxiliary classifiers (Szegedy et al. 2015, Sec. 5)
  c.dtype = "float32"                # compute dtype: 'float32' | 'bfloat16'; parameters stay float32
  c.grad_accum_steps = 1             # k > 1: k microbatches of batch_size / k per update
  c.on_nonfinite = "stop"            # NaN/Inf loss or gradients: 'stop', or 'skip' the update
  c.max_consecutive_nonfinite = 10   # with 'skip': stop after this many non-finite steps in a row
  # Logging, evaluation, checkpoints.
  c.log_every_steps = 10
  c.eval_every_steps = -1
  c.checkpoint_every_steps = -1
  c.keep_checkpoints = 3
  c.progress_bar = True              # shown only when stderr is a terminal
  c.compilation_cache_dir = "~/.cache/cnnjax/jax"  # JAX's persistent compilation cache; '' turns it off
  # Devices and processes (cnnjax/parallel.py).
  c.parallel = ml_collections.ConfigDict()
  c.parallel.shard_params = False    # FSDP-style: split parameters and optimizer state over the 'data' axis
  c.parallel.shard_min_size = 2 ** 14  # ... those of at least this many elements (smaller ones stay replicated)
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""   # e.g. '10.0.0.1:1234'; '' = auto-detect (TPU pod, SLURM) or 1 process
  c.distributed.num_processes = 1
  c.distributed.process_id = 0
  c.distributed.initialization_timeout = 300
  # Model: `name` plus the family's options (cnnjax.models.options(name)).
  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet20"
  # Per backend and layer shape the fastest measured (cnnjax.layers.autotune); "xla": plain lax.
  c.model.conv_impl = "auto"
  # How 'auto' decides on CPU (cnnjax/layers/autotune.py): 'measure' times each new layer shape once per machine and
  # caches the choice beside the compilation cache; 'cached' uses cached choices only (lax otherwise); 'off': lax.
  c.model.conv_autotune = "measure"
  # Data (cnnjax/data).
  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "digits"
  c.dataset.data_dir = config_dict.placeholder(str)
  c.dataset.train_split = "train"
  c.dataset.eval_split = "test"
  c.dataset.image_size = 32
  c.dataset.fit = "resize"           # to image_size: 'resize', or 'pad' (centred on zeros, e.g. 28 -> 32 for LeNet-5)
  c.dataset.num_classes = -1         # -1: the data set's; otherwise must equal it (a check)
  c.dataset.classes = ()             # () all; else only these labels, train and eval (few-shot base classes)
  c.dataset.relabel = False          # True: classes[i] becomes label i, the model gets len(classes) outputs
  c.dataset.train_per_class = -1     # k >= 1: k training examples per class (a label budget); -1 all
  c.dataset.subset_seed = 0          # which k (the k-shot set is part of the (k+1)-shot set)
  c.dataset.eval_name = config_dict.placeholder(str)  # evaluate on another data set (e.g. imagenet_v2)
  c.dataset.augment = "none"         # training: cnnjax.data.transforms.AUGMENTS
  c.dataset.eval_augment = "none"    # evaluation: 'none' (resize) | 'center_crop'
  c.dataset.pad = 4                  # pad_crop's padding
  c.dataset.crop_area_range = (0.08, 1.0)      # inception_crop: fraction of the image's area
  c.dataset.crop_aspect_range = (0.75, 4 / 3)  # inception_crop: width / height
  c.dataset.eval_crop_fraction = 0.875         # center_crop: side / shorter side (224 / 256)
  c.dataset.trivial_augment = False  # training: TrivialAugmentWide after the crop and flip (cnnjax.data.transforms)
  c.dataset.random_erasing = 0.0     # training: probability of erasing a random box after normalisation
  c.dataset.num_workers = 0          # Grain worker processes (0: read in the main process)
  c.dataset.worker_buffer_size = 1   # batches each worker prepares ahead
  c.dataset.num_threads = 4
  c.dataset.prefetch = 8
  c.dataset.normalize_on_device = True  # image batches leave the workers as uint8, normalised in the jitted step
  c.dataset.jpeg_draft = True        # training: decode a JPEG at 1/2-1/8 scale when its crop stays >= image_size
  # Text data sets (cnnjax/data/text.py; configs/kim_cnn.py).
  c.dataset.num_folds = 10           # data sets without a test split: cross-validation folds
  c.dataset.fold = 0                 # the test fold, 0..num_folds-1
  c.dataset.split_seed = 0           # fixes the folds and the dev split
  c.dataset.dev_fraction = 0.1       # of the training part, where a data set has no dev file
  c.dataset.max_len = -1             # -1: the longest training sentence; longer sentences are truncated
  c.dataset.vectors = config_dict.placeholder(str)   # pretrained word vectors (GloVe .txt, word2vec .bin)
  # dataset.name='synthetic': random images and labels, a pure function of (seed, split, index).
  c.dataset.synthetic = ml_collections.ConfigDict()
  c.dataset.synthetic.num_train = 1024
  c.dataset.synthetic.num_eval = 256
  c.dataset.synthetic.num_classes = 10
  c.dataset.synthetic.image_shape = (32, 32, 3)
  c.dataset.synthetic.jpeg = False   # store the images as JPEG bytes, decoded per example (as ImageNet's)
  c.dataset.synthetic.seed = 0
  # dataset.name='folder': data_dir/<split>/<class>/<image>, as torchvision's ImageFolder (cnnjax/data/folder.py).
  c.dataset.folder = ml_collections.ConfigDict()
  c.dataset.folder.channels = 3      # 1: grey, 3: RGB (every image is converted)
  c.dataset.folder.on_bad_file = "stop"  # a non-image or damaged file: 'stop' naming it, or 'skip' and count it
  c.dataset.folder.mean = config_dict.placeholder(tuple)  # per channel, in [0, 1]; None: ImageNet's (grey: averaged)
  c.dataset.folder.std = config_dict.placeholder(tuple)
  return c
