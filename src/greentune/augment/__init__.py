"""Data augmentation of training batches: series (jitter, scaling, magnitude warping, window
slicing, mixup) and text (EDA: deletion, swap, insertion, WordNet synonyms), applied by the
``Augmentation`` training callback."""
