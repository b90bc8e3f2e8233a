"""How many documents a prepare holds out for eval: a fraction of the corpus, floored and capped.

A fixed count does not fit every corpus: 200 documents are most of a 269-chapter book
collection and a sliver of Wikipedia. The first eval_document_count(...) documents of the
stream are held out (prepare.py says where they go); a run's eval set is built from them.
"""

import ml_collections

from bert_jax import errors


# Config fields (data.*) and prepare's flags of the same names.
FIELDS = ("eval_fraction", "min_eval_documents", "max_eval_documents", "num_eval_documents")


def eval_document_count(num_documents: int, eval_fraction: float, min_eval_documents: int,
                        max_eval_documents: int) -> int:
  """round(eval_fraction * num_documents), at least min_eval_documents but never more than
  half the documents (training keeps the larger part), and at most max_eval_documents."""
  count = max(round(eval_fraction * num_documents), min_eval_documents)
  return max(0, min(count, num_documents // 2, max_eval_documents))


def resolve(data: ml_collections.ConfigDict, num_documents: int) -> tuple[int, str]:
  """(documents to hold out, a line saying how many and why) for a corpus of num_documents."""
  if data.num_eval_documents >= 0:
    count = min(data.num_eval_documents, num_documents)
    rule = f"num_eval_documents={data.num_eval_documents}"
  else:
    count = eval_document_count(num_documents, data.eval_fraction, data.min_eval_documents,
                                data.max_eval_documents)
    rule = (f"eval_fraction={data.eval_fraction}, at least {data.min_eval_documents} and at "
            f"most {data.max_eval_documents}, never more than half")
  share = f" ({100 * count / num_documents:.1f}%)" if num_documents else ""
  return count, f"held out {count} of {num_documents} documents for eval{share}: {rule}"


def check_not_empty(count: int, num_documents: int, holdout_line: str, prefix: str) -> None:
  """A corpus too small to hold out a document stops here, before anything is written.

  Pre-training evaluates on the held-out documents; with none, the run would fail at its
  first eval, after the vocabulary and the training records were made.

  Args:
    prefix: How the fields are named to the user: 'data.' (a config) or '--' (prepare's flags).
  """
  if count == 0 and num_documents > 0:
    raise errors.UserError(
        f"{holdout_line}: the corpus is too small to hold out a document for eval; give more "
        f"documents (blank lines separate them) or set {prefix}num_eval_documents")
