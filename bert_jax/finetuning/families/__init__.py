"""Task families, the data's side: how a family's examples become features, how they pack, how
its outputs are scored and how mode=predict reads inputs and writes outputs.

record.py is the record's shape; text.py (classification, regression), tagging.py (token),
span.py (SQuAD), choice.py (multiple choice) and fill_mask.py (pre-training's predictions) are
the built-in families; registry.py holds one record per family, keyed as model/families.py's.
"""
