"""What a prepare wrote, in numbers (metadata.json's 'summary') and in a few lines for people."""

from collections.abc import Sequence
from typing import Any

from bert_jax.pretraining.data import corpus
from bert_jax.pretraining.data import shards


def summarize(results: Sequence[dict[str, Any]], num_input_documents: int,
              input_counters: dict[str, int]) -> dict[str, Any]:
  """Totals over shards: the summary metadata.json keeps and the CLI prints."""
  train = [r for r in results if r["file"] != shards.EVAL_FILENAME]
  eval_ = [r for r in results if r["file"] == shards.EVAL_FILENAME]
  def total(rs, key):
    return sum(r[key] for r in rs)
  num_train_instances = total(train, "instances")
  histogram = [sum(counts) for counts in zip(*(r["length_histogram"] for r in train))]
  return {
      "input_documents": num_input_documents,
      "skipped_documents": total(results, "skipped_documents"),
      "train_documents": total(train, "documents"),
      "eval_documents": total(eval_, "documents"),
      "train_instances": num_train_instances,
      "eval_instances": total(eval_, "instances"),
      "train_tokens": total(train, "tokens"),
      "eval_tokens": total(eval_, "tokens"),
      "random_next_ratio": round(total(train, "random_next") / max(num_train_instances, 1), 4),
      "train_length_histogram": {"bucket_width": shards.HISTOGRAM_BUCKET_WIDTH,
                                 "counts": histogram},
      # Results of other hosts' (or older) runs may lack it.
      "single_sentence_documents": sum(r.get("single_sentence_documents", 0) for r in results),
      "invalid_utf8_lines": int(input_counters.get("invalid_utf8_lines", 0)),
      # What the reader skipped or repaired (corpus.text_file_documents).
      "input": {key: int(input_counters.get(key, 0)) for key in corpus.INPUT_COUNTERS},
      "extra_lengths": _extra_length_summaries(results),
  }


def _extra_length_summaries(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The training instances made at each extra length (a second phase's), like the main ones."""
  summaries = []
  for length, extras in shards.extra_results_by_length(results):
    instances = sum(e["instances"] for e in extras)
    summaries.append({
        "max_seq_length": length, "train_instances": instances,
        "train_tokens": sum(e["tokens"] for e in extras),
        "random_next_ratio": round(sum(e["random_next"] for e in extras) / max(instances, 1), 4),
        "train_length_histogram": {
            "bucket_width": shards.HISTOGRAM_BUCKET_WIDTH,
            "counts": [sum(c) for c in zip(*(e["length_histogram"] for e in extras))]}})
  return summaries


def format_summary(summary: dict[str, Any]) -> str:
  """A few human lines of a summary (metadata['summary'])."""
  histogram = summary["train_length_histogram"]
  width = histogram["bucket_width"]
  buckets = ", ".join(f"{width * i}-{width * i + width - 1}: {count}"
                      for i, count in enumerate(histogram["counts"]) if count)
  held_out = summary["eval_documents"] / max(summary["input_documents"], 1)
  lines = [
      f"documents: {summary['input_documents']} read, {summary['train_documents']} train, "
      f"{summary['eval_documents']} eval ({held_out:.1%} held out), "
      f"{summary['skipped_documents']} skipped (no tokens), "
      f"{summary.get('single_sentence_documents', 0)} of one sentence (no sentence pair); "
      f"invalid UTF-8 lines: {summary['invalid_utf8_lines']} (kept, as U+FFFD)"]
  files = corpus.input_summary(summary.get("input", {}))
  if files:
    lines.append(f"input: {files}")
  lines.append(
      f"instances: {summary['train_instances']} train, {summary['eval_instances']} eval; "
      f"tokens (non-padding): {summary['train_tokens']} train, {summary['eval_tokens']} eval; "
      f"random-next ratio: {summary['random_next_ratio']}")
  lines.append(f"train instance lengths: {buckets}")
  for extra in summary.get("extra_lengths", []):
    lines.append(f"at length {extra['max_seq_length']} (from the same documents): "
                 f"{extra['train_instances']} train instances, {extra['train_tokens']} tokens, "
                 f"random-next ratio {extra['random_next_ratio']}")
  return "\n".join(lines)
