"""The build folder: building a benchmark from a manifest, its files and exports.

- ``layout``: every file name in a build folder, and the readers of a built benchmark.
- ``build``: ``volvqa build-qa``: the per-case stage and the dataset-level finalize.
- ``export``: qa.jsonl / parquet / dataset card writers.
- ``dtv_export``: the DeepTumorVQA-format export.
- ``qc``: ``volvqa qc``: mask QC over a manifest without building.
"""
