"""Pretrained models in and out: other libraries' layouts <-> aiayn's model and tokenizer.

hf.py       reading a HuggingFace model folder (config.json, weights)
gpt2.py     HuggingFace GPT2LMHeadModel folders (import and export)
marian.py   HuggingFace MarianMTModel folders, OPUS-MT (import and export)
"""
