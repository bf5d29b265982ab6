"""Model toolchain (extras `export`, `train`): imports torch/transformers, never used at run time."""
