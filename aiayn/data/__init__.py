"""Text to tensors: corpora (corpus.py), the shared subword vocabulary (tokenizer.py), pair
filtering (filtering.py), token-budget batches (batching.py) and `aiayn data` (prepare.py).
"""
