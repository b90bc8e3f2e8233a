"""Embeddings and predictions of ~10k real sentences as whole commands: bert_jax vs transformers.

    python -m bench.whole_command --model=HF_DIR [--classifier=WORKDIR] [--sentences=10000]
        [--rounds=3] [--max_seq_length=128] [--flags="--config.model.dtype=float32 ..."]

What a user times: each command from a cold process (imports, model load, tokenization,
compile, the forward passes, the output file), by wall clock.

  bert_jax encode    `python -m bert_jax.main --config=configs/base.py --config.mode=encode
                     --config.init_checkpoint=HF_DIR ...` at the default policy (model.dtype
                     'auto', mesh.cpu_devices 0, packed rows); `--flags` adds overrides.
  bert_jax predict   `--config.mode=predict --config.init_checkpoint=WORKDIR` (a fine-tuned
                     classifier's workdir), when --classifier is given.
  transformers       a script as a user writes it: AutoTokenizer + BertModel (or
                     BertForSequenceClassification, the same classifier exported with
                     `bert_jax.interop --format=hf`) in float32 (transformers' default),
                     batches of 64 sorted by length and padded to their longest (as
                     sentence-transformers encodes), torch.inference_mode(), the same outputs
                     written (.npz of cls/pooled/mean; a label per line).

The sentences are the first --sentences docstring sentences of this Python's standard library
(the embedded corpus), one per line. bert_jax's first round starts with an empty workdir, later
rounds reuse it (its compilation cache: a second command on the same workdir); the table gives
both. The commands alternate, round by round. Agreement is printed: the cosine of each
sentence's mean embedding to transformers', and the share of equal labels.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bert_jax.pretraining.data import corpus

_TORCH_ENCODE = r"""
import sys, numpy as np, torch, transformers
model_dir, input_file, output_file, length, threads = sys.argv[1:6]
torch.set_num_threads(int(threads))
lines = open(input_file, encoding="utf-8").read().splitlines()
tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
model = transformers.{model_class}.from_pretrained(model_dir).eval()
order = np.argsort([-len(tokenizer.tokenize(line)) for line in lines], kind="stable")
outputs = {{}}
with torch.inference_mode():
  for start in range(0, len(lines), 64):
    batch = [lines[i] for i in order[start:start + 64]]
    inputs = tokenizer(batch, padding=True, truncation=True, max_length=int(length),
                       return_tensors="pt")
    {body}
result = {{k: np.concatenate(v)[np.argsort(order)] for k, v in outputs.items()}}
{write}
"""
_ENCODE_BODY = """out = model(**inputs)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    hidden = out.last_hidden_state
    for k, v in (("cls", hidden[:, 0]), ("pooled", out.pooler_output),
                 ("mean", (hidden * mask).sum(1) / mask.sum(1))):
      outputs.setdefault(k, []).append(v.numpy())"""
_ENCODE_WRITE = "np.savez(output_file, **result)"
_PREDICT_BODY = """logits = model(**inputs).logits
    outputs.setdefault("label", []).append(logits.argmax(-1).numpy())"""
_PREDICT_WRITE = """labels = model.config.id2label
open(output_file, "w").write("".join(labels[int(i)] + "\\n" for i in result["label"]))"""


def write_sentences(path: str, count: int) -> int:
  sentences = [s for document in corpus.stdlib_documents() for s in document if s.strip()]
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(s.replace("\t", " ") + "\n" for s in sentences[:count]))
  return min(count, len(sentences))


def timed(command: list[str], env: dict) -> float:
  start = time.perf_counter()
  result = subprocess.run(command, env=env, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if result.returncode:
    sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="a Hugging Face BERT dir (encode)")
  parser.add_argument("--classifier", default="", help="a bert_jax fine-tuning workdir")
  parser.add_argument("--sentences", type=int, default=10_000)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--max_seq_length", type=int, default=128)
  parser.add_argument("--torch_threads", type=int, default=2)
  parser.add_argument("--flags", default="", help="extra bert_jax overrides, space-separated")
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix="whole_command_")
  env = {**os.environ, "USE_TF": "0"}
  text = os.path.join(work, "sentences.txt")
  count = write_sentences(text, args.sentences)
  python = sys.executable
  overrides = [f"--config.data.max_seq_length={args.max_seq_length}", *args.flags.split()]
  # encode reads a pre-training config (the checkpoint gives the architecture), predict a
  # fine-tuning one.
  config_file = {"encode": "--config=configs/base.py", "predict": "--config=configs/finetune.py"}
  tasks = {"encode": (args.model, "BertModel", _ENCODE_BODY, _ENCODE_WRITE)}
  if args.classifier:
    exported = os.path.join(work, "classifier_hf")
    subprocess.run([python, "-m", "bert_jax.interop", f"--input={args.classifier}",
                    f"--output={exported}", "--format=hf"], env=env, check=True,
                   capture_output=True)
    tasks["predict"] = (exported, "BertForSequenceClassification", _PREDICT_BODY,
                        _PREDICT_WRITE)
  seconds = {}
  for round_index in range(args.rounds):
    for mode, (hf_dir, model_class, body, write) in tasks.items():
      source = args.model if mode == "encode" else args.classifier
      suffix = "npz" if mode == "encode" else "jsonl"
      ours = os.path.join(work, f"{mode}_{round_index}.{suffix}")
      theirs = os.path.join(work, f"{mode}_{round_index}_torch.{suffix}")
      script = _TORCH_ENCODE.format(model_class=model_class, body=body, write=write)
      commands = {
          "bert_jax": [python, "-m", "bert_jax.main", config_file[mode], *overrides,
                       f"--workdir={os.path.join(work, mode + '_workdir')}",
                       f"--config.mode={mode}", f"--config.init_checkpoint={source}",
                       f"--config.{mode}.input_file={text}",
                       f"--config.{mode}.output_file={ours}"],
          "transformers": [python, "-c", script, hf_dir, text, theirs,
                           str(args.max_seq_length), str(args.torch_threads)]}
      names = list(commands) if round_index % 2 == 0 else list(commands)[::-1]
      for name in names:
        key = (mode, name, "first" if name == "bert_jax" and round_index == 0 else "again")
        seconds.setdefault(key, []).append(timed(commands[name], env))
  print(f"{count} sentences (the standard library's docstrings), max_seq_length "
        f"{args.max_seq_length}; {args.rounds} rounds; bert_jax flags: {args.flags or '(none)'}"
        f"; {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
  print("\n| command | seconds (median) | sentences/s | vs transformers |\n|---|---|---|---|")
  for mode in tasks:
    reference = np.median(seconds[(mode, "transformers", "again")])
    for key in sorted(k for k in seconds if k[0] == mode):
      median = float(np.median(seconds[key]))
      label = f"{mode}, {key[1]}" + (" (empty workdir)" if key[2] == "first" else
                                     " (workdir again)" if key[1] == "bert_jax" else "")
      print(f"| {label} | {median:.1f} ({', '.join(f'{s:.1f}' for s in seconds[key])}) | "
            f"{count / median:,.0f} | {reference / median:.2f}x |")
  ours = np.load(os.path.join(work, "encode_0.npz"))["mean"]
  theirs = np.load(os.path.join(work, "encode_0_torch.npz"))["mean"]
  cosine = np.sum(ours * theirs, 1) / (np.linalg.norm(ours, axis=1)
                                       * np.linalg.norm(theirs, axis=1))
  print(f"\nmean embeddings, bert_jax vs transformers: cosine min {cosine.min():.5f}, "
        f"median {np.median(cosine):.5f}")
  if "predict" in tasks:
    import json  # pylint: disable=import-outside-toplevel
    with open(os.path.join(work, "predict_0.jsonl"), encoding="utf-8") as f:
      ours = [json.loads(line)["label"] for line in f]
    with open(os.path.join(work, "predict_0_torch.jsonl"), encoding="utf-8") as f:
      theirs = f.read().splitlines()
    print(f"labels equal to transformers': {np.mean(np.array(ours) == np.array(theirs)):.2%}")
  shutil.rmtree(work)


if __name__ == "__main__":
  main()
