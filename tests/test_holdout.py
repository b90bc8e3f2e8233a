"""How many documents a prepare holds out for eval: a fraction, with a floor and a cap."""

import ml_collections
import pytest

from bert_jax.pretraining.data import holdout


@pytest.mark.parametrize("num_documents, held_out", [
    (269, 13),  # 5%.
    (6_000_000, 200),  # The cap.
    (120, 10),  # The floor...
    (15, 7),  # ... but never more than half.
    (1, 0), (0, 0)])
def test_eval_hold_out_is_a_fraction_with_a_floor_and_a_cap(num_documents, held_out):
  assert holdout.eval_document_count(num_documents, 0.05, 10, 200) == held_out
  data = ml_collections.ConfigDict({"eval_fraction": 0.05, "min_eval_documents": 10,
                                    "max_eval_documents": 200, "num_eval_documents": -1})
  assert holdout.resolve(data, num_documents)[0] == held_out
  data.num_eval_documents = 3  # Exactly this many, whatever the corpus.
  assert holdout.resolve(data, num_documents)[0] == min(3, num_documents)
