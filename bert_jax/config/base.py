"""The pre-training schema, and BERT-Base as in the paper: L12/H768/A12, batch 256, 1M steps,
lr 1e-4 (configs/base.py runs it; every other config starts from it).

    python -m bert_jax.main --config=configs/base.py --workdir=DIR [--config.a.b=value ...]

Fits a v5litepod-16 in bf16, data parallel (3.5 of 16 GiB per chip; docs/BENCHMARKS.md):
    python -m bert_jax.tpu.aot --config=configs/base.py --topology=v5litepod-16 \
        --config.model.dtype=bfloat16
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The default config; every other config starts from this one."""
  config = ml_collections.ConfigDict()
  # What main runs: 'pretrain' (MLM + NSP); 'eval' (the held-out MLM/NSP metrics of the
  # workdir's latest checkpoint, or of init_checkpoint); 'encode' (embeddings of the lines of
  # encode.input_file); 'predict' (a model's labels, spans, tags or [MASK] fillers for
  # predict.input_file). configs/finetune.py and the task configs set 'finetune'.
  config.mode = "pretrain"
  # Seed of everything random: init, data order, masks, dropout.
  config.seed = 0
  # PRNG behind init and dropout: 'threefry2x32' gives the same numbers on any mesh, process
  # count and backend (the tests rely on it); 'rbg' / 'unsafe_rbg' make dropout's random bits
  # cheaper (XLA's RngBitGenerator; the usual choice on TPU pods) but the numbers then depend
  # on the mesh and backend. See docs/BENCHMARKS.md for what each costs.
  config.rng_impl = "threefry2x32"
  # Params to start from instead of a random init (continued pre-training): an Orbax params
  # dir or bert_jax workdir, a Hugging Face BERT dir, or a Google TF checkpoint prefix. Only the
  # params are taken (a fresh optimizer); ignored once the workdir has a checkpoint of its own.
  config.init_checkpoint = ""

  # The model: the original BERT's config fields (bert_config.json / HF config.json).
  model = config.model = ml_collections.ConfigDict()
  # Size of the vocabulary; must hold every id the tokenizer produces.
  model.vocab_size = 30522
  # Width of the encoder (embedding and hidden size).
  model.hidden_size = 768
  # Number of Transformer layers.
  model.num_hidden_layers = 12
  # Attention heads per layer; must divide hidden_size.
  model.num_attention_heads = 12
  # Width of the feed-forward layer.
  model.intermediate_size = 3072
  # Feed-forward activation: 'gelu' (erf, as the original), 'gelu_new' (the tanh
  # approximation, HF's name) or 'relu'.
  model.hidden_act = "gelu"
  # Dropout on embeddings, attention output and feed-forward output.
  model.hidden_dropout_prob = 0.1
  # Dropout on the attention probabilities.
  model.attention_probs_dropout_prob = 0.1
  # Longest sequence the learned position embeddings cover.
  model.max_position_embeddings = 512
  # Number of segment (token type) ids.
  model.type_vocab_size = 2
  # Stddev of the truncated normal used for every weight.
  model.initializer_range = 0.02
  # Compute dtype of activations and matmuls: 'auto' (bfloat16 on TPUs, GPUs and CPUs with
  # AMX-BF16, float32 on other CPUs; the startup line says which and why), 'float32',
  # 'bfloat16' or 'float16'. Params, softmax, LayerNorm statistics and losses stay float32.
  model.dtype = "auto"
  # Run the layers as one scanned body (compile time flat in depth) rather than unrolled.
  model.scan_layers = True
  # What each layer recomputes in the backward pass instead of keeping: 'none', 'full',
  # 'dots_saveable' or 'dots_with_no_batch_dims_saveable' (see modeling.REMAT_POLICIES).
  model.remat_policy = "none"
  # Attention implementation (params and checkpoints are the same for all): 'xla' (plain XLA,
  # any backend), 'cudnn' (cuDNN flash attention; NVIDIA GPUs, model.dtype bfloat16/float16) or
  # 'splash' (the Pallas splash-attention kernel; TPUs). The kernels never materialise the
  # [batch, heads, length, length] scores but have no attention-probability dropout: train
  # them with model.attention_probs_dropout_prob=0.
  model.attention = "xla"

  # The pre-training data.
  data = config.data = ml_collections.ConfigDict()
  # Where the data comes from: 'tfds' (data.tfds_name), 'text' (data.input_files), 'embedded'
  # (the docstrings of this Python's standard library: no download, no network), or 'tfrecord'
  # (instances already prepared, by `python -m bert_jax.pretraining.prepare` or by the original's
  # create_pretraining_data.py: data.input_files and data.eval_input_files, data.vocab_file).
  data.source = "tfds"
  # TFDS text dataset, for source='tfds' (its split: data.tfds_split).
  data.tfds_name = "wikipedia/20230601.en"
  # TFDS split to read the documents from.
  data.tfds_split = "train"
  # Feature of each TFDS example that holds the document text.
  data.tfds_text_key = "text"
  # TFDS data_dir ('' = TFDS's default, ~/tensorflow_datasets or $TFDS_DATA_DIR).
  data.tfds_data_dir = ""
  # Comma-separated globs: text files for source='text', in the original format (one sentence
  # per line, a blank line between documents); TFRecord files for source='tfrecord'.
  data.input_files = ""
  # Comma-separated globs of the eval TFRecords, for source='tfrecord'.
  data.eval_input_files = ""
  # Comma-separated globs of a second phase's training TFRecords, made at
  # data.phase2_max_seq_length, for source='tfrecord' ('' = phase 2 reads data.input_files;
  # `python -m bert_jax.pretraining.prepare --extra_seq_lengths=512` makes both from one pass).
  data.phase2_input_files = ""
  # Vocabulary: a WordPiece vocab.txt (e.g. Google's) or a SentencePiece .model; '' = train a
  # SentencePiece model of model.vocab_size pieces from the corpus (cached in the workdir).
  data.vocab_file = ""
  # Lower-case and strip accents before WordPiece (uncased vocabularies); unused by SentencePiece.
  data.do_lower_case = True
  # Cap on the number of documents read (0 = all); handy to try a big corpus quickly.
  data.max_documents = 0
  # Fraction of the corpus's documents held out (never trained on) to build the eval set from
  # (the first documents of the stream); the prepare summary says how many that was.
  data.eval_fraction = 0.05
  # Fewest documents held out, so that a small corpus still gets an eval set; never more than
  # half the documents, though.
  data.min_eval_documents = 10
  # Most documents held out: a large corpus needs no more for a stable eval.
  data.max_eval_documents = 200
  # Exactly this many documents held out instead of the three fields above (-1 = use them).
  data.num_eval_documents = -1
  # Tokens per instance, [CLS] and [SEP]s included.
  data.max_seq_length = 128
  # Pack several short examples into each row of max_seq_length, so no compute is spent on
  # padding: fine-tuning's classification, regression, token and SQuAD tasks, their eval, and
  # mode='encode'. Exact: each example keeps its own [CLS], token types and positions, and
  # attends only to itself. A step takes enough rows for train.batch_size examples on average.
  # Pre-training instances are not packed (docs/BENCHMARKS.md says why).
  data.packing = True
  # Length the instances are prepared at (0 = data.max_seq_length). With two phases and 0, one
  # prepare makes each phase's instances at its own length from the same documents, as the
  # original prepares each phase's data; set to the longer length instead, both phases read
  # one data set and the shorter phase truncates it when read (pairs unlike the original's).
  data.prepare_seq_length = 0
  # Most masked positions per instance (the MLM head runs only on these).
  data.max_predictions_per_seq = 20
  # Phase 2's tokens per instance (only with train.phase2_start_step > 0): the paper's 512.
  # Its instances are prepared at this length (seq512-train-KKKKK.tfrecord in WORKDIR/data).
  data.phase2_max_seq_length = 512
  # Phase 2's most masked positions per instance (only with train.phase2_start_step > 0): the
  # paper's 80 at 512.
  data.phase2_max_predictions_per_seq = 80
  # Fraction of tokens masked (80% [MASK], 10% random, 10% unchanged); MosaicBERT uses 0.30.
  data.masked_lm_prob = 0.15
  # Mask whole words (all their pieces) rather than single pieces.
  data.whole_word_masking = False
  # Mask each instance the same way in every epoch, as the original's static masks (default:
  # new masks every epoch). Records the original already masked are always used as they are.
  data.static_masks = False
  # Sentence pairs with the NSP task (BERT); False = RoBERTa's packed full sentences, MLM only.
  data.next_sentence_prediction = True
  # Probability of a shorter target length, so the model sees short sequences too.
  data.short_seq_prob = 0.1
  # Times each document is turned into instances, with different sentence pairings.
  data.dupe_factor = 5
  # Documents per input shard of prepare: the unit of parallel work and of memory (random
  # next sentences are drawn from within a shard, as NVIDIA's sharded creation does).
  data.documents_per_shard = 2000
  # Instances in the tf.data shuffle buffer.
  data.shuffle_buffer_size = 10000
  # Go past damaged records (a checksum that does not match, a file cut in the middle) of the
  # TFRecord files, counting them (the startup lines, eval rows of metrics.jsonl), instead of
  # stopping at the first with a line naming its file and offset. Each start then reads every
  # record file once to find them (on a pod: each host its own files).
  data.skip_damaged_records = False
  # Sentences sampled to train the SentencePiece vocabulary.
  data.vocab_input_sentence_size = 2_000_000

  # The optimisation.
  train = config.train = ml_collections.ConfigDict()
  # Global batch size in sequences, over all hosts and devices.
  train.batch_size = 256
  # Micro-batches per step: the batch runs in this many sequential pieces whose gradients add
  # up (same update, less activation memory); batch_size / (it * data-parallel size) per device.
  train.grad_accum_steps = 1
  # Optimizer steps to train for.
  train.num_train_steps = 1_000_000
  # Steps of phase 1 (0 = one phase, at data.max_seq_length throughout). Steps after it run
  # phase 2 at data.phase2_max_seq_length, data.phase2_max_predictions_per_seq and
  # train.phase2_batch_size: the paper's 90% of the steps at 128, then 10% at 512, in one run,
  # recompiled once at the switch, on the one learning-rate schedule
  # (bert_jax/pretraining/phases.py). A checkpoint is always saved at this step.
  train.phase2_start_step = 0
  # Phase 2's global batch size in sequences (0 = train.batch_size).
  train.phase2_batch_size = 0
  # Peak learning rate (reached at the end of warmup under schedule 'warmup_then_decay').
  train.learning_rate = 1e-4
  # Steps of linear warmup from 0 (the rate at step s is learning_rate * s / warmup), after
  # which train.schedule's decay takes over.
  train.num_warmup_steps = 10_000
  # The decay: 'original' (google-research/bert's polynomial_decay: linear from the peak to 0
  # over all num_train_steps counted from step 0, so warmup ends at peak * (1 - warmup /
  # steps)) or 'warmup_then_decay' (the full peak at the end of warmup, then linear to 0 over
  # the steps left, as transformers' get_linear_schedule_with_warmup).
  train.schedule = "original"
  # 'adamw' (the original's) or 'lamb' (You et al. 2019, the large-batch recipe of
  # configs/large_lamb.py): Adam's moments plus the decay below, scaled by ||w|| / ||update||
  # for each weight tensor of each layer (not LayerNorm params or biases). Both use the adam_*,
  # weight_decay and max_grad_norm fields, train.adam_bias_correction and train.schedule.
  train.optimizer = "adamw"
  # Decoupled weight decay, AdamW's and LAMB's (not applied to LayerNorm params or biases).
  train.weight_decay = 0.01
  # Adam beta1.
  train.adam_b1 = 0.9
  # Adam beta2.
  train.adam_b2 = 0.999
  # Adam epsilon (the original's 1e-6).
  train.adam_epsilon = 1e-6
  # Correct Adam's moments for their zero start (optax's and PyTorch's AdamW, NVIDIA's LAMB);
  # false = the original's AdamWeightDecayOptimizer: m / (sqrt(v) + eps).
  train.adam_bias_correction = False
  # Clip gradients to this global norm (0 = no clipping).
  train.max_grad_norm = 1.0
  # Steps between log lines and TensorBoard scalars.
  train.log_every_steps = 100
  # Steps between evaluations on the held-out set (0 = only at the end).
  train.eval_every_steps = 10_000
  # Sequences per eval batch, global.
  train.eval_batch_size = 256
  # Eval batches per evaluation (0 = the whole held-out set).
  train.max_eval_steps = 100
  # Stop once an evaluation's MLM accuracy reaches this (0 = off), MLPerf-style: a checkpoint
  # at that step and a line with the time-to-target, the wall time since this run's loop
  # started (a resumed run counts from its restart), eval and checkpoint time included, as
  # MLPerf counts everything after init. Checked at each eval (train.eval_every_steps).
  train.target_mlm_accuracy = 0.0
  # Steps between checkpoints (a final one is always written).
  train.checkpoint_every_steps = 10_000
  # Checkpoints kept in WORKDIR/checkpoints (older ones are deleted).
  train.max_checkpoints_to_keep = 3
  # On a NaN/inf loss or gradient (the update is never applied): 'stop' with an error naming
  # the step, 'skip' the update and go on, or 'rollback' to the latest checkpoint and go on
  # with the data after the bad batch. Checked at every log line and before every checkpoint.
  train.nan_policy = "stop"
  # Testing the guard only: comma-separated steps whose batch is made to give a NaN loss.
  train.debug_nan_steps = ""
  # Peak TFLOP/s of one device, the denominator of the MFU metric. 0 = the datasheet figure of
  # the device kind (bert_jax/model/flops.py) or, where none is known (CPUs), the fastest of 20
  # [4096, 512] x [512, 512] matmuls in model.dtype, timed on this device at start-up.
  train.peak_tflops_per_device = 0.0

  # Profiling: a jax.profiler trace of a few steps, written to WORKDIR/profile (open it with
  # TensorBoard's profile plugin or Perfetto).
  profile = config.profile = ml_collections.ConfigDict()
  # Steps to trace: 'first-last' (e.g. '20-25', after compile and warm-up) or one step;
  # '' = none.
  profile.steps = ""

  # mode='encode': sentence embeddings from the encoder.
  encode = config.encode = ml_collections.ConfigDict()
  # Text to embed: one sequence per line; a tab splits a line into a pair (segments A and B).
  # Lines longer than data.max_seq_length tokens are truncated.
  encode.input_file = ""
  # Where to write them: a .npz of float32 [lines, hidden_size] arrays 'cls' (the [CLS]
  # hidden state), 'pooled' (the pooler's output) and 'mean' (mean over the real tokens), in
  # input order. '' = WORKDIR/embeddings.npz.
  encode.output_file = ""
  # Replace an encode.output_file that exists (without it, the run stops before anything is
  # computed; the input file is never replaced).
  encode.overwrite = False
  # Rows per forward pass, global (packed rows, data.packing, hold several sequences each).
  encode.batch_size = 64

  # mode='predict': a model's predictions for new inputs, one JSON line each
  # (bert_jax/finetuning/predict.py says what each kind of model reads and writes).
  predict = config.predict = ml_collections.ConfigDict()
  # Inputs: text lines (.txt; fill-mask: lines holding [MASK]), a table with the task's text
  # columns (.csv/.tsv/.jsonl), or SQuAD JSON (.json) for a question-answering model.
  predict.input_file = ""
  # Where to write the JSON lines; '' = WORKDIR/predictions.jsonl.
  predict.output_file = ""
  # Replace a predict.output_file that exists (without it, the run stops before anything runs).
  predict.overwrite = False
  # Rows per forward pass, global.
  predict.batch_size = 64
  # Fill-mask: how many tokens to list for each [MASK], most probable first.
  predict.top_k = 5

  # The device mesh: size of each axis, -1 = all devices left. Mesh axes: 'data' (data
  # parallel), 'fsdp' (params sharded, data parallel), 'tensor' (model parallel).
  mesh = config.mesh = ml_collections.ConfigDict()
  # Data-parallel replicas.
  mesh.data = -1
  # Fully-sharded data parallel: params and optimizer state split over this axis.
  mesh.fsdp = 1
  # Tensor parallel: heads, mlp and vocab split over this axis.
  mesh.tensor = 1
  # On a CPU, single process: how many jax devices this host's cores become (data parallel,
  # the same numbers). 0 = auto: one per core for finetune, encode and predict when their batch
  # sizes divide by it, else 1; pre-training and eval keep 1 (docs/BENCHMARKS.md). Ignored
  # where XLA_FLAGS sets --xla_force_host_platform_device_count, and off a CPU.
  mesh.cpu_devices = 0
  # Logical axis -> mesh axes (None = replicated); model code names only logical axes.
  config.logical_axis_rules = [
      ("batch", ("data", "fsdp")),
      ("length", None),
      ("embed", "fsdp"),
      ("heads", "tensor"),
      ("kv", None),
      ("mlp", "tensor"),
      ("vocab", "tensor"),
      ("layers", None),
  ]
  return config
