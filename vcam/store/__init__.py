"""The model store: the style catalogue, the weights on disk, and downloading them from the Hugging Face Hub.

- `catalogue`: the styles shipped with the package plus the user's own (parsing TOML only).
- `store`: what is on disk for each style: status, verify, remove, and the local paths for the pipeline.
- `download`: downloading styles (plan, Hub metadata first, disk space, each file with progress).
- `hub_fetch`: fetching one Hub file over HTTP, resumable, and what a Hub or network failure means to the user.
- `cache_layout`: the Hugging Face cache folder as huggingface_hub lays it out, plus our partial files.
"""
