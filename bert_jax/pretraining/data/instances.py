"""Pre-training instances from tokenized documents: the original BERT's pairs, or packed runs.

Pure Python over lists of token ids, no I/O: bert_jax/pretraining/data/prepare.py streams shards of
documents through these functions and writes what they return.

Two recipes:
  NSP (the original BERT, google-research/bert create_pretraining_data.py, kept exact):
    [CLS] A [SEP] B [SEP], B the real continuation of A or (half the time) taken from another
    document; create_instances_from_document.
  FULL-SENTENCES (RoBERTa, no NSP): contiguous whole sentences packed up to
    max_seq_length - 2 tokens, crossing document boundaries with an extra [SEP] between
    documents: [CLS] ... [SEP]; pack_full_sentences.
"""

from collections.abc import Iterator, Sequence
import random
from typing import NamedTuple

# A document: its sentences, each a non-empty list of token ids.
Document = list[list[int]]


class Instance(NamedTuple):
  """One unmasked instance, unpadded.

  A NamedTuple, not a dataclass: millions are made per shard and this is the cheapest record.
  """
  tokens: list[int]  # Ids, [CLS] and [SEP]s included.
  num_segment_a_tokens: int  # Length of [CLS] A [SEP]: segment 0; the rest is segment 1 (B).
  is_random_next: bool  # B was drawn from another document.

  @property
  def segment_ids(self) -> list[int]:
    return ([0] * self.num_segment_a_tokens +
            [1] * (len(self.tokens) - self.num_segment_a_tokens))


def truncation_counts(length_a: int, length_b: int, max_num_tokens: int,
                      rng: random.Random) -> tuple[int, int, int, int]:
  """How many tokens the original's truncate_seq_pair removes from each end of A and B.

  Draws exactly what the original draws (one rng.random() per removed token, always from the
  longer side, B on a tie), but counts instead of deleting list items one at a time.

  Returns:
    (front of A, back of A, front of B, back of B) token counts to drop.
  """
  front_a = back_a = front_b = back_b = 0
  while length_a + length_b > max_num_tokens:
    # Random end, so the model does not learn that sentences end exactly at a segment boundary.
    if length_a > length_b:
      if rng.random() < 0.5:
        front_a += 1
      else:
        back_a += 1
      length_a -= 1
    else:
      if rng.random() < 0.5:
        front_b += 1
      else:
        back_b += 1
      length_b -= 1
  return front_a, back_a, front_b, back_b


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                      rng: random.Random) -> None:
  """Shortens the pair in place to at most max_num_tokens tokens (the original's function)."""
  front_a, back_a, front_b, back_b = truncation_counts(len(tokens_a), len(tokens_b),
                                                       max_num_tokens, rng)
  tokens_a[len(tokens_a) - back_a:] = []
  tokens_a[:front_a] = []
  tokens_b[len(tokens_b) - back_b:] = []
  tokens_b[:front_b] = []


def create_instances_from_document(documents: Sequence[Document], document_index: int,
                                   max_seq_length: int, short_seq_prob: float,
                                   rng: random.Random, cls_id: int,
                                   sep_id: int) -> list[Instance]:
  """Cuts one document into sentence-pair instances (the original's algorithm, exactly).

  Sentences are gathered into a chunk until it holds target_seq_length tokens; the chunk is
  split at a random sentence boundary into A and B. Half the time (and always when the chunk
  is one sentence) B is replaced by sentences from a random other document, and the sentences
  of the chunk that went unused are put back to start the next chunk.

  Args:
    documents: The documents random-next B is drawn from (prepare passes its shard's).
    document_index: The document to cut.
    max_seq_length: Tokens per instance, [CLS] and [SEP]s included.
    short_seq_prob: Probability of a random shorter target length for this pass, so that the
      model also sees short sequences (fine-tuning inputs often are).
    rng: The random source.
    cls_id: Id of [CLS] in the tokenizer's vocabulary.
    sep_id: Id of [SEP].

  Returns:
    The instances.
  """
  document = documents[document_index]
  num_documents = len(documents)
  max_num_tokens = max_seq_length - 3  # Room for [CLS], [SEP], [SEP].
  target_seq_length = max_num_tokens
  if rng.random() < short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)

  instances = []
  chunk: list[list[int]] = []
  chunk_length = 0
  i = 0
  while i < len(document):
    chunk.append(document[i])
    chunk_length += len(document[i])
    if i == len(document) - 1 or chunk_length >= target_seq_length:
      # A takes the first a_end sentences of the chunk, at least one.
      a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
      tokens_a = chunk[0] if a_end == 1 else [t for sentence in chunk[:a_end] for t in sentence]
      is_random_next = len(chunk) == 1 or rng.random() < 0.5
      if is_random_next:
        target_b_length = target_seq_length - len(tokens_a)
        # Ten tries at another document; with a single document there is no other.
        for _ in range(10):
          random_document_index = rng.randint(0, num_documents - 1)
          if random_document_index != document_index:
            break
        random_document = documents[random_document_index]
        tokens_b = []
        for k in range(rng.randint(0, len(random_document) - 1), len(random_document)):
          tokens_b += random_document[k]
          if len(tokens_b) >= target_b_length:
            break
        # The sentences after A were not used: the next chunk starts with them.
        i -= len(chunk) - a_end
      else:
        tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
      length_a, length_b = len(tokens_a), len(tokens_b)
      if length_a + length_b > max_num_tokens:
        front_a, back_a, front_b, back_b = truncation_counts(length_a, length_b,
                                                             max_num_tokens, rng)
        tokens_a = tokens_a[front_a:length_a - back_a]
        tokens_b = tokens_b[front_b:length_b - back_b]
      tokens = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
      instances.append(Instance(tokens, len(tokens_a) + 2, is_random_next))
      chunk = []
      chunk_length = 0
    i += 1
  return instances


def create_nsp_instances(documents: list[Document], max_seq_length: int, short_seq_prob: float,
                         dupe_factor: int, rng: random.Random, cls_id: int,
                         sep_id: int) -> Iterator[Instance]:
  """dupe_factor passes of create_instances_from_document over the documents, in order.

  The documents are shuffled first (in place), as the original shuffles its whole input; the
  caller shuffles the instances.
  """
  rng.shuffle(documents)
  for _ in range(dupe_factor):
    for document_index in range(len(documents)):
      yield from create_instances_from_document(documents, document_index, max_seq_length,
                                                short_seq_prob, rng, cls_id, sep_id)


def pack_full_sentences(documents: list[Document], max_seq_length: int, dupe_factor: int,
                        rng: random.Random, cls_id: int, sep_id: int) -> Iterator[Instance]:
  """RoBERTa's FULL-SENTENCES: whole sentences packed into [CLS] ... [SEP], no pairs.

  Sentences are taken in order and packed while they fit in max_seq_length - 2 tokens; an
  instance may run on into the next document, with an extra [SEP] between the two documents.
  A sentence longer than the room is cut to it (its start is kept). Each of the dupe_factor
  passes first shuffles the document order (seeded), so the passes pack differently; there are
  no short target lengths (short_seq_prob does not apply).

  Args:
    documents: The documents; shuffled in place.
    max_seq_length: Tokens per instance, [CLS] and [SEP] included.
    dupe_factor: Passes over the documents.
    rng: The random source.
    cls_id: Id of [CLS].
    sep_id: Id of [SEP].

  Yields:
    Instances with num_segment_a_tokens covering the whole sequence and is_random_next False.
  """
  room = max_seq_length - 2
  for _ in range(dupe_factor):
    rng.shuffle(documents)
    tokens: list[int] = []
    for document in documents:
      # Sentences of a new document follow those of the last one after a [SEP].
      separator = [sep_id] if tokens else []
      for sentence in document:
        if len(tokens) + len(separator) + len(sentence) > room and tokens:
          yield _full_sentences_instance(tokens, cls_id, sep_id)
          tokens, separator = [], []
        tokens += separator
        tokens += sentence[:room] if len(sentence) > room else sentence
        separator = []
    if tokens:
      yield _full_sentences_instance(tokens, cls_id, sep_id)


def _full_sentences_instance(tokens: list[int], cls_id: int, sep_id: int) -> Instance:
  sequence = [cls_id, *tokens, sep_id]
  return Instance(sequence, len(sequence), False)
