"""`devpush backup` and `devpush restore`: the whole platform in one archive, and back."""
