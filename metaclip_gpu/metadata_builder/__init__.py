"""Building MetaCLIP metadata (``build-metadata``): WordNet (`wordnet`), corpus n-grams and PMI
(`ngrams`, on the GPU `gpu_ngrams`), filters and provenance (`build`)."""
