"""The matching engine: metadata reading (`metadata`), the probe-table index (`index`), matching
texts to entry ids on the CPU or GPU backend (`match`, `backends`, `_native`) and the
pure-Python oracle (`reference`). It imports nothing of the pipeline, the metadata builder,
the report or the command line."""
