"""The special tokens every bert_jax vocabulary has, at the same ids, and what follows from it.

Fixed ids let masking and the model treat [PAD], [CLS], [SEP] and [MASK] the same way for a
SentencePiece model and a WordPiece vocab.txt.
"""

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
PAD_ID = 0
UNK_ID = 1
CLS_ID = 2
SEP_ID = 3
MASK_ID = 4
# In id order: SPECIAL_TOKENS[i] has id i.
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
# Also the first id of an ordinary piece: MLM's random replacements are drawn from there on.
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)
