"""Tokenizers: SentencePiece (trained here) and WordPiece (the original BERT's vocab.txt)
behind one interface (tokenization.Tokenizer), with the same special tokens at the same ids."""
